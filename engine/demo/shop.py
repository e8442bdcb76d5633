"""The demo shop's pages: its catalog and Jinja templates, made once at start-up.

engine/routes/demo.py serves them at /demo (cookies, query parameters, responses).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from engine.demo.catalog import Catalog, Product, load_catalog

log = logging.getLogger("kairos.demo")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class Shop:
    """The catalog and the templates."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["money"] = lambda v: f"${v:,.2f}"
        self.env.filters["jsonld"] = _jsonld

    def page(self, name: str, *, cart_count: int, ask_consent: bool, **ctx: Any) -> str:
        return self.env.get_template(name).render(
            shop=self, top=self.catalog.categories(), cart_count=cart_count,
            ask_consent=ask_consent, **ctx
        )


def _jsonld(data: Any) -> str:
    """JSON for a <script> block: `<` escaped so that no `</script>` can close it."""
    return Markup(json.dumps(data, ensure_ascii=True).replace("<", "\\u003c"))


def product_jsonld(p: Product) -> dict[str, Any]:
    return {
        "@context": "https://schema.org",
        "@type": "Product",
        "sku": p.id,
        "productID": p.id,
        "name": p.name,
        "brand": {"@type": "Brand", "name": p.brand},
        "category": " > ".join(label for _, label in p.trail),
        "offers": {"@type": "Offer", "price": f"{p.price:.2f}", "priceCurrency": "USD",
                   "availability": "https://schema.org/InStock"},
    }


def read_cart(cookie: str, catalog: Catalog) -> list[tuple[Product, int]]:
    """The cart cookie `id.qty_id.qty`, as [(product, quantity)]."""
    out = []
    for part in cookie.split("_")[:50]:
        pid, _, qty = part.partition(".")
        p = catalog.get(pid)
        if p is not None:
            out.append((p, max(1, min(99, int(qty) if qty.isdigit() else 1))))
    return out


def catalog_path(setting: str) -> Path:
    p = Path(setting).expanduser()
    return (p if p.is_absolute() else ROOT / p).resolve()


def load_shop(setting: str) -> Shop:
    """The shop on the catalog built from the REES46 sample at `setting` (the settings'
    `demo_catalog`), or on a built-in 12-product catalog when the file is missing."""
    path = catalog_path(setting)
    catalog = load_catalog(path)
    if catalog.fallback:
        log.warning("demo shop: %s not found; using a built-in 12-product catalog", path)
    return Shop(catalog)
