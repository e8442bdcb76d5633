"""Live aggregates: per-second counters and bucketed latency quantiles."""

import random

import numpy as np
import pytest

from engine.logic.livestats import (
    SecondCounters,
    bucket_of,
    bucket_value,
    by_prefix,
    histogram,
    human_rate,
    merge,
    quantile,
)


def test_bucket_round_trip_within_ten_percent():
    for x in (3e-5, 1e-3, 0.0123, 0.2, 4.0):
        assert bucket_value(bucket_of(x)) == pytest.approx(x, rel=0.1)


def test_quantiles_match_exact_ones_within_bucket_width():
    rng = random.Random(3)
    xs = [rng.lognormvariate(-6, 1.0) for _ in range(20_000)]
    c = SecondCounters()
    for i, x in enumerate(xs):
        c.observe(100 + i % 5, "decide", x)
    total = merge(c.take().values())
    h = histogram(total, "decide")
    for q in (0.5, 0.9, 0.99):
        assert quantile(h, q) == pytest.approx(float(np.quantile(xs, q)), rel=0.1)
    assert quantile({}, 0.5) is None


def test_take_removes_only_finished_seconds():
    c = SecondCounters()
    c.add(10, "t:item_view")
    c.add(11, "t:item_view", 2)
    c.add(12, "c:web")
    done = c.take(before=12)
    assert set(done) == {10, 11} and set(c.counts) == {12}
    assert by_prefix(merge(done.values()), "t:") == {"item_view": 3}


@pytest.mark.parametrize(("x", "s"), [(0, "0/s"), (3.25, "3.2/s"), (42, "42/s"), (1234, "1.2k/s"), (2.5e6, "2.5M/s")])
def test_human_rate(x, s):
    assert human_rate(x) == s


def test_ops_of_one_write_are_coalesced():
    from engine.store.writes import Op, coalesce

    ops = [Op("HINCRBY", "k", ("t:view", 1)), Op("PEXPIRE", "k", (10,)), Op("HINCRBY", "k", ("t:view", 2)),
           Op("ZINCRBY", "z", (1.5, "a")), Op("ZINCRBY", "z", (0.5, "a")), Op("PEXPIRE", "k", (10,)),
           Op("INCRBY", "n", (1,)), Op("INCRBY", "n", (4,))]
    out = coalesce(ops)
    assert Op("HINCRBY", "k", ("t:view", 3)) in out
    assert Op("ZINCRBY", "z", (2.0, "a")) in out
    assert Op("INCRBY", "n", (5,)) in out
    assert [o.command for o in out].count("PEXPIRE") == 1 and out[-1].command == "PEXPIRE"


def test_client_named_dimensions_are_bounded():
    """10,000 distinct channels in one second: memory and the snapshot stay bounded, the total
    is kept (as "other")."""
    from collections import Counter

    import orjson

    from engine.logic.livestats import KEEP_PER_SECOND, OTHER, TOP_N, TOP_SERIES, LiveWindow

    w = LiveWindow()
    now = 1_764_000_000.0
    read = w.to_read(now)
    flood = Counter({f"c:ch{n}": 1 for n in range(10_000)} | {"c:web": 50, "t:page_view": 10_050,
                                                              "applied": 10_050})
    w.update(read, [Counter({"c:web": 3, "t:page_view": 3}) for _ in read[:-1]] + [flood], {})
    kept = w.seconds[-1][1]
    assert sum(1 for k in kept if k.startswith("c:")) == KEEP_PER_SECOND + 1
    assert kept["c:web"] == 50 and sum(v for k, v in kept.items() if k.startswith("c:")) == 10_050
    snap = w.snapshot(300, now + 1)
    assert len(snap["rates"]["by_channel"]) <= TOP_N + 1 and OTHER in snap["rates"]["by_channel"]
    assert all(len(s["by_channel"]) <= TOP_SERIES + 1 for s in snap["series"])
    assert len(orjson.dumps(snap)) < 256 * 1024
