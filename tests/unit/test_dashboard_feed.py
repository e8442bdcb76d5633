"""The pure parts of the dashboard feed: segment join/leave rates and campaign arm history."""

from __future__ import annotations

from collections import Counter

import orjson

from engine.flows.dashboard import sse
from engine.logic.livestats import ArmHistory, LiveWindow, SegmentRates


def test_segment_rates_from_size_changes() -> None:
    r = SegmentRates(window_s=60)
    t0 = 1_700_000_000.0
    sizes = {"a": 10, "b": 5}
    for i in range(61):
        if i and i % 2 == 0:  # a: +1 every 2 s
            sizes["a"] += 1
        if i and i % 10 == 0:  # b: -1 every 10 s
            sizes["b"] -= 1
        r.observe(t0 + i, sizes)
    rep = r.report(t0 + 60)
    assert rep["a"] == {
        "size": 40,
        "joined_per_min": 30.0,
        "left_per_min": 0.0,
        "net_per_min": 30.0,
    }
    assert rep["b"] == {"size": -1, "joined_per_min": 0.0, "left_per_min": 6.0, "net_per_min": -6.0}


def test_segment_rates_only_look_at_the_window() -> None:
    r = SegmentRates(window_s=60)
    r.observe(0.0, {"a": 0})
    r.observe(1.0, {"a": 100})  # long ago
    for i in range(2, 200):
        r.observe(float(i), {"a": 100})
    assert r.report(199.0)["a"]["joined_per_min"] == 0.0
    assert r.report(199.0)["a"]["size"] == 100


def test_segment_rates_never_extrapolate_a_short_history() -> None:
    r = SegmentRates(window_s=60)
    r.observe(0.0, {"a": 0})
    r.observe(5.0, {"a": 7, "new": 1})  # a segment seen for the first time counts as joins
    rep = r.report(5.0)
    assert rep["a"]["joined_per_min"] == 7.0  # 7 in what we saw, not 7 * 12
    assert rep["new"]["joined_per_min"] == 1.0


def test_segment_rates_empty_and_single_sample() -> None:
    r = SegmentRates()
    assert r.report(10.0) == {}
    r.observe(10.0, {"a": 3})
    assert r.report(10.0)["a"] == {
        "size": 3,
        "joined_per_min": None,
        "left_per_min": None,
        "net_per_min": None,
    }


def test_segment_rates_memory_is_bounded() -> None:
    r = SegmentRates(window_s=60, keep_s=100)
    for i in range(1000):
        r.observe(float(i), {"a": i})
    assert len(r.samples) == 100


def arms(conv: float) -> list[dict]:
    return [
        {"arm": "control", "conversion_rate": 0.01, "conversions": 1, "impressions": 100},
        {"arm": "a", "conversion_rate": conv, "conversions": 2, "impressions": 100},
    ]


def test_arm_history_samples_every_period_and_stays_bounded() -> None:
    h = ArmHistory(every_s=10, keep=3)
    assert h.observe(100.0, "c1", arms(0.02))
    assert not h.observe(105.0, "c1", arms(0.03))  # too soon
    for i, t in enumerate((110.0, 120.0, 130.0)):
        assert h.observe(t, "c1", arms(0.04 + i / 100))
    pts = h.series("c1")
    assert [p["t"] for p in pts] == [110_000, 120_000, 130_000]
    assert pts[-1]["arms"]["a"] == {"conversion_rate": 0.06, "conversions": 2, "impressions": 100}
    assert h.series("c1", last=1) == pts[-1:]
    assert h.series("unknown") == []


def test_arm_history_forgets_removed_campaigns() -> None:
    h = ArmHistory()
    h.observe(0.0, "c1", arms(0.1))
    h.observe(0.0, "c2", arms(0.1))
    h.forget_except({"c2"})
    assert list(h.points) == ["c2"]


def test_live_snapshot_tail_and_rates() -> None:
    live = LiveWindow()
    now = 1_700_000_100.5
    live.seconds.extend(
        (s, Counter({"applied": 10, "t:item_view": 7, "t:add_to_cart": 3, "c:web": 10}))
        for s in range(1_700_000_000, 1_700_000_100)
    )
    snap = live.snapshot(5, now)
    assert [row["t"] // 1000 for row in snap["series"]] == list(range(1_700_000_095, 1_700_000_100))
    assert snap["rates"]["applied_per_s"] == 10
    assert snap["rates"]["by_type"] == {"item_view": 7, "add_to_cart": 3}


def test_sse_frame() -> None:
    frame = sse({"a": 1})
    assert frame.startswith(b"event: snapshot\ndata: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame.split(b"data: ", 1)[1]) == {"a": 1}
    assert b"\n" not in frame[len(b"event: snapshot\ndata: ") : -2]
