"""Event posted over HTTP -> Kafka -> faust worker -> Redis -> profile, on real servers."""

from __future__ import annotations

import time

import msgpack
import pytest

from models.affinity import AffinityConfig, reference_scores
from tests.conftest import Stack, uid

pytestmark = pytest.mark.integration
CFG = AffinityConfig()


def ev(vid: str, n: int, etype: str = "item_view", **item):
    item.setdefault("id", f"item{n}")
    return {"event_id": f"{vid}-{n}", "type": etype, "visitor_id": vid, "item": item,
            "ts": int(time.time() * 1000)}


def scores(profile: dict, dim: str) -> dict[str, float]:
    return {row["key"]: row["score"] for row in profile["affinities"][dim]}


def test_event_over_http_reaches_the_profile(any_stack: Stack):
    stack = any_stack
    vid = uid()
    evs = [ev(vid, 1, categories=["shoes/running"], brand="Acme"),
           ev(vid, 2, "add_to_cart", categories=["shoes/running"], brand="Acme"),
           ev(vid, 3, categories=["books"], brand="Zeta", tags=["sale"])]
    r = stack.post(evs)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "rejected": []}
    prof = stack.wait_profile(vid, 3)
    timeline = stack.profile(vid, activity="true").json()["activity"]
    assert [(a["type"], a["items"]) for a in timeline] == [
        ("item_view", ["item3"]), ("add_to_cart", ["item2"]), ("item_view", ["item1"])]
    now = int(time.time() * 1000)
    for dim in ("category", "brand", "item", "tag"):
        want = reference_scores(evs, now, CFG, dim)
        got = scores(prof, dim)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-3)
    assert [row["key"] for row in prof["affinities"]["category"]][:2] == ["shoes/running", "shoes"]
    assert prof["recent_items"] == ["item3", "item2", "item1"]
    assert prof["cart"] == ["item2"]
    top = prof["affinities"]["brand"][0]
    assert top["key"] == "acme" and set(top["by_type"]) == {"item_view", "add_to_cart"}


def test_same_batch_posted_twice_counts_once(any_stack: Stack):
    stack = any_stack
    vid = uid()
    batch = [ev(vid, i, brand="b") for i in range(10)]
    assert stack.post(batch).status_code == 200
    assert stack.post({"events": batch}).status_code == 200
    body = msgpack.packb(batch)
    r = stack.http.post("/v1/events", content=body, headers={"content-type": "application/msgpack"})
    assert r.status_code == 200
    stack.post([ev(vid, 99, brand="b")])  # a marker after the duplicates
    prof = stack.wait_profile(vid, 11)
    time.sleep(0.5)
    prof = stack.profile(vid).json()
    assert prof["event_count"] == 11
    assert scores(prof, "brand")["b"] == pytest.approx(11.0, rel=1e-3)


def test_sendbeacon_text_plain_body(stack: Stack):
    vid = uid()
    import orjson

    r = stack.http.post("/v1/events", content=orjson.dumps({"events": [ev(vid, 1)]}),
                        headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    stack.wait_profile(vid, 1)


def test_profile_by_user_id_and_unknown_visitor(stack: Stack):
    assert stack.profile(uid("nobody")).status_code == 404
    r = stack.profile("x" * 200)
    assert r.status_code == 400 and r.json()["field"] == "visitor_id"


def test_identity_merge_across_devices(any_stack: Stack):
    stack = any_stack
    phone, laptop, user = uid("phone"), uid("laptop"), uid("user")
    stack.post([ev(phone, 1, brand="acme"), ev(phone, 2, brand="acme")])
    stack.wait_profile(phone, 2)
    stack.post([{"event_id": f"{phone}-id", "type": "identify", "visitor_id": phone, "user_id": user,
                 "props": {"traits": {"email": "a@example.com"}}}])
    stack.post([ev(laptop, 1, brand="zeta")])
    stack.wait_profile(laptop, 1)
    stack.post([{**ev(laptop, 2, brand="zeta"), "user_id": user}])  # logs in on the laptop
    prof = stack.wait_profile(user, 5)
    assert prof["profile_id"] == f"u:{user}"
    assert prof["event_count"] == 5
    assert set(prof["linked_visitors"]) == {phone, laptop}
    assert prof["traits"] == {"email": "a@example.com"}
    assert scores(prof, "brand") == pytest.approx({"acme": 2.0, "zeta": 2.0}, rel=1e-3)
    # later anonymous events from either device update and read the one canonical profile
    stack.post([ev(phone, 3, brand="acme")])
    prof = stack.wait_profile(phone, 6)
    assert prof["profile_id"] == f"u:{user}"
    assert stack.profile(laptop).json()["event_count"] == 6
    assert stack.profile(user).json()["event_count"] == 6


def test_health_ready_metrics_openapi(stack: Stack):
    assert stack.http.get("/healthz").json() == {"status": "ok"}
    r = stack.http.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"redis": "ok", "kafka": "ok",
                                                         "redis_memory": "ok"}
    stack.post([ev(uid(), 1)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = stack.http.get("/metrics").text
        if "kairos_workers_live 1" in text:
            break
        time.sleep(0.3)
    assert "kairos_events_accepted_total" in text
    assert "kairos_workers_live 1" in text
    assert "kairos_worker_freshness_p99_ms" in text and "kairos_worker_lag_events" in text
    doc = stack.http.get("/openapi.json").json()
    assert "/v1/events" in doc["paths"] and "Event" in doc["components"]["schemas"]
    assert "visitor_id" in doc["components"]["schemas"]["Event"]["properties"]
    assert stack.http.get("/docs").status_code == 200


def test_replay_a_real_log_through_the_api(stack: Stack, tmp_path):
    """`kairos replay` on a slice of the REES46 log: every visitor's count matches the file."""
    import os
    import subprocess
    import sys
    from collections import Counter

    from streams.sources import load_events
    from tests.conftest import ROOT

    src = ROOT.parent / "shared" / "data" / "rees46" / "2019-Oct_head.csv"
    lines = src.read_text().splitlines()[:401]  # header + 400 rows
    sample = tmp_path / "rees46_slice.csv"
    sample.write_text("\n".join(lines) + "\n")
    expected = Counter(e["visitor_id"] for e in load_events(sample))
    env = {**os.environ, "KAIROS_SETTINGS_JSON": stack.settings.to_json()}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(sample), "--batch", "50",
                           "--key", stack.keys.admin],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "400 events" in done.stdout and "400 accepted" in done.stdout
    assert "events/s" in done.stdout
    for vid, n in expected.most_common(5):
        assert stack.wait_profile(vid, n)["event_count"] == n


def test_live_traffic_numbers(stack: Stack):
    vid = uid()
    for i in range(3):
        stack.post([{**ev(vid, i), "channel": "atm"}, {"event_id": "x", "visitor_id": 1}])
    stack.wait_profile(vid, 3)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        snap = stack.http.get("/v1/stats/traffic", params={"window": 120}).json()
        total_atm = sum(s["by_channel"].get("atm", 0) for s in snap["series"])
        if total_atm >= 3 and sum(s["rejected"] for s in snap["series"]) >= 3:
            break
        time.sleep(0.5)
    assert total_atm >= 3
    assert sum(s["accepted"] for s in snap["series"]) >= 3
    assert snap["latency_ms"]["ingest"]["p99"] is not None
    assert snap["workers"]["live"] == 1
    assert stack.http.get("/v1/stats/traffic", params={"window": 0}).status_code == 400
