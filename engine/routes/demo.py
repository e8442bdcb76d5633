"""The demo shop at /demo: home, category, product, cart, checkout and search pages.

Every page carries the one beacon tag and nothing else Kairos-specific: the engine's sitemap
(`config/sitemap.yaml`) tells the beacon what each page is, reads the product from its JSON-LD
and breadcrumb, counts clicks on `button.add-to-cart`, reads the GA4 `purchase` push on the
order confirmation page and finds the content zones (`#hero`, `#recommended`, ...). The cart lives
in a first-party cookie that the shop's own script (`static/shop.js`) writes. With `?consent=ask`
the tag requires consent and the pages show a privacy banner that calls `kairos('consent', ...)`.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engine.demo.shop import HERE, Shop, product_jsonld, read_cart
from engine.routes import svc

CART_COOKIE = "kdemo_cart"
CONSENT_COOKIE = "kdemo_consent"
PAGE_SIZE = 24


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    s = shop(request)
    cart = read_cart(request.cookies.get(CART_COOKIE, ""), s.catalog)
    # ?consent=ask: the tag gets data-require-consent and the page a privacy banner, on this
    # and later pages (a cookie remembers it; ?consent=off ends it)
    mode = request.query_params.get("consent")
    ask = mode == "ask" or (mode != "off" and request.cookies.get(CONSENT_COOKIE) == "ask")
    html = s.page(name, cart_count=sum(q for _, q in cart), ask_consent=ask,
                  demo_key=svc(request).demo_key, **ctx)
    resp = HTMLResponse(html, status_code=status)
    if mode == "ask":
        resp.set_cookie(CONSENT_COOKIE, "ask", path="/demo", samesite="lax")
    elif mode == "off":
        resp.delete_cookie(CONSENT_COOKIE, path="/demo")
    return resp


def shop(request: Request) -> Shop:
    return svc(request).shop


async def home(request: Request) -> Response:
    s = shop(request)
    cats = s.catalog.categories()
    return render(request, "home.html", categories=cats, hero=cats[0] if cats else None,
                  picks=s.catalog.showcase(8))


async def category(request: Request) -> Response:
    s = shop(request)
    path = request.path_params["path"].strip("/").lower().replace(" ", "_")
    items = s.catalog.in_category(path)
    if not items:
        return render(request, "notfound.html", 404, what="category")
    pages = max(1, math.ceil(len(items) / PAGE_SIZE))
    try:
        page = min(pages, max(1, int(request.query_params.get("page", "1"))))
    except ValueError:
        page = 1
    trail = items[0].trail[: path.count("/") + 1]
    return render(request, "category.html", path=path, trail=trail, label=trail[-1][1],
                  subs=s.catalog.categories(path), total=len(items),
                  items=items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], page=page, pages=pages)


async def product(request: Request) -> Response:
    s = shop(request)
    p = s.catalog.get(request.path_params["pid"])
    if p is None:
        return render(request, "notfound.html", 404, what="product")
    return render(request, "product.html", p=p, jsonld=product_jsonld(p),
                  similar=s.catalog.similar(p, 4))


async def cart(request: Request) -> Response:
    s = shop(request)
    lines = read_cart(request.cookies.get(CART_COOKIE, ""), s.catalog)
    total = sum(p.price * q for p, q in lines)
    return render(request, "cart.html", lines=lines, total=total,
                  recs=s.catalog.popular(4, exclude=[p.id for p, _ in lines]))


async def checkout(request: Request) -> Response:
    s = shop(request)
    lines = read_cart(request.cookies.get(CART_COOKIE, ""), s.catalog)
    if not lines:
        return RedirectResponse("/demo/cart", 303)
    return render(request, "checkout.html", lines=lines, total=sum(p.price * q for p, q in lines))


async def checkout_done(request: Request) -> Response:
    """The order confirmation: a GA4 `purchase` push that the sitemap's data-layer rule reads."""
    s = shop(request)
    lines = read_cart(request.cookies.get(CART_COOKIE, ""), s.catalog)
    total = round(sum(p.price * q for p, q in lines), 2)
    order_id = "D-" + uuid.uuid4().hex[:8].upper()
    push = {"event": "purchase", "ecommerce": {
        "transaction_id": order_id, "value": total, "currency": "USD",
        "items": [{"item_id": p.id, "item_name": p.name, "quantity": q, "price": p.price}
                  for p, q in lines]}} if lines else None
    resp = render(request, "done.html", lines=lines, total=total, order_id=order_id, push=push)
    resp.delete_cookie(CART_COOKIE, path="/demo")
    return resp


async def search(request: Request) -> Response:
    s = shop(request)
    q = request.query_params.get("q", "").strip()[:100]
    return render(request, "search.html", query=q, items=s.catalog.search(q) if q else [],
                  picks=s.catalog.popular(8))


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
