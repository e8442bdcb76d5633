"""Journeys: the member state machine, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.logic.dm.journeys import (
    ACTIVE,
    DONE,
    EXITED,
    due_members,
    due_step,
    enrol,
    exit_member,
    next_due,
    on_event,
    on_send_outcome,
    parse_journey_doc,
    step_sent,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DOC = {
    "id": "welcome",
    "steps": [
        {"template": "welcome", "wait_after": "2d"},
        {"template": "welcome-guide", "wait_after": "5d"},
        {"template": "seasonal-picks"},
    ],
    "exit": {"unsubscribed": True, "bounced": True,
             "events": [{"type": "purchase"}, {"type": "add_to_cart", "category": "electronics"}]},
}  # fmt: skip


def journey():
    j, errors = parse_journey_doc(DOC, ["welcome", "welcome-guide", "seasonal-picks"])
    assert j is not None, errors
    return j


def test_steps_follow_their_waits():
    j = journey()
    m = enrol(j, "c1", T0)
    assert due_step(j, m, T0).template == "welcome"
    m = step_sent(j, m, 0, T0 + timedelta(minutes=1))
    assert m.step == 1 and m.due_at == T0 + timedelta(days=2, minutes=1)
    assert due_step(j, m, T0 + timedelta(days=2)) is None  # not yet
    assert due_step(j, m, m.due_at).template == "welcome-guide"
    m = step_sent(j, m, 1, m.due_at)
    assert due_step(j, m, m.due_at - timedelta(seconds=1)) is None
    m = step_sent(j, m, 2, m.due_at)
    assert m.status == DONE and m.due_at is None and len(m.sent) == 3
    assert due_step(j, m, T0 + timedelta(days=30)) is None


def test_a_late_report_for_an_old_step_changes_nothing():
    j = journey()
    m = step_sent(j, enrol(j, "c1", T0), 0, T0)
    assert step_sent(j, m, 0, T0 + timedelta(hours=1)) == m


@pytest.mark.parametrize("outcome, reason", [("hard_bounce", "bounced"), ("suppressed", "suppressed"),
                                             ("failed", "failed")])  # fmt: skip
def test_bounced_and_suppressed_members_exit(outcome, reason):
    j = journey()
    m = on_send_outcome(j, enrol(j, "c1", T0), 0, outcome, T0)
    assert m.status == EXITED and m.exit_reason == reason and due_step(j, m, T0 + timedelta(days=9)) is None


def test_a_retry_keeps_the_member_waiting():
    j = journey()
    m = enrol(j, "c1", T0)
    assert on_send_outcome(j, m, 0, "retry", T0) == m


def test_unsubscribed_members_exit():
    j = journey()
    m = exit_member(step_sent(j, enrol(j, "c1", T0), 0, T0), "unsubscribed", T0 + timedelta(hours=3))
    assert (m.status, m.exit_reason, m.due_at) == (EXITED, "unsubscribed", None)
    assert exit_member(m, "bounced", T0 + timedelta(days=1)) == m  # already out


def test_exit_when_the_contact_does_x():
    j = journey()
    m = step_sent(j, enrol(j, "c1", T0), 0, T0)
    later = T0 + timedelta(hours=5)
    ts = int(later.timestamp() * 1000)
    assert on_event(j, m, {"type": "item_view", "ts": ts}, later) == m
    assert on_event(j, m, {"type": "add_to_cart", "ts": ts, "item": {"id": "1", "categories": ["furniture"]}}, later) == m
    cart = {"type": "add_to_cart", "ts": ts, "item": {"id": "1", "categories": ["electronics.smartphone"]}}
    assert on_event(j, m, cart, later).exit_reason == "event"
    bought = on_event(j, m, {"type": "purchase", "ts": ts, "items": [{"id": "1"}]}, later)
    assert bought.status == EXITED and bought.exit_reason == "event"
    # an event from before the enrolment does not count
    old = {"type": "purchase", "ts": int((T0 - timedelta(days=1)).timestamp() * 1000)}
    assert on_event(j, m, old, later) == m


def test_due_members_and_next_wake():
    j = journey()
    a = enrol(j, "a", T0)
    b = step_sent(j, enrol(j, "b", T0), 0, T0)
    c = exit_member(enrol(j, "c", T0), "unsubscribed", T0)
    assert [m.contact for m, _ in due_members(j, [a, b, c], T0)] == ["a"]
    assert next_due([b, c]) == T0 + timedelta(days=2)
    assert next_due([c]) is None
    assert a.status == ACTIVE


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        enrol(journey(), "c", datetime(2026, 1, 1))


def test_pinned_version_changes_with_a_template_version():
    j = journey()
    v1 = j.pinned_version({"welcome": "a", "welcome-guide": "b", "seasonal-picks": "c"})
    v2 = j.pinned_version({"welcome": "a", "welcome-guide": "b2", "seasonal-picks": "c"})
    assert v1 != v2 and len(v1) == 64


@pytest.mark.parametrize("change, message", [
    ({"steps": []}, "must be a non-empty list"),
    ({"steps": [{"template": "welcome"}, {"template": "welcome-guide"}]}, "is required before the next step"),
    ({"steps": [{"template": "welcome", "wait_after": "2d"}]}, "the last step has no next step"),
    ({"steps": [{"template": "nope"}]}, "unknown template 'nope'"),
    ({"steps": [{"template": "welcome", "wait_after": "2 days"}, {"template": "welcome"}]}, "must be a duration"),
    ({"exit": {"unsubscribed": False}}, "is always true"),
    ({"exit": {"events": [{"category": "x"}]}}, "must be an event type"),
    ({"exit": {"when": 1}}, "is not a known option"),
    ({"colour": "red"}, "is not a known field"),
])  # fmt: skip
def test_journey_file_errors(change, message):
    j, errors = parse_journey_doc({**DOC, **change}, ["welcome", "welcome-guide", "seasonal-picks"])
    assert j is None and any(message in str(e) for e in errors), [str(e) for e in errors]
