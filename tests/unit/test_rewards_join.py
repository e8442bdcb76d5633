"""The reward join as a pure state machine: windows, default reward, idempotence, snapshots."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from models.rewards import JoinState, LoggedDecision, Reaction, RewardJoin
from models.rewards.join import run

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


def dec(did: str, s: float = 0, **kw) -> LoggedDecision:
    fields = {"campaign": "hero", "arm": "a", "probability": 0.5, "ts": T0 + timedelta(seconds=s)}
    fields.update(kw)
    return LoggedDecision(did, **fields)


def react(eid: str, kind: str, s: float, did: str | None = "d1", **kw) -> Reaction:
    return Reaction(eid, kind, T0 + timedelta(seconds=s), did, **kw)


def make(clock: Clock, **kw) -> RewardJoin:
    return RewardJoin(clock=clock, window=timedelta(minutes=10), **kw)


def test_click_within_the_window_rewards_once_at_the_close() -> None:
    clock = Clock()
    j = make(clock)
    j.decision(dec("d1"))
    j.reaction(react("e1", "click", 30))
    clock.at(599)
    assert j.advance() == []
    clock.at(600)
    [r] = j.advance()
    assert (r.decision.decision_id, r.reward, r.reactions, r.defaulted) == (
        "d1",
        1.0,
        ("e1",),
        False,
    )
    assert r.closed_at == T0 + timedelta(seconds=600)
    clock.at(700)
    assert j.advance() == []
    assert j.open_decisions == 0


def test_no_reaction_gives_the_default_reward() -> None:
    clock = Clock()
    j = make(clock, default_reward=0.0)
    j.decision(dec("d1"))
    j.reaction(react("e1", "dismiss", 10))  # not a rewarded type
    clock.at(601)
    [r] = j.advance()
    assert (r.reward, r.defaulted, r.reactions) == (0.0, True, ())
    assert j.counters["ignored_reactions"] == 1
    j2 = make(Clock(T0 + timedelta(hours=1)), default_reward=0.2)
    j2.decision(dec("d2"))
    assert [x.reward for x in j2.advance()] == [0.2]


def test_a_reaction_is_never_counted_twice() -> None:
    clock = Clock()
    j = make(clock, aggregate="sum", values={"click": 0.4})
    j.decision(dec("d1"))
    for _ in range(3):  # redelivered
        j.reaction(react("e1", "click", 5))
    j.reaction(react("e2", "click", 6))
    j.decision(dec("d1"))  # the decision redelivered too
    clock.at(600)
    [r] = j.advance()
    assert r.reward == pytest.approx(0.8)
    assert r.reactions == ("e1", "e2")
    assert j.counters["duplicate_reactions"] == 2
    assert j.counters["duplicate_decisions"] == 1
    # after the close: a late redelivery of the decision or the reaction changes nothing
    j.decision(dec("d1"))
    j.reaction(react("e1", "click", 5))
    clock.at(1000)
    assert j.advance() == []


def test_late_and_early_reactions_do_not_count() -> None:
    clock = Clock()
    j = make(clock)
    j.decision(dec("d1", s=100))
    j.reaction(react("early", "click", 50))  # stamped before the decision
    j.reaction(react("late", "click", 701))  # after the window, processed before the close
    clock.at(700)
    [r] = j.advance()
    assert r.defaulted and r.reward == 0.0
    assert j.counters["early_reactions"] == 1 and j.counters["late_reactions"] == 1


def test_explicit_reward_values_and_aggregates() -> None:
    for aggregate, expected in (("max", 0.9), ("sum", 1.0), ("first", 0.3)):
        clock = Clock()
        j = make(clock, aggregate=aggregate)
        j.decision(dec("d1"))
        j.reaction(react("r1", "reward", 20, value=0.3))
        j.reaction(react("r2", "reward", 40, value=0.9))
        clock.at(600)
        assert [x.reward for x in j.advance()] == [pytest.approx(expected)], aggregate
    with pytest.raises(ValueError):
        react("bad", "reward", 1, value=1.5)


def test_goal_events_credit_the_visitors_open_decisions() -> None:
    clock = Clock()
    j = make(clock)
    j.decision(dec("d1", visitor_id="v1", goal="purchase"))
    j.decision(dec("d2", s=5, visitor_id="v1", goal="purchase", campaign="popup"))
    j.decision(dec("d3", visitor_id="v2", goal="purchase"))
    j.decision(dec("d4", visitor_id="v1"))  # no goal: a purchase does not reward it
    j.reaction(Reaction("p1", "purchase", T0 + timedelta(seconds=120), visitor_id="v1"))
    j.reaction(Reaction("p1", "purchase", T0 + timedelta(seconds=120), visitor_id="v1"))
    clock.at(700)
    got = {r.decision.decision_id: r.reward for r in j.advance()}
    assert got == {"d1": 1.0, "d2": 1.0, "d3": 0.0, "d4": 0.0}


def test_a_reaction_before_its_decision_waits_for_it() -> None:
    clock = Clock()
    j = make(clock)
    j.reaction(react("e1", "click", 3))  # the decision record is still on its way
    assert j.waiting_reactions == 1
    clock.at(4)
    j.advance()
    j.decision(dec("d1", s=1))
    clock.at(601)
    [r] = j.advance()
    assert r.reward == 1.0 and r.reactions == ("e1",)
    # an orphan whose decision never comes is forgotten after a window
    j.reaction(react("e9", "click", 620, did="ghost"))
    clock.at(620 + 601)
    j.advance()
    assert j.waiting_reactions == 0


def test_deferred_activation() -> None:
    clock = Clock()
    j = make(clock)
    j.decision(dec("d1", active=False))
    j.decision(dec("d2", active=False))
    j.reaction(react("a1", "activate", 300, did="d1"))  # shown 5 minutes after the decision
    j.reaction(react("c1", "click", 800, did="d1"))  # within 10 minutes of the activation
    clock.at(650)
    assert j.advance() == []  # d2 was never shown: dropped, not rewarded
    assert j.counters["never_activated"] == 1
    clock.at(900)
    [r] = j.advance()
    assert (r.decision.decision_id, r.reward, r.reactions) == ("d1", 1.0, ("c1",))
    assert r.closed_at == T0 + timedelta(seconds=900)


def test_slots_are_rewarded_separately() -> None:
    clock = Clock()
    j = make(clock)
    j.decision(dec("z1", slot=0, arm="a"))
    j.decision(dec("z1", slot=1, arm="b"))
    j.reaction(react("c1", "click", 10, did="z1", slot=1))
    clock.at(600)
    got = {(r.decision.slot, r.decision.arm): r.reward for r in j.advance()}
    assert got == {(0, "a"): 0.0, (1, "b"): 1.0}


def test_snapshot_is_immutable_and_resumes_exactly() -> None:
    clock = Clock()
    j = make(clock)
    items = [
        dec("d1", context={"device": "mobile"}),
        react("e1", "click", 5),
        dec("d2", s=10, visitor_id="v", goal="purchase"),
        react("w1", "click", 12, did="later"),
    ]
    for it in items:
        if isinstance(it, LoggedDecision):
            j.decision(it)
        else:
            j.reaction(it)
    snap = j.snapshot()
    assert isinstance(snap, JoinState)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.open = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.open[0].decision.context["device"] = "x"  # type: ignore[index]
    j.reaction(react("e2", "click", 20, did="d2"))  # later changes do not touch the snapshot
    assert snap == JoinState.from_bytes(snap.to_bytes())
    resumed = RewardJoin(
        clock=clock, window=timedelta(minutes=10), state=JoinState.from_bytes(snap.to_bytes())
    )
    resumed.reaction(react("e2", "click", 20, did="d2"))
    resumed.reaction(react("e1", "click", 5))  # already counted before the snapshot
    j.reaction(react("e1", "click", 5))
    clock.at(700)
    assert resumed.advance() == j.advance()
    assert resumed.snapshot() == j.snapshot()
    with pytest.raises(ValueError):
        JoinState.from_bytes(b"\x81\xa4kind\xa3bad")


def test_times_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError):
        LoggedDecision("d", "c", "a", 0.5, datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError):
        LoggedDecision("d", "c", "a", 0.0, T0)
    j = RewardJoin(clock=lambda: datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError):
        j.advance()


def test_run_replays_a_sequence_with_the_clock_following_it() -> None:
    clock = Clock()
    j = make(clock)
    seq = [dec("d1"), react("e1", "click", 5), dec("d2", s=700)]

    def feed():
        for it in seq:
            clock.now = it.ts
            yield it

    out = run(j, feed())
    assert [(r.decision.decision_id, r.reward) for r in out] == [("d1", 1.0)]


def test_many_decisions_close_in_deadline_order() -> None:
    clock = Clock()
    j = make(clock)
    for k in range(200):
        j.decision(dec(f"d{k}", s=(k * 37) % 300))
    clock.at(2000)
    out = j.advance()
    assert len(out) == 200
    ends = [r.decision.ts for r in out]
    assert ends == sorted(ends)
