"""Offer policies: probabilities exact and equal to what the sampler does, decisions reproducible."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from models.bandit import (
    Apprentice,
    BetaThompson,
    EpsilonGreedy,
    LinearContextual,
    VWContextual,
    decision_rng,
    restore,
)
from models.bandit.base import plackett_luce_marginals
from models.bandit.betamax import max_probabilities, rank_probabilities

ARMS = ["a", "b", "c", "d"]


def beta_fn(a: float, b: float) -> float:
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def p_b_beats_a(a1: int, b1: int, a2: int, b2: int) -> float:
    """Closed form P(X_B > X_A), X_A ~ Beta(a1, b1), X_B ~ Beta(a2, b2), integer a2."""
    return sum(
        beta_fn(a1 + i, b1 + b2) / ((b2 + i) * beta_fn(1 + i, b2) * beta_fn(a1, b1))
        for i in range(a2)
    )


def assert_frequencies(counts: Counter, probs: dict[str, float], n: int) -> None:
    """Every arm's frequency within 4.5 standard errors of its probability."""
    for arm, p in probs.items():
        se = math.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(counts[arm] / n - p) <= 4.5 * se + 1e-9, (arm, counts[arm] / n, p)
    assert sum(counts.values()) == n


def trained_thompson(seed: int = 1) -> BetaThompson:
    t = BetaThompson(seed=seed)
    rng = random.Random(3)
    rates = {"a": 0.05, "b": 0.08, "c": 0.03, "d": 0.06}
    for _ in range(60):
        for arm, rate in rates.items():
            t.update(arm, rng.random() < rate)
    return t


def test_two_arm_probability_matches_the_closed_form() -> None:
    p, err = max_probabilities([3, 5], [40, 50])
    exact = p_b_beats_a(3, 40, 5, 50)
    assert abs(p[1] - exact) <= err  # the error estimate is conservative
    assert err < 1e-4
    p, err = max_probabilities([3, 5], [40, 50], points_per_arm=64)
    assert p[1] == pytest.approx(exact, abs=1e-9)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_many_arm_probabilities_match_a_fine_grid() -> None:
    rng = np.random.default_rng(0)
    a = 1 + rng.poisson(3, 34)
    b = 1 + rng.integers(100, 2000, 34)
    p, err = max_probabilities(a, b)
    ref, _ = max_probabilities(a, b, points_per_arm=256)
    assert np.max(np.abs(p - ref)) < 1e-7
    assert err < 1e-6
    ranks = rank_probabilities(a, b, 3)
    assert np.allclose(ranks[:, 0], p, atol=1e-7)
    assert np.allclose(ranks.sum(axis=0), 1.0)
    assert np.all(ranks.sum(axis=1) <= 1.0 + 1e-9)


def test_symmetric_and_degenerate_posteriors() -> None:
    p, _ = max_probabilities([2, 2, 2], [9, 9, 9])
    assert np.allclose(p, 1 / 3, atol=1e-9)
    p, _ = max_probabilities([1], [1])
    assert p.tolist() == [1.0]
    with pytest.raises(ValueError):
        max_probabilities([0, 1], [1, 1])
    with pytest.raises(ValueError):
        rank_probabilities([1, 1], [1, 1], 3)


def test_thompson_probabilities_sum_to_one_and_match_the_sampler() -> None:
    t = trained_thompson()
    probs = t.probabilities(ARMS)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    n = 20_000
    counts = Counter(t.decide(ARMS, f"d{i}").arm for i in range(n))
    assert_frequencies(counts, probs, n)
    # river's own verb (the policy's random source) draws from the same distribution
    counts = Counter(t.pull(ARMS) for _ in range(n))
    assert_frequencies(counts, probs, n)


def test_thompson_slot_probabilities_match_the_ranking_sampler() -> None:
    t = trained_thompson()
    per_slot = t.slot_probabilities(ARMS, 2)
    n = 20_000
    counts = [Counter(), Counter()]
    for i in range(n):
        d = t.decide(ARMS, f"z{i}", n_slots=2)
        assert d.slots[0].arm != d.slots[1].arm
        for s in range(2):
            counts[s][d.slots[s].arm] += 1
            assert d.slots[s].probability == per_slot[s][d.slots[s].arm]
    for s in range(2):
        assert sum(per_slot[s].values()) == pytest.approx(1.0)
        assert_frequencies(counts[s], per_slot[s], n)


def test_a_decision_is_reproducible_from_seed_and_id() -> None:
    a, b = trained_thompson(seed=7), trained_thompson(seed=7)
    assert [a.decide(ARMS, f"x{i}", n_slots=2) for i in range(50)] == [
        b.decide(ARMS, f"x{i}", n_slots=2) for i in range(50)
    ]
    other = trained_thompson(seed=8)
    assert [a.decide(ARMS, f"x{i}").arm for i in range(50)] != [
        other.decide(ARMS, f"x{i}").arm for i in range(50)
    ]
    assert decision_rng(1, "q").random() == decision_rng(1, "q").random()


