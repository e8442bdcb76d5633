"""Off-policy estimators, replay and metrics against values computed by hand.

The Open Bandit Pipeline (obp 0.5.7, the latest) declares Python < 3.11 and does not install
on this project's Python 3.11, so the estimators are checked against hand-computed values and,
for unbiasedness, against simulated logs whose true values are known.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import (
    brier,
    calibration_error,
    difference,
    dr,
    effective_sample_size,
    evaluate,
    events_needed,
    ips,
    log_loss,
    replay,
    roc_auc,
    snips,
)

R = np.array([1.0, 0.0, 1.0, 0.0])
LOGGING = np.array([0.5, 0.25, 0.5, 0.25])
TARGET = np.array([1.0, 0.5, 0.0, 0.5])  # weights 2, 2, 0, 2
Q_LOGGED = np.array([0.6, 0.2, 0.5, 0.1])
Q_TARGET = np.array([0.6, 0.3, 0.2, 0.4])


def test_ips_snips_dr_ess_by_hand() -> None:
    e = ips(R, TARGET, LOGGING)
    assert e.value == pytest.approx(0.5)  # (2*1 + 0 + 0 + 0) / 4
    assert e.ess == pytest.approx(3.0)  # (2+2+0+2)^2 / (4+4+0+4)
    assert e.n == 4
    assert snips(R, TARGET, LOGGING).value == pytest.approx(1 / 3)  # 2 / 6
    # DR: (0.6 + 2*0.4) + (0.3 - 2*0.2) + 0.2 + (0.4 - 2*0.1) = 1.7, over 4
    assert dr(R, TARGET, LOGGING, Q_LOGGED, Q_TARGET).value == pytest.approx(0.425)
    assert effective_sample_size(np.zeros(3)) == 0.0
    out = evaluate(R, TARGET, LOGGING, Q_LOGGED, Q_TARGET)
    assert set(out) == {"ips", "snips", "dr"}
    assert out["dr"].as_dict()["value"] == pytest.approx(0.425)


def test_uniform_target_on_a_uniform_log_is_the_plain_mean() -> None:
    rng = np.random.default_rng(1)
    r = (rng.random(500) < 0.1).astype(float)
    p = np.full(500, 1 / 34)
    assert ips(r, p, p).value == pytest.approx(r.mean())
    assert snips(r, p, p).value == pytest.approx(r.mean())
    assert ips(r, p, p).ess == pytest.approx(500)


def test_bootstrap_intervals_are_seeded_and_cover_the_value() -> None:
    rng = np.random.default_rng(2)
    r = (rng.random(2000) < 0.2).astype(float)
    logging = np.full(2000, 0.25)
    target = rng.choice([0.0, 0.5, 1.0], size=2000)
    a = snips(r, target, logging, seed=7)
    b = snips(r, target, logging, seed=7)
    c = snips(r, target, logging, seed=8)
    assert a == b
    assert a.ci != c.ci
    assert a.ci[0] < a.value < a.ci[1]
    constant = ips(np.ones(10), np.full(10, 0.5), np.full(10, 0.5))
    assert constant.ci == (1.0, 1.0)


def simulated_log(n: int, seed: int):
    """Uniform logging over 3 arms with click rates .02 .05 .10; context-free."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.02, 0.05, 0.10])
    arms = rng.integers(0, 3, n)
    r = (rng.random(n) < rates[arms]).astype(float)
    return arms, r, np.full(n, 1 / 3), rates


def test_estimators_are_unbiased_on_simulated_logs() -> None:
    pi = np.array([0.1, 0.2, 0.7])  # target policy, true value = pi . rates
    truth = float(pi @ np.array([0.02, 0.05, 0.10]))
    covered = {"ips": 0, "snips": 0, "dr": 0}
    values = {"ips": [], "snips": [], "dr": []}
    runs = 40
    for seed in range(runs):
        arms, r, p, _ = simulated_log(3000, seed)
        target = pi[arms]
        q = np.full(3, r.mean())  # a deliberately poor reward model: DR must still be unbiased
        ests = {
            "ips": ips(r, target, p, n_bootstrap=200, seed=seed),
            "snips": snips(r, target, p, n_bootstrap=200, seed=seed),
            "dr": dr(r, target, p, q[arms], np.full(len(r), pi @ q), n_bootstrap=200, seed=seed),
        }
        for k, e in ests.items():
            values[k].append(e.value)
            covered[k] += e.ci[0] <= truth <= e.ci[1]
    for k in values:
        assert np.mean(values[k]) == pytest.approx(truth, abs=0.003), k
        assert covered[k] >= 0.8 * runs, (k, covered[k])


