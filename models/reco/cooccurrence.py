"""Item-to-item co-occurrence within each visitor's recent window (co-view, co-buy)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

from models.reco.base import (
    Candidate,
    Event,
    event_items,
    iter_pairs,
    pack,
    pairs,
    prune,
    top_n,
    unpack,
)

KIND = "kairos.reco.cooccurrence"
VERSION = 1

CO_VIEW_TYPES = ("item_view", "favorite", "add_to_cart", "purchase")
CO_BUY_TYPES = ("add_to_cart", "purchase")


class NeighbourTables:
    """Bounded item -> {neighbour: weight} tables with popularity counts, read with the
    neighbours' weights divided by popularity^`popularity_exponent` (shared by co-occurrence
    and next_item). Subclasses set `_neigh`, `_pop`, `max_neighbours`, `max_items` and
    `popularity_exponent`."""

    KIND: str
    VERSION: int
    _neigh: dict[str, dict[str, float]]
    _pop: dict[str, float]
    _recent: dict[str, list[Any]]
    max_neighbours: int
    max_items: int
    max_visitors: int
    popularity_exponent: float

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _recent_row(row: Any) -> Any:
        """A stored entry of a visitor's recent list as kept in memory."""
        return row

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(
            self.KIND,
            self.VERSION,
            {
                "settings": self._settings(),
                "recent": [[v, r] for v, r in self._recent.items()],
                "neigh": [[i, pairs(t)] for i, t in self._neigh.items()],
                "pop": pairs(self._pop),
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A learner equal to the one that made `data`."""
        st = unpack(data, cls.KIND, cls.VERSION)
        model = cls(**st["settings"])
        model._recent = {v: [cls._recent_row(x) for x in r] for v, r in st["recent"]}
        model._neigh = {i: dict(iter_pairs(t)) for i, t in st["neigh"]}
        model._pop = dict(iter_pairs(st["pop"]))
        return model

    def _touch_pop(self, iid: str) -> None:
        self._pop[iid] = self._pop.pop(iid, 0.0) + 1.0
        while len(self._pop) > self.max_items:
            old = next(iter(self._pop))
            del self._pop[old]
            self._neigh.pop(old, None)

    def _add(self, iid: str, jid: str, w: float) -> None:
        table = self._neigh.pop(iid, None) or {}
        self._neigh[iid] = table
        table[jid] = table.get(jid, 0.0) + w
        if len(table) > self.max_neighbours:
            prune(table, int(self.max_neighbours * 0.8))
        while len(self._neigh) > self.max_items:
            del self._neigh[next(iter(self._neigh))]

    def neighbours(self, item_id: str, n: int = 20, exclude: Iterable[str] = ()) -> list[Candidate]:
        """The strongest neighbours of `item_id`, best first."""
        return self.similar({item_id: 1.0}, n, exclude)

    def similar(
        self, seeds: Mapping[str, float], n: int = 20, exclude: Iterable[str] = ()
    ) -> list[Candidate]:
        """Neighbours of weighted seed items; each result comes `via` its strongest seed."""
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        alpha = self.popularity_exponent
        for seed, sw in seeds.items():
            for jid, c in self._neigh.get(seed, {}).items():
                pop = self._pop.get(jid, 1.0)
                s = sw * c / (pop**alpha if alpha else 1.0)
                scores[jid] = scores.get(jid, 0.0) + s
                if s > best.get(jid, (0.0, ""))[0]:
                    best[jid] = (s, seed)
        return [Candidate(j, s, best[j][1]) for j, s in top_n(scores, n, exclude)]


class CoOccurrence(NeighbourTables):
    """Counts how often two items meet in one visitor's last `window` distinct items.

    A pair at distance `d` in the window adds `1/d` to both items' neighbour lists, which are
    kept to the `max_neighbours` strongest. At read time a neighbour's weight is divided by its
    popularity to the power `popularity_exponent` (0 gives plain co-counts). Pairs further apart
    than `window_s` seconds do not count. Only events whose type is in `event_types` count:
    use `CO_VIEW_TYPES` for co-view, `CO_BUY_TYPES` for co-buy.
    """

    KIND, VERSION = KIND, VERSION

    def __init__(
        self,
        event_types: Iterable[str] = CO_VIEW_TYPES,
        window: int = 10,
        window_s: float = 24 * 3600.0,
        popularity_exponent: float = 0.5,
        max_neighbours: int = 50,
        max_items: int = 50_000,
        max_visitors: int = 50_000,
    ) -> None:
        self.event_types = tuple(event_types)
        self.window = window
        self.window_s = window_s
        self.popularity_exponent = popularity_exponent
        self.max_neighbours = max_neighbours
        self.max_items = max_items
        self.max_visitors = max_visitors
        self._types = frozenset(self.event_types)
        self._recent: dict[str, list[list[Any]]] = {}
        self._neigh: dict[str, dict[str, float]] = {}
        self._pop: dict[str, float] = {}

    def learn_one(self, event: Event) -> None:
        """Pair the event's items with the visitor's recent ones."""
        if event.get("type") not in self._types:
            return
        vid = str(event["visitor_id"])
        ts = int(event["ts"])
        recent = self._recent.pop(vid, None) or []
        self._recent[vid] = recent
        for item in event_items(event):
            iid = str(item["id"])
            self._touch_pop(iid)
            seen = False
            for k, row in enumerate(recent):
                if row[0] == iid:
                    seen = True
                    del recent[k]
                    break
            if not seen:
                for d, (jid, tj) in enumerate(reversed(recent), start=1):
                    if (ts - tj) > self.window_s * 1000.0:
                        break
                    self._add(iid, jid, 1.0 / d)
                    self._add(jid, iid, 1.0 / d)
            recent.append([iid, ts])
            if len(recent) > self.window:
                del recent[0]
        while len(self._recent) > self.max_visitors:
            del self._recent[next(iter(self._recent))]

    def recommend(
        self,
        visitor_id: str,
        n: int = 20,
        exclude: Iterable[str] = (),
        seeds: int = 5,
        recency_decay: float = 0.7,
    ) -> list[Candidate]:
        """Neighbours of the visitor's last `seeds` items, the most recent weighing most."""
        recent = self._recent.get(visitor_id, [])
        weights = {row[0]: recency_decay**k for k, row in enumerate(reversed(recent[-seeds:]))}
        return self.similar(weights, n, exclude)

    def recent(self, visitor_id: str) -> list[str]:
        """The visitor's window, most recent first."""
        return [row[0] for row in reversed(self._recent.get(visitor_id, []))]

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_items": max(len(self._neigh), len(self._pop)),
            "max_visitors": len(self._recent),
            "max_neighbours": max((len(t) for t in self._neigh.values()), default=0),
            "window": max((len(r) for r in self._recent.values()), default=0),
        }

    @staticmethod
    def _recent_row(row: Any) -> Any:
        return list(row)  # [item, ts] rows

    def _settings(self) -> dict[str, Any]:
        return {
            "event_types": list(self.event_types),
            "window": self.window,
            "window_s": self.window_s,
            "popularity_exponent": self.popularity_exponent,
            "max_neighbours": self.max_neighbours,
            "max_items": self.max_items,
            "max_visitors": self.max_visitors,
        }
