"""Hook: the recommendation models that live in Redis, changed once per applied event.

Per event, as changes to shared tables (aggregated over the batch: one increment per key and
member, committed once per batch with the offset marks, so exactly once):

- catalog: what the event says about its items (name, price, categories, brand) goes to the
  item's `e` fields (engine/store/catalog.py), so an item first seen in an event is
  recommendable; an item only events mention expires `ITEM_TTL_MS` after the last one;
- trending: forward-decayed counts (engine/logic/trending.py epochs, no rescale) of items, leaf
  categories and brands for each half-life in `HALF_LIVES`, and of items per category path
  (every ancestor) for the recipes' half-life; each table bounded (`CAPS`) and expiring with
  its epoch;
- co-view: the event's items paired with the visitor's recent items (`profile.recent`, already
  updated with this event), weight 1/distance (in `keys.NEIGHBOUR_UNIT`s, so integers: as
  every neighbour table), both directions, bounded per item; plus the item
  popularity counter (`keys.popularity`, bounded per shard) used to down-weight popular
  neighbours at read time;
- co-buy: cart and purchase items paired with the rest of the cart and the recent purchases;
- next_item: directed transitions (kind `t`): for a view, cart or purchase of B, each of the
  visitor's `NEXT_ITEM_WINDOW` most recent other items A (`profile.recent`, newest first, which
  already holds B at its front) gains B with weight 1/distance in A's table, bounded per item;
  read divided by popularity^0.5 like co-view (models/reco/nextitem.py);
- repurchase (models/reco/repurchase.py): for each item of a purchase that is not the same order
  again (`Profile.bought`: under `REBUY_MIN_GAP_S` since the profile's last purchase of it), the
  counter row of every level it counts in (`*`, each path of the event item's first category,
  the item) gains what `row_increments` says (purchases; for a rebuy the rebuy and its delay's
  bin, the log delay x 1000 as an integer): `hincr`, one hash per level, expiring a year
  (categories) or 180 days (items) after the level's last purchase;
- session-kNN (models/reco/sessionknn.py): a view, favourite, cart or purchase adds its items to
  the profile's current session (`Profile.session`, named by `shared_session_name`: a hash of
  `<pid>#<seq>`, so these shared tables hold no visitor id): the session's sorted set of
  items by the time it last met each (`zmax`, bounded to `SESSION_ITEMS`), and each item's
  sorted set of sessions by their last time (`zmax`, bounded to `SESSIONS_PER_ITEM`), both
  expiring `SESSION_TTL_MS` after their last change.

Neighbour tables expire `ITEM_TTL_MS` after their last change. Bounded tables are trimmed by
the commit once they pass their cap by an eighth, not after every increment.

What one event can cost is bounded: at most `MAX_ITEMS` of its items, `MAX_CATEGORIES` of an
item's categories and `MAX_DEPTH` levels of a category path count here, and the pairs of only
the first `MAX_PAIRED` items (on top of the planner's per-event op budget).

The weights and types are the in-process learners' (models/reco), so the offline replay
measures the same scheme.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.logic.common import category_ancestors
from engine.logic.trending import HALF_LIVES, RECO_HALF_LIFE, EpochDecay
from engine.store import keys
from engine.store.catalog import CURATED, FROM_EVENTS
from engine.store.catalog import pack as catalog_pack
from engine.store.writes import Tables, Write
from models.affinity import Profile
from models.reco.base import DEFAULT_WEIGHTS, event_items
from models.reco.cooccurrence import CO_BUY_TYPES, CO_VIEW_TYPES
from models.reco.nextitem import NEXT_ITEM_TYPES, NEXT_ITEM_WINDOW
from models.reco.repurchase import LOG_SCALE, levels_of, row_increments
from models.session import shared_session_name
from streams.plan import Hook, HookContext

CAPS = {"item": 2000, "category": 500, "brand": 500, "in_category": 300, "neighbours": 100,
        "popularity": 50_000}  # popularity: per shard (keys.SHARDS of them)
CO_VIEW_WINDOW = 7
CO_BUY_WINDOW = 10
ITEM_TTL_MS = 30 * 86_400_000
MAX_ITEMS = 20
MAX_PAIRED = 10
MAX_CATEGORIES = 4
MAX_DEPTH = 6
_DECAYS = {label: EpochDecay(hl) for label, hl in HALF_LIVES.items()}
_CO_VIEW = frozenset(CO_VIEW_TYPES)
_CO_BUY = frozenset(CO_BUY_TYPES)
_NEXT_ITEM = frozenset(NEXT_ITEM_TYPES)
_KEEP = CURATED.decode()
REPURCHASE_LEVEL_TTL_MS = 365 * 86_400_000
REPURCHASE_ITEM_TTL_MS = 180 * 86_400_000
SESSION_TTL_MS = 2 * 86_400_000
SESSION_ITEMS = 20  # models/reco/sessionknn.py max_session_items
SESSIONS_PER_ITEM = 50  # models/reco/sessionknn.py sessions_per_item
#: The event's items a session-kNN step records at most (each: two `zmax`).
SESSION_PER_EVENT = 10


_KEYS_KEPT = 200_000  # items whose keys are kept (then the cache starts again)


def _cached(cache: dict[Any, Any], key: Any, make: Callable[[], Any], kept: int) -> Any:
    if len(cache) >= kept:
        cache.clear()
    got = cache[key] = make()
    return got


_trend_keys: dict[tuple[str, str, int], str] = {}


def _trend_key(label: str, dim: str, epoch: int) -> str:
    """Trending table keys by (label, dim, epoch): computed once per epoch, not per event."""
    k = _trend_keys.get((label, dim, epoch))
    if k is None:
        k = _cached(_trend_keys, (label, dim, epoch), lambda: keys.trending(label, dim, epoch),
                    256)
    return k


_ITEM_KEYS: dict[str, tuple[str, str, str, str, str, str]] = {}


def _new_item_keys(iid: str) -> tuple[str, str, str, str, str, str]:
    return _cached(_ITEM_KEYS, iid, lambda: keys.item_tables(iid), _KEYS_KEPT)


def _item_keys(iid: str) -> tuple[str, str, str, str, str, str]:
    """(co-view, co-buy, next-item, catalog, popularity, session index) keys of one item (its
    shard costs a CRC-32): kept for the items seen lately."""
    return _ITEM_KEYS.get(iid) or _new_item_keys(iid)


_KIND = {"v": 0, "b": 1, "t": 2}
#: a pair's weight 1/d at distance d, in the tables' integer unit (keys.NEIGHBOUR_UNIT)
_INV = tuple(keys.NEIGHBOUR_UNIT // d if d else 0 for d in range(max(
    CO_VIEW_WINDOW, CO_BUY_WINDOW, NEXT_ITEM_WINDOW) + 1))


def _others(ids: list[str], others: Iterable[str], window: int) -> list[str]:
    return [o for o in dict.fromkeys(others) if o not in ids][:window]


def _pairs(t: Tables, kind: str, ids: list[str], others: list[str]) -> None:
    if not others:
        return
    cap = CAPS["neighbours"]
    k = _KIND[kind]
    zincr = t.zincr
    for iid in ids[:MAX_PAIRED]:
        ki = _item_keys(iid)[k]
        for d, jid in enumerate(others, start=1):
            zincr(ki, jid, _INV[d], cap, ITEM_TTL_MS)
            zincr(_item_keys(jid)[k], iid, _INV[d], cap, ITEM_TTL_MS)


def _transitions(t: Tables, ids: list[str], before: list[str]) -> None:
    """`before` (the recent items, newest first) -> each of `ids`: the directed next_item
    credits."""
    cap = CAPS["neighbours"]
    for iid in ids[:MAX_PAIRED]:
        for d, jid in enumerate(before, start=1):
            t.zincr(_item_keys(jid)[2], iid, _INV[d], cap, ITEM_TTL_MS)


def _categories(item: Mapping[str, Any]) -> list[str]:
    return [str(c).strip("/").lower() for c in (item.get("categories") or [])[:MAX_CATEGORIES]
            if c]


def record_reco(event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None:
    reco_changes(event, profile, out.tables, pid)


class _ItemFacts:
    """What the tables need of an event's item: its leaf categories, their ancestor paths, its
    brand, and its catalog fields packed (as `engine.logic.catalog.from_event_item` and
    `engine.store.catalog.event_fields` make them). The category and brand part is worked out
    once per distinct (categories, brand) and each packed value once per distinct value (most
    events describe an item the same way, but a price may change from one event to the next)."""

    __slots__ = ("_shape", "_packed", "_whole")

    def __init__(self) -> None:
        self._shape: dict[Any, tuple[list[str], list[str], str | None, bytes | None]] = {}
        self._packed: dict[Any, bytes] = {}
        # the whole answer by (categories, brand, name, price, each value's type) for an item
        # without tags (read only by its callers)
        self._whole: dict[Any, Any] = {}

    def _pack(self, name: str, value: Any) -> bytes:
        try:
            sig = (name, type(value), value)
            got = self._packed.get(sig)
        except TypeError:  # a list (tags): not hashable
            return catalog_pack(value)
        if got is None:
            if len(self._packed) >= 100_000:
                self._packed.clear()
            got = self._packed[sig] = catalog_pack(value)
        return got

    def __call__(self, it: Mapping[str, Any]
                 ) -> tuple[list[str], list[str], str | None, list[tuple[str, bytes]]]:
        cats_raw = it.get("categories")
        brand_raw = it.get("brand")
        whole = None
        if it.get("tags") is None:
            name, price = it.get("name"), it.get("price")
            whole = (tuple(cats_raw) if cats_raw else None, brand_raw, type(brand_raw), name,
                     type(name), price, type(price))
            try:
                got = self._whole.get(whole)
            except TypeError:  # (a value that is not hashable)
                whole = got = None
            if got is not None:
                return got  # type: ignore[no-any-return]
        out = self._facts(it, cats_raw, brand_raw)
        if whole is not None:
            if len(self._whole) >= 100_000:
                self._whole.clear()
            self._whole[whole] = out
        return out

    def _facts(self, it: Mapping[str, Any], cats_raw: Any, brand_raw: Any
               ) -> tuple[list[str], list[str], str | None, list[tuple[str, bytes]]]:
        sig = (tuple(cats_raw) if cats_raw else None, brand_raw)
        shape = self._shape.get(sig)
        if shape is None:
            if len(self._shape) >= 100_000:
                self._shape.clear()
            cats = _categories(it)
            paths = list(dict.fromkeys(p for c in cats for p in category_ancestors(c)[:MAX_DEPTH]))
            brand = str(brand_raw).strip().lower() if brand_raw else None
            packed_cats = catalog_pack([str(c).strip("/").lower() for c in cats_raw]) \
                if cats_raw else None
            shape = self._shape[sig] = (cats, paths, brand, packed_cats)
        cats, paths, brand, packed_cats = shape
        # the fields of from_event_item's record, in its order (the id is the hash's key)
        fields: list[tuple[str, bytes]] = []
        pack = self._pack
        if (name := it.get("name")) is not None:
            fields.append((_F_NAME, pack("name", name)))
        if (price := it.get("price")) is not None:
            fields.append((_F_PRICE, pack("price", price)))
        if brand_raw is not None:
            fields.append((_F_BRAND, pack("brand", str(brand_raw).strip().lower())))
        if (tags := it.get("tags")) is not None:
            fields.append((_F_TAGS, catalog_pack(tags)))
        if packed_cats is not None:
            fields.append((_F_CATEGORIES, packed_cats))
        return cats, paths, brand, fields


_F_NAME, _F_PRICE, _F_BRAND, _F_TAGS, _F_CATEGORIES = (
    f"{FROM_EVENTS.decode()}.{k}" for k in ("name", "price", "brand", "tags", "categories"))


_item_facts = _ItemFacts()
_category_keys: dict[tuple[str, str, int], str] = {}


def _category_key(label: str, path: str, epoch: int) -> str:
    """`keys.trending_in_category` by (label, path, epoch), kept for the current epochs."""
    k = _category_keys.get((label, path, epoch))
    if k is None:
        k = _cached(_category_keys, (label, path, epoch),
                    lambda: keys.trending_in_category(label, path, epoch), 100_000)
    return k


_SESSIONS: dict[tuple[str, int], tuple[str, str]] = {}


def _session_keys(pid: str, profile: Profile) -> tuple[str, str]:
    """(shared name, items key) of the profile's current session (a BLAKE2b each: kept)."""
    got = _SESSIONS.get((pid, profile.session.seq))
    if got is None:
        uid = shared_session_name(pid, profile.session)
        got = _cached(_SESSIONS, (pid, profile.session.seq),
                      lambda: (uid, keys.session_items(uid)), 100_000)
    return got


