"""The catalog in Redis, in domain words.

An item is one Redis hash (`keys.catalog_item`): field `c` holds the curated record (catalog
API, `kairos catalog load`; msgpack), fields `e.<name>` what events said about it (the stream
hook streams/hooks/reco.py writes them atomically with the profile, one msgpack value per
field, so a later event that says less keeps the rest): an item first seen in an event is
recommendable at once, and the curated record wins field by field. Validation is
engine/logic/catalog.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from engine.store import keys
from engine.store.client import Script, is_cluster

CURATED, FROM_EVENTS = b"c", b"e"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes | None) -> dict[str, Any] | None:
    return msgpack.unpackb(blob, raw=False) if blob else None


def event_fields(record: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """(hash field, value) pairs for an event-derived record: one field each, so an event that
    says less than an earlier one keeps what the earlier one said."""
    return [(FROM_EVENTS + b"." + k.encode(), pack(v)) for k, v in record.items() if k != "id"]


def decode_hash(item_id: str, h: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    """The record to serve from an item's hash: event fields, overridden by curated ones."""
    if not h:
        return None
    prefix = FROM_EVENTS + b"."
    record: dict[str, Any] = {k[len(prefix):].decode(): unpack(v) for k, v in h.items()
                              if k.startswith(prefix)}
    curated = unpack(h.get(CURATED))
    if curated:
        record.update(curated)
    if not record:
        return None
    record["id"] = item_id
    return record


class CatalogStore:
    """Items in Redis, in domain words."""

    def __init__(self, redis: Any) -> None:
        self.r = redis
        self._get_many = Script(redis, "catalog_get_many")
        self.cluster = is_cluster(redis)

    async def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write curated records (replacing the previous curated record of each id). A curated
        item never expires (an item only events mention does: streams/hooks/reco.py)."""
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for rec in records:
            key = keys.catalog_item(str(rec["id"]))
            pipe.hset(key, CURATED, pack(dict(rec)))
            pipe.persist(key)
            n += 1
        if n:
            await pipe.execute()
        return n

    async def get_many(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> record, for the ids that exist."""
        if not item_ids:
            return {}
        ks = [keys.catalog_item(i) for i in item_ids]
        if self.cluster:
            pipe = self.r.pipeline(transaction=False)
            for k in ks:
                pipe.hgetall(k)
            replies = [[x for kv in h.items() for x in kv] for h in await pipe.execute()]
        else:
            replies = await self._get_many(ks, [])
        out = {}
        for iid, flat in zip(item_ids, replies, strict=True):
            rec = decode_hash(iid, dict(zip(flat[::2], flat[1::2], strict=True)))
            if rec is not None:
                out[iid] = rec
        return out

    async def get(self, item_id: str) -> dict[str, Any] | None:
        return (await self.get_many([item_id])).get(item_id)

    async def delete(self, item_id: str) -> bool:
        """Forget the item (it comes back, from event fields only, if events mention it)."""
        return bool(await self.r.delete(keys.catalog_item(item_id)))


class CachedCatalog:
    """Records read through a short-lived in-process cache (the recommendation path reads the
    same popular items again and again; a change shows up within `ttl_s`)."""

    def __init__(self, store: CatalogStore, ttl_s: float = 2.0, max_items: int = 50_000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def get_many(self, item_ids: Sequence[str], now_s: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        missing = []
        for iid in item_ids:
            hit = self._cache.get(iid)
            if hit is not None and hit[0] > now_s:
                if hit[1] is not None:
                    out[iid] = hit[1]
            else:
                missing.append(iid)
        if missing:
            got = await self.store.get_many(missing)
            if len(self._cache) + len(missing) > self.max_items:
                self._cache.clear()
            expires = now_s + self.ttl_s
            for iid in missing:
                rec = got.get(iid)
                self._cache[iid] = (expires, rec)
                if rec is not None:
                    out[iid] = rec
        return out
