"""Session features for purchase and exit propensity, from a session's events (pure).

A session is one visitor's events with no gap longer than `SESSION_GAP` (30 minutes), as the
decisions' caps count them. `session_features(events, now)` summarises the events seen so far
(in time order, `ts` in epoch milliseconds, Kairos's event shape) as a flat dict of numbers and
strings that `PropensityModel` takes:

| feature | meaning |
|---|---|
| `pages`, `product_pages`, `distinct_products`, `other_pages` | page and item views |
| `product_seconds`, `other_seconds` | time on item pages and on other pages (gap to the next event, capped at 30 min) |
| `seconds_since_landing`, `seconds_since_last` | session age at `now`, idle time at `now` |
| `mean_gap_seconds` | mean gap between events |
| `cart_adds`, `cart_removes`, `cart_items`, `cart_value` | cart activity and what is in it |
| `searches`, `reactions` | searches; impressions/clicks/dismissals of campaigns |
| `single_page`, `bounce_like` | one page so far; one page and idle for over a minute |
| `repeat_views` | item views of an item already viewed this session |
| `purchased` | a purchase already happened this session |
| `device`, `channel`, `referrer_type`, `landing_page_type` | from the first event's context |
| `hour`, `weekday` | local to UTC (the visitor's time zone is unknown) |
| `returning` | the visitor had an earlier session (when the caller knows: `returning=`) |

`session_examples(events)` turns one finished session into training examples: after each
event, the features so far, whether a purchase followed later in the session, and whether the
session ended right after this event (the visitor left: the exit label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

SESSION_GAP_MS = 30 * 60 * 1000
_SEARCH = ("google.", "bing.", "duckduckgo.", "yahoo.", "baidu.", "yandex.", "ecosia.", "qwant.")
_SOCIAL = (
    "facebook.",
    "instagram.",
    "t.co",
    "twitter.",
    "x.com",
    "linkedin.",
    "pinterest.",
    "tiktok.",
    "reddit.",
    "youtube.",
)
_MAIL = ("mail.", "outlook.", "gmail.")
_REACTIONS = {"impression", "click", "dismiss"}


def referrer_type(referrer: str | None, own_host: str | None = None) -> str:
    """`none`, `internal`, `search`, `social`, `email`, `other` for a referrer URL."""
    if not referrer:
        return "none"
    host = (urlparse(referrer).hostname or "").lower()
    if not host:
        return "other"
    if own_host and (host == own_host or host.endswith("." + own_host)):
        return "internal"
    if any(s in host for s in _MAIL):
        return "email"
    if any(s in host for s in _SEARCH):
        return "search"
    if any(s in host for s in _SOCIAL):
        return "social"
    return "other"


def _ctx(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    c = ev.get("context")
    return c if isinstance(c, Mapping) else {}


def _utm_medium(ctx: Mapping[str, Any]) -> str | None:
    utm = ctx.get("utm")
    if isinstance(utm, Mapping) and isinstance(utm.get("medium"), str):
        return str(utm["medium"]).lower()
    return None


def session_features(
    events: Sequence[Mapping[str, Any]], now_ms: int, returning: bool | None = None
) -> dict[str, Any]:
    """The features of a session from its events so far (oldest first) at time `now_ms`."""
    if not events:
        raise ValueError("a session has at least one event")
    first = events[0]
    ctx = _ctx(first)
    url = ctx.get("url") if isinstance(ctx.get("url"), str) else None
    own_host = (urlparse(url).hostname or "").lower() if url else None
    ref = referrer_type(
        ctx.get("referrer") if isinstance(ctx.get("referrer"), str) else None, own_host
    )
    if _utm_medium(ctx) in ("email", "e-mail", "newsletter"):
        ref = "email"
    pages = product_pages = other_pages = cart_adds = cart_removes = searches = reactions = 0
    repeat_views = 0
    product_ms = other_ms = 0
    seen: set[str] = set()
    cart: dict[str, tuple[int, float]] = {}
    purchased = False
    ts = [int(e.get("ts") or now_ms) for e in events]
    for i, ev in enumerate(events):
        kind = ev.get("type")
        gap = min((ts[i + 1] if i + 1 < len(ts) else ts[i]) - ts[i], SESSION_GAP_MS)
        gap = max(gap, 0)
        item = ev.get("item") if isinstance(ev.get("item"), Mapping) else None
        if kind == "item_view":
            pages += 1
            product_pages += 1
            product_ms += gap
            iid = str(item.get("id")) if item else ""
            if iid in seen:
                repeat_views += 1
            seen.add(iid)
        elif kind == "page_view":
            pages += 1
            other_pages += 1
            other_ms += gap
        elif kind == "add_to_cart":
            cart_adds += 1
            if item:
                q, price = cart.get(str(item.get("id")), (0, float(item.get("price") or 0.0)))
                cart[str(item.get("id"))] = (q + 1, price)
        elif kind == "remove_from_cart":
            cart_removes += 1
            if item:
                cart.pop(str(item.get("id")), None)
        elif kind == "search":
            searches += 1
        elif kind == "purchase":
            purchased = True
            cart.clear()
        elif kind in _REACTIONS:
            reactions += 1
    age_s = max(now_ms - ts[0], 0) / 1000.0
    idle_s = max(now_ms - ts[-1], 0) / 1000.0
    start = datetime.fromtimestamp(ts[0] / 1000.0, tz=UTC)
    out: dict[str, Any] = {
        "pages": pages,
        "product_pages": product_pages,
        "distinct_products": len(seen),
        "other_pages": other_pages,
        "product_seconds": product_ms / 1000.0,
        "other_seconds": other_ms / 1000.0,
        "seconds_since_landing": age_s,
        "seconds_since_last": idle_s,
        "mean_gap_seconds": (ts[-1] - ts[0]) / 1000.0 / (len(ts) - 1) if len(ts) > 1 else 0.0,
        "cart_adds": cart_adds,
        "cart_removes": cart_removes,
        "cart_items": sum(q for q, _ in cart.values()),
        "cart_value": sum(q * p for q, p in cart.values()),
        "searches": searches,
        "reactions": reactions,
        "single_page": pages <= 1,
        "bounce_like": pages <= 1 and idle_s > 60.0,
        "repeat_views": repeat_views,
        "purchased": purchased,
        "device": str(ctx.get("device") or "unknown").lower()[:16],
        "channel": str(first.get("channel") or ctx.get("channel") or "web").lower()[:16],
        "referrer_type": ref,
        "landing_page_type": str(
            ctx.get("page_type") or ("product" if first.get("type") == "item_view" else "other")
        ).lower()[:16],
        "hour": start.hour,
        "weekday": start.strftime("%a").lower(),
    }
    if returning is not None:
        out["returning"] = returning
    return out


def split_sessions(events: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """One visitor's events (oldest first) cut into sessions at gaps over 30 minutes."""
    out: list[list[Mapping[str, Any]]] = []
    last = None
    for ev in events:
        t = int(ev.get("ts") or 0)
        if last is None or t - last > SESSION_GAP_MS:
            out.append([])
        out[-1].append(ev)
        last = t
    return out


def session_examples(
    events: Sequence[Mapping[str, Any]], returning: bool | None = None
) -> list[tuple[dict[str, Any], bool, bool]]:
    """(features after event i, a purchase follows in the session, the session ends at i).

    For a finished session: what the stream learns from when the session closes.
    Events after the first purchase are not examples of the purchase model's question.
    """
    out = []
    buys = [i for i, e in enumerate(events) if e.get("type") == "purchase"]
    first_buy = buys[0] if buys else None
    for i, ev in enumerate(events):
        if first_buy is not None and i >= first_buy:
            break
        x = session_features(events[: i + 1], int(ev.get("ts") or 0), returning)
        out.append((x, first_buy is not None, i == len(events) - 1))
    return out
