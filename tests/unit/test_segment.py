"""Segment's HTTP Tracking API mapped onto the Kairos event spec (engine/logic/segment.py).

The files in tests/unit/data/segment/ are what the real clients sent to a capture server on
127.0.0.1 (segment-analytics-python 2.4.0 with gzip, @segment/analytics-node 3.1.0, and
@segment/analytics-next 1.84.3 in Chromium, one call per request and batching): every
message they hold must map, and map to the right Kairos event.
"""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from engine.logic import events as spec
from engine.logic import segment as sg

DATA = Path(__file__).parent / "data" / "segment"
NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z
NOW_DT = datetime.fromtimestamp(NOW / 1000, UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def msg(**over):
    base = {"type": "track", "event": "Video Played", "anonymousId": "anon-1", "messageId": "m-1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def one(raw, endpoint="batch", now=NOW):
    """Map one message through a batch; return the Message (fails on a rejection)."""
    parsed = sg.parse({"batch": [raw]}, endpoint=endpoint, now_ms=now)
    assert not parsed.rejected, parsed.rejected
    return parsed.messages[0]


def error(raw, now=NOW):
    parsed = sg.parse({"batch": [raw]}, endpoint="batch", now_ms=now)
    assert not parsed.messages, parsed.messages
    r = parsed.rejected[0]
    return r.field, r.reason


def fixture(name):
    return json.loads((DATA / f"{name}.json").read_text())


# -- what the real clients sent ---------------------------------------------------------------
ECOM_SEQUENCE = [
    ("item_view", "sku-1"), ("add_to_cart", "sku-1"), ("remove_from_cart", "sku-1"),
    ("search", None), ("product_list_viewed", None), ("cart_viewed", None),
    ("checkout_started", None), ("purchase", None), ("video_played", None),
]


def _parse_fixture(name):
    out = []
    for req in fixture(name)["requests"]:
        endpoint = req["path"].rsplit("/", 1)[1]
        parsed = sg.parse(req["body"], endpoint=endpoint, now_ms=NOW)
        assert not parsed.rejected, (req["path"], parsed.rejected)
        out.extend(parsed.messages)
    return out


@pytest.mark.parametrize("name", ["python", "node", "next", "next_batching"])
def test_every_message_the_real_clients_sent_maps(name):
    messages = _parse_fixture(name)
    kinds = [m.kind for m in messages]
    assert kinds.count("track") == len(ECOM_SEQUENCE)
    tracks = [m.event for m in messages if m.kind == "track"]
    assert [(e.type, e.item.id if e.item else None) for e in tracks] == ECOM_SEQUENCE
    purchase = tracks[7]
    assert [(li.id, li.quantity, li.price) for li in purchase.items] == [("sku-1", 1, 89.5), ("S-9", 1, 10)]
    assert purchase.items[0].categories == ["Shoes"] and purchase.items[0].brand == "Acme"
    assert purchase.props["order_id"] == "o1" and purchase.props["event"] == "Order Completed"
    assert tracks[0].item.categories == ["Shoes/Running"] and tracks[0].item.name == "Runner"
    assert tracks[3].props["query"] == "running shoes"
    channel = {"python": "server", "node": "server"}.get(name, "web")
    assert {m.event.channel for m in messages} == {channel}
    for m in messages:  # what the stream gets back is the same event
        again, bad = spec.validate(spec.decode_events(spec.encode_events([m.event])), NOW)
        assert not bad and again[0].event_id == m.event.event_id
    # one messageId, one event id: no two messages of a client collide
    assert len({m.event.event_id for m in messages}) == len(messages)


def test_python_client_request_gzip_basic_auth_batch_sent_at():
    req = fixture("python")["requests"][0]
    assert req["path"] == "/v1/batch"
    assert req["headers"]["content-encoding"] == "gzip"
    assert sg.basic_auth_key(req["headers"]["authorization"]) == "ks_python_1"
    parsed = sg.parse(req["body"], endpoint="batch", now_ms=NOW)
    assert parsed.write_key == "ks_python_1"
    ident = parsed.messages[0]
    assert ident.kind == "identify" and ident.event.visitor_id == "anon-py-1"
    assert ident.event.user_id == "user-42" and ident.event.props == {"traits": {"email": "a@example.com", "plan": "pro"}}
    # the page and screen calls name only the user: the user's own visitor id
    page = next(m for m in parsed.messages if m.kind == "page")
    assert page.event.visitor_id == "u:user-42" and page.event.user_id == "user-42"
    assert page.event.context["url"] == "https://shop.example/docs"
    assert page.event.context["referrer"] == "https://search.example/"
    assert page.event.context["page_type"] == "Docs"
    alias = next(m for m in parsed.messages if m.kind == "alias")
    assert (alias.event.type, alias.event.visitor_id, alias.event.user_id) == ("alias", "anon-py-1", "user-42")


def test_analytics_next_page_context_zones_and_user_hash():
    messages = _parse_fixture("next")
    page = messages[0]
    assert page.kind == "page" and page.event.type == "page_view"
    assert page.zones == ("hero", "recs")
    ctx = page.event.context
    assert ctx["utm"] == {"source": "news", "medium": "email", "campaign": "spring"}
    assert ctx["device"] == "desktop" and ctx["locale"] == "en-US" and ctx["page_type"] == "Shop"
    assert ctx["url"].startswith("http://127.0.0.1:8766/?utm_source=news")
    assert ctx["library"] == {"name": "analytics.js", "version": "npm:next-1.84.3"}
    assert "kairos" not in ctx and "userAgent" not in ctx
    ident = next(m for m in messages if m.kind == "identify")
    assert ident.user_hash == "deadbeef" and ident.event.user_id == "user-42"
    # alias(userId) after identify: previousId == userId, so the device's anonymousId joins
    alias = next(m for m in messages if m.kind == "alias")
    assert alias.event.visitor_id == page.event.visitor_id and alias.event.user_id == "user-42"
    screen = messages[-1]
    assert screen.kind == "screen" and screen.event.context["screen"] == "Home"


# -- the e-commerce spec -----------------------------------------------------------------------
PRODUCT = {"product_id": "p1", "sku": "S1", "category": "Games", "brand": "Hasbro", "price": 18.99,
           "name": "Monopoly", "quantity": 1, "url": "https://x/p1"}
PRODUCTS = {"order_id": "o9", "products": [{"product_id": "p1", "price": 3, "quantity": 2},
                                           {"sku": "s2", "category": "A > B"}]}


@pytest.mark.parametrize(
    ("event", "props", "kairos"),
    [
        ("Products Searched", {"query": "blue hotpants"}, "search"),
        ("Product List Viewed", {"list_id": "l", **PRODUCTS}, "product_list_viewed"),
        ("Product List Filtered", {"list_id": "l", **PRODUCTS}, "product_list_filtered"),
        ("Promotion Viewed", {"promotion_id": "pr"}, "promotion_viewed"),
        ("Promotion Clicked", {"promotion_id": "pr"}, "promotion_clicked"),
        ("Product Clicked", PRODUCT, "product_clicked"),
        ("Product Viewed", PRODUCT, "item_view"),
        ("Product Added", PRODUCT, "add_to_cart"),
        ("Product Removed", PRODUCT, "remove_from_cart"),
        ("Cart Viewed", PRODUCTS, "cart_viewed"),
        ("Checkout Started", PRODUCTS, "checkout_started"),
        ("Checkout Step Viewed", {"step": 2}, "checkout_step_viewed"),
        ("Checkout Step Completed", {"step": 2}, "checkout_step_completed"),
        ("Payment Info Entered", {"step": 2}, "payment_info_entered"),
        ("Order Updated", PRODUCTS, "order_updated"),
        ("Order Completed", PRODUCTS, "purchase"),
        ("Order Refunded", PRODUCTS, "order_refunded"),
        ("Order Cancelled", PRODUCTS, "order_cancelled"),
        ("Coupon Entered", {"coupon_id": "c"}, "coupon_entered"),
        ("Coupon Applied", {"coupon_id": "c"}, "coupon_applied"),
        ("Coupon Denied", {"coupon_id": "c"}, "coupon_denied"),
        ("Coupon Removed", {"coupon_id": "c"}, "coupon_removed"),
        ("Product Added to Wishlist", PRODUCT, "product_added_to_wishlist"),
        ("Product Removed from Wishlist", PRODUCT, "product_removed_from_wishlist"),
        ("Wishlist Product Added to Cart", PRODUCT, "add_to_cart"),
        ("Product Shared", PRODUCT, "product_shared"),
        ("Cart Shared", PRODUCTS, "cart_shared"),
        ("Product Reviewed", PRODUCT, "product_reviewed"),
    ],
)
def test_ecommerce_spec_events(event, props, kairos):
    ev = one(msg(event=event, properties=props)).event
    assert ev.type == kairos
    assert ev.props["event"] == event
    if "products" in props:
        assert [(li.id, li.quantity, li.price, li.categories) for li in ev.items] == [
            ("p1", 2, 3, None), ("s2", 1, None, ["A/B"])]
        assert ev.item is None and ev.props["order_id"] == "o9" and "products" not in ev.props
    elif "product_id" in props:
        assert ev.item.id == "p1" and ev.item.categories == ["Games"] and ev.item.brand == "Hasbro"
        assert ev.item.price == 18.99 and ev.item.name == "Monopoly"
        for gone in ("product_id", "sku", "category", "brand", "price", "name"):
            assert gone not in ev.props
        assert ev.props["quantity"] == 1 and ev.props["url"] == "https://x/p1"
    else:
        assert ev.item is None and ev.items is None


@pytest.mark.parametrize("name", ["Product Viewed", "product_viewed", "product viewed", " PRODUCT  VIEWED "])
def test_spec_names_match_whatever_the_case_and_spacing(name):
    assert one(msg(event=name, properties={"product_id": "p"})).event.type == "item_view"


def test_sku_stands_for_a_missing_product_id_and_v1_id_on_standard_types():
    assert one(msg(event="Product Viewed", properties={"sku": "S"})).event.item.id == "S"
    assert one(msg(event="Product Added", properties={"id": 7})).event.item.id == "7"
    # on a custom event a plain `id` is not a product
    ev = one(msg(event="Video Played", properties={"id": 7, "category": "sports"})).event
    assert ev.item is None and ev.props["id"] == 7 and ev.props["category"] == "sports"


def test_order_completed_without_products_is_a_purchase_without_lines():
    ev = one(msg(event="Order Completed", properties={"order_id": "o", "total": 5, "products": []})).event
    assert ev.type == "purchase" and ev.items is None and ev.props["total"] == 5


@pytest.mark.parametrize(
    ("event", "props", "field", "reason"),
    [
        ("Product Viewed", {"name": "x"}, "properties.product_id", "(or sku) is required on 'Product Viewed'"),
        ("Product Added", {"product_id": {"a": 1}}, "properties.product_id", "must be a string"),
        ("Product Added", {"product_id": "x" * 129}, "properties.product_id", "must be at most 128 characters"),
        ("Product Viewed", {"product_id": "p", "price": "9.99"}, "properties.price", "must be a number"),
        ("Product Viewed", {"product_id": "p", "price": -1}, "properties.price", "must be >= 0"),
        ("Product Viewed", {"product_id": "p", "price": True}, "properties.price", "must be a number"),
        ("Product Viewed", {"product_id": "p", "category": ["a"]}, "properties.category", "must be a string"),
        ("Product Viewed", {"product_id": "p", "brand": 3}, "properties.brand", "must be a string"),
        ("Product Viewed", {"product_id": "p", "name": 3}, "properties.name", "must be a string"),
        ("Order Completed", {"products": {"product_id": "p"}}, "properties.products", "must be an array"),
        ("Order Completed", {"products": ["p1"]}, "properties.products[0]", "must be an object"),
        ("Order Completed", {"products": [{"product_id": "a"}, {"price": 3}]}, "properties.products[1].product_id", "(or sku) is required"),
        ("Order Completed", {"products": [{"product_id": "a", "quantity": 0}]}, "properties.products[0].quantity", "must be a whole number from 1 to 100000"),
        ("Order Completed", {"products": [{"product_id": "a", "quantity": 1.5}]}, "properties.products[0].quantity", "must be a whole number from 1 to 100000"),
        ("Order Completed", {"products": [{"product_id": "a", "price": "3"}]}, "properties.products[0].price", "must be a number"),
        ("Order Completed", {"products": [{"product_id": f"p{i}"} for i in range(201)]}, "properties.products", "must have at most 200 entries"),
        ("click", {"product_id": "p"}, "properties.decision_id", "is required on click events"),
        ("impression", {"decision_id": 5}, "properties.decision_id", "must be a string of 1 to 64 characters"),
    ],
)
def test_product_errors_name_the_field(event, props, field, reason):
    assert error(msg(event=event, properties=props)) == (field, reason)


def test_quantity_given_as_a_whole_float_is_taken():
    ev = one(msg(event="Order Completed", properties={"products": [{"product_id": "a", "quantity": 2.0}]})).event
    assert ev.items[0].quantity == 2


# -- other track calls -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kairos"),
    [
        ("Video Played", "video_played"),
        ("Signed Up!", "signed_up"),
        ("2FA enabled", "e_2fa_enabled"),
        ("注文", "custom"),
        ("a.b:c-d", "a.b:c-d"),
        ("x" * 300, "x" * 64),
        ("purchase", "purchase"),  # a Kairos type name is that type
        ("identify", "track.identify"),  # ...except these two
        ("decision", "track.decision"),
    ],
)
def test_custom_event_names(name, kairos):
    assert sg.kairos_type(name) == kairos


def test_custom_events_keep_their_name_and_properties():
    ev = one(msg(event="Video Played", properties={"video_id": "v1", "position": 30})).event
    assert ev.type == "video_played" and ev.props == {"video_id": "v1", "position": 30, "event": "Video Played"}


def test_a_track_named_after_a_kairos_reaction_is_that_reaction():
    ev = one(msg(event="click", properties={"decision_id": "d-1", "product_id": "p"})).event
    assert ev.type == "click" and ev.decision_id == "d-1" and ev.item.id == "p"
    assert "event" not in (ev.props or {})
    assert one(msg(event="conversion")).event.type == "conversion"  # needs no decision


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (msg(event=None), "event", "is required on track (the event's name)"),
        (msg(event="  "), "event", "is required on track (the event's name)"),
        (msg(event=5), "event", "is required on track (the event's name)"),
        (msg(event="x" * 257), "event", "must be at most 256 characters"),
        (msg(properties=[1]), "properties", "must be an object"),
        (msg(context="x"), "context", "must be an object"),
        (msg(integrations=[]), "integrations", "must be an object"),
        (msg(type=None), "type", "is required (track, page, screen, identify, alias or group)"),
        (msg(type="capture"), "type", "must be track, page, screen, identify, alias or group"),
        ("just a string", "message", "must be an object"),
        (msg(type="identify", event=None, traits=["plan"]), "traits", "must be an object"),
        (msg(type="group", event=None, groupId="g", traits="x"), "traits", "must be an object"),
    ],
)
def test_message_errors_name_the_field(raw, field, reason):
    assert error(raw) == (field, reason)


