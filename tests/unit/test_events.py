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