def test_thompson_learns_fractional_rewards() -> None:
    t = BetaThompson(alpha=1, beta=1)
    t.update("a", 0.25)
    t.update("a", True)
    assert t.posterior("a") == (2.25, 1.75)
    assert t.posterior("never") == (1.0, 1.0)
    with pytest.raises(ValueError):
        t.update("a", 1.5)


def test_epsilon_greedy_closed_form_and_frequencies() -> None:
    e = EpsilonGreedy(epsilon=0.2, seed=3)
    for r in (1, 0, 1):
        e.update("a", r)
    e.update("b", 1)
    e.update("b", 0)
    e.update("c", 0)
    probs = e.probabilities(ARMS)
    assert probs == pytest.approx({"a": 0.05 + 0.8, "b": 0.05, "c": 0.05, "d": 0.05})
    e.update("b", 1)  # a and b tie at 2/3: the greedy share splits
    probs = e.probabilities(ARMS)
    assert probs == pytest.approx({"a": 0.45, "b": 0.45, "c": 0.05, "d": 0.05})
    n = 20_000
    assert_frequencies(Counter(e.decide(ARMS, f"d{i}").arm for i in range(n)), probs, n)
    per_slot = e.slot_probabilities(ARMS, 3)
    # slot 3 goes to c or d (tied at 0) in the greedy ranking
    assert per_slot[2] == pytest.approx({"a": 0.05, "b": 0.05, "c": 0.45, "d": 0.45})
    counts = [Counter() for _ in range(3)]
    for i in range(n):
        for s, slot in enumerate(e.decide(ARMS, f"s{i}", n_slots=3).slots):
            counts[s][slot.arm] += 1
    for s in range(3):
        assert_frequencies(counts[s], per_slot[s], n)


def test_epsilon_decay() -> None:
    e = EpsilonGreedy(epsilon=0.5, decay=0.1)
    for _ in range(10):
        e.update("a", 1)
    assert e.current_epsilon == pytest.approx(0.5 * math.exp(-1.0))


def contextual_policies() -> list:
    return [
        LinearContextual(epsilon=0.1, temperature=0.5, learning_rate=0.1, seed=2),
        LinearContextual(epsilon=0.1, temperature=None, seed=2),
        VWContextual(exploration="epsilon", epsilon=0.2, seed=2),
        VWContextual(exploration="squarecb", seed=2),
        VWContextual(exploration="softmax", temperature=0.5, epsilon=0.05, seed=2),
    ]


def train_contextual(pol, steps: int = 400) -> None:
    rng = random.Random(5)
    for i in range(steps):
        ctx = {"device": rng.choice(["mobile", "desktop"]), "score": rng.random()}
        d = pol.decide(ARMS, f"t{i}", ctx)
        good = "a" if ctx["device"] == "mobile" else "b"
        pol.update(d.arm, float(d.arm == good), ctx, probability=d.probability, arm_ids=ARMS)


@pytest.mark.parametrize("pol", contextual_policies(), ids=lambda p: f"{p.kind}")
def test_contextual_probabilities_match_the_sampler(pol) -> None:
    train_contextual(pol)
    ctx = {"device": "mobile", "score": 0.4}
    probs = pol.probabilities(ARMS, ctx)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(p > 0 for p in probs.values())
    n = 6_000
    assert_frequencies(Counter(pol.decide(ARMS, f"c{i}", ctx).arm for i in range(n)), probs, n)
    marg = pol.slot_probabilities(ARMS, 2, ctx)
    counts = [Counter(), Counter()]
    for i in range(n):
        d = pol.decide(ARMS, f"m{i}", ctx, n_slots=2)
        for s in range(2):
            counts[s][d.slots[s].arm] += 1
    for s in range(2):
        assert sum(marg[s].values()) == pytest.approx(1.0)
        assert_frequencies(counts[s], marg[s], n)


@pytest.mark.parametrize("pol", contextual_policies()[:3], ids=lambda p: f"{p.kind}")
def test_contextual_policies_learn_the_context(pol) -> None:
    train_contextual(pol, 1500)
    assert (
        max(
            pol.probabilities(ARMS, {"device": "mobile", "score": 0.5}).items(),
            key=lambda kv: kv[1],
        )[0]
        == "a"
    )
    assert (
        max(
            pol.probabilities(ARMS, {"device": "desktop", "score": 0.5}).items(),
            key=lambda kv: kv[1],
        )[0]
        == "b"
    )


def test_action_features_reach_the_models() -> None:
    for pol in (
        LinearContextual(temperature=0.2, learning_rate=0.2),
        VWContextual(exploration="squarecb"),
    ):
        feats = {a: {"colour": "red" if a in ("a", "c") else "blue"} for a in ARMS}
        for i in range(800):
            d = pol.decide(ARMS, f"f{i}", {}, action_features=feats)
            pol.update(
                d.arm,
                float(feats[d.arm]["colour"] == "red"),
                {},
                probability=d.probability,
                arm_ids=ARMS,
                action_features=feats,
            )
        p = pol.probabilities(ARMS, {}, feats)
        assert p["a"] + p["c"] > 0.7