# -- page and screen ----------------------------------------------------------------------------
def test_page_becomes_a_page_view_with_the_page_in_its_context():
    raw = msg(type="page", event=None, name="Pricing", category="Docs",
              properties={"url": "https://ex.com/pricing?x=1", "referrer": "", "title": "Pricing",
                          "path": "/pricing", "plan": "pro"},
              context={"page": {"url": "https://ex.com/ignored", "referrer": "https://google.com/"}})
    ev = one(raw).event
    assert ev.type == "page_view"
    assert ev.context["url"] == "https://ex.com/pricing?x=1"  # the call's own properties first
    assert ev.context["referrer"] == "https://google.com/"
    assert ev.context["title"] == "Pricing" and ev.context["page_type"] == "Docs"
    assert ev.props == {"path": "/pricing", "plan": "pro", "name": "Pricing", "category": "Docs"}


def test_screen_becomes_a_page_view_named_by_the_screen():
    ev = one(msg(type="screen", event=None, name="Checkout", properties={"step": 1})).event
    assert ev.type == "page_view" and ev.context["screen"] == "Checkout"
    assert ev.context["page_type"] == "Checkout" and ev.props == {"step": 1, "name": "Checkout"}


@pytest.mark.parametrize("where", ["context", "integrations"])
def test_zones_ask_for_decisions(where):
    opts = {"zones": ["hero", "recs", "hero"]}
    raw = msg(type="page", event=None, **({"context": {"kairos": opts}} if where == "context"
                                          else {"integrations": {"Kairos": opts}}))
    assert one(raw).zones == ("hero", "recs")
    assert one(msg(type="page", event=None, context={"kairos": {"zones": "a,b"}})).zones == ("a", "b")
    assert one(msg(type="page", event=None)).zones == ()
    # only a page or a screen asks
    assert one(msg(context={"kairos": opts})).zones == ()


