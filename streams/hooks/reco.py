"""Hook: the recommendation models that live in Redis, updated once per applied event.

Per event, as ops committed atomically with the profile (so exactly once):

- catalog: what the event says about its items (name, price, categories, brand) goes to the
  item's `e` field (engine/store/catalog.py), so an item first seen in an event is recommendable;
- trending: forward-decayed counts (engine/logic/trending.py epochs, no rescale) of items, leaf
  categories and brands for each half-life in `HALF_LIVES`, and of items per category path
  (every ancestor) for the recipes' half-life; each table bounded with ZREMRANGEBYRANK;
- co-view: the event's items paired with the visitor's recent items (`profile.recent`, already
  updated with this event), weight 1/distance, both directions, bounded per item; plus the item
  popularity counter used to down-weight popular neighbours at read time;
- co-buy: cart and purchase items paired with the rest of the cart and the recent purchases;
- next_item: directed transitions (kind `t`): for a view, cart or purchase of B, each of the
  visitor's `NEXT_ITEM_WINDOW` most recent other items A (`profile.recent`, newest first, which
  already holds B at its front) gains B with weight 1/distance in A's table, bounded per item;
  read divided by popularity^0.5 like co-view (models/reco/nextitem.py).

The weights and types are the in-process learners' (models/reco), so the offline replay
measures the same scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.logic.catalog import from_event_item
from engine.logic.common import category_ancestors
from engine.logic.trending import HALF_LIVES, RECO_HALF_LIFE, EpochDecay
from engine.store import keys
from engine.store.catalog import event_fields
from engine.store.writes import Emit, Op
from models.affinity import Profile
from models.reco.base import DEFAULT_WEIGHTS, event_items
from models.reco.cooccurrence import CO_BUY_TYPES, CO_VIEW_TYPES
from models.reco.nextitem import NEXT_ITEM_TYPES, NEXT_ITEM_WINDOW
from streams.plan import Hook, HookContext

CAPS = {"item": 2000, "category": 500, "brand": 500, "in_category": 300, "neighbours": 100}
CO_VIEW_WINDOW = 7
CO_BUY_WINDOW = 10
_DECAYS = {label: EpochDecay(hl) for label, hl in HALF_LIVES.items()}
_CO_VIEW = frozenset(CO_VIEW_TYPES)
_CO_BUY = frozenset(CO_BUY_TYPES)
_NEXT_ITEM = frozenset(NEXT_ITEM_TYPES)


def _bounded(key: str, member: str, amount: float, cap: int, ttl_ms: int | None = None
             ) -> list[Op]:
    ops = [Op("ZINCRBY", key, (amount, member)), Op("ZREMRANGEBYRANK", key, (0, -(cap + 1)))]
    if ttl_ms:
        ops.append(Op("PEXPIRE", key, (ttl_ms,)))
    return ops


def _pairs(kind: str, ids: list[str], others: Iterable[str], window: int) -> list[Op]:
    ops: list[Op] = []
    others = [o for o in dict.fromkeys(others) if o not in ids][:window]
    for iid in ids:
        for d, jid in enumerate(others, start=1):
            ops += _bounded(keys.neighbours(kind, iid), jid, 1.0 / d, CAPS["neighbours"])
            ops += _bounded(keys.neighbours(kind, jid), iid, 1.0 / d, CAPS["neighbours"])
    return ops


def _transitions(ids: list[str], recent: Iterable[str], window: int) -> list[Op]:
    """`recent` (newest first) -> each of `ids`: the directed next_item credits."""
    ops: list[Op] = []
    before = [o for o in dict.fromkeys(recent) if o not in ids][:window]
    for iid in ids:
        for d, jid in enumerate(before, start=1):
            ops += _bounded(keys.neighbours("t", jid), iid, 1.0 / d, CAPS["neighbours"])
    return ops


def reco_ops(event: Mapping[str, Any], profile: Profile) -> list[Op]:
    """The Redis ops of one applied event (pure)."""
    items = event_items(event)
    if not items:
        return []
    etype = event.get("type", "")
    ts = int(event["ts"])
    ops: list[Op] = []
    ids = [str(it["id"]) for it in items]
    for it in items:
        record = from_event_item(it)
        if record is not None:
            args = tuple(x for pair in event_fields(record) for x in pair)
            ops.append(Op("HSET", keys.catalog_item(record["id"]), args))
    weight = DEFAULT_WEIGHTS.get(etype, 0.0)
    if weight > 0:
        for label, dec in _DECAYS.items():
            epoch, amount = dec.increment(weight, ts)
            ttl = dec.ttl_ms
            for it, iid in zip(items, ids, strict=True):
                cats = [str(c).strip("/").lower() for c in it.get("categories") or [] if c]
                ops += _bounded(keys.trending(label, "item", epoch), iid, amount, CAPS["item"], ttl)
                for c in cats:
                    ops += _bounded(keys.trending(label, "category", epoch), c, amount,
                                    CAPS["category"], ttl)
                if it.get("brand"):
                    ops += _bounded(keys.trending(label, "brand", epoch),
                                    str(it["brand"]).strip().lower(), amount, CAPS["brand"], ttl)
                if label == RECO_HALF_LIFE:
                    for path in dict.fromkeys(p for c in cats for p in category_ancestors(c)):
                        ops += _bounded(keys.trending_in_category(label, path, epoch), iid, amount,
                                        CAPS["in_category"], ttl)
    if etype in _CO_VIEW:
        for iid in ids:
            ops.append(Op("HINCRBY", keys.ITEM_POPULARITY, (iid, 1)))
        ops += _pairs("v", ids, profile.recent, CO_VIEW_WINDOW)
    if etype in _CO_BUY:
        ops += _pairs("b", ids, [*reversed(profile.cart), *profile.purchased], CO_BUY_WINDOW)
    if etype in _NEXT_ITEM:
        ops += _transitions(ids, profile.recent, NEXT_ITEM_WINDOW)
    return ops


def record_reco(event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]:
    return reco_ops(event, profile)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [record_reco]
