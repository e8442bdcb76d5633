"""The Rank/Reward API's pure logic: validation naming the field, the answer, apprentice mode,
and the learner's side (windows per slot, deferred activation, rewards by slot)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.logic.decisions.learning import OfferLearner
from engine.logic.rank import (
    MAX_ACTIONS,
    RANK_MODEL,
    RankError,
    activation_record,
    new_rank_model,
    parse_rank,
    parse_reward,
    rank,
    record,
    reward_record,
)

ACTIONS = [{"id": "news", "features": {"topic": "news"}}, {"id": "sport"}, {"id": "food"}]


@pytest.mark.parametrize("doc, field", [
    ([], "body"),
    ({"actions": []}, "actions"),
    ({"actions": [{"id": str(i)} for i in range(MAX_ACTIONS + 1)]}, "actions"),
    ({"actions": [{"id": "a"}, {"id": "a"}]}, "actions[1].id"),
    ({"actions": [{"id": 3}]}, "actions[0].id"),
    ({"actions": ACTIONS, "excluded_actions": ["nope"]}, "excluded_actions"),
    ({"actions": ACTIONS, "event_id": "bad id!"}, "event_id"),
    ({"actions": ACTIONS, "context": {"x": {"deep": 1}}}, "context.x"),
    ({"actions": ACTIONS, "slots": [{"id": "a"}, {"id": "a"}]}, "slots"),
    ({"actions": ACTIONS, "slots": [{"id": "a", "baseline": "zzz"}]}, "slots[0].baseline"),
    ({"actions": ACTIONS[:1], "slots": [{"id": "a"}, {"id": "b"}]}, "actions"),
    ({"actions": ACTIONS, "defer_activation": "yes"}, "defer_activation"),
    ({"actions": ACTIONS, "colour": 1}, "colour"),
])
def test_bad_requests_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(RankError) as exc:
        parse_rank(doc)
    assert exc.value.field == field and exc.value.status == 400


def test_rank_answers_every_probability_and_the_ranking() -> None:
    req = parse_rank({"actions": ACTIONS, "excluded_actions": ["food"],
                      "context": {"device": "mobile"}})
    answer, slots = rank(new_rank_model(False), req, "e-1")
    assert answer["mode"] == "online" and answer["event_id"] == "e-1"
    assert [r["id"] for r in answer["ranking"]][0] == answer["reward_action_id"]
    assert {r["id"] for r in answer["ranking"]} == {"news", "sport"}
    assert sum(r["probability"] for r in answer["ranking"]) == pytest.approx(1.0)
    assert rank(new_rank_model(False), req, "e-1")[0] == answer  # reproducible from its id
    rec = record(req, "e-1", slots, 5, answer["mode"])
    assert rec["actions"] == ["news", "sport"] and rec["active"] is True
    assert rec["slots"][0]["probability"] == answer["slots"][0]["probability"]


def test_apprentice_serves_the_baseline_with_probability_one() -> None:
    req = parse_rank({"actions": ACTIONS, "slots": [{"id": "top", "baseline": "sport"},
                                                    {"id": "side"}]})
    answer, _ = rank(new_rank_model(True, 0.5, 2), req, "e-2")
    assert answer["mode"] == "apprentice"
    assert [(s["id"], s["reward_action_id"], s["probability"]) for s in answer["slots"]] == [
        ("top", "sport", 1.0), ("side", "news", 1.0)]


def test_reward_body() -> None:
    assert parse_reward({"value": 1}) == (1.0, None, None)
    assert parse_reward(0.5) == (0.5, None, None)
    assert parse_reward({"value": 0.2, "slot": "top", "reward_id": "r1"}) == (0.2, "top", "r1")
    for bad in ({"value": 2}, {"value": True}, {}, "x", {"value": 1, "reward_id": "a b"}):
        with pytest.raises(RankError):
            parse_reward(bad)


class Clock:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_learner_learns_rank_rewards_per_slot_and_waits_for_activation() -> None:
    clock = Clock()
    learner = OfferLearner(clock, timedelta(seconds=10), 0.0,
                           rank_model=new_rank_model(False))
    req = parse_rank({"actions": ACTIONS, "slots": [{"id": "top"}, {"id": "side"}]})
    ms = int(clock.now.timestamp() * 1000)
    answer, slots = rank(learner.rank_model, req, "e-1")
    assert learner.rank(record(req, "e-1", slots, ms, answer["mode"]))
    assert learner.rank(reward_record("e-1", 1.0, "side", ms + 1, "t1"))
    assert not learner.rank(reward_record("e-1", 1.0, "nope", ms + 1, "t2"))
    deferred = parse_rank({"actions": ACTIONS, "defer_activation": True})
    answer2, slots2 = rank(learner.rank_model, deferred, "e-2")
    learner.rank(record(deferred, "e-2", slots2, ms, answer2["mode"]))
    learner.rank(reward_record("e-2", 1.0, None, ms + 1, "t3"))  # before activation: waits
    never = parse_rank({"actions": ACTIONS, "defer_activation": True})
    learner.rank(record(never, "e-3", rank(learner.rank_model, never, "e-3")[1], ms, "online"))
    learner.rank(activation_record("e-2", ms + 2))
    clock.now += timedelta(seconds=11)
    assert learner.advance() == 3  # two slots of e-1, e-2 activated; e-3 never shown
    rows = sorted((r["decision_id"], r["slot"], r["reward"]) for r in learner.take_rows()[RANK_MODEL])
    assert rows == [("e-1", 0, 0.0), ("e-1", 1, 1.0), ("e-2", 0, 1.0)]
    assert learner.rank_model.n == 3
    assert RANK_MODEL in learner.take_changed()
    again = OfferLearner.restore(learner.snapshot(), clock, timedelta(seconds=10), 0.0,
                                 lambda blob: new_rank_model(False) if blob is None else
                                 type(learner.rank_model).restore(blob))
    assert again.rank_model.n == 3