@pytest.mark.parametrize(
    ("zones", "reason"),
    [
        (5, "must be a list of at most 20 zone names"),
        ([f"z{i}" for i in range(21)], "must be a list of at most 20 zone names"),
        (["ok", ""], "must contain zone names of 1 to 64 characters"),
        ([7], "must contain zone names of 1 to 64 characters"),
    ],
)
def test_bad_zones(zones, reason):
    raw = msg(type="screen", event=None, name="Home", context={"kairos": {"zones": zones}})
    assert error(raw) == ("context.kairos.zones", reason)


def test_page_name_must_be_a_string():
    assert error(msg(type="page", event=None, name=5)) == ("name", "must be a string")


# -- identify, alias, group ---------------------------------------------------------------------
def test_identify_carries_the_user_and_the_traits():
    m = one(msg(type="identify", event=None, userId="u-9", traits={"plan": "gold", "age": 40}))
    assert m.event.type == "identify" and m.event.user_id == "u-9" and m.event.visitor_id == "anon-1"
    assert m.event.props == {"traits": {"plan": "gold", "age": 40}}
    assert m.user_hash is None


def test_identify_without_a_user_sets_traits_on_the_visitor():
    ev = one(msg(type="identify", event=None, traits={"newsletter": True})).event
    assert ev.user_id is None and ev.props == {"traits": {"newsletter": True}}