def _repurchases(t: Tables, ts: int, ids: list[str], facts: list[Any], profile: Profile) -> None:
    """A purchase's repurchase counters (see the module docstring)."""
    t_s = ts // 1000
    for iid, (cats, _, _, _) in zip(ids, facts, strict=True):
        times = profile.bought.get(iid)
        if times is None or times[0] != t_s:
            continue  # the same order again (or no longer remembered)
        delay = float(t_s - times[1]) if times[1] else None
        rows = [(keys.repurchase_level(level), REPURCHASE_LEVEL_TTL_MS)
                for level in levels_of(cats[:1])[:MAX_DEPTH + 1]]
        rows.append((keys.repurchase_item(iid), REPURCHASE_ITEM_TTL_MS))
        inc = [(str(i), round(v * LOG_SCALE) if i >= 2 and i % 2 else int(v))
               for i, v in row_increments(delay).items()]
        for key, ttl in rows:
            for f, n in inc:
                t.hincr(key, f, n, ttl)


def _session_items(t: Tables, ts: int, ids: list[str], profile: Profile, pid: str) -> None:
    """The event's items into the profile's current session and each item's session index."""
    uid, k_session = _session_keys(pid, profile)
    for k, iid in enumerate(ids[:SESSION_PER_EVENT]):
        # the event's later items come later in the session (as SessionKNN.add appends them)
        t.zmax(k_session, iid, ts + k / 1000.0, SESSION_ITEMS, SESSION_TTL_MS)
        t.zmax(_item_keys(iid)[5], uid, float(ts), SESSIONS_PER_ITEM, SESSION_TTL_MS)


