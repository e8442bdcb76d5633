"""The event spec: validation event by event, with errors that name the field."""

import msgspec
import pytest

from engine.logic import events as ev

NOW = 1_764_000_000_000


def ok(**over):
    base = {"event_id": "e1", "type": "item_view", "visitor_id": "v1"}
    base.update(over)
    return base


def reasons(raw):
    good, bad = ev.validate(raw, NOW)
    return good, [(r.index, r.field, r.reason) for r in bad]


def test_minimal_event_is_stamped_with_receipt_time():
    good, bad = reasons([ok()])
    assert not bad
    assert good[0].ts == NOW and good[0].received_at == NOW


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        (ok(visitor_id=5), "visitor_id", "must be a string"),
        ({"type": "x", "visitor_id": "v"}, "event_id", "is required"),
        ({"event_id": "a", "visitor_id": "v"}, "type", "is required"),
        (ok(event_id="x" * 65), "event_id", "must be at most 64 characters"),
        (ok(item={"id": "i", "tags": ["t"] * 33}), "item.tags", "must have at most 32 entries"),
        (ok(visitor_id="v" * 129), "visitor_id", "must be at most 128 characters"),
        (ok(visitor_id=""), "visitor_id", "must not be empty"),
        (ok(item={"price": 3}), "item.id", "is required"),
        (ok(item={"id": "i", "price": "3"}), "item.price", "must be a number"),
        (ok(item={"id": "i", "price": -1}), "item.price", "must be >= 0"),
        (ok(item={"id": "i", "categories": "shoes"}), "item.categories", "must be an array"),
        (ok(ts=NOW + 25 * 3600 * 1000), "ts", "is more than 24 hours in the future"),
        (ok(ts="2025-01-01T10:00:00"), "ts", "must include a time zone offset (e.g. Z or +02:00)"),
        (ok(ts="yesterday"), "ts", "must be an RFC 3339 time or epoch milliseconds"),
        (ok(ts=1_700_000_000), "ts", "looks like epoch seconds; send epoch milliseconds"),
        (ok(ts=1.5), "ts", "must be an RFC 3339 string or epoch milliseconds"),
        (ok(type="click"), "decision_id", "is required for click events"),
        (ok(type="bad type!"), "type", "must start with a letter and use only letters, digits and _ . : -"),
        (ok(props={"x": "y" * 5000}), "props", "must be at most 4096 bytes as JSON"),
        (ok(items=[{"id": "a", "quantity": 0}]), "items[0].quantity", "must be >= 1"),
        ("not an object", "event", "must be an object"),
    ],
)
def test_each_bad_field_is_named(event, field, reason):
    good, bad = reasons([event])
    assert good == []
    assert bad == [(0, field, reason)]


def test_one_bad_event_does_not_drop_the_good_ones():
    good, bad = reasons([ok(event_id="a"), ok(event_id="b", visitor_id=None), ok(event_id="c")])
    assert [g.event_id for g in good] == ["a", "c"]
    assert bad == [(1, "visitor_id", "must be a string")]


def test_rfc3339_time_is_normalised_to_epoch_ms():
    good, _ = reasons([ok(ts="2025-11-24T16:00:00Z"), ok(ts="2025-11-24T17:00:00+01:00")])
    assert good[0].ts == good[1].ts == 1_764_000_000_000


@pytest.mark.parametrize(
    ("body", "media", "status", "field"),
    [
        (b"{not json", "application/json", 400, "body"),
        (b"\xff\xfe{}", "text/plain", 400, "body"),
        (b"\xc1", "application/msgpack", 400, "body"),
        (b"[]", "application/json", 400, "events"),
        (b'{"events": 3}', "application/json", 400, "events"),
        (b"3", "application/json", 400, "body"),
        (b"{}", "application/xml", 415, "content-type"),
        (b"[" + b"{}," * 500 + b"{}]", "application/json", 413, "events"),
        (b" " * (ev.MAX_BODY_BYTES + 1), "application/json", 413, "body"),
    ],
)
def test_unusable_bodies(body, media, status, field):
    with pytest.raises(ev.BodyError) as info:
        ev.decode_body(body, media)
    assert (info.value.status, info.value.field) == (status, field)