def test_traits_too_big_for_the_spec_keep_what_fits():
    traits = {f"t{i}": "x" * 200 for i in range(40)}
    ev = one(msg(type="identify", event=None, userId="u", traits=traits)).event
    kept = ev.props["traits"]
    assert len(msgspec.json.encode(ev.props)) <= spec.MAX_PROPS_BYTES
    assert kept["_omitted"] == 40 - (len(kept) - 1) and kept["t0"] == "x" * 200


@pytest.mark.parametrize(
    ("kairos", "integrations", "expected"),
    [
        ({"user_hash": "h-ctx"}, None, "h-ctx"),
        (None, {"Kairos": {"user_hash": "h-int"}}, "h-int"),
        ({"user_hash": "h-ctx"}, {"Kairos": {"user_hash": "h-int"}}, "h-ctx"),  # context wins
        (None, {"Kairos": True}, None),
    ],
)
def test_where_the_user_hash_travels(kairos, integrations, expected):
    raw = msg(type="identify", event=None, userId="u", integrations=integrations,
              context={"kairos": kairos} if kairos else None)
    assert one(raw).user_hash == expected


def test_bad_user_hash():
    raw = msg(type="identify", event=None, userId="u", context={"kairos": {"user_hash": 12}})
    assert error(raw) == ("context.kairos.user_hash", "must be a string of 1 to 256 characters")


def test_alias_merges_the_previous_id_into_the_user():
    ev = one(msg(type="alias", event=None, anonymousId=None, previousId="anon-7", userId="u-7")).event
    assert (ev.type, ev.visitor_id, ev.user_id) == ("alias", "anon-7", "u-7")
    assert ev.props == {"previous_id": "anon-7"}
    # previousId == userId (analytics-next after identify): the device's anonymousId joins
    ev = one(msg(type="alias", event=None, previousId="u-7", userId="u-7")).event
    assert (ev.visitor_id, ev.user_id) == ("anon-1", "u-7")
    # ... and without one, nothing new is linked (the user's own visitor)
    ev = one(msg(type="alias", event=None, anonymousId=None, previousId="u-7", userId="u-7")).event
    assert ev.visitor_id == "u:u-7"


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"userId": "u"}, "previousId", "is required on alias"),
        ({"previousId": "p"}, "userId", "is required on alias"),
        ({"previousId": "u:x", "userId": "u"}, "previousId", "must not start with 'u:' (reserved for user ids)"),
    ],
)
def test_alias_errors(over, field, reason):
    assert error(msg(type="alias", event=None, **over)) == (field, reason)


def test_group_is_a_custom_event_with_the_group():
    ev = one(msg(type="group", event=None, userId="u", groupId=42, traits={"name": "Acme"})).event
    assert ev.type == "group" and ev.props == {"group_id": "42", "traits": {"name": "Acme"}}
    assert error(msg(type="group", event=None, userId="u")) == ("groupId", "is required on group")


# -- ids -------------------------------------------------------------------------------------
def test_user_only_messages_get_the_users_own_visitor_id():
    ev = one(msg(anonymousId=None, userId="alice")).event
    assert (ev.visitor_id, ev.user_id) == ("u:alice", "alice")
    long_id = "x" * 128
    ev = one(msg(anonymousId=None, userId=long_id)).event
    assert ev.visitor_id.startswith("u:#") and len(ev.visitor_id) == 67 and ev.user_id == long_id
    assert sg.visitor_for_user(long_id) == ev.visitor_id


