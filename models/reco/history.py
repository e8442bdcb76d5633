"""A visitor's own history: recent distinct items, what is in the cart, what was bought."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.reco.base import (
    DEFAULT_WEIGHTS,
    Candidate,
    Event,
    ForwardDecay,
    event_items,
    pack,
    top_n,
    unpack,
)

KIND = "kairos.reco.history"
VERSION = 1


class History:
    """Per visitor: the last `max_items_per_visitor` distinct items with a recency-frequency score.

    Each interaction adds its type's weight, forward-decayed with `half_life_s`, so a short
    half-life ranks by recency and a long one by frequency. Also tracks the cart (add, remove,
    emptied by a purchase) and purchased items (at most `max_items_per_visitor` each), for
    exclusions. At most `max_visitors` visitors are kept (least recently active dropped).
    """

    def __init__(
        self,
        half_life_s: float | None = 3600.0,
        weights: Mapping[str, float] | None = None,
        max_items_per_visitor: int = 50,
        max_visitors: int = 100_000,
    ) -> None:
        self.half_life_s = half_life_s
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.max_items_per_visitor = max_items_per_visitor
        self.max_visitors = max_visitors
        self._decay = ForwardDecay(half_life_s)
        # visitor -> {"i": {item: [last_ts, stored]}, "c": {item: ts}, "p": {item: ts}}
        self._v: dict[str, dict[str, dict[str, Any]]] = {}
        self._last_ms = 0

    def learn_one(self, event: Event) -> None:
        """Record the event's items for its visitor."""
        etype = event.get("type", "")
        items = event_items(event)
        if not items:
            return
        vid = str(event["visitor_id"])
        ts = int(event["ts"])
        self._last_ms = max(self._last_ms, ts)
        state = self._v.pop(vid, None) or {"i": {}, "c": {}, "p": {}}
        self._v[vid] = state
        cap = self.max_items_per_visitor
        if etype == "add_to_cart":
            _put(state["c"], [str(it["id"]) for it in items], ts, cap)
        elif etype == "remove_from_cart":
            for it in items:
                state["c"].pop(str(it["id"]), None)
        elif etype == "purchase":
            ids = [str(it["id"]) for it in items]
            _put(state["p"], ids, ts, cap)
            for iid in ids:
                state["c"].pop(iid, None)
        w = self.weights.get(etype, 0.0)
        if w:
            stored, factor = self._decay.weight(w, ts)
            if factor is not None:
                for other in self._v.values():
                    for row in other["i"].values():
                        row[1] *= factor
            seen = state["i"]
            for it in items:
                iid = str(it["id"])
                row = seen.pop(iid, None) or [ts, 0.0]
                seen[iid] = [ts, row[1] + stored]
            while len(seen) > cap:
                del seen[next(iter(seen))]
        while len(self._v) > self.max_visitors:
            del self._v[next(iter(self._v))]

    def recommend(
        self,
        visitor_id: str,
        n: int = 20,
        exclude: Iterable[str] = (),
        now_ms: int | None = None,
    ) -> list[Candidate]:
        """The visitor's own items by recency-frequency score, best first."""
        now = self._last_ms if now_ms is None else now_ms
        seen = self._v.get(visitor_id, {}).get("i", {})
        table = {iid: row[1] for iid, row in seen.items()}
        return [Candidate(i, self._decay.current(s, now), i) for i, s in top_n(table, n, exclude)]

    @property
    def last_ms(self) -> int:
        """The time of the latest event learnt (0 before any)."""
        return self._last_ms

    def recent(self, visitor_id: str, n: int | None = None) -> list[tuple[str, int]]:
        """(item, last ts) of the visitor's most recent distinct items, newest first."""
        seen = self._v.get(visitor_id, {}).get("i", {})
        rows = [(iid, int(row[0])) for iid, row in reversed(seen.items())]
        return rows if n is None else rows[:n]

    def in_cart(self, visitor_id: str) -> list[str]:
        """Items in the visitor's cart, oldest first."""
        return list(self._v.get(visitor_id, {}).get("c", {}))

    def purchased(self, visitor_id: str) -> list[str]:
        """Items the visitor bought (the most recent `max_items_per_visitor`)."""
        return list(self._v.get(visitor_id, {}).get("p", {}))

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        per = [max(len(s["i"]), len(s["c"]), len(s["p"])) for s in self._v.values()]
        return {"max_visitors": len(self._v), "max_items_per_visitor": max(per, default=0)}

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(
            KIND,
            VERSION,
            {
                "settings": {
                    "half_life_s": self.half_life_s,
                    "weights": self.weights,
                    "max_items_per_visitor": self.max_items_per_visitor,
                    "max_visitors": self.max_visitors,
                },
                "landmark": self._decay.landmark_ms,
                "last": self._last_ms,
                "visitors": [
                    [
                        v,
                        [[i, r] for i, r in s["i"].items()],
                        list(s["c"].items()),
                        list(s["p"].items()),
                    ]
                    for v, s in self._v.items()
                ],
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> History:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._decay.landmark_ms = st["landmark"]
        model._last_ms = st["last"]
        model._v = {
            v: {
                "i": {i: list(r) for i, r in seen},
                "c": dict(map(tuple, c)),
                "p": dict(map(tuple, p)),
            }
            for v, seen, c, p in st["visitors"]
        }
        return model


def _put(table: dict[str, Any], ids: list[str], ts: int, cap: int) -> None:
    for iid in ids:
        table.pop(iid, None)
        table[iid] = ts
    while len(table) > cap:
        del table[next(iter(table))]