def test_plackett_luce_marginals_by_hand() -> None:
    base = {"a": 0.5, "b": 0.3, "c": 0.2}

    def pmf_for(slot: int, remaining: list[str]) -> dict[str, float]:
        total = sum(base[a] for a in remaining)
        return {a: base[a] / total for a in remaining}

    m = plackett_luce_marginals(pmf_for, ["a", "b", "c"], 2)
    assert m[0] == pytest.approx(base)
    # P(b second) = P(a first) * .3/.5 + P(c first) * .3/.8
    assert m[1]["b"] == pytest.approx(0.5 * 0.6 + 0.2 * 0.375)
    assert sum(m[1].values()) == pytest.approx(1.0)


def test_apprentice_serves_the_baseline_until_the_policy_agrees() -> None:
    app = Apprentice(EpsilonGreedy(epsilon=0.1, seed=1), agreement=0.9, window=50)
    rng = random.Random(0)
    seen_modes = []
    for i in range(400):
        d = app.decide(ARMS, f"p{i}", baseline="c")
        seen_modes.append(app.mode)
        if app.mode == "apprentice" and d.extra.get("mode") == "apprentice":
            assert d.arm == "c" and d.probability == 1.0
            assert d.probabilities == {"a": 0.0, "b": 0.0, "c": 1.0, "d": 0.0}
        # the baseline's arm is rewarded; learn what was shown
        app.update(d.arm, float(d.arm == "c" and rng.random() < 0.5))
        if i == 0:
            app.update("a", 0.0)  # the policy has seen another arm fail
    assert seen_modes[0] == "apprentice"
    assert "online" in seen_modes, "the policy agreed with the baseline, so it should take over"
    switch_at = seen_modes.index("online")
    assert switch_at >= 49  # never before a full window
    assert app.agreement_rate >= 0.9
    copy = Apprentice.restore(app.snapshot())
    assert copy.mode == "online" and copy.snapshot() == app.snapshot()


def test_apprentice_stays_while_the_policy_disagrees() -> None:
    pol = EpsilonGreedy(epsilon=0.0)
    pol.update("a", 1.0)
    app = Apprentice(pol, agreement=0.5, window=20)
    for i in range(100):
        assert app.decide(ARMS, f"q{i}", baseline="b").arm == "b"
    assert app.mode == "apprentice" and app.agreement_rate == 0.0
    with pytest.raises(ValueError):
        app.decide(ARMS, "bad", baseline="zz")


def test_thompson_drift_reaction_forgets_the_old_rate() -> None:
    rng = random.Random(4)
    plain, drifting = BetaThompson(seed=1), BetaThompson(seed=1, drift_delta=0.002)
    for t in range(4000):
        rate = 0.6 if t < 3000 else 0.05
        r = rng.random() < rate
        plain.update("a", r)
        drifting.update("a", r)
    mean = lambda ab: ab[0] / (ab[0] + ab[1])  # noqa: E731
    assert drifting.drift_detections.get("a", 0) >= 1
    assert mean(drifting.posterior("a")) < 0.15  # follows the new rate
    assert mean(plain.posterior("a")) > 0.4  # still remembers the old one
    copy = BetaThompson.restore(drifting.snapshot())
    assert copy.snapshot() == drifting.snapshot()


def test_epsilon_drift_reaction() -> None:
    rng = random.Random(4)
    e = EpsilonGreedy(drift_delta=0.002)
    for t in range(4000):
        e.update("a", rng.random() < (0.6 if t < 3000 else 0.05))
    assert e.drift_detections.get("a", 0) >= 1
    assert e.mean("a") < 0.15


def test_restore_picks_the_class_by_kind() -> None:
    for pol in (trained_thompson(), EpsilonGreedy(), LinearContextual(), VWContextual()):
        assert type(restore(pol.snapshot())) is type(pol)
    with pytest.raises(ValueError):
        restore(b"\x81\xa4kind\xa4nope")
    with pytest.raises(ValueError):
        restore(b"not msgpack at all \xc1")


def test_bad_arguments_are_refused() -> None:
    t = BetaThompson()
    with pytest.raises(ValueError):
        t.decide([], "x")
    with pytest.raises(ValueError):
        t.decide(["a", "a"], "x")
    with pytest.raises(ValueError):
        t.decide(["a"], "x", n_slots=2)
    with pytest.raises(ValueError):
        BetaThompson(alpha=0)
    with pytest.raises(ValueError):
        EpsilonGreedy(epsilon=2)
    with pytest.raises(ValueError):
        VWContextual(exploration="greedy")
    with pytest.raises(ValueError):
        VWContextual().update("a", 1.0, {}, arm_ids=["a", "b"])  # no probability


def test_contextual_policies_learn_fractional_rewards() -> None:
    for pol in (
        LinearContextual(temperature=0.2, learning_rate=0.2),
        VWContextual(exploration="squarecb"),
    ):
        for i in range(600):
            d = pol.decide(ARMS, f"r{i}", {"x": "y"})
            pol.update(
                d.arm,
                0.8 if d.arm == "c" else 0.2,
                {"x": "y"},
                probability=d.probability,
                arm_ids=ARMS,
            )
        p = pol.probabilities(ARMS, {"x": "y"})
        assert max(p, key=p.get) == "c"
