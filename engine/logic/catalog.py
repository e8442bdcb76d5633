"""The item catalog: validation, the Redis store in domain words, and feed files.

An item is one Redis hash (`engine.keys.catalog_item`): field `c` holds the curated record
(catalog API, `kairos catalog load`; msgpack), fields `e.<name>` what events said about it
(the stream hook `streams/hooks_reco.py` writes them atomically with the profile, one msgpack
value per field, so a later event that says less keeps the rest): an item first seen in an
event is recommendable at once, and the curated record wins field by field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgpack
import msgspec

from engine.store import keys

MAX_PER_REQUEST = 1000
CURATED, FROM_EVENTS = b"c", b"e"

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Paths = Annotated[list[_Name], msgspec.Meta(max_length=32)]
_Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^(https?://|/)")]


class CatalogItem(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """One item as a feed or the API sends it."""

    id: _Id
    name: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    url: _Url | None = None
    image: _Url | None = None
    price: Annotated[float, msgspec.Meta(ge=0, le=1e12)] | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    categories: _Paths | None = None
    brand: _Name | None = None
    tags: _Paths | None = None
    in_stock: bool | None = None
    created_at: str | int | None = None
    attributes: dict[str, str | int | float | bool | list[str]] | None = None


class ItemError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _humanise(exc: msgspec.ValidationError) -> tuple[str, str]:
    text = str(exc)
    if " - at `$." in text:
        reason, _, where = text.partition(" - at `$.")
        return where.rstrip("`"), reason
    if "missing required field" in text and "`" in text:
        return text.split("`")[1], "is required"
    if "unknown field" in text.lower():
        field = text.split("`")[1] if "`" in text else "item"
        return field, "is not a known field (put free fields under attributes)"
    return "item", text


def _created_ms(value: str | int) -> int:
    if isinstance(value, int):
        if not 0 <= value < 10**14:
            raise ItemError("created_at", "must be epoch milliseconds or an ISO-8601 time")
        return value
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ItemError("created_at", "must be an ISO-8601 time with a time zone") from None
    if dt.tzinfo is None:
        raise ItemError("created_at", "must carry a time zone (e.g. 2026-01-31T10:00:00Z)")
    return int(dt.timestamp() * 1000)


def validate_item(raw: Any) -> dict[str, Any]:
    """One raw item -> its record (plain dict); raises ItemError naming the field."""
    if not isinstance(raw, Mapping):
        raise ItemError("item", "must be an object")
    try:
        item = msgspec.convert(raw, CatalogItem)
    except msgspec.ValidationError as exc:
        raise ItemError(*_humanise(exc)) from None
    record: dict[str, Any] = msgspec.to_builtins(item)
    if item.categories is not None:
        cats = [c.strip("/").lower() for c in item.categories]
        for k, c in enumerate(cats):
            if not c or "//" in c:
                raise ItemError(f"categories[{k}]", "must be a path like apparel/shoes")
        record["categories"] = cats
    if item.brand is not None:
        record["brand"] = item.brand.strip().lower()
    if item.created_at is not None:
        record["created_at"] = _created_ms(item.created_at)
    return record


def validate_items(raw_items: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(valid records, errors [{index, id, field, reason}]) for a batch."""
    good, bad = [], []
    for i, raw in enumerate(raw_items):
        try:
            good.append(validate_item(raw))
        except ItemError as exc:
            iid = raw.get("id") if isinstance(raw, Mapping) else None
            bad.append({"index": i, "id": iid, "field": exc.field, "reason": exc.reason})
    return good, bad


def from_event_item(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an event's `item` (or order line) says about the item, or None if only its id."""
    record = {k: item[k] for k in ("name", "price", "brand", "tags") if item.get(k) is not None}
    if item.get("categories"):
        record["categories"] = [str(c).strip("/").lower() for c in item["categories"]]
    if "brand" in record:
        record["brand"] = str(record["brand"]).strip().lower()
    if not record:
        return None
    record["id"] = str(item["id"])
    return record


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


# Many items in one command (a pipeline of HGETALLs costs the client ~20 us per command).
# The keys are global catalog keys; on a Redis Cluster, group them by slot before calling.
_GET_MANY = """
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGETALL', k) end
return out
"""


class CatalogStore:
    """Items in Redis, in domain words."""

    def __init__(self, redis: Any) -> None:
        self.r = redis
        self._get_many = redis.register_script(_GET_MANY)

    async def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write curated records (replacing the previous curated record of each id)."""
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for rec in records:
            pipe.hset(keys.catalog_item(str(rec["id"])), CURATED, pack(dict(rec)))
            n += 1
        if n:
            await pipe.execute()
        return n

    async def get_many(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> record, for the ids that exist."""
        if not item_ids:
            return {}
        replies = await self._get_many(keys=[keys.catalog_item(i) for i in item_ids])
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


# ---------------------------------------------------------------------------- feed files

_LIST_COLUMNS = ("categories", "tags")
_KNOWN = set(CatalogItem.__struct_fields__)


def _csv_row(row: Mapping[str, str]) -> dict[str, Any]:
    """A CSV row -> a raw item: lists split on `|`, numbers and booleans parsed, unknown columns
    become attributes."""
    raw: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for col, value in row.items():
        if col is None or value is None or value == "":
            continue
        col = col.strip()
        if col in _LIST_COLUMNS:
            raw[col] = [v.strip() for v in value.split("|") if v.strip()]
        elif col == "price":
            try:
                raw[col] = float(value)
            except ValueError:
                raw[col] = value
        elif col == "in_stock":
            low = value.strip().lower()
            raw[col] = {"true": True, "1": True, "yes": True, "false": False, "0": False,
                        "no": False}.get(low, value)
        elif col == "created_at" and value.strip().isdigit():
            raw[col] = int(value)
        elif col in _KNOWN:
            raw[col] = value
        else:
            attrs[col] = value
    if attrs:
        raw["attributes"] = attrs
    return raw


def iter_feed(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw item or an ItemError) for each row of a CSV or JSON-lines file."""
    with path.open(newline="", encoding="utf-8") as f:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, ItemError("line", f"is not JSON ({exc.msg})")
        else:
            for lineno, row in enumerate(csv.DictReader(f), start=2):
                yield lineno, _csv_row(row)


def count_rows(path: Path) -> int:
    with path.open("rb") as f:
        n = sum(1 for _ in f)
    return n if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else max(0, n - 1)


def rees46_records(csv_path: Path) -> list[dict[str, Any]]:
    """The demo catalog (the demo shop's products, from the REES46 sample) as records."""
    from engine.demo.catalog import load_catalog

    out = []
    for p in load_catalog(csv_path).products.values():
        out.append({"id": p.id, "name": p.name, "price": p.price, "currency": "USD",
                    "categories": [p.category], "brand": p.brand.lower(), "in_stock": True,
                    "url": f"/demo/p/{p.id}"})
    return out


async def load_feed(store: CatalogStore, rows: Iterable[tuple[int, Any]], batch: int = 500,
                    on_row: Any = None) -> tuple[int, list[str]]:
    """Validate and upsert rows in batches; returns (items written, `line N: field: reason`)."""
    written, errors, pending = 0, [], []
    for lineno, raw in rows:
        if on_row is not None:
            on_row()
        try:
            if isinstance(raw, ItemError):
                raise raw
            pending.append(validate_item(raw))
        except ItemError as exc:
            errors.append(f"line {lineno}: {exc.field}: {exc.reason}")
        if len(pending) >= batch:
            written += await store.upsert(pending)
            pending = []
    written += await store.upsert(pending)
    return written, errors


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