#: The most table changes one event can make here (what `_direct` may write without asking
#: the budget): per item its catalog fields, trending (items, categories, brand per half-life;
#: the category paths for the recipes' half-life), popularity and repurchase rows; per paired
#: item co-view, co-buy, next-item and session-kNN changes.
_PER_ITEM = 5 + len(HALF_LIVES) * (2 + MAX_CATEGORIES) + MAX_CATEGORIES * MAX_DEPTH + 1 + \
    4 * (MAX_DEPTH + 2)
_PER_PAIRED = 2 * CO_VIEW_WINDOW + 2 * CO_BUY_WINDOW + NEXT_ITEM_WINDOW


def most_ops(n_items: int) -> int:
    """An upper bound of the table changes of one event with `n_items` items."""
    return n_items * _PER_ITEM + min(n_items, MAX_PAIRED) * _PER_PAIRED + \
        2 * min(n_items, SESSION_PER_EVENT)


def reco_changes(event: Mapping[str, Any], profile: Profile, t: Tables, pid: str = "") -> None:
    """The table changes of one applied event (pure: into `t`); `pid` names the profile's
    sessions (no session-kNN changes without it).

    When the event's changes cannot pass its op budget (`most_ops`) and the batch does not
    redeliver it (`t`'s shard marks skip nothing), they are added to `t`'s aggregated tables
    directly (`_direct`: the same sums, one dict update per change instead of a call each);
    otherwise each goes through `t`'s methods, which drop what is past the budget and skip
    what a shard already has."""
    items = event_items(event)[:MAX_ITEMS]
    if not items:
        return
    etype = event.get("type", "")
    ts = int(event["ts"])
    ids = [str(it["id"]) for it in items]
    facts = [_item_facts(it) for it in items]
    if getattr(t, "_gated", True) or t.spent + most_ops(len(ids)) > t.budget:
        _per_call(t, etype, ts, ids, facts, profile, pid)
    else:
        n = _direct(t, etype, ts, ids, facts, profile, pid)
        t.spent += n
        t.ops += n
        if etype == "purchase":
            _repurchases(t, ts, ids, facts, profile)