def test_numeric_ids_are_taken_as_strings():
    ev = one(msg(anonymousId=None, userId=1234, messageId=99)).event
    assert (ev.visitor_id, ev.user_id, ev.event_id) == ("u:1234", "1234", "99")
    # "" is no id at all: an empty anonymousId beside a userId leaves the user's visitor
    assert one(msg(anonymousId="", userId="bob")).event.visitor_id == "u:bob"


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"anonymousId": None}, "anonymousId", "or userId is required (a message needs at least one)"),
        ({"anonymousId": ""}, "anonymousId", "or userId is required (a message needs at least one)"),
        ({"anonymousId": True}, "anonymousId", "must be a string"),
        ({"anonymousId": {"id": 1}}, "anonymousId", "must be a string"),
        ({"userId": 1.5}, "userId", "must be a string"),
        ({"anonymousId": "a" * 129}, "anonymousId", "must be at most 128 characters"),
        ({"userId": "u" * 129}, "userId", "must be at most 128 characters"),
        ({"anonymousId": "u:alice"}, "anonymousId", "must not start with 'u:' (reserved for user ids)"),
        ({"messageId": ["x"]}, "messageId", "must be a string"),
    ],
)
def test_id_errors(over, field, reason):
    assert error(msg(**over)) == (field, reason)


def test_message_id_is_the_dedupe_key_normalised_to_fit():
    assert one(msg(messageId="ajs-next-1-abc")).event.event_id == "ajs-next-1-abc"
    long_id = "node-next-" + "x" * 80
    a = one(msg(messageId=long_id)).event.event_id
    assert a.startswith("m-") and len(a) == 42 and a == one(msg(messageId=long_id)).event.event_id
    assert a != one(msg(messageId=long_id + "y")).event.event_id


def test_a_message_without_message_id_gets_its_content_digest():
    base = msg(messageId=None, timestamp=iso(NOW_DT - timedelta(seconds=5)))
    first = one({**base, "sentAt": iso(NOW_DT - timedelta(seconds=1))}).event.event_id
    resent = one({**base, "sentAt": iso(NOW_DT)}).event.event_id  # a retry: only sentAt changed
    other = one({**base, "properties": {"a": 1}}).event.event_id
    assert first.startswith("h-") and first == resent and first != other


# -- time -------------------------------------------------------------------------------------
def test_clock_skew_is_corrected_with_sent_at():
    # the device's clock runs 2 hours fast; it held the event 30 s before sending
    skew = timedelta(hours=2)
    happened, sent = NOW_DT - timedelta(seconds=30) + skew, NOW_DT + skew
    ev = one(msg(timestamp=iso(happened), sentAt=iso(sent))).event
    assert ev.ts == NOW - 30_000 and ev.received_at == NOW
    # a slow clock (a day behind) likewise
    happened, sent = NOW_DT - timedelta(days=1, seconds=3), NOW_DT - timedelta(days=1)
    assert one(msg(timestamp=iso(happened), sentAt=iso(sent))).event.ts == NOW - 3_000


def test_batch_sent_at_is_the_default_and_the_messages_own_wins():
    happened = NOW_DT + timedelta(hours=5)  # fast clock
    doc = {"sentAt": iso(happened + timedelta(seconds=10)), "batch": [
        msg(messageId="a", timestamp=iso(happened)),
        msg(messageId="b", timestamp=iso(happened), sentAt=iso(happened + timedelta(seconds=1))),
    ]}
    a, b = (m.event.ts for m in sg.parse(doc, endpoint="batch", now_ms=NOW).messages)
    assert (a, b) == (NOW - 10_000, NOW - 1_000)


def test_original_timestamp_comes_before_timestamp():
    # RudderStack sends originalTimestamp (the device's time) and sentAt
    raw = msg(originalTimestamp=iso(NOW_DT - timedelta(seconds=4)), timestamp=iso(NOW_DT - timedelta(days=9)),
              sentAt=iso(NOW_DT))
    assert one(raw).event.ts == NOW - 4_000


def test_without_sent_at_the_time_is_taken_as_given():
    at = NOW_DT - timedelta(days=3)  # a server library importing history
    assert one(msg(timestamp=at.isoformat())).event.ts == NOW - 3 * 86_400_000
    assert one(msg(timestamp="2025-11-24T17:00:00+01:00")).event.ts == NOW  # offsets respected
    assert one(msg()).event.ts == NOW  # no time at all: receipt time


def test_an_event_after_its_own_sent_at_is_put_at_receipt():
    raw = msg(timestamp=iso(NOW_DT + timedelta(seconds=9)), sentAt=iso(NOW_DT))
    assert one(raw).event.ts == NOW


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"timestamp": "yesterday"}, "timestamp", "must be an ISO-8601 time string with a time zone"),
        ({"timestamp": 1764000000000}, "timestamp", "must be an ISO-8601 time string with a time zone"),
        ({"timestamp": "2025-11-24T16:00:00"}, "timestamp", "must include a time zone offset (e.g. Z or +02:00)"),
        ({"originalTimestamp": "x"}, "originalTimestamp", "must be an ISO-8601 time string with a time zone"),
        ({"timestamp": "1999-12-31T00:00:00Z"}, "timestamp", "is before the year 2000"),
        ({"timestamp": iso(NOW_DT + timedelta(hours=25))}, "timestamp",
         "is more than 24 hours in the future (and no sentAt to correct it)"),
        ({"timestamp": iso(NOW_DT), "sentAt": "soon"}, "sentAt", "must be an ISO-8601 time string with a time zone"),
    ],
)
def test_time_errors(over, field, reason):
    assert error(msg(**over)) == (field, reason)


def test_a_far_future_device_clock_is_fine_with_sent_at():
    fast = NOW_DT + timedelta(days=400)
    assert one(msg(timestamp=iso(fast), sentAt=iso(fast + timedelta(seconds=2)))).event.ts == NOW - 2000


