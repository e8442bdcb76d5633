"""What the dashboard shows of the learning loop (engine/logic/decisions/monitor.py): each arm's
share of the logged decisions over time, and drift events described."""

from __future__ import annotations

from engine.logic.decisions.monitor import (
    REACTIONS,
    WIDTHS_MS,
    bucket_width,
    describe_drift,
    traffic_over_time,
)

T0 = 1_764_000_000_000  # a multiple of a minute


def rows(*pairs: tuple[int, str]) -> list[dict[str, object]]:
    return [{"ts": T0 + t, "arm": a, "reward": 0.0, "probability": 0.5} for t, a in pairs]


def test_shares_per_bucket_sum_to_one_and_follow_the_bandit() -> None:
    log = rows(*[(i * 1000, "a" if i % 2 else "b") for i in range(60)],  # first minute: 50/50
               *[(60_000 + i * 1000, "a" if i % 10 else "b") for i in range(60)])  # then 90/10
    got = traffic_over_time(log, ["a", "b"], buckets=2)
    assert got["width_ms"] == 60_000
    (first, second) = got["points"]
    assert (first["t"], first["n"], second["t"], second["n"]) == (T0, 60, T0 + 60_000, 60)
    assert first["share"] == {"a": 0.5, "b": 0.5}
    assert second["share"] == {"a": 54 / 60, "b": 6 / 60}
    for p in got["points"]:
        assert abs(sum(p["share"].values()) - 1) < 1e-12


def test_the_width_is_the_smallest_that_fits_and_empty_buckets_are_left_out() -> None:
    assert bucket_width(T0, T0 + 23_999, 24) == 1_000
    assert bucket_width(T0, T0 + 24_000, 24) == 5_000  # 25 one-second buckets: too many
    assert bucket_width(T0 + 999, T0 + 1_000, 1) == 5_000  # aligned: two 1 s buckets
    assert bucket_width(T0, T0 + 10**12, 24) == WIDTHS_MS[-1]
    got = traffic_over_time(rows((0, "a"), (3_600_000, "b")), ["a", "b"], buckets=24)
    assert got["width_ms"] == 300_000
    assert [p["share"] for p in got["points"]] == [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}]


def test_rows_of_other_arms_or_without_a_time_are_not_counted() -> None:
    log = [*rows((0, "a"), (1, "gone")), {"arm": "a", "reward": 1.0}, {"ts": "x", "arm": "a"}]
    got = traffic_over_time(log, ["a", "b"])
    assert [p["n"] for p in got["points"]] == [1]
    assert traffic_over_time([], ["a"]) == {"width_ms": None, "points": []}


def test_drift_events_say_what_was_watched_and_the_reaction() -> None:
    ev = {"at": T0, "model": "hero:b", "detections": 2}
    assert describe_drift(ev, {"hero": "thompson"}) == {
        "at": T0, "model": "hero:b", "detections": 2, "kind": "arm", "campaign": "hero",
        "arm": "b", "reaction": REACTIONS["thompson"]}
    assert describe_drift(ev, {"hero": "epsilon_greedy"})["reaction"] == REACTIONS["epsilon_greedy"]
    assert describe_drift(ev, {})["reaction"] is None  # a campaign no longer configured
    p = describe_drift({"at": T0, "model": "propensity:exit", "detections": 1}, {})
    assert (p["kind"], p["target"], p["reaction"]) == ("propensity", "exit",
                                                       REACTIONS["propensity"])