def test_dr_with_the_true_reward_model_has_less_variance() -> None:
    pi = np.array([0.1, 0.2, 0.7])
    rates = np.array([0.1, 0.5, 0.9])  # arms differ a lot: IPS pays for which arm was logged
    spread_ips, spread_dr = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        arms = rng.integers(0, 3, 2000)
        r = (rng.random(2000) < rates[arms]).astype(float)
        p = np.full(2000, 1 / 3)
        spread_ips.append(ips(r, pi[arms], p, n_bootstrap=10).value)
        spread_dr.append(
            dr(r, pi[arms], p, rates[arms], np.full(len(r), pi @ rates), n_bootstrap=10).value
        )
    assert np.std(spread_dr) < np.std(spread_ips)


def test_paired_difference() -> None:
    arms, r, p, _ = simulated_log(4000, 3)
    best = (arms == 2).astype(float)  # always arm 2 (rate .10)
    uniform = np.full(len(r), 1 / 3)  # the logging policy (value ~ .057)
    diff, (lo, hi) = difference(
        "snips",
        {"rewards": r, "target": best, "logging": p},
        {"rewards": r, "target": uniform, "logging": p},
    )
    assert diff == pytest.approx(snips(r, best, p).value - snips(r, uniform, p).value)
    assert 0 < lo < diff < hi
    same, ci = difference(
        "ips",
        {"rewards": r, "target": uniform, "logging": p},
        {"rewards": r, "target": uniform, "logging": p},
    )
    assert same == 0.0 and ci == (0.0, 0.0)


def test_bad_logs_are_refused() -> None:
    with pytest.raises(ValueError):
        ips([], [], [])
    with pytest.raises(ValueError):
        ips([1, 0], [0.5], [0.5, 0.5])
    with pytest.raises(ValueError):
        ips([1], [0.5], [0.0])
    with pytest.raises(ValueError):
        ips([1], [1.5], [0.5])


def test_replay_by_hand() -> None:
    log = [("a", 1.0), ("b", 0.0), ("a", 0.0), ("c", 1.0), ("a", 1.0)]
    learnt = []
    res = replay(log, lambda i, row: "a", lambda row: row[0], lambda row: row[1], learnt.append)
    assert (res.matched, res.rows, res.reward) == (3, 5, 2.0)
    assert res.value == pytest.approx(2 / 3)
    assert learnt == [log[0], log[2], log[4]]  # learns only what matched
    none = replay(log, lambda i, row: "z", lambda row: row[0], lambda row: row[1], learnt.append)
    assert (none.value, none.matched) == (0.0, 0)


def test_replay_estimates_a_fixed_policy_on_a_uniform_log() -> None:
    arms, r, _, rates = simulated_log(30_000, 5)
    rows = list(zip(arms.tolist(), r.tolist(), strict=True))
    res = replay(rows, lambda i, row: 2, lambda row: row[0], lambda row: row[1], lambda row: None)
    assert res.matched == pytest.approx(10_000, rel=0.05)
    assert res.value == pytest.approx(rates[2], abs=0.012)


def test_events_needed() -> None:
    # 2.8^2 * 2 * .005 * .995 / (.005 * .2)^2
    assert events_needed(0.005, 0.2) == pytest.approx(78_008, abs=1)
    assert events_needed(0.005, 0.2, ess_ratio=0.5) == pytest.approx(117_012, abs=1)  # (1 + 2) / 2
    with pytest.raises(ValueError):
        events_needed(0.0, 0.1)


def test_exact_auc() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 1], [0.2, 0.9]) == 1.0
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.15
    s = np.round(rng.random(3000) + 0.3 * y, 2)  # rounded: many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.2, 0.3])


def test_probability_metrics() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.6, 0.4])
    assert brier(y, p) == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.6, 0.6])))
    # bins of width .1: {.1}: |.1 - 0|, {.4}: |.4 - 0|, {.6}: |.6 - 1|, {.9}: |.9 - 1|
    assert calibration_error(y, p) == pytest.approx((0.1 + 0.4 + 0.4 + 0.1) / 4)
