"""Directed item-to-item transitions: what visitors looked at right after an item (next_item).

A first-order "sequential rules" learner (Ludewig & Jannach, 2018): when a visitor interacts with
B after A, `T[A][B]` gains `1/d`, where `d` is A's position among the visitor's recent distinct
items (1 = the item just before B). Unlike co-view it is directed: only A -> B is credited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.reco.base import (
    Candidate,
    Event,
    event_items,
)
from models.reco.cooccurrence import NeighbourTables

KIND = "kairos.reco.nextitem"
VERSION = 1

#: The event types whose items' popularity is counted (the online `knp` hash counts co-view's).
POPULARITY_TYPES = ("item_view", "favorite", "add_to_cart", "purchase")
#: The event types that move an item to the front of the profile's `recent` list
#: (models/affinity.py) and count for co-view: the online hook sees the same sequence.
NEXT_ITEM_TYPES = ("item_view", "add_to_cart", "purchase")
#: How many of the recent items before B are credited (the online hook uses the same).
NEXT_ITEM_WINDOW = 3


class NextItem(NeighbourTables):
    """Counts transitions from a visitor's recent distinct items to the item of each event.

    Per visitor the learner keeps the last `recent_items` distinct items, newest first, exactly
    like the profile's `recent` list (an item seen again moves to the front). An event of a type
    in `event_types` with item B credits `T[A][B] += 1/d` for the `window` most recent items A
    other than B (`d` = 1, 2, ...). A repeated interaction with B credits again, as the online
    hook does (it only sees the updated `recent` list). Each item keeps its `max_neighbours`
    strongest successors. At read time a successor's weight is divided by its popularity (how
    many events of `popularity_types` it had, co-view's count) to the power
    `popularity_exponent`, like co-view.
    """

    KIND, VERSION = KIND, VERSION

    def __init__(
        self,
        event_types: Iterable[str] = NEXT_ITEM_TYPES,
        popularity_types: Iterable[str] = POPULARITY_TYPES,
        window: int = NEXT_ITEM_WINDOW,
        recent_items: int = 8,
        popularity_exponent: float = 0.5,
        max_neighbours: int = 50,
        max_items: int = 50_000,
        max_visitors: int = 50_000,
    ) -> None:
        self.event_types = tuple(event_types)
        self.popularity_types = tuple(popularity_types)
        self.window = window
        self.recent_items = recent_items
        self.popularity_exponent = popularity_exponent
        self.max_neighbours = max_neighbours
        self.max_items = max_items
        self.max_visitors = max_visitors
        self._types = frozenset(self.event_types)
        self._pop_types = frozenset(self.popularity_types)
        self._recent: dict[str, list[str]] = {}  # visitor -> distinct items, newest first
        self._neigh: dict[str, dict[str, float]] = {}
        self._pop: dict[str, float] = {}

    def learn_one(self, event: Event) -> None:
        """Credit the transitions from the visitor's recent items to the event's items."""
        etype = event.get("type")
        items = [str(it["id"]) for it in event_items(event)]
        if etype in self._pop_types:
            for iid in items:
                self._touch_pop(iid)
        if etype not in self._types or not items:
            return
        vid = str(event["visitor_id"])
        recent = self._recent.pop(vid, None) or []
        self._recent[vid] = recent
        for iid in reversed(items):  # the profile pushes the event's items in this order
            if iid in recent:
                recent.remove(iid)
            recent.insert(0, iid)
        del recent[self.recent_items :]
        others = [j for j in recent if j not in items][: self.window]
        for iid in items:
            for d, jid in enumerate(others, start=1):
                self._add(jid, iid, 1.0 / d)
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
        """Successors of the visitor's last `seeds` items, the most recent weighing most."""
        recent = self._recent.get(visitor_id, [])[:seeds]
        return self.similar({iid: recency_decay**k for k, iid in enumerate(recent)}, n, exclude)

    def recent(self, visitor_id: str) -> list[str]:
        """The visitor's recent distinct items, most recent first."""
        return list(self._recent.get(visitor_id, []))

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_items": max(len(self._neigh), len(self._pop)),
            "max_visitors": len(self._recent),
            "max_neighbours": max((len(t) for t in self._neigh.values()), default=0),
            "recent_items": max((len(r) for r in self._recent.values()), default=0),
        }

    def _settings(self) -> dict[str, Any]:
        return {
            "event_types": list(self.event_types),
            "popularity_types": list(self.popularity_types),
            "window": self.window,
            "recent_items": self.recent_items,
            "popularity_exponent": self.popularity_exponent,
            "max_neighbours": self.max_neighbours,
            "max_items": self.max_items,
            "max_visitors": self.max_visitors,
        }
