"""All recommendation learners of one partition, and the candidate lists a recipe reads.

This is the in-process reference for what the stream layer keeps per partition: it feeds every
event to every learner and answers `candidates()` / `visitor_state()` in the plain shapes
`engine.logic.recipes.apply` takes.

Bought items go through the repurchase rule (models/reco/repurchase.py): the visitor state's
`purchased` is what a recipe's `exclusions.purchased` excludes, i.e. the bought items the rule
does not keep at that moment, and `rebuy` maps each kept one to its reason ("often bought
again"); `bought` lists every remembered purchase. The `session` entry is the visitor's current
session (models/session.py), apart from `recent` (their history).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from models.reco.affinity import Affinity
from models.reco.base import Candidate, Event
from models.reco.cf import OnlineMF
from models.reco.cooccurrence import CO_BUY_TYPES, CO_VIEW_TYPES, CoOccurrence
from models.reco.history import History
from models.reco.nextitem import NextItem
from models.reco.repurchase import Repurchase, visitor_horizon_ms
from models.reco.sessionknn import SessionKNN
from models.reco.trending import Trending
from models.session import SessionTracker

KIND = "kairos.reco.ensemble"
VERSION = 2  # 2: session_knn, repurchase and sessions

#: The candidate lists `candidates()` can build (recipe ingredient names).
INGREDIENTS = ("trending", "trending_in_category", "co_view", "co_buy", "next_item", "affinity",
               "history", "cf", "session_knn")


class RecoModels:
    """The learners behind the recipe ingredients, updated together."""

    def __init__(
        self,
        trending: Trending | None = None,
        co_view: CoOccurrence | None = None,
        co_buy: CoOccurrence | None = None,
        history: History | None = None,
        affinity: Affinity | None = None,
        cf: OnlineMF | None = None,
        next_item: NextItem | None = None,
        session_knn: SessionKNN | None = None,
        repurchase: Repurchase | None = None,
        sessions: SessionTracker | None = None,
        seed: int = 0,
    ) -> None:
        self.trending = trending or Trending()
        self.co_view = co_view or CoOccurrence(CO_VIEW_TYPES)
        self.co_buy = co_buy or CoOccurrence(CO_BUY_TYPES, window=20, window_s=7 * 86400.0)
        self.history = history or History()
        self.affinity = affinity or Affinity()
        self.cf = cf or OnlineMF(seed=seed)
        self.next_item = next_item or NextItem()
        self.session_knn = session_knn or SessionKNN(seed=seed)
        self.repurchase = repurchase or Repurchase()
        self.sessions = sessions or SessionTracker()

    def learners(self) -> dict[str, Any]:
        """Name -> learner."""
        return {
            "trending": self.trending,
            "co_view": self.co_view,
            "co_buy": self.co_buy,
            "history": self.history,
            "affinity": self.affinity,
            "cf": self.cf,
            "next_item": self.next_item,
            "session_knn": self.session_knn,
            "repurchase": self.repurchase,
            "sessions": self.sessions,
        }

    def learn_one(self, event: Event) -> None:
        """Feed one normalised event to every learner."""
        for learner in self.learners().values():
            learner.learn_one(event)

    def visitor_state(self, visitor_id: str, recent: int = 50, now_ms: int | None = None
                      ) -> dict[str, Any]:
        """The visitor's state in the shape `engine.logic.recipes.apply` reads (`purchased`: the
        bought items the repurchase rule excludes at `now_ms`)."""
        session = self.sessions.get(visitor_id)
        now = self.history.last_ms if now_ms is None else now_ms
        default_h = self.repurchase.horizon_s * 1000.0
        horizon = visitor_horizon_ms(session.return_gap_ms if session else 0.0, default_h)
        decisions = self.repurchase.for_visitor(visitor_id, now, horizon)
        ruled = {d.item_id for d in decisions}
        excluded = [d.item_id for d in decisions if not d.keep]
        # bought items the rule has no time for (older than it remembers) are excluded
        excluded += [i for i in self.history.purchased(visitor_id) if i not in ruled
                     and self.repurchase.mode != "keep"]
        return {
            "recent": self.history.recent(visitor_id, recent),
            "cart": self.history.in_cart(visitor_id),
            "purchased": excluded,
            "bought": list(dict.fromkeys([*ruled, *self.history.purchased(visitor_id)])),
            "rebuy": {d.item_id: d.reason for d in decisions if d.keep},
            "session": session.view(now, self.sessions.cfg) if session else None,
            "categories": dict(self.affinity.top_categories(visitor_id, 10)),
            "brands": dict(self.affinity.top_brands(visitor_id, 10)),
            "typical_price": self.affinity.typical_price(visitor_id),
        }

    def candidates(
        self,
        needed: Iterable[str],
        visitor_id: str,
        context: Mapping[str, Any],
        k: int = 50,
        seeds: int = 5,
    ) -> dict[str, list[Candidate]]:
        """Candidate lists for the ingredients in `needed` (`cf` re-ranks the others' union).

        Co-occurrence and next_item are seeded with the page's item (if any) and the visitor's `seeds` most
        recent items; trending_in_category uses the page's category, else the visitor's top one.
        """
        wanted = set(needed)
        out: dict[str, list[Candidate]] = {}
        vid = visitor_id
        now = context.get("now_ms")
        recent = [iid for iid, _ in self.history.recent(vid, seeds)]
        seed_w: dict[str, float] = {}
        if context.get("item_id"):
            seed_w[str(context["item_id"])] = 1.0
        for rank, iid in enumerate(recent):
            seed_w[iid] = seed_w.get(iid, 0.0) + 0.7 ** (rank + (1 if seed_w else 0))
        if "history" in wanted:
            out["history"] = self.history.recommend(vid, k, now_ms=now)
        if "co_view" in wanted:
            out["co_view"] = self.co_view.similar(seed_w, k)
        if "co_buy" in wanted:
            out["co_buy"] = self.co_buy.similar(seed_w, k)
        if "next_item" in wanted:
            out["next_item"] = self.next_item.similar(seed_w, k)
        if "trending" in wanted:
            out["trending"] = self.trending.recommend(k, now_ms=now)
        if "trending_in_category" in wanted:
            category = context.get("category")
            if not category:
                top = self.affinity.top_categories(vid, 1)
                category = top[0][0] if top else None
            out["trending_in_category"] = (
                self.trending.recommend(k, category=category, now_ms=now) if category else []
            )
        if "affinity" in wanted:
            out["affinity"] = self.affinity.recommend(vid, k)
        if "session_knn" in wanted:
            out["session_knn"] = self.session_knn.recommend(
                vid, int(now if now is not None else self.history.last_ms), k,
                item_id=str(context["item_id"]) if context.get("item_id") else None)
        if "cf" in wanted:
            pool = {c.item_id for lst in out.values() for c in lst}
            out["cf"] = self.cf.recommend(vid, len(pool), candidates=sorted(pool))
        return out

    def snapshot(self) -> bytes:
        """Versioned msgpack of every learner's own snapshot."""
        parts = {name: m.snapshot() for name, m in self.learners().items()}
        return msgpack.packb({"kind": KIND, "v": VERSION, "parts": parts}, use_bin_type=True)

    @classmethod
    def restore(cls, data: bytes) -> RecoModels:
        """Models equal to the ones that made `data`."""
        doc = msgpack.unpackb(data, raw=False)
        if doc.get("kind") != KIND or doc.get("v") != VERSION:
            raise ValueError("not a supported reco ensemble snapshot")
        p = doc["parts"]
        return cls(
            trending=Trending.restore(p["trending"]),
            co_view=CoOccurrence.restore(p["co_view"]),
            co_buy=CoOccurrence.restore(p["co_buy"]),
            history=History.restore(p["history"]),
            affinity=Affinity.restore(p["affinity"]),
            cf=OnlineMF.restore(p["cf"]),
            next_item=NextItem.restore(p["next_item"]),
            session_knn=SessionKNN.restore(p["session_knn"]),
            repurchase=Repurchase.restore(p["repurchase"]),
            sessions=SessionTracker.restore(p["sessions"]),
        )
