"""Shared pieces of the recommendation learners: event helpers, forward decay, snapshots."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, cast

import msgpack

from engine.logic.common import category_ancestors

Event = Mapping[str, Any]

#: How much each behaviour counts, by normalised event type.
DEFAULT_WEIGHTS: dict[str, float] = {
    "item_view": 1.0,
    "favorite": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
}

#: Exponent above which a forward-decay landmark is moved (e^60 is about 1e26).
MAX_EXPONENT = 60.0


class Candidate(NamedTuple):
    """One recommended item: its id, a score (higher is better) and what it came via."""

    item_id: str
    score: float
    via: str = ""


class Recommender(Protocol):
    """What every learner in `models.reco` offers."""

    def learn_one(self, event: Event) -> None: ...

    def snapshot(self) -> bytes: ...

    def size(self) -> dict[str, int]: ...


def event_items(event: Event) -> list[Mapping[str, Any]]:
    """The items an event is about: `items` (cart, purchase) if present, else `item`."""
    items = event.get("items")
    if items:
        return [it for it in items if isinstance(it, Mapping) and it.get("id")]
    item = event.get("item")
    if isinstance(item, Mapping) and item.get("id"):
        return [item]
    return []


def item_categories(item: Mapping[str, Any], prefixes: bool = False) -> list[str]:
    """The category paths of an item, optionally with all their ancestors (no duplicates)."""
    cats = item.get("categories") or []
    if not prefixes:
        return [c for c in cats if c]
    out: dict[str, None] = {}
    for c in cats:
        for p in category_ancestors(c):
            out[p] = None
    return list(out)


def top_n(
    scores: Mapping[str, float], n: int, exclude: Iterable[str] = ()
) -> list[tuple[str, float]]:
    """The `n` highest-scored keys not in `exclude`; ties broken by key for determinism."""
    ex = set(exclude)
    return heapq.nsmallest(
        n, ((k, v) for k, v in scores.items() if k not in ex), key=lambda kv: (-kv[1], kv[0])
    )


def prune(table: dict[str, float], keep: int) -> None:
    """Keep the `keep` highest-valued entries of `table`, in place."""
    if len(table) <= keep:
        return
    kept = top_n(table, keep)
    table.clear()
    table.update(kept)


class ForwardDecay:
    """Exponential forward decay with a movable landmark (Cormode et al., 2009).

    A weight `w` seen at time `t` is stored as `w * exp(lam * (t - L))`; its value at `now` is
    `stored * exp(-lam * (now - L))`. Stored values share the landmark, so they rank as the decayed
    values do. When the exponent grows too large the caller rescales every stored value.
    """

    def __init__(self, half_life_s: float | None, landmark_ms: int | None = None) -> None:
        self.lam = math.log(2) / (half_life_s * 1000.0) if half_life_s else 0.0
        self.landmark_ms = landmark_ms

    def weight(self, w: float, ts_ms: int) -> tuple[float, float | None]:
        """Stored weight for `w` at `ts_ms`, and the factor to rescale old values by (or None)."""
        if self.landmark_ms is None:
            self.landmark_ms = ts_ms
        exponent = self.lam * (ts_ms - self.landmark_ms)
        factor = None
        if exponent > MAX_EXPONENT:
            factor = math.exp(-exponent)
            self.landmark_ms = ts_ms
            exponent = 0.0
        return w * math.exp(exponent), factor

    def current(self, stored: float, now_ms: int) -> float:
        """Decayed value of a stored weight at `now_ms`."""
        if self.landmark_ms is None:
            return stored
        return stored * math.exp(-self.lam * (now_ms - self.landmark_ms))


class BoundedTopK:
    """Scores that only grow, keeping a small superset of the current top `k` for fast reads."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.top: dict[str, float] = {}
        self.floor = 0.0

    def offer(self, key: str, score: float) -> None:
        """Tell the tracker that `key` now has `score`."""
        if key in self.top or score > self.floor or len(self.top) < self.k:
            self.top[key] = score
            if len(self.top) > 2 * self.k:
                prune(self.top, self.k)
                self.floor = min(self.top.values())

    def discard(self, key: str) -> None:
        """Forget `key` (evicted upstream)."""
        self.top.pop(key, None)

    def rescale(self, factor: float) -> None:
        """Multiply every tracked score by `factor`."""
        for key in self.top:
            self.top[key] *= factor
        self.floor *= factor


def scale(table: dict[str, float], factor: float) -> None:
    """Multiply every value of `table` by `factor`, in place."""
    for key in table:
        table[key] *= factor


def pack(kind: str, version: int, state: Mapping[str, Any]) -> bytes:
    """Versioned msgpack bytes for a learner's state."""
    return msgpack.packb({"kind": kind, "v": version, "state": state}, use_bin_type=True)


def unpack(data: bytes, kind: str, version: int) -> dict[str, Any]:
    """Inverse of `pack`; raises ValueError on a different kind or an unknown version."""
    doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ValueError(f"not a {kind} snapshot")
    if doc.get("v") != version:
        raise ValueError(
            f"{kind} snapshot version {doc.get('v')} is not supported (want {version})"
        )
    state: dict[str, Any] = doc["state"]
    return state


class PickledAsSnapshot:
    """Mixin: a learner pickles as its own `snapshot()` bytes and unpickles through its class's
    `restore`, so a pickle round trip is exactly the snapshot round trip (the learner
    check-suite tests both)."""

    def __getstate__(self) -> dict[str, Any]:
        return {"snapshot": cast(Any, self).snapshot()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(cast(Any, type(self)).restore(state["snapshot"]).__dict__)


def pairs(table: Mapping[str, float]) -> list[list[Any]]:
    """A dict as a list of [key, value] pairs (keeps insertion order through msgpack)."""
    return [[k, v] for k, v in table.items()]


def iter_pairs(rows: Iterable[Iterable[Any]]) -> Iterator[tuple[Any, Any]]:
    """Inverse of `pairs`."""
    for row in rows:
        k, v = row
        yield k, v