def _per_call(t: Tables, etype: str, ts: int, ids: list[str], facts: list[Any],
              profile: Profile, pid: str) -> None:
    hset, zincr = t.hset, t.zincr
    for iid, (_, _, _, fields) in zip(ids, facts, strict=True):
        if fields:
            key = _item_keys(iid)[3]
            for f, v in fields:
                hset(key, f, v, ITEM_TTL_MS, _KEEP)
    weight = DEFAULT_WEIGHTS.get(etype, 0.0)
    if weight > 0:
        c_item, c_cat, c_brand, c_in = (CAPS["item"], CAPS["category"], CAPS["brand"],
                                        CAPS["in_category"])
        for label, dec in _DECAYS.items():
            epoch, amount = dec.increment(weight, ts)
            ttl = dec.ttl_ms
            k_item = _trend_key(label, "item", epoch)
            k_cat = _trend_key(label, "category", epoch)
            k_brand = _trend_key(label, "brand", epoch)
            in_category = label == RECO_HALF_LIFE
            for iid, (cats, paths, brand, _) in zip(ids, facts, strict=True):
                zincr(k_item, iid, amount, c_item, ttl)
                for c in cats:
                    zincr(k_cat, c, amount, c_cat, ttl)
                if brand:
                    zincr(k_brand, brand, amount, c_brand, ttl)
                if in_category:
                    for path in paths:
                        zincr(_category_key(label, path, epoch), iid, amount, c_in, ttl)
    if etype in _CO_VIEW:
        cap = CAPS["popularity"]
        for iid in ids:
            zincr(_item_keys(iid)[4], iid, 1.0, cap)
        _pairs(t, "v", ids, _others(ids, profile.recent, CO_VIEW_WINDOW))
    if etype in _CO_BUY:
        _pairs(t, "b", ids, _others(ids, [*reversed(profile.cart), *profile.purchased],
                                    CO_BUY_WINDOW))
    if etype in _NEXT_ITEM:
        _transitions(t, ids, _others(ids, profile.recent, NEXT_ITEM_WINDOW))
    if etype == "purchase":
        _repurchases(t, ts, ids, facts, profile)
    if pid and etype in _CO_VIEW and profile.session.seq:
        _session_items(t, ts, ids, profile, pid)


