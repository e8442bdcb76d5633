"""The forward-decay epoch scheme of the shared trending tables (engine/logic/trending.py)."""

from __future__ import annotations

import math

import pytest

from engine.logic.trending import HALF_LIVES, EpochDecay, decay, merge

H = 3_600_000  # one hour in ms


def current(dec: EpochDecay, events: list[tuple[str, float, int]], now: int) -> dict[str, float]:
    """Score per key as a reader sees it: stored per epoch, merged over two epochs."""
    stored: dict[int, dict[str, float]] = {}
    for key, w, ts in events:
        e, amount = dec.increment(w, ts)
        stored.setdefault(e, {})
        stored[e][key] = stored[e].get(key, 0.0) + amount
    tables = [(list(stored.get(e, {}).items()), f) for e, f in dec.read_factors(now)]
    return dict(merge(tables, 100))


def test_score_is_exponential_decay_across_epoch_boundaries():
    dec = EpochDecay(3600.0)
    period = dec.period_ms
    events = [("a", 1.0, period - H), ("a", 2.0, period + H), ("b", 1.0, period - 2 * H)]
    now = period + 3 * H
    got = current(dec, events, now)
    want_a = 1.0 * 0.5 ** 4 + 2.0 * 0.5 ** 2
    assert got["a"] == pytest.approx(want_a, rel=1e-9)
    assert got["b"] == pytest.approx(0.5 ** 5, rel=1e-9)
    assert list(got) == ["a", "b"]


def test_exponent_stays_bounded_so_no_rescale_is_needed():
    for hl in HALF_LIVES.values():
        dec = EpochDecay(hl)
        e, amount = dec.increment(1.0, dec.landmark_ms(7) + dec.period_ms - 1)
        assert e == 7
        assert amount <= math.exp(dec.rate * dec.period_ms) < math.exp(12)


def test_older_epochs_are_negligible_and_expire():
    dec = decay("1h")
    assert dec.ttl_ms > 2 * dec.period_ms
    factors = dec.read_factors(5 * dec.period_ms)
    assert [e for e, _ in factors] == [5, 4]
    # a value from the start of epoch 3 would be scaled by <= 2^-32 now
    assert math.exp(-dec.rate * 2 * dec.period_ms) < 2 ** -31


def test_merge_orders_by_score_then_key_and_truncates():
    rows = merge([([("x", 1.0), ("y", 2.0)], 1.0), ([("x", 4.0), ("z", 2.0)], 0.25)], 2)
    assert rows == [("x", 2.0), ("y", 2.0)]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        EpochDecay(0)
    with pytest.raises(ValueError):
        EpochDecay(60.0, period_half_lives=100)
    with pytest.raises(KeyError):
        decay("1w")
