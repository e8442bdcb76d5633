"""Contextual and multi-slot campaigns (pure): the config, the features, the pick's logged
probabilities against its own frequencies, select's per-slot decisions, the learner, the
evaluation of a contextual model per row."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.logic.decisions.assign import bucket
from engine.logic.decisions.config import Campaign, ConfigError, load_config
from engine.logic.decisions.evaluation import bandit_candidate, candidates_for, evaluate_log
from engine.logic.decisions.features import visitor_features
from engine.logic.decisions.learning import OfferLearner
from engine.logic.decisions.policy import new_model, pick, restore_model, slot_features
from engine.logic.decisions.select import select
from engine.logic.decisions.state import decision_id, decision_record

CAMPAIGN = """\
id: hero
name: Hero
status: active
zones: [hero]
control_percent: 10
{extra}
variants:
  - id: a
    template: {{title: "A"}}
  - id: b
    template: {{title: "B"}}
  - id: c
    template: {{title: "C"}}
goal:
  event: purchase
  window: 1d
"""

MOBILE = {"device": "mobile", "segments": ["app_users"]}
DESKTOP = {"device": "desktop", "top_categories": ["shoes"]}


def config_with(tmp_path: Path, extra: str):  # type: ignore[no-untyped-def]
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    (tmp_path / "campaigns" / "hero.yaml").write_text(CAMPAIGN.format(extra=extra))
    return load_config(tmp_path)


def campaign(tmp_path: Path, extra: str) -> Campaign:
    return config_with(tmp_path, extra).campaigns["hero"]  # type: ignore[no-any-return]


def trained(c: Campaign, steps: int = 300):  # type: ignore[no-untyped-def]
    """A contextual model that learnt: mobile visitors click b, desktop ones a."""
    model = new_model(c.policy)
    for _ in range(steps):
        for x, good in ((MOBILE, "b"), (DESKTOP, "a")):
            for arm in ("a", "b", "c"):
                model.update(arm, 1.0 if arm == good else 0.0, x)
    return model


# -- configuration -------------------------------------------------------------------------

def test_contextual_policy_and_slots_parse(tmp_path: Path) -> None:
    c = campaign(tmp_path, "policy: contextual")
    assert (c.policy.kind, c.learns, c.contextual, c.slots) == ("contextual", True, True, 1)
    c = campaign(tmp_path, "policy: {type: contextual, epsilon: 0.1, temperature: 0.5}\nslots: 2")
    assert dict(c.policy.params) == {"epsilon": 0.1, "temperature": 0.5}
    assert c.slots == 2
    model = new_model(c.policy)
    assert (model.epsilon, model.temperature, model.seed) == (0.1, 0.5, 0)
    assert config_with(tmp_path, "policy: contextual").needs_propensity  # a feature it reads


@pytest.mark.parametrize("extra, line, needle", [
    ("policy: {type: contextual, temperature: 0}", 6, "policy.temperature must be between"),
    ("policy: {type: contextual, decay: 0.1}", 6, "policy.decay is not an option of contextual"),
    ("policy: {type: contextual, epsilon: x}", 6, "policy.epsilon must be a number"),
    ("slots: 2", 6, "slots more than one slot needs a learning policy"),
    ("policy: thompson\nslots: 4", 7, "slots must be at most the number of variants (3)"),
    ("policy: thompson\nslots: 0", 7, "slots must be >= 1"),
    ("policy: thompson\nslots: two", 7, "slots must be an integer"),
])
def test_bad_policy_settings_name_file_and_line(tmp_path: Path, extra: str, line: int,
                                                needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_with(tmp_path, extra)
    assert needle in str(exc.value), str(exc.value)
    assert f"hero.yaml:{line}:" in str(exc.value), str(exc.value)


# -- features ------------------------------------------------------------------------------

def test_visitor_features() -> None:
    view = {"affinities": {"category": {"shoes": 5.0, "hats": 1.0, "bags": 3.0, "belts": 2.0,
                                        "old": 0.0},
                           "brand": {}, "tag": {"x": 1.0}, "item": {}},
            "segments": ["vip", "app_users"], "propensity": {"purchase": 0.123456, "exit": 0.5},
            "event_count": 1}
    ctx = {"device": "mobile", "channel": "web", "page_type": "home", "zones": ["hero"],
           "other": "ignored"}
    assert visitor_features(view, ctx) == {
        "top_categories": ["shoes", "bags", "belts"], "segments": ["app_users", "vip"],
        "device": "mobile", "channel": "web", "page_type": "home",
        "purchase_probability": 0.1235, "exit_probability": 0.5, "returning": False}
    assert visitor_features({}, {}) == {}
    assert visitor_features({"affinities": {}, "segments": []}, {"device": 3}) == {}


# -- the pick --------------------------------------------------------------------------------

def test_contextual_pick_probabilities_sum_to_one_and_match_its_frequencies(tmp_path: Path
                                                                            ) -> None:
    c = campaign(tmp_path, "policy: {type: contextual, epsilon: 0.1, temperature: 0.3}")
    model = trained(c)
    for x, good in ((MOBILE, "b"), (DESKTOP, "a")):
        p0 = pick(c, model, "someone", "r", x)
        probs = {a: p for a, p in p0.probabilities.items() if a != "control"}
        assert abs(sum(p0.probabilities.values()) - 1.0) < 1e-9  # control included
        assert max(probs, key=probs.__getitem__) == good
        shown: Counter[str] = Counter()
        n = 0
        for i in range(3000):
            vid = f"v{i}"
            p = pick(c, model, vid, f"r{i}", x)
            assert p.control == (bucket("hero", vid) < 0.1)  # the fixed hashed holdout
            assert p == pick(c, model, vid, f"r{i}", x)  # reproducible from the decision id
            if p.control:
                assert p.probability == pytest.approx(0.1)
                continue
            assert p.probability == pytest.approx(probs[str(p.variant)])
            shown[str(p.variant)] += 1
            n += 1
        for a in ("a", "b", "c"):
            assert shown[a] / n == pytest.approx(probs[a] / 0.9, abs=0.03)


def test_thompson_multi_slot_logs_each_slots_marginal(tmp_path: Path) -> None:
    c = campaign(tmp_path, "policy: thompson\nslots: 2")
    model = new_model(c.policy)
    for _ in range(5):
        model.update("a", 1.0)
        model.update("b", 0.0)
    marg = model.slot_probabilities(["a", "b", "c"], 2)
    seen: list[Counter[str]] = [Counter(), Counter()]
    n = 0
    for i in range(3000):
        p = pick(c, model, f"v{i}", f"r{i}")
        if p.control:
            assert p.slots == ()
            continue
        n += 1
        assert len(p.slots) == 2 and p.slots[0][0] != p.slots[1][0]
        for s, (arm, prob) in enumerate(p.slots):
            assert prob == pytest.approx(0.9 * marg[s][arm])
            seen[s][arm] += 1
    for s in range(2):
        assert abs(sum(marg[s].values()) - 1.0) < 1e-6
        for a in ("a", "b", "c"):
            assert seen[s][a] / n == pytest.approx(marg[s][a], abs=0.03)


def test_contextual_multi_slot_logs_the_conditional_probability(tmp_path: Path) -> None:
    c = campaign(tmp_path, "policy: {type: contextual, epsilon: 0.2, temperature: 0.5}\nslots: 2")
    model = trained(c, 50)
    sf = slot_features(2)
    assert sf == [{"slot": "0"}, {"slot": "1"}]
    second: Counter[str] = Counter()
    n_after_b = 0
    for i in range(3000):
        p = pick(c, model, f"v{i}", f"r{i}", MOBILE)
        if p.control:
            continue
        (a0, p0), (a1, p1) = p.slots
        first = model.probabilities(["a", "b", "c"], {**MOBILE, **sf[0]})
        rest = [a for a in ("a", "b", "c") if a != a0]
        cond = model.probabilities(rest, {**MOBILE, **sf[1]})
        assert p0 == pytest.approx(0.9 * first[a0]) and p1 == pytest.approx(0.9 * cond[a1])
        if a0 == "b":
            n_after_b += 1
            second[a1] += 1
    cond_b = model.probabilities(["a", "c"], {**MOBILE, **sf[1]})
    assert second["a"] / n_after_b == pytest.approx(cond_b["a"], abs=0.04)


# -- select and the decision records --------------------------------------------------------

def _profile() -> dict[str, Any]:
    profile: dict[str, Any] = {"profile_id": "v:x", "segments": ["app_users"],
                               "affinities": {"category": {"shoes": 2.0}}, "event_count": 3}
    while bucket("hero", profile["profile_id"]) < 0.1:
        profile["profile_id"] += "x"
    return profile


def test_select_fills_every_slot_and_logs_features(tmp_path: Path) -> None:
    config = config_with(tmp_path, "policy: contextual\nslots: 3")
    model = trained(config.campaigns["hero"], 20)
    ctx = {"device": "mobile", "page_type": "home"}
    out = select(config, _profile(), ctx, 0, zones=["hero"], models={"hero": model},
                 token=lambda: "abcdefghij")
    assert [d.slot for d in out] == [0, 1, 2]
    assert sorted(str(d.variant_id) for d in out) == ["a", "b", "c"]
    assert out[2].probability == pytest.approx(0.9)  # the last variant left: conditional 1
    ids = {decision_id("hero", d.arm, str(d.token)) for d in out}
    assert len(ids) == 3  # one decision id per slot, the same random part
    want = {"top_categories": ["shoes"], "segments": ["app_users"], "device": "mobile",
            "page_type": "home", "returning": True}
    for d in out:
        body = d.to_dict()
        assert body["slot"] == d.slot and body["content"] == {"title": str(d.variant_id).upper()}
        rec = decision_record(d, decision_id("hero", d.arm, "abcdefghij"), "v", None, 0)
        assert rec["props"]["slot"] == d.slot and rec["props"]["features"] == want
        assert rec["props"]["policy"] == "contextual"
    again = select(config, _profile(), ctx, 0, zones=["hero"], models={"hero": model},
                   token=lambda: "abcdefghij")
    assert again == out  # reproducible from the decision id and the model version


def test_single_slot_decisions_keep_their_shape(tmp_path: Path) -> None:
    config = config_with(tmp_path, "policy: thompson")
    [d] = select(config, _profile(), {}, 0, zones=["hero"], token=lambda: "abcdefghij")
    assert "slot" not in d.to_dict() and d.features is None
    rec = decision_record(d, decision_id("hero", d.arm, "abcdefghij"), "v", None, 0)
    assert "slot" not in rec["props"] and "features" not in rec["props"]


# -- the learner -----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _record(i: int, arm: str, t: datetime, features: dict[str, Any], slot: int | None,
            probability: float) -> dict[str, Any]:
    did = f"hero.{arm}.{i:010d}"
    props: dict[str, Any] = {"campaign": "hero", "variant": arm, "arm": arm, "control": False,
                             "probability": probability, "policy": "contextual",
                             "features": features}
    if slot is not None:
        props["slot"] = slot
    return {"event_id": did, "decision_id": did, "type": "decision", "visitor_id": f"v{i}",
            "ts": int(t.timestamp() * 1000), "props": props}


def test_learner_learns_a_contextual_campaign_and_resumes_from_its_snapshot(tmp_path: Path
                                                                            ) -> None:
    config = config_with(tmp_path, "policy: {type: contextual, epsilon: 0.1}\nslots: 2")
    c = config.campaigns["hero"]
    clock = Clock()
    learner = OfferLearner(clock, timedelta(minutes=5))
    learner.configure(config)
    t0 = clock.now
    served = new_model(c.policy)
    clicks = 0
    for i in range(400):
        x = MOBILE if i % 2 else DESKTOP
        good = "b" if i % 2 else "a"
        p = pick(c, served, f"v{i}x", f"r{i}", dict(x))
        if p.control:
            continue
        for s, (arm, prob) in enumerate(p.slots):
            rec = _record(i * 10 + s, arm, t0, dict(x), s, prob)
            assert learner.decision(rec)
            if arm == good:
                clicks += 1
                assert learner.event({"event_id": f"c{i}-{s}", "type": "click",
                                      "decision_id": rec["decision_id"],
                                      "ts": int(t0.timestamp() * 1000) + 1})
    clock.now = t0 + timedelta(minutes=6)
    closed = learner.advance()
    assert closed > 600
    model = learner.models["hero"]
    assert model.n == closed
    for x, good in ((MOBILE, "b"), (DESKTOP, "a")):
        probs = model.probabilities(["a", "b", "c"], {**x, "slot": "0"})
        assert max(probs, key=probs.__getitem__) == good
    rows = learner.take_rows()["hero"]
    assert len(rows) == closed and sum(r["reward"] for r in rows) == clicks
    assert {r["slot"] for r in rows} == {0, 1}
    assert all(r["features"] in (MOBILE, DESKTOP) for r in rows)
    # the published bytes round trip to the same model; the learner's snapshot too
    blob = learner.take_changed()["hero"]
    again = restore_model(c.policy, blob)
    assert again.probabilities(["a", "b", "c"], MOBILE) == model.probabilities(["a", "b", "c"],
                                                                                MOBILE)
    back = OfferLearner.restore(learner.snapshot(), clock, timedelta(minutes=5), 0.0)
    assert back.models["hero"].snapshot() == model.snapshot()
    assert learner.drift_detections == {}
    # a contextual model is evaluated per row, on the first slot's rows
    arms = ["a", "b", "c"]
    cand = bandit_candidate(model, arms)
    assert callable(cand)
    doc = evaluate_log(rows, arms, 0.1, candidates_for(arms, dict(c.weights), cand, rows),
                       n_bootstrap=20)
    assert doc["rows"] == sum(1 for r in rows if r["slot"] == 0)
    assert doc["policies"]["bandit"]["per_row"] is True
    assert abs(sum(doc["policies"]["bandit"]["distribution"].values()) - 1.0) < 1e-9
    assert doc["policies"]["bandit"]["snips"]["value"] > doc["policies"]["uniform"]["snips"][
        "value"]


def test_linear_pmf_sums_the_context_once_and_matches_its_scores() -> None:
    """pmf sums the context's own terms once per decision: the same log-odds as `score`."""
    import math

    from models.bandit.contextual import LinearContextual, _explore

    model = LinearContextual(epsilon=0.1, temperature=0.5, seed=3)
    af = {"a": {"kind": "x", "price": 2.0}, "c": {"kind": "y"}}
    for i in range(200):
        x = MOBILE if i % 2 else DESKTOP
        for arm in ("a", "b", "c"):
            model.update(arm, float((arm == "b") == bool(i % 2)), x, action_features=af)
    for x in (MOBILE, DESKTOP, {}, {**MOBILE, "exit_probability": 0.7}):
        logits = {}
        for arm in ("a", "b", "c"):
            p = min(max(model.score(x, arm, af.get(arm)), 1e-12), 1 - 1e-12)
            logits[arm] = math.log(p / (1 - p))
        want = _explore(logits, 0.1, 0.5)
        got = model.pmf(["a", "b", "c"], x, af)
        assert got == pytest.approx(want, abs=1e-12)
        assert abs(sum(got.values()) - 1.0) < 1e-12


def test_check_config_names_every_bad_setting_of_a_campaign(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        config_with(tmp_path, "policy: {type: contextual, temperature: 0}\nslots: 9")
    text = str(exc.value)
    assert "hero.yaml:6: policy.temperature must be between 0.001 and 100" in text, text
    assert "hero.yaml:7: slots must be at most the number of variants (3)" in text, text
