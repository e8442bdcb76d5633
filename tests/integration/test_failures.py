"""Crashes and outages: a worker killed mid-stream, a broker that goes away. Nothing
acknowledged is lost, nothing is counted twice."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine.embedded import EmbeddedKafka
from models.affinity import AffinityConfig, reference_scores
from tests.conftest import LIBS, Stack

pytestmark = pytest.mark.integration
CFG = AffinityConfig()


def make_events(n_visitors: int, per_visitor: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    visitors = [f"{prefix}-{i}" for i in range(n_visitors)]
    counters: dict[str, int] = defaultdict(int)
    out = []
    for _ in range(n_visitors * per_visitor):
        vid = rng.choice(visitors)
        counters[vid] += 1
        out.append({
            "event_id": f"{vid}-{counters[vid]}",
            "type": rng.choice(["item_view"] * 6 + ["add_to_cart", "purchase", "page_view"]),
            "visitor_id": vid,
            "ts": now,
            "item": {"id": f"i{rng.randrange(40)}", "brand": rng.choice(["acme", "zeta", "nova"]),
                     "categories": [rng.choice(["shoes/running", "shoes/trail", "books/sf"])]},
        })
    return out


def check_against_reference(stack: Stack, events: list[dict], timeout: float = 90.0) -> None:
    by_visitor: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_visitor[e["visitor_id"]].append(e)
    deadline = time.monotonic() + timeout
    for vid, evs in by_visitor.items():
        prof = stack.wait_profile(vid, len(evs), timeout=max(1.0, deadline - time.monotonic()))
        assert prof["event_count"] == len(evs), vid
    time.sleep(1.0)  # anything still in flight would now show up as an overcount
    now = int(time.time() * 1000)
    for vid, evs in by_visitor.items():
        prof = stack.profile(vid, top=100).json()
        assert prof["event_count"] == len(evs), f"{vid}: {prof['event_count']} != {len(evs)}"
        for dim in ("brand", "category"):
            want = reference_scores(evs, now, CFG, dim)
            got = {r["key"]: r["score"] for r in prof["affinities"][dim]}
            assert got == pytest.approx(want, rel=2e-3), (vid, dim)


def test_worker_killed_mid_stream_applies_every_event_exactly_once(make_stack):
    stack = make_stack(name="kill", workers=1)
    events = make_events(40, 150, seed=1, prefix="kill")  # 6,000 events, ~150 per visitor
    posted = threading.Event()
    errors: list[str] = []

    def feed() -> None:
        for i in range(0, len(events), 50):
            r = stack.post(events[i : i + 50])
            if r.status_code != 200 or r.json()["accepted"] != len(events[i : i + 50]):
                errors.append(r.text)
            time.sleep(0.01)
        posted.set()

    t = threading.Thread(target=feed)
    t.start()
    # let the worker apply part of the stream, then kill it without warning
    probe = events[0]["visitor_id"]
    stack.wait_profile(probe, 5)
    time.sleep(0.5)
    stack.workers[0].kill()
    stack.workers[0].wait()
    time.sleep(0.5)
    stack.start_worker()  # same consumer group: takes over after the session timeout
    t.join()
    assert posted.is_set() and not errors
    check_against_reference(stack, events)
    dupes = [line for line in stack.http.get("/metrics").text.splitlines()
             if line.startswith("kairos_worker_duplicates_total")]
    assert dupes, "the restarted worker reports its duplicates"


def test_broker_stopped_gives_503_and_loses_nothing_acknowledged(make_stack, tmp_root: Path):
    kafka = EmbeddedKafka(tmp_root / "kafka-outage", LIBS, partitions=2).start()
    try:
        stack = make_stack(name="outage", workers=1, kafka=kafka, partitions=2)
        before = make_events(5, 20, seed=2, prefix="outage-a")
        for i in range(0, len(before), 25):
            assert stack.post(before[i : i + 25]).status_code == 200
        stack.wait_profile(before[-1]["visitor_id"], 1)  # the worker is consuming
        kafka.stop()
        r = stack.post(make_events(1, 3, seed=3, prefix="outage-lost"))
        assert r.status_code == 503
        assert r.headers["retry-after"].isdigit()
        assert r.json()["accepted"] == 0
        # events carried by a decide call are not lost either: 503, so the client keeps them
        lost = make_events(1, 2, seed=5, prefix="outage-decide")
        r = stack.http.post("/v1/decide", json={"visitor_id": lost[0]["visitor_id"], "events": lost,
                                                "context": {"zones": ["home_hero"]}})
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
        # Segment's API too (analytics-python waits Retry-After; the others back off and resend)
        r = stack.http.post("/v1/batch", json={"batch": [{
            "type": "track", "anonymousId": "outage-segment", "messageId": "outage-segment-1",
            "event": "Product Viewed", "properties": {"product_id": "p1"}}]})
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
        assert r.json()["success"] is False and r.json()["accepted"] == 0
        assert stack.http.get("/readyz").status_code == 503
        kafka.start()  # same port, same log directory
        after = make_events(5, 20, seed=4, prefix="outage-b")
        deadline = time.monotonic() + 60
        i = 0
        while i < len(after):
            r = stack.post(after[i : i + 25])
            if r.status_code == 503:  # the client retries, as told by Retry-After
                assert time.monotonic() < deadline, "broker never came back"
                time.sleep(0.5)
                continue
            assert r.status_code == 200, r.text
            i += 25
        check_against_reference(stack, before + after, timeout=120)
    finally:
        kafka.stop()