# -- context and channel ------------------------------------------------------------------------
def test_context_maps_campaign_device_os_app_locale_and_drops_the_rest():
    context = {
        "campaign": {"name": "spring", "source": "news", "medium": "email", "term": "shoes", "content": "a", "x": 1},
        "device": {"type": "ios", "model": "iPhone14,2", "id": "dev-1", "advertisingId": "ad-1"},
        "os": {"name": "iOS", "version": "17.1"},
        "app": {"name": "Shop", "version": "2.1", "build": "210", "namespace": "com.x"},
        "locale": "fr-FR", "timezone": "Europe/Paris", "ip": "203.0.113.5",
        "location": {"city": "Paris", "country": "France", "latitude": 48.8, "speed": 0},
        "library": {"name": "analytics-swift", "version": "1.5"},
        "network": {"wifi": True}, "screen": {"width": 390}, "traits": {"email": "x"},
        "userAgent": "Mozilla/5.0 (iPhone)",
    }
    ev = one(msg(context=context)).event
    assert ev.channel == "app"
    assert ev.context == {
        "locale": "fr-FR", "timezone": "Europe/Paris", "device": "mobile",
        "utm": {"source": "news", "medium": "email", "campaign": "spring", "term": "shoes", "content": "a"},
        "os": {"name": "iOS", "version": "17.1"}, "app": {"name": "Shop", "version": "2.1", "build": "210"},
        "library": {"name": "analytics-swift", "version": "1.5"},
        "location": {"city": "Paris", "country": "France", "latitude": 48.8},
    }


@pytest.mark.parametrize(
    ("context", "device"),
    [
        ({"device": {"type": "ios", "model": "iPad13,4"}}, "tablet"),
        ({"device": {"type": "android"}}, "mobile"),
        ({"device": {"type": "tablet"}}, "tablet"),
        ({"userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari"}, "mobile"),
        ({"userAgent": "Mozilla/5.0 (Linux; Android 13; SM-X700) Safari"}, "tablet"),
        ({"userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120"}, "desktop"),
        ({"userAgentData": {"mobile": True}}, "mobile"),
        ({}, None),
    ],
)
def test_device_kind(context, device):
    assert sg.kairos_context(context).get("device") == device


@pytest.mark.parametrize(
    ("context", "channel"),
    [
        ({"library": {"name": "analytics.js"}}, "web"),
        ({"library": {"name": "@segment/analytics-next"}}, "web"),
        ({"library": {"name": "RudderLabs JavaScript SDK"}}, "web"),
        ({"library": {"name": "@jitsu/js"}}, "web"),
        ({"library": {"name": "analytics-ios"}}, "app"),
        ({"library": {"name": "analytics-kotlin"}}, "app"),
        ({"library": {"name": "@segment/analytics-react-native"}}, "app"),
        ({"library": {"name": "com.rudderstack.android.sdk.core"}}, "app"),
        ({"library": {"name": "analytics-python"}}, "server"),
        ({"library": {"name": "@segment/analytics-node"}}, "server"),
        ({"library": {"name": "analytics-go"}}, "server"),
        ({"library": {"name": "analytics-java"}}, "server"),
        ({"library": {"name": "mystery"}}, None),
        ({}, None),
        ({"os": {"name": "Android"}, "library": {"name": "analytics-python"}}, "app"),
        ({"device": {"type": "atm"}, "library": {"name": "analytics-python"}}, "atm"),
        ({"device": {"type": "kiosk"}, "library": {"name": "analytics.js"}}, "kiosk"),
    ],
)
def test_channel_from_library_and_device(context, channel):
    assert sg.channel_of(context) == channel


def test_channel_option_overrides_and_is_checked():
    raw = msg(context={"library": {"name": "analytics.js"}, "kairos": {"channel": "kiosk"}})
    assert one(raw).event.channel == "kiosk"
    bad = msg(context={"kairos": {"channel": "Kiosk #3"}})
    assert error(bad)[0] == "context.kairos.channel"


def test_long_strings_are_capped_and_the_context_fits_the_spec():
    context = {"page": {"url": "https://ex.com/" + "a" * 5000, "title": "t" * 3000, "referrer": "r" * 3000},
               "locale": "en-US"}
    ev = one(msg(context=context)).event
    assert len(ev.context["url"]) == 1024
    assert len(msgspec.json.encode(ev.context)) <= spec.MAX_CONTEXT_BYTES


def test_properties_too_big_for_the_spec_keep_what_fits():
    props = {"small": 1, "big": "x" * 5000, "also": 2}
    ev = one(msg(properties=props)).event
    assert ev.props == {"small": 1, "also": 2, "event": "Video Played", "_omitted": 1}


# -- batches ----------------------------------------------------------------------------------
def test_one_bad_message_does_not_drop_the_others():
    doc = {"batch": [
        msg(messageId="a"),
        msg(messageId="b", event="Product Viewed", properties={"price": 3}),
        "nope",
        msg(messageId="d", type="identify", event=None, userId="u"),
        msg(messageId="e", anonymousId=None),
    ]}
    parsed = sg.parse(doc, endpoint="batch", now_ms=NOW)
    assert [m.event.event_id for m in parsed.messages] == ["a", "d"]
    assert [m.index for m in parsed.messages] == [0, 3]
    assert [(r.index, r.field) for r in parsed.rejected] == [
        (1, "properties.product_id"), (2, "message"), (4, "anonymousId")]
    status, body = sg.answer(parsed)
    assert status == 200 and body["success"] is True and body["accepted"] == 2
    assert body["rejected"][0] == {"index": 1, "field": "properties.product_id",
                                   "reason": "(or sku) is required on 'Product Viewed'"}


