"""Affinity: a visitor's decayed taste for categories, brands and prices, and what to show for it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from models.reco.base import (
    DEFAULT_WEIGHTS,
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

KIND = "kairos.reco.affinity"
VERSION = 1


class Affinity:
    """Per visitor, forward-decayed scores of leaf categories and brands plus a typical price.

    Also keeps the most popular items of each category and brand (forward-decayed the same way),
    so `recommend` returns the top items of the visitor's top categories and brands. Caps:
    `max_visitors`; per visitor `max_keys_per_visitor` categories and as many brands;
    `max_keys` item tables of `max_items_per_key` items. The typical price is an exponential
    moving average of log prices with factor `price_alpha`.
    """

    def __init__(
        self,
        half_life_s: float | None = 24 * 3600.0,
        weights: Mapping[str, float] | None = None,
        price_alpha: float = 0.2,
        max_visitors: int = 100_000,
        max_keys_per_visitor: int = 20,
        max_keys: int = 10_000,
        max_items_per_key: int = 100,
    ) -> None:
        self.half_life_s = half_life_s
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.price_alpha = price_alpha
        self.max_visitors = max_visitors
        self.max_keys_per_visitor = max_keys_per_visitor
        self.max_keys = max_keys
        self.max_items_per_key = max_items_per_key
        self._decay = ForwardDecay(half_life_s)
        # visitor -> [categories {cat: stored}, brands {brand: stored}, log-price ema or None]
        self._v: dict[str, list[Any]] = {}
        # "c:<path>" / "b:<brand>" -> {item: stored}
        self._items: dict[str, dict[str, float]] = {}

    def learn_one(self, event: Event) -> None:
        """Credit the event's categories, brands and price to its visitor."""
        w = self.weights.get(event.get("type", ""), 0.0)
        items = event_items(event)
        if not w or not items:
            return
        vid = str(event["visitor_id"])
        stored, factor = self._decay.weight(w, int(event["ts"]))
        if factor is not None:
            self._rescale(factor)
        state = self._v.pop(vid, None) or [{}, {}, None]
        self._v[vid] = state
        cap = int(self.max_keys_per_visitor)
        for item in items:
            iid = str(item["id"])
            keys = [f"c:{c}" for c in item_categories(item)]
            for cat in item_categories(item):
                _bump(state[0], cat, stored, cap)
            brand = item.get("brand")
            if brand:
                _bump(state[1], str(brand), stored, cap)
                keys.append(f"b:{brand}")
            for key in keys:
                table = self._items.pop(key, None) or {}
                self._items[key] = table
                table[iid] = table.get(iid, 0.0) + stored
                if len(table) > self.max_items_per_key:
                    prune(table, int(self.max_items_per_key * 0.8))
            price = item.get("price")
            if isinstance(price, int | float) and price > 0:
                lp = math.log(price)
                state[2] = lp if state[2] is None else state[2] + self.price_alpha * (lp - state[2])
        while len(self._items) > self.max_keys:
            del self._items[next(iter(self._items))]
        while len(self._v) > self.max_visitors:
            del self._v[next(iter(self._v))]

    def top_categories(self, visitor_id: str, k: int = 5) -> list[tuple[str, float]]:
        """The visitor's strongest categories with shares summing to at most 1."""
        return _shares(self._v.get(visitor_id, [{}])[0], k)

    def top_brands(self, visitor_id: str, k: int = 5) -> list[tuple[str, float]]:
        """The visitor's strongest brands with shares summing to at most 1."""
        state = self._v.get(visitor_id)
        return _shares(state[1], k) if state else []

    def typical_price(self, visitor_id: str) -> float | None:
        """Geometric moving average of the prices the visitor looked at, if any."""
        state = self._v.get(visitor_id)
        return math.exp(state[2]) if state and state[2] is not None else None

    def recommend(
        self,
        visitor_id: str,
        n: int = 20,
        exclude: Iterable[str] = (),
        categories: int = 3,
        brands: int = 2,
    ) -> list[Candidate]:
        """Top items of the visitor's top categories and brands, scored by share x popularity."""
        scores: dict[str, float] = {}
        via: dict[str, tuple[float, str]] = {}
        sources = [("c:" + c, c, s) for c, s in self.top_categories(visitor_id, categories)]
        sources += [("b:" + b, b, s) for b, s in self.top_brands(visitor_id, brands)]
        for key, label, share in sources:
            table = self._items.get(key, {})
            total = sum(table.values()) or 1.0
            for iid, s in top_n(table, n, exclude):
                v = share * s / total
                scores[iid] = scores.get(iid, 0.0) + v
                if v > via.get(iid, (0.0, ""))[0]:
                    via[iid] = (v, label)
        return [Candidate(i, s, via[i][1]) for i, s in top_n(scores, n)]

    def _rescale(self, factor: float) -> None:
        for cats, brands, _ in self._v.values():
            scale(cats, factor)
            scale(brands, factor)
        for table in self._items.values():
            scale(table, factor)

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        per = [max(len(s[0]), len(s[1])) for s in self._v.values()]
        return {
            "max_visitors": len(self._v),
            "max_keys_per_visitor": max(per, default=0),
            "max_keys": len(self._items),
            "max_items_per_key": max((len(t) for t in self._items.values()), default=0),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(
            KIND,
            VERSION,
            {
                "settings": {
                    "half_life_s": self.half_life_s,
                    "weights": self.weights,
                    "price_alpha": self.price_alpha,
                    "max_visitors": self.max_visitors,
                    "max_keys_per_visitor": self.max_keys_per_visitor,
                    "max_keys": self.max_keys,
                    "max_items_per_key": self.max_items_per_key,
                },
                "landmark": self._decay.landmark_ms,
                "visitors": [[v, pairs(c), pairs(b), p] for v, (c, b, p) in self._v.items()],
                "items": [[k, pairs(t)] for k, t in self._items.items()],
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> Affinity:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._decay.landmark_ms = st["landmark"]
        model._v = {
            v: [dict(iter_pairs(c)), dict(iter_pairs(b)), p] for v, c, b, p in st["visitors"]
        }
        model._items = {k: dict(iter_pairs(t)) for k, t in st["items"]}
        return model


def _bump(table: dict[str, float], key: str, w: float, cap: int) -> None:
    table[key] = table.get(key, 0.0) + w
    if len(table) > cap:
        prune(table, max(1, int(cap * 0.8)))


def _shares(table: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    total = sum(table.values())
    if total <= 0:
        return []
    return [(key, s / total) for key, s in top_n(table, k)]
