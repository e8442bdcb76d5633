"""The item catalog's rules: what an item is, its validation, and feed files. Pure.

A record comes from the catalog API, `kairos catalog load` (CSV or JSON-lines feeds) or what
an event says about its item (`from_event_item`); engine/store/catalog.py keeps them in Redis.
Errors name the field, and for feeds the line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec

MAX_PER_REQUEST = 1000

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Paths = Annotated[list[_Name], msgspec.Meta(max_length=32)]
# http(s) or a path on the shop's own host; never protocol-relative (`//evil.example`, or
# `/\evil.example`, which browsers read the same way)
_Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^(https?://|/(?![/\\]))")]


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
        field = where.rstrip("`")
        if field in ("url", "image") and "matching regex" in reason:
            reason = "must be an http(s) URL or a path on this site (/…, never //host)"
        return field, reason
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