def test_nothing_usable_is_a_400_naming_the_field():
    parsed = sg.parse({"batch": [msg(anonymousId=None)]}, endpoint="batch", now_ms=NOW)
    status, body = sg.answer(parsed)
    assert status == 400 and body["success"] is False and body["field"] == "anonymousId"
    assert body["error"] == "anonymousId or userId is required (a message needs at least one)"


def test_the_route_can_refuse_single_messages_and_keep_the_rest():
    doc = {"batch": [msg(messageId="a", userId="alice"), "bad", msg(messageId="c", userId="bob")]}
    parsed = sg.parse(doc, endpoint="batch", now_ms=NOW)
    hashless = {m.index: ("userId", "needs a valid context.kairos.user_hash with a public key")
                for m in parsed.messages if m.event.user_id == "alice"}
    refused = sg.refuse(parsed, hashless)
    assert [m.event.event_id for m in refused.messages] == ["c"]
    assert [(r.index, r.field) for r in refused.rejected] == [(0, "userId"), (1, "message")]
    assert sg.refuse(parsed, {}) is parsed
    everything = sg.refuse(parsed, {0: ("userId", "x"), 2: ("userId", "x")})
    assert sg.answer(everything)[0] == 400


def test_batch_context_and_integrations_are_defaults_of_each_message():
    doc = {"context": {"device": {"type": "atm"}, "locale": "de-DE"},
           "integrations": {"Kairos": {"user_hash": "h"}},
           "batch": [msg(messageId="a", userId="u", context={"locale": "fr-FR"}), msg(messageId="b")]}
    a, b = sg.parse(doc, endpoint="batch", now_ms=NOW).messages
    assert (a.event.channel, a.event.context["locale"], a.user_hash) == ("atm", "fr-FR", "h")
    assert (b.event.channel, b.event.context["locale"]) == ("atm", "de-DE")


def test_a_message_over_32_kb_is_rejected_alone():
    doc = {"batch": [msg(messageId="a"), msg(messageId="b", properties={"blob": "x" * 33_000})]}
    parsed = sg.parse(doc, endpoint="batch", now_ms=NOW)
    assert [m.event.event_id for m in parsed.messages] == ["a"]
    assert parsed.rejected[0].field == "message"
    assert parsed.rejected[0].reason.startswith("must be at most 32768 bytes as JSON")


@pytest.mark.parametrize(
    ("doc", "status", "field"),
    [
        ([msg()], 400, "body"),
        ({"events": [msg()]}, 400, "batch"),
        ({"batch": msg()}, 400, "batch"),
        ({"batch": []}, 400, "batch"),
        ({"batch": [msg()] * (sg.MAX_BATCH_MESSAGES + 1)}, 413, "batch"),
        ({"batch": [msg()], "context": "x"}, 400, "context"),
        ({"batch": [msg()], "integrations": 1}, 400, "integrations"),
    ],
)
def test_bad_batch_bodies(doc, status, field):
    with pytest.raises(spec.BodyError) as exc:
        sg.parse(doc, endpoint="batch", now_ms=NOW)
    assert (exc.value.status, exc.value.field) == (status, field)


def test_write_key_in_the_body():
    assert sg.parse({"batch": [msg()], "writeKey": "kp_1"}, endpoint="b", now_ms=NOW).write_key == "kp_1"
    assert sg.parse({**msg(), "writeKey": "kp_2"}, endpoint="t", now_ms=NOW).write_key == "kp_2"
    assert sg.parse({"batch": [msg()]}, endpoint="batch", now_ms=NOW).write_key is None


# -- single-message endpoints -----------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "kind"), [("track", "track"), ("t", "track"), ("page", "page"),
                                               ("p", "page"), ("screen", "screen"), ("s", "screen"),
                                               ("identify", "identify"), ("i", "identify"),
                                               ("alias", "alias"), ("a", "alias"),
                                               ("group", "group"), ("g", "group")])
def test_the_endpoint_says_the_type(endpoint, kind):
    raw = {"anonymousId": "x", "event": "E", "previousId": "p", "userId": "u", "groupId": "g"}
    parsed = sg.parse(raw, endpoint=endpoint, now_ms=NOW)
    assert [m.kind for m in parsed.messages] == [kind]


def test_a_type_that_contradicts_the_endpoint_is_refused():
    parsed = sg.parse(msg(type="page"), endpoint="track", now_ms=NOW)
    assert [(r.index, r.field, r.reason) for r in parsed.rejected] == [
        (0, "type", "must be track on this endpoint (or left out)")]
    assert sg.answer(parsed)[0] == 400


def test_unknown_endpoint():
    with pytest.raises(spec.BodyError) as exc:
        sg.parse(msg(), endpoint="capture", now_ms=NOW)
    assert exc.value.status == 404


# -- bodies and keys ----------------------------------------------------------------------------
def test_gzip_bodies_are_inflated():
    doc = {"batch": [msg()], "sentAt": iso(NOW_DT)}
    body = gzip.compress(json.dumps(doc).encode())
    assert sg.decode_body(body, endpoint="batch", media_type="application/json", content_encoding="gzip") == doc
    assert sg.decode_body(json.dumps(doc).encode(), endpoint="b", media_type="text/plain") == doc