def test_three_body_shapes_and_msgpack():
    one = ok()
    assert ev.decode_body(msgspec.json.encode(one), "application/json") == [one]
    assert ev.decode_body(msgspec.json.encode([one, one]), "text/plain") == [one, one]
    assert ev.decode_body(msgspec.msgpack.encode({"events": [one]}), "application/msgpack") == [one]


def test_wire_round_trip_keeps_only_present_fields():
    good, _ = reasons([ok(item={"id": "i1", "categories": ["shoes/running"]})])
    (back,) = ev.decode_events(ev.encode_events(good))
    assert back == {
        "event_id": "e1", "type": "item_view", "visitor_id": "v1", "ts": NOW,
        "item": {"id": "i1", "categories": ["shoes/running"]}, "received_at": NOW,
    }


def _nested(depth: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        (ok(channel="web app"), "channel", "must start with a letter and use only letters, digits and _ . : -"),
        (ok(channel="c" * 33), "channel", "must be at most 32 characters"),
        (ok(user_hash="ab" * 31), "user_hash", "must be 64 hexadecimal characters (HMAC-SHA256 of the user_id)"),
        (ok(items=[{"id": "i"}] * (ev.MAX_LINES + 1)), "items", f"must have at most {ev.MAX_LINES} entries"),
        (ok(item={"id": "i", "categories": ["c"] * (ev.MAX_CATEGORIES + 1)}), "item.categories",
         f"must have at most {ev.MAX_CATEGORIES} entries"),
        (ok(item={"id": "i", "categories": ["a/" * ev.MAX_PATH_DEPTH + "z"]}), "item.categories[0]",
         f"must have at most {ev.MAX_PATH_DEPTH} levels (a/b/c has 3)"),
        (ok(item={"id": "i"}, items=[{"id": "a"}, {"id": "b", "categories": ["x", "/".join("abcdefghi")]}]),
         "items[1].categories[1]", f"must have at most {ev.MAX_PATH_DEPTH} levels (a/b/c has 3)"),
        (ok(type="identify", props={"traits": _nested(600)}), "props",
         f"must not nest more than {ev.MAX_DEPTH} levels deep"),
        (ok(context=_nested(ev.MAX_DEPTH + 1)), "context", f"must not nest more than {ev.MAX_DEPTH} levels deep"),
    ],
)
def test_amplifiers_are_bounded(event, field, reason):
    good, bad = reasons([event])
    assert good == [] and bad == [(0, field, reason)]


def test_bounds_at_the_limit_pass():
    limit = ok(items=[{"id": f"i{n}", "categories": ["/".join("abcdefgh")] * ev.MAX_CATEGORIES}
                      for n in range(ev.MAX_LINES)],
               context=_nested(ev.MAX_DEPTH), props={"traits": _nested(ev.MAX_DEPTH - 1)},
               channel="kiosk:lobby-2", user_hash="0f" * 32)
    good, bad = reasons([limit])
    assert bad == [] and len(good) == 1


def test_nesting_depth_without_recursion():
    assert ev.nesting_depth(1, 8) == 0
    assert ev.nesting_depth({"a": [1, {"b": 2}]}, 8) == 3
    deep: list = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]
    assert ev.nesting_depth(deep, 8) == 9  # stops counting past the limit


@pytest.mark.parametrize("media", ["application/json", "application/msgpack"])
def test_very_deep_bodies_are_a_400_not_a_recursion_error(media):
    body = b"[" * 100_000 if media == "application/json" else b"\x91" * 100_000
    with pytest.raises(ev.BodyError) as info:
        ev.decode_body(body, media)
    assert (info.value.status, info.value.field, info.value.reason) == (400, "body", "nests too deeply")


def test_decide_request_bounds_nesting():
    from engine.logic.decide_request import RequestError, parse_request

    with pytest.raises(RequestError) as info:
        parse_request(b"[" * 100_000, "application/json")
    assert (info.value.status, info.value.field) == (400, "body")
    with pytest.raises(RequestError) as info:
        parse_request(msgspec.json.encode({"visitor_id": "v", "context": _nested(9)}), "application/json")
    assert info.value.field == "context"