def _table(tables: dict[str, dict[str, Any]], cfg: dict[str, Any], key: str,
           conf: Any) -> dict[str, Any]:
    """`key`'s table in `tables`, made (with `conf`) if new, as `Tables` makes it."""
    d = tables.get(key)
    if d is None:
        d = tables[key] = {}
        cfg[key] = conf
    return d


_DECAY_CONSTANTS = [(label, dec.period_ms, dec.rate, dec.ttl_ms, label == RECO_HALF_LIFE)
                    for label, dec in _DECAYS.items()]
_trend_tables: dict[tuple[str, int], tuple[str, str, str]] = {}


def _trend_keys_of(label: str, epoch: int) -> tuple[str, str, str]:
    """(item, category, brand) trending keys of one half-life and epoch."""
    got = _trend_tables.get((label, epoch))
    if got is None:
        got = _cached(_trend_tables, (label, epoch), lambda: (
            _trend_key(label, "item", epoch), _trend_key(label, "category", epoch),
            _trend_key(label, "brand", epoch)), 256)
    return got


def _direct(t: Tables, etype: str, ts: int, ids: list[str], facts: list[Any],
            profile: Profile, pid: str) -> int:
    """`_per_call`'s catalog, trending, popularity, co-view, co-buy, next-item and session
    changes, added straight to `t`'s tables in the same order (so the same sums, and the same
    tables made with the same cap and TTL); returns how many."""
    n = 0
    s, scfg, z, zcfg = t.s, t.scfg, t.z, t.zcfg
    keys_of = [_ITEM_KEYS.get(iid) or _new_item_keys(iid) for iid in ids]
    for ks, (_, _, _, fields) in zip(keys_of, facts, strict=True):
        if fields:
            key = ks[3]
            d = s.get(key)
            if d is None:
                d = s[key] = {}
                scfg[key] = (ITEM_TTL_MS, _KEEP)
            for f, v in fields:
                d[f] = v
            n += len(fields)
    weight = DEFAULT_WEIGHTS.get(etype, 0.0)
    if weight > 0:
        c_item, c_cat, c_brand, c_in = (CAPS["item"], CAPS["category"], CAPS["brand"],
                                        CAPS["in_category"])
        for label, period, rate, ttl, in_category in _DECAY_CONSTANTS:
            epoch = ts // period  # EpochDecay.increment, inline
            amount = weight * math.exp(rate * (ts - epoch * period))
            k_item, k_cat, k_brand = _trend_keys_of(label, epoch)
            d_item = _table(z, zcfg, k_item, (c_item, ttl))
            d_cat = d_brand = None
            for iid, (cats, paths, brand, _) in zip(ids, facts, strict=True):
                d_item[iid] = d_item.get(iid, 0.0) + amount
                n += 1
                if cats:
                    if d_cat is None:
                        d_cat = _table(z, zcfg, k_cat, (c_cat, ttl))
                    for c in cats:
                        d_cat[c] = d_cat.get(c, 0.0) + amount
                    n += len(cats)
                if brand:
                    if d_brand is None:
                        d_brand = _table(z, zcfg, k_brand, (c_brand, ttl))
                    d_brand[brand] = d_brand.get(brand, 0.0) + amount
                    n += 1
                if in_category and paths:
                    for path in paths:
                        key = _category_keys.get((label, path, epoch)) or \
                            _category_key(label, path, epoch)
                        d = z.get(key)
                        if d is None:
                            d = z[key] = {}
                            zcfg[key] = (c_in, ttl)
                        d[iid] = d.get(iid, 0.0) + amount
                    n += len(paths)
    co_view = etype in _CO_VIEW
    recent: list[str] = []
    if co_view or etype in _NEXT_ITEM:
        recent = _others(ids, profile.recent, max(CO_VIEW_WINDOW, NEXT_ITEM_WINDOW))
    if co_view:
        conf = (CAPS["popularity"], 0)
        for iid, ks in zip(ids, keys_of, strict=True):
            key = ks[4]
            d = z.get(key)
            if d is None:
                d = z[key] = {}
                zcfg[key] = conf
            d[iid] = d.get(iid, 0.0) + 1.0
        n += len(ids)
        n += _direct_pairs(z, zcfg, 0, ids, keys_of, recent[:CO_VIEW_WINDOW])
    if etype in _CO_BUY:
        n += _direct_pairs(z, zcfg, 1, ids, keys_of, _others(
            ids, [*reversed(profile.cart), *profile.purchased], CO_BUY_WINDOW))
    if recent and etype in _NEXT_ITEM:
        conf = (CAPS["neighbours"], ITEM_TTL_MS)
        before = [(_ITEM_KEYS.get(j) or _new_item_keys(j))[2] for j in recent[:NEXT_ITEM_WINDOW]]
        for iid in ids[:MAX_PAIRED]:
            for w, key in zip(_INV[1:], before, strict=False):
                d = z.get(key)
                if d is None:
                    d = z[key] = {}
                    zcfg[key] = conf
                d[iid] = d.get(iid, 0.0) + w
        n += len(ids[:MAX_PAIRED]) * len(before)
    if pid and co_view and profile.session.seq:
        n += _direct_session(t, ts, ids, keys_of, profile, pid)
    return n


