"""Bad input gets a clear 4xx naming the field, never a 5xx, and loses nothing good."""

from __future__ import annotations

import time

import msgpack
import pytest

from tests.conftest import Stack, uid

pytestmark = pytest.mark.integration


def good(vid: str, n: int = 0) -> dict:
    return {"event_id": f"{vid}-{n}", "type": "item_view", "visitor_id": vid, "item": {"id": "i"}}


@pytest.mark.parametrize(
    ("content", "ctype", "status", "field"),
    [
        (b"{not json", "application/json", 400, "body"),
        (b"\xff\xfe\xfd", "text/plain", 400, "body"),
        (b"\xc1\xc1", "application/msgpack", 400, "body"),
        (b"[]", "application/json", 400, "events"),
        (b"42", "application/json", 400, "body"),
        (b"<xml/>", "application/xml", 415, "content-type"),
        (b"[" + b'{"a":1},' * 600 + b'{"a":1}]', "application/json", 413, "events"),
        (b'{"event_id":"x","type":"item_view","visitor_id":7}', "application/json", 400, "visitor_id"),
        (b'{"event_id":"x","visitor_id":"v"}', "application/json", 400, "type"),
        (b'{"event_id":"x","type":"item_view","visitor_id":"v","ts":"soon"}', "application/json", 400, "ts"),
        (msgpack.packb({"event_id": 1, "type": "t", "visitor_id": "v"}), "application/msgpack", 400, "event_id"),
    ],
)
def test_bad_bodies_name_the_field(stack: Stack, content: bytes, ctype: str, status: int, field: str):
    r = stack.http.post("/v1/events", content=content, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field
    assert body["error"].startswith(field)


def test_huge_body_is_413(stack: Stack):
    r = stack.http.post("/v1/events", content=b" " * (1024 * 1024 + 10),
                        headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_visitor_id_message_is_plain(stack: Stack):
    r = stack.post({"event_id": "x", "type": "item_view", "visitor_id": 12})
    assert r.json()["error"] == "visitor_id must be a string"


def test_one_bad_event_does_not_drop_the_good_ones(stack: Stack):
    vid = uid()
    batch = [good(vid, 0), {"event_id": "b", "type": "item_view", "visitor_id": None},
             good(vid, 1), {"event_id": "c", "type": "item_view", "visitor_id": vid,
                            "item": {"id": "i", "price": "free"}}, good(vid, 2)]
    r = stack.post(batch)
    assert r.status_code == 200
    assert r.json() == {"accepted": 3, "rejected": [
        {"index": 1, "field": "visitor_id", "reason": "must be a string"},
        {"index": 3, "field": "item.price", "reason": "must be a number"}]}
    prof = stack.wait_profile(vid, 3)
    time.sleep(0.3)
    assert stack.profile(vid).json()["event_count"] == prof["event_count"] == 3


def test_fuzzed_bodies_never_5xx(stack: Stack):
    import random

    rng = random.Random(42)
    pieces = [b"{", b"}", b"[", b"]", b'"event_id"', b'"type"', b'"visitor_id"', b":", b",", b'"x"',
              b"1e999", b"null", b"true", b"\xf0\x9f", b"-0", b'"\\u0000"', b'"ts"', b'"item"']
    for _ in range(150):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        ctype = rng.choice(["application/json", "text/plain", "application/msgpack"])
        r = stack.http.post("/v1/events", content=body, headers={"content-type": ctype})
        assert 200 <= r.status_code < 500, (body, r.status_code, r.text)


@pytest.mark.parametrize(
    ("method", "path", "ctype"),
    [
        ("POST", "/v1/decide", "application/json"),
        ("POST", "/v1/decide", "application/msgpack"),
        ("POST", "/v1/catalog/items", "application/json"),
        ("POST", "/v1/events?decide=home_hero", "application/json"),
    ],
)
def test_every_post_endpoint_survives_fuzz(stack: Stack, method: str, path: str, ctype: str):
    import random

    rng = random.Random(7)
    pieces = [b"{", b"}", b"[", b"]", b'"visitor_id"', b'"context"', b'"zones"', b'"events"', b'"id"',
              b'"price"', b":", b",", b'"x"', b"1e999", b"null", b"true", b"-1", b'"items"', b'"type"',
              b'"event_id"', b"\xff", b'"categories"', b"[[]]", b"{}"]
    for _ in range(120):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        r = stack.http.request(method, path, content=body, headers={"content-type": ctype})
        assert r.status_code < 500, (body, r.status_code, r.text)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/recommendations", "/v1/recommendations?visitor_id=", "/v1/recommendations?visitor_id=v&n=-3",
        "/v1/recommendations?visitor_id=v&n=abc", "/v1/recommendations?visitor_id=v&recipe=nope",
        "/v1/recommendations?visitor_id=" + "x" * 300, "/v1/profiles/v?top=x", "/v1/profiles/%00",
        "/v1/stats/traffic?window=x", "/v1/stats/trending?dim=nope", "/v1/stats/trending?half_life=9y",
        "/v1/stats/trending?k=-1", "/v1/campaigns/nope/stats", "/v1/catalog/items/" + "y" * 300,
        "/demo/p/nope", "/demo/c/nope", "/demo/search?q=" + "%ff" * 20, "/dashboard/../../etc/passwd",
    ],
)
def test_bad_queries_are_4xx_never_5xx(stack: Stack, path: str):
    r = stack.http.get(path)
    assert r.status_code < 500, (path, r.status_code, r.text)
