"""Replay helpers: time shifting and batching (the loaders have their own tests)."""

from streams.replay import batches, shift_to_now


def test_shift_keeps_gaps_and_ends_now():
    evs = [{"ts": 1000}, {"ts": 4000}, {"ts": 2000}]
    shift_to_now(evs, 10_000)
    assert [e["ts"] for e in evs] == [7000, 10_000, 8000]


def test_batches():
    assert [len(b) for b in batches(list(range(7)), 3)] == [3, 3, 1]