def _direct_pairs(z: dict[str, dict[str, float]], zcfg: dict[str, Any], k: int, ids: list[str],
                  keys_of: list[Any], others: list[str]) -> int:
    """`_pairs` added straight to the tables; returns how many changes."""
    if not others:
        return 0
    conf = (CAPS["neighbours"], ITEM_TTL_MS)
    theirs = [(_ITEM_KEYS.get(j) or _new_item_keys(j))[k] for j in others]
    paired = ids[:MAX_PAIRED]
    for iid, ks in zip(paired, keys_of, strict=False):
        key = ks[k]
        di = z.get(key)
        if di is None:
            di = z[key] = {}
            zcfg[key] = conf
        for w, jid, kj in zip(_INV[1:], others, theirs, strict=False):
            di[jid] = di.get(jid, 0.0) + w
            dj = z.get(kj)
            if dj is None:
                dj = z[kj] = {}
                zcfg[kj] = conf
            dj[iid] = dj.get(iid, 0.0) + w
    return 2 * len(paired) * len(others)


def _direct_session(t: Tables, ts: int, ids: list[str], keys_of: list[Any], profile: Profile,
                    pid: str) -> int:
    """`_session_items` added straight to the tables (`zmax`: a score only rises)."""
    uid, k_session = _session_keys(pid, profile)
    m, mcfg = t.m, t.mcfg
    ds = _table(m, mcfg, k_session, (SESSION_ITEMS, SESSION_TTL_MS))
    conf = (SESSIONS_PER_ITEM, SESSION_TTL_MS)
    at = float(ts)
    mine = ids[:SESSION_PER_EVENT]
    for k, (iid, ks) in enumerate(zip(mine, keys_of, strict=False)):
        score = ts + k / 1000.0
        old = ds.get(iid)
        if old is None or score > old:
            ds[iid] = score
        di = _table(m, mcfg, ks[5], conf)
        old = di.get(uid)
        if old is None or at > old:
            di[uid] = at
    return 2 * len(mine)


def setup(ctx: HookContext) -> Callable[[], list[Hook]]:
    return lambda: [record_reco]
