"""The demo shop at /demo: home, category, product, cart, checkout and search pages.

Every page carries the one beacon tag and nothing else Kairos-specific: the engine's sitemap
(`config/sitemap.yaml`) tells the beacon what each page is, reads the product from its JSON-LD
and breadcrumb, counts clicks on `button.add-to-cart`, reads the GA4 `purchase` push on the
order confirmation page and finds the content zones (`#hero`, `#recommended`, ...). The cart lives
in a first-party cookie that the shop's own script (`static/shop.js`) writes. With `?consent=ask`
the tag requires consent and the pages show a privacy banner that calls `kairos('consent', ...)`.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engine.demo.catalog import Catalog, Product, load_catalog
from engine.routes import svc
from engine.services import Services

log = logging.getLogger("kairos.demo")

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent.parent / "demo"
CART_COOKIE = "kdemo_cart"
CONSENT_COOKIE = "kdemo_consent"
PAGE_SIZE = 24


class Shop:
    """The catalog and the templates, made once at start-up."""

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

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        cart = read_cart(request, self.catalog)
        # ?consent=ask: the tag gets data-require-consent and the page a privacy banner, on this
        # and later pages (a cookie remembers it; ?consent=off ends it)
        mode = request.query_params.get("consent")
        ask = mode == "ask" or (mode != "off" and request.cookies.get(CONSENT_COOKIE) == "ask")
        html = self.env.get_template(name).render(
            shop=self, top=self.catalog.categories(), cart_count=sum(q for _, q in cart),
            ask_consent=ask, **ctx
        )
        resp = HTMLResponse(html, status_code=status)
        if mode == "ask":
            resp.set_cookie(CONSENT_COOKIE, "ask", path="/demo", samesite="lax")
        elif mode == "off":
            resp.delete_cookie(CONSENT_COOKIE, path="/demo")
        return resp


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


def read_cart(request: Request, catalog: Catalog) -> list[tuple[Product, int]]:
    """The cookie `kdemo_cart` = `id.qty_id.qty`, as [(product, quantity)]."""
    out = []
    for part in request.cookies.get(CART_COOKIE, "").split("_")[:50]:
        pid, _, qty = part.partition(".")
        p = catalog.get(pid)
        if p is not None:
            out.append((p, max(1, min(99, int(qty) if qty.isdigit() else 1))))
    return out


def shop(request: Request) -> Shop:
    return svc(request).extra["demo"]  # type: ignore[no-any-return]


async def home(request: Request) -> Response:
    s = shop(request)
    cats = s.catalog.categories()
    return s.render(request, "home.html", categories=cats, hero=cats[0] if cats else None,
                    picks=s.catalog.showcase(8))


async def category(request: Request) -> Response:
    s = shop(request)
    path = request.path_params["path"].strip("/").lower().replace(" ", "_")
    items = s.catalog.in_category(path)
    if not items:
        return s.render(request, "notfound.html", 404, what="category")
    pages = max(1, math.ceil(len(items) / PAGE_SIZE))
    try:
        page = min(pages, max(1, int(request.query_params.get("page", "1"))))
    except ValueError:
        page = 1
    trail = items[0].trail[: path.count("/") + 1]
    return s.render(request, "category.html", path=path, trail=trail, label=trail[-1][1],
                    subs=s.catalog.categories(path), total=len(items),
                    items=items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], page=page, pages=pages)


async def product(request: Request) -> Response:
    s = shop(request)
    p = s.catalog.get(request.path_params["pid"])
    if p is None:
        return s.render(request, "notfound.html", 404, what="product")
    return s.render(request, "product.html", p=p, jsonld=product_jsonld(p),
                    similar=s.catalog.similar(p, 4))


async def cart(request: Request) -> Response:
    s = shop(request)
    lines = read_cart(request, s.catalog)
    total = sum(p.price * q for p, q in lines)
    return s.render(request, "cart.html", lines=lines, total=total,
                    recs=s.catalog.popular(4, exclude=[p.id for p, _ in lines]))


async def checkout(request: Request) -> Response:
    s = shop(request)
    lines = read_cart(request, s.catalog)
    if not lines:
        return RedirectResponse("/demo/cart", 303)
    return s.render(request, "checkout.html", lines=lines, total=sum(p.price * q for p, q in lines))


async def checkout_done(request: Request) -> Response:
    """The order confirmation: a GA4 `purchase` push that the sitemap's data-layer rule reads."""
    s = shop(request)
    lines = read_cart(request, s.catalog)
    total = round(sum(p.price * q for p, q in lines), 2)
    order_id = "D-" + uuid.uuid4().hex[:8].upper()
    push = {"event": "purchase", "ecommerce": {
        "transaction_id": order_id, "value": total, "currency": "USD",
        "items": [{"item_id": p.id, "item_name": p.name, "quantity": q, "price": p.price}
                  for p, q in lines]}} if lines else None
    resp = s.render(request, "done.html", lines=lines, total=total, order_id=order_id, push=push)
    resp.delete_cookie(CART_COOKIE, path="/demo")
    return resp


async def search(request: Request) -> Response:
    s = shop(request)
    q = request.query_params.get("q", "").strip()[:100]
    return s.render(request, "search.html", query=q, items=s.catalog.search(q) if q else [],
                    picks=s.catalog.popular(8))


def catalog_path(setting: str) -> Path:
    p = Path(setting).expanduser()
    return (p if p.is_absolute() else ROOT / p).resolve()


async def startup(s: Services) -> None:
    path = catalog_path(s.settings.demo_catalog)
    catalog = load_catalog(path)
    if catalog.fallback:
        log.warning("demo shop: %s not found; using a built-in 12-product catalog", path)
    s.extra["demo"] = Shop(catalog)


def routes() -> list[BaseRoute]:
    return [
        Route("/demo", home, methods=["GET"]),
        Route("/demo/", home, methods=["GET"]),
        Route("/demo/c/{path:path}", category, methods=["GET"]),
        Route("/demo/p/{pid}", product, methods=["GET"]),
        Route("/demo/cart", cart, methods=["GET"]),
        Route("/demo/checkout", checkout, methods=["GET"]),
        Route("/demo/checkout/done", checkout_done, methods=["GET"]),
        Route("/demo/search", search, methods=["GET"]),
        Mount("/demo/static", StaticFiles(directory=HERE / "static"), name="demo-static"),
    ]