def test_a_gzip_bomb_stops_at_the_limit():
    body = gzip.compress(b'{"batch": ["' + b"x" * (2 * sg.MAX_BATCH_BYTES) + b'"]}')
    assert len(body) < sg.MAX_BATCH_BYTES
    with pytest.raises(spec.BodyError) as exc:
        sg.decode_body(body, endpoint="batch", content_encoding="gzip")
    assert (exc.value.status, exc.value.field) == (413, "body")


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "field"),
    [
        (b"not gzip", {"content_encoding": "gzip"}, 400, "body"),
        (gzip.compress(b"{}")[:-6], {"content_encoding": "gzip"}, 400, "body"),
        (b"{}", {"content_encoding": "br"}, 415, "content-encoding"),
        (b"{}", {"media_type": "application/xml"}, 415, "content-type"),
        (b'{"a": "\xff"}', {}, 400, "body"),
        (b"{nope", {}, 400, "body"),
        (b"x" * (sg.MAX_BATCH_BYTES + 1), {}, 413, "body"),
    ],
)
def test_bad_bodies(body, kwargs, status, field):
    with pytest.raises(spec.BodyError) as exc:
        sg.decode_body(body, endpoint="batch", **kwargs)
    assert (exc.value.status, exc.value.field) == (status, field)


def test_single_message_endpoints_take_32_kb():
    assert sg.body_limit("track") == sg.MAX_MESSAGE_BYTES and sg.body_limit("batch") == sg.MAX_BATCH_BYTES
    with pytest.raises(spec.BodyError) as exc:
        sg.decode_body(b"x" * (sg.MAX_MESSAGE_BYTES + 1), endpoint="t")
    assert exc.value.status == 413


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Basic " + base64.b64encode(b"kp_abc:").decode(), "kp_abc"),
        ("basic " + base64.b64encode(b"ks_x:ignored").decode(), "ks_x"),
        ("Basic " + base64.b64encode(b":").decode(), None),
        ("Bearer kp_abc", None),
        ("Basic !!!", None),
        ("Basic", None),
        ("", None),
        (None, None),
    ],
)
def test_basic_auth_key(header, key):
    assert sg.basic_auth_key(header) == key


def test_the_paths_mounted_and_the_ones_preflights_allow_the_retry_header_on():
    paths = dict(sg.api_paths())
    assert len(paths) == 2 * len(sg.ENDPOINTS)
    assert paths["/v1/batch"] == "batch" and paths["/segment/v1/b"] == "b"
    for path in ("/v1/t", "/v1/import", "/segment/v1/g", "/v1/m", "/segment/v1/m"):
        assert sg.is_api_path(path), path
    for path in ("/v1/events", "/v1/decide", "/segment/v2/t", "/x/v1/t", "/v1/t/x", "/t"):
        assert not sg.is_api_path(path), path


def test_write_key_of_any_document():
    assert sg.write_key({"writeKey": "kp_x"}) == "kp_x"
    for doc in ({}, {"writeKey": ""}, {"writeKey": 3}, [], "kp_x", None):
        assert sg.write_key(doc) is None


def test_the_trust_rules_in_segment_words():
    """What the tracking flow does with a public key: each message's event carries its
    user_hash to engine/logic/trust.py, whose refusals come back named as Segment names them."""
    from engine.logic import trust
    from engine.logic.access import PUBLIC_KEY_SCOPES, Principal

    secret = "s3cret"
    ok_hash = hmac_hex(secret, "alice")
    doc = {"batch": [
        msg(messageId="a", userId="alice"),  # no hash
        msg(messageId="b", userId="alice", context={"kairos": {"user_hash": "f" * 64}}),
        msg(messageId="c", userId="alice", anonymousId=None,
            context={"kairos": {"user_hash": ok_hash}}),  # user only: visitor u:alice
        msg(messageId="d", userId="alice", integrations={"Kairos": {"user_hash": ok_hash}}),
        {"type": "alias", "previousId": "anon-1", "userId": "alice", "messageId": "e"},
        msg(messageId="f", event="Click", properties={"decision_id": "home_hero.a.123"}),
    ]}
    parsed = sg.parse(doc, endpoint="batch", now_ms=NOW)
    events = [sg.with_user_hash(m) for m in parsed.messages]
    assert events[3].user_hash == ok_hash and events[0].user_hash is None

    def identity_ok(user: str, given: str | None) -> bool:
        return given == hmac_hex(secret, user)

    pub = Principal("public_key", "p", PUBLIC_KEY_SCOPES)
    good, bad = trust.screen(events, [m.index for m in parsed.messages], pub, identity_ok,
                             lambda did: False)
    by_index = {m.index: m for m in parsed.messages}
    named = [(r.index, *sg.trust_refusal(by_index[r.index], r.field, r.reason)) for r in bad]
    assert [(i, f) for i, f, _ in named] == [
        (0, "context.kairos.user_hash"), (1, "context.kairos.user_hash"), (2, "anonymousId"),
        (4, "context.kairos.user_hash"), (5, "properties.decision_id")]
    assert "secret key" in named[2][2]
    assert [e.event_id for e in good] == ["d"] and good[0].user_hash is None  # never stored
    server = Principal("secret_key", "s", frozenset({"events:write"}))
    good, bad = trust.screen(events, [m.index for m in parsed.messages], server, identity_ok,
                             lambda did: False)
    assert [e.event_id for e in good] == ["a", "b", "c", "d", "e"]
    assert all(e.user_hash is None for e in good) and [r.index for r in bad] == [5]


def hmac_hex(secret: str, user: str) -> str:
    import hashlib
    import hmac

    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def test_the_openapi_document_has_the_tracking_api_and_its_key():
    from engine.openapi import openapi

    doc = openapi()
    for name in ("batch", "track", "page", "screen", "identify", "alias", "group"):
        op = doc["paths"][f"/v1/{name}"]["post"]
        assert {"writeKey": []} in op["security"] and "body" in op["x-kairos-policy"]
        assert f"/segment/v1/{name}" in op["description"]
    assert "/v1/t" in doc["paths"]["/v1/track"]["post"]["description"]
    assert doc["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
