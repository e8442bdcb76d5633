"""Offer bandits in campaigns (pure): the policy field, the pick, select, the learner."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.logic.decisions.assign import bucket
from engine.logic.decisions.config import ConfigError, load_config
from engine.logic.decisions.learning import OfferLearner
from engine.logic.decisions.policy import new_model, pick, restore_model
from engine.logic.decisions.select import select
from engine.logic.decisions.state import decision_id, decision_record

CAMPAIGN = """\
id: hero
name: Hero
status: active
zones: [hero]
control_percent: 20
{policy}
variants:
  - id: a
    template: {{title: "A"}}
  - id: b
    template: {{title: "B"}}
goal:
  event: purchase
  window: 1d
"""


def config_with(tmp_path: Path, policy: str):  # type: ignore[no-untyped-def]
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    (tmp_path / "campaigns" / "hero.yaml").write_text(CAMPAIGN.format(policy=policy))
    return load_config(tmp_path)


@pytest.mark.parametrize("policy, kind", [
    ("policy: thompson", "thompson"),
    ("policy: {type: epsilon_greedy, epsilon: 0.2}", "epsilon_greedy"),
    ("", "fixed"),
])
def test_policy_field(tmp_path: Path, policy: str, kind: str) -> None:
    c = config_with(tmp_path, policy).campaigns["hero"]
    assert c.policy.kind == kind
    assert c.learns is (kind != "fixed")


@pytest.mark.parametrize("policy, needle", [
    ("policy: ucb", "policy must be one of ['fixed', 'thompson', 'epsilon_greedy', 'contextual']"),
    ("policy: {type: ucb}", "policy.type must be one of"),
    ("policy: {type: epsilon_greedy, epsilon: 2}", "policy.epsilon must be between 0 and 1"),
    ("policy: {type: thompson, epsilon: 0.1}", "policy.epsilon is not an option of thompson"),
    ("policy: [thompson]", "policy must be one of"),
])
def test_policy_errors_name_the_field(tmp_path: Path, policy: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_with(tmp_path, policy)
    assert needle in str(exc.value), str(exc.value)
    assert "hero.yaml:" in str(exc.value)


def test_a_bandit_needs_two_variants(tmp_path: Path) -> None:
    (tmp_path / "campaigns").mkdir()
    text = CAMPAIGN.format(policy="policy: thompson").split("  - id: b")[0] + \
        "goal:\n  event: purchase\n"
    (tmp_path / "campaigns" / "hero.yaml").write_text(text)
    with pytest.raises(ConfigError, match="thompson needs at least two variants"):
        load_config(tmp_path)


def test_pick_keeps_the_hashed_holdout_and_logs_the_probability(tmp_path: Path) -> None:
    c = config_with(tmp_path, "policy: thompson").campaigns["hero"]
    model = new_model(c.policy)
    for _ in range(30):
        model.update("b", 1.0)
        model.update("a", 0.0)
    shown: Counter[str] = Counter()
    for i in range(2000):
        vid = f"v{i}"
        p = pick(c, model, vid, f"r{i}")
        assert p.control == (bucket("hero", vid) < 0.2)  # the same holdout as the fixed split
        assert abs(sum(p.probabilities.values()) - 1.0) < 1e-6
        if p.control:
            assert p.probability == pytest.approx(0.2)
        else:
            assert p.probability == pytest.approx(p.probabilities[str(p.variant)])
        shown[str(p.variant)] += 1
        assert pick(c, model, vid, f"r{i}") == p  # reproducible from the decision's id
    probs = pick(c, model, "x", "y").probabilities
    n_shown = sum(v for k, v in shown.items() if k != "None")
    assert shown["b"] / n_shown == pytest.approx(probs["b"] / 0.8, abs=0.03)


def test_select_uses_the_model_and_the_token(tmp_path: Path) -> None:
    config = config_with(tmp_path, "policy: {type: epsilon_greedy, epsilon: 0.0}")
    model = new_model(config.campaigns["hero"].policy)
    model.update("b", 1.0)
    profile = {"profile_id": "v:not-held-out"}
    while bucket("hero", profile["profile_id"]) < 0.2:
        profile["profile_id"] += "x"
    [d] = select(config, profile, {}, 0, zones=["hero"], models={"hero": model},
                 token=lambda: "abcdefghij")
    assert (d.variant_id, d.probability, d.token, d.policy) == ("b", pytest.approx(0.8),
                                                                "abcdefghij", "epsilon_greedy")
    rec = decision_record(d, decision_id("hero", d.arm, "abcdefghij"), "v", None, 0)
    assert rec["props"]["policy"] == "epsilon_greedy"
    assert rec["props"]["probability"] == pytest.approx(0.8)


def test_restore_model_of_another_policy_starts_fresh(tmp_path: Path) -> None:
    c = config_with(tmp_path, "policy: thompson").campaigns["hero"]
    eps = config_with(tmp_path, "policy: epsilon_greedy").campaigns["hero"]
    blob = new_model(eps.policy).snapshot()
    assert type(restore_model(c.policy, blob)).__name__ == "BetaThompson"
    assert type(restore_model(c.policy, b"junk")).__name__ == "BetaThompson"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _decision(i: int, arm: str, t: datetime, control: bool = False) -> dict:
    did = f"hero.{arm}.{i:010d}"
    return {"event_id": did, "decision_id": did, "type": "decision", "visitor_id": f"v{i}",
            "ts": ms(t), "props": {"campaign": "hero", "variant": None if control else arm,
                                   "arm": arm, "control": control, "probability": 0.4}}


def test_learner_joins_rewards_and_resumes_from_its_snapshot(tmp_path: Path) -> None:
    config = config_with(tmp_path, "policy: thompson")
    clock = Clock()
    learner = OfferLearner(clock, timedelta(minutes=5), default_reward=0.0)
    learner.configure(config)
    t0 = clock.now
    assert learner.decision(_decision(1, "a", t0))
    assert learner.decision(_decision(2, "b", t0))
    assert not learner.decision(_decision(3, "control", t0, control=True))
    # a click by decision id, a goal event by visitor, one delivered twice
    assert learner.event({"event_id": "c1", "type": "click", "decision_id": "hero.a.0000000001",
                          "visitor_id": "v1", "ts": ms(t0) + 1000})
    purchase = {"event_id": "p2", "type": "purchase", "visitor_id": "v2", "ts": ms(t0) + 2000}
    assert learner.event(purchase) and learner.event(purchase)
    assert not learner.event({"event_id": "x", "type": "click", "decision_id": "other.a.1",
                              "ts": ms(t0)})
    learner.seen("decisions", 0, 41)
    blob = learner.snapshot()
    clock.now = t0 + timedelta(minutes=6)
    assert learner.advance() == 2
    model = learner.models["hero"]
    assert model.posterior("a") == (2.0, 1.0) and model.posterior("b") == (2.0, 1.0)
    rows = learner.take_rows()["hero"]
    assert sorted(r["reward"] for r in rows) == [1.0, 1.0]
    assert set(learner.take_changed()) == {"hero"}

    # a restart from the snapshot taken before the windows closed counts each reward once
    again = OfferLearner.restore(blob, clock, timedelta(minutes=5), 0.0)
    again.configure(config)
    assert again.offsets == {"decisions:0": 42}
    again.decision(_decision(1, "a", t0))  # re-read after the snapshot: already open
    again.event(purchase)
    assert again.advance() == 2
    assert again.models["hero"].posterior("a") == (2.0, 1.0)
    assert again.models["hero"].posterior("b") == (2.0, 1.0)
    again.decision(_decision(1, "a", t0))  # after its window closed: ignored
    clock.now += timedelta(minutes=6)
    assert again.advance() == 0


def test_learner_default_reward_and_explicit_reward(tmp_path: Path) -> None:
    config = config_with(tmp_path, "policy: epsilon_greedy")
    clock = Clock()
    learner = OfferLearner(clock, timedelta(seconds=10), default_reward=0.25)
    learner.configure(config)
    learner.decision(_decision(1, "a", clock.now))
    learner.decision(_decision(2, "b", clock.now))
    assert learner.event({"event_id": "r", "type": "reward", "decision_id": "hero.b.0000000002",
                          "ts": ms(clock.now) + 5, "props": {"value": 0.7}})
    assert not learner.event({"event_id": "r2", "type": "reward",
                              "decision_id": "hero.b.0000000002", "ts": ms(clock.now),
                              "props": {"value": 7}})
    clock.now += timedelta(seconds=11)
    assert learner.advance() == 2
    assert learner.models["hero"].mean("a") == pytest.approx(0.25)
    assert learner.models["hero"].mean("b") == pytest.approx(0.7)


def test_session_propensity_is_prequential_and_learns_each_example_once() -> None:
    from models.propensity.online import SessionPropensity

    sp = SessionPropensity(gap_ms=1000)
    seen = []
    t = 0
    for v in range(40):
        buys = v % 3 == 0
        for i in range(3):
            t += 10
            seen.append(sp.event({"visitor_id": f"v{v}", "ts": t, "type": "item_view",
                                  "item": {"id": str(i)}}))
        if buys:
            t += 10
            assert sp.event({"visitor_id": f"v{v}", "ts": t, "type": "purchase"})[1] == 1.0
        t += 5000
        sp.advance(t)
    assert all(s is not None and 0 <= s[1] <= 1 and 0 <= s[2] <= 1 for s in seen)
    # per session of 3 views: 3 exit examples (one per event, the purchase event's too when
    # there is one) and 3 purchase examples
    buyers = len(range(0, 40, 3))
    assert sp.learnt == 40 * 3 + buyers + 40 * 3
    assert not sp.sessions
    again = SessionPropensity.restore(sp.snapshot())
    x = {"visitor_id": "z", "ts": t + 1, "type": "page_view"}
    assert again.event(x) == sp.event(x)


def test_rules_target_propensity(tmp_path: Path) -> None:
    from engine.logic.decisions.rules import RuleError, compile_rule

    rule = compile_rule({"exit_probability": {"op": ">", "value": 0.6}})
    assert rule({"propensity": {"exit": 0.7}}, {}, 0)
    assert not rule({"propensity": {"exit": 0.5}}, {}, 0)
    assert not rule({}, {}, 0)  # no score yet
    assert compile_rule({"purchase_probability": {"op": "<", "value": 0.1}})(
        {"propensity": {"purchase": 0.05}}, {}, 0)
    with pytest.raises(RuleError, match="must be a probability"):
        compile_rule({"exit_probability": {"op": ">", "value": 2}})
    text = CAMPAIGN.format(policy="targeting:\n  exit_probability: {op: '>', value: 0.6}")
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "hero.yaml").write_text(text)
    assert load_config(tmp_path).needs_propensity


def test_a_change_in_an_arms_reward_rate_is_detected_and_the_arm_forgets(tmp_path: Path) -> None:
    from engine import metrics

    config = config_with(tmp_path, "policy: thompson")
    clock = Clock()
    learner = OfferLearner(clock, timedelta(seconds=1), 0.0)
    learner.configure(config)
    for i in range(1200):
        t = clock.now
        learner.decision(_decision(i, "a", t))
        if i < 600:  # a was always clicked, then never
            learner.event({"event_id": f"c{i}", "type": "click",
                           "decision_id": f"hero.a.{i:010d}", "ts": ms(t)})
        clock.now += timedelta(seconds=2)
        learner.advance()
    assert learner.drift_detections.get("hero:a", 0) >= 1
    alpha, beta = learner.models["hero"].posterior("a")
    assert alpha < 100 < beta  # the 600 early successes are forgotten
    lines = metrics.learner_lines({"drift:hero:a": learner.drift_detections["hero:a"]},
                                  {"hero": 3}).decode()
    assert 'kairos_learner_drift_detections_total{model="hero:a"}' in lines
    assert 'kairos_model_version{model="hero"} 3' in lines


def test_warm_computes_the_probabilities_a_decision_asks_for(tmp_path: Path) -> None:
    from engine.logic.decisions.policy import warm

    c = config_with(tmp_path, "policy: thompson").campaigns["hero"]
    model = restore_model(c.policy, new_model(c.policy).snapshot())
    assert warm(c, model) is model
    assert len(model._cache) == 1  # what `pick` asks next is a cache hit: no integration
    before = dict(model._cache)
    p = pick(c, model, "v1", "r1")
    assert model._cache == before and abs(sum(p.probabilities.values()) - 1) < 1e-9
