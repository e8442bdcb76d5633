"""Replay sources: read public behaviour logs (and our own JSON lines) as normalised events.

`load_events(path)` detects the format from the file itself and returns the events sorted by
`ts` (stable, so rows with equal times keep file order). Malformed rows raise ValueError with
the file name and line number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from engine.logic.common import Problem

Event = dict[str, Any]

FORMATS = ("taobao", "rees46", "jsonl")
TAOBAO_TYPES = {"pv": "item_view", "cart": "add_to_cart", "fav": "favorite", "buy": "purchase"}
REES46_TYPES = {"view": "item_view", "cart": "add_to_cart", "purchase": "purchase"}
REES46_HEADER = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]
REQUIRED = ("event_id", "type", "visitor_id", "ts")


def detect_format(path: str | Path) -> str:
    """The format of a file (taobao, rees46 or jsonl), from its first non-empty line."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                return "jsonl"
            fields = next(csv.reader([line]))
            if fields[:2] == REES46_HEADER[:2]:
                return "rees46"
            if len(fields) == 5 and fields[3] in TAOBAO_TYPES:
                return "taobao"
            break
    raise ValueError(
        f"{path}: cannot tell the format (expected Taobao CSV, REES46 CSV or JSON lines)"
    )


def load_events(path: str | Path, fmt: str | None = None) -> list[Event]:
    """Every event of the file, normalised, sorted by `ts` (stable)."""
    fmt = fmt or detect_format(path)
    readers = {"taobao": iter_taobao, "rees46": iter_rees46, "jsonl": iter_jsonl}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    events = list(readers[fmt](path))
    events.sort(key=lambda e: e["ts"])
    return events


def _bad(path: str | Path, lineno: int, why: str) -> ValueError:
    return ValueError(str(Problem(str(path), lineno, why)))


def _digits(value: str, what: str) -> str:
    value = value.strip()
    if not value.isdigit():
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def iter_taobao(path: str | Path) -> Iterator[Event]:
    """Taobao UserBehavior rows `user_id,item_id,category_id,behavior,unix_ts`, in file order."""
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            try:
                if len(row) != 5:
                    raise ValueError(f"expected 5 columns, got {len(row)}")
                user, item, cat, behaviour, ts = row
                etype = TAOBAO_TYPES.get(behaviour.strip())
                if etype is None:
                    raise ValueError(f"unknown behaviour {behaviour!r}")
                yield {
                    "event_id": f"tb-{lineno}",
                    "type": etype,
                    "visitor_id": "tb" + _digits(user, "user_id"),
                    "ts": int(_digits(ts, "timestamp")) * 1000,
                    "item": {
                        "id": _digits(item, "item_id"),
                        "categories": [_digits(cat, "category_id")],
                    },
                }
            except ValueError as exc:
                raise _bad(path, lineno, str(exc)) from None


def _rees46_time(value: str) -> int:
    """`2019-10-01 00:00:00 UTC` -> epoch ms."""
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"event_time without a time zone: {value!r}")
    return int(dt.timestamp() * 1000)


def iter_rees46(path: str | Path) -> Iterator[Event]:
    """REES46 e-commerce rows (with header), in file order."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != REES46_HEADER:
            raise _bad(path, 1, f"expected header {','.join(REES46_HEADER)}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                if len(row) != len(REES46_HEADER):
                    raise ValueError(f"expected {len(REES46_HEADER)} columns, got {len(row)}")
                time, kind, product, cat_id, cat_code, brand, price, user, session = row
                etype = REES46_TYPES.get(kind.strip())
                if etype is None:
                    raise ValueError(f"unknown event_type {kind!r}")
                code = cat_code.strip()
                category = code.replace(".", "/") if code else _digits(cat_id, "category_id")
                item: dict[str, Any] = {
                    "id": _digits(product, "product_id"),
                    "categories": [category],
                }
                if brand.strip():
                    item["brand"] = brand.strip()
                if price.strip():
                    item["price"] = float(price)
                uid = _digits(user, "user_id")
                event: Event = {
                    "event_id": f"r46-{lineno}",
                    "type": etype,
                    "visitor_id": uid,
                    "user_id": uid,
                    "ts": _rees46_time(time),
                    "item": item,
                }
                if etype in ("add_to_cart", "purchase"):
                    event["items"] = [{**item, "quantity": 1}]
                if session.strip():
                    event["context"] = {"session_id": session.strip()}
                yield event
            except ValueError as exc:
                raise _bad(path, lineno, str(exc)) from None


def parse_ts(value: Any) -> int:
    """Epoch ms from epoch ms (int, float or digits) or an RFC 3339 string with a time zone."""
    if isinstance(value, bool):
        raise ValueError("ts must be epoch milliseconds or an RFC 3339 time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        dt = datetime.fromisoformat(text.replace("z", "Z"))
        if dt.tzinfo is None:
            raise ValueError(f"ts without a time zone: {value!r}")
        return int(dt.timestamp() * 1000)
    raise ValueError("ts must be epoch milliseconds or an RFC 3339 time")


def iter_jsonl(path: str | Path) -> Iterator[Event]:
    """JSON-lines events already in the normalised shape; `ts` becomes epoch ms."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                missing = [k for k in REQUIRED if k not in doc]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                for key in ("event_id", "type", "visitor_id"):
                    if not isinstance(doc[key], str) or not doc[key]:
                        raise ValueError(f"{key} must be a non-empty string")
                doc["ts"] = parse_ts(doc["ts"])
                item = doc.get("item")
                if item is not None and (not isinstance(item, dict) or "id" not in item):
                    raise ValueError("item must be an object with an id")
                yield doc
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                raise _bad(path, lineno, str(exc)) from None
