"""Catalog use-cases: the API's upsert, get and delete, and the CLI's feed loading."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.logic.catalog import ItemError, validate_item, validate_items
from engine.store.catalog import CatalogStore


class Catalog:
    """The catalog API's use-cases (made once at start-up)."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    async def upsert(self, raw_items: Sequence[Any]) -> tuple[int, list[dict[str, Any]]]:
        """Validate each item on its own and write the good ones: (written, rejections)."""
        good, rejected = validate_items(raw_items)
        return await self.store.upsert(good), rejected

    async def get(self, item_id: str) -> dict[str, Any] | None:
        return await self.store.get(item_id)

    async def delete(self, item_id: str) -> bool:
        return await self.store.delete(item_id)


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
