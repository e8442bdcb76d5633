"""Trending items: forward-decayed behaviour counts per item, overall and per category."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.reco.base import (
    DEFAULT_WEIGHTS,
    BoundedTopK,
    Candidate,
    Event,
    ForwardDecay,
    event_items,
    item_categories,
    iter_pairs,
    pack,
    pairs,
    prune,
    scale,
    top_n,
    unpack,
)

KIND = "kairos.reco.trending"
VERSION = 1


class Trending:
    """Forward-decayed popularity, overall and per category path (every ancestor counts).

    Parameters are the settings: `half_life_s` of the decay (None: no decay, plain counts),
    `weights` per event type, and memory caps: `max_items` overall, `max_categories` tables of
    `max_items_per_category` items each; `top_k` bounds how many overall leaders are tracked.
    """

    def __init__(
        self,
        half_life_s: float | None = 6 * 3600.0,
        weights: Mapping[str, float] | None = None,
        max_items: int = 50_000,
        max_categories: int = 5_000,
        max_items_per_category: int = 200,
        top_k: int = 200,
    ) -> None:
        self.half_life_s = half_life_s
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.max_items = max_items
        self.max_categories = max_categories
        self.max_items_per_category = max_items_per_category
        self.top_k = top_k
        self._decay = ForwardDecay(half_life_s)
        self._items: dict[str, float] = {}
        self._top = BoundedTopK(top_k)
        self._cats: dict[str, dict[str, float]] = {}
        self._last_ms = 0

    def learn_one(self, event: Event) -> None:
        """Count the event's items (if its type has a weight)."""
        w = self.weights.get(event.get("type", ""), 0.0)
        if not w:
            return
        ts = int(event["ts"])
        self._last_ms = max(self._last_ms, ts)
        for item in event_items(event):
            stored, factor = self._decay.weight(w, ts)
            if factor is not None:
                self._rescale(factor)
            iid = str(item["id"])
            score = self._items.get(iid, 0.0) + stored
            self._items[iid] = score
            self._top.offer(iid, score)
            if len(self._items) > self.max_items:
                prune(self._items, int(self.max_items * 0.8))
                self._top.top = {k: v for k, v in self._top.top.items() if k in self._items}
            for cat in item_categories(item, prefixes=True):
                table = self._cats.pop(cat, None) or {}
                self._cats[cat] = table
                table[iid] = table.get(iid, 0.0) + stored
                if len(table) > self.max_items_per_category:
                    prune(table, int(self.max_items_per_category * 0.8))
            while len(self._cats) > self.max_categories:
                del self._cats[next(iter(self._cats))]

    def recommend(
        self,
        n: int = 20,
        category: str | None = None,
        exclude: Iterable[str] = (),
        now_ms: int | None = None,
    ) -> list[Candidate]:
        """Top `n` items overall, or within `category` (a path; its sub-categories count)."""
        now = self._last_ms if now_ms is None else now_ms
        if category is None:
            table, via = self._top.top, ""
        else:
            table, via = self._cats.get(category.strip("/"), {}), category
        return [
            Candidate(iid, self._decay.current(s, now), via) for iid, s in top_n(table, n, exclude)
        ]

    def score(self, item_id: str, now_ms: int | None = None) -> float:
        """Current decayed score of one item (0 if unknown)."""
        now = self._last_ms if now_ms is None else now_ms
        return self._decay.current(self._items.get(item_id, 0.0), now)

    def _rescale(self, factor: float) -> None:
        scale(self._items, factor)
        self._top.rescale(factor)
        for table in self._cats.values():
            scale(table, factor)

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_items": len(self._items),
            "max_categories": len(self._cats),
            "max_items_per_category": max((len(t) for t in self._cats.values()), default=0),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(
            KIND,
            VERSION,
            {
                "settings": self._settings(),
                "landmark": self._decay.landmark_ms,
                "last": self._last_ms,
                "items": pairs(self._items),
                "top": pairs(self._top.top),
                "floor": self._top.floor,
                "cats": [[c, pairs(t)] for c, t in self._cats.items()],
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> Trending:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._decay.landmark_ms = st["landmark"]
        model._last_ms = st["last"]
        model._items = dict(iter_pairs(st["items"]))
        model._top.top = dict(iter_pairs(st["top"]))
        model._top.floor = st["floor"]
        model._cats = {c: dict(iter_pairs(t)) for c, t in st["cats"]}
        return model

    def _settings(self) -> dict[str, Any]:
        return {
            "half_life_s": self.half_life_s,
            "weights": self.weights,
            "max_items": self.max_items,
            "max_categories": self.max_categories,
            "max_items_per_category": self.max_items_per_category,
            "top_k": self.top_k,
        }
