"""Approvals bind to content; edits supersede; nobody approves their own submission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.logic.dm.approvals import (
    APPROVED,
    PENDING,
    REJECTED,
    SUPERSEDED,
    ApprovalError,
    approval_content,
    approve,
    may_send,
    on_edit,
    reject,
    submit,
    supersede,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VALUES = {"headline": "Spring at Leeds", "offer": "trade-in"}


def content(values=VALUES, audience=("c1", "c2"), version="v1"):
    return approval_content(version, values, audience)


def test_the_hash_binds_version_values_and_audience():
    base = content()
    assert content(audience=("c2", "c1", "c1")) == base  # order and repeats do not matter
    assert content(version="v2") != base
    assert content(values={**VALUES, "headline": "Spring!"}) != base
    assert content(audience=("c1", "c2", "c3")) != base
    assert approval_content({"welcome": "v1", "picks": "v9"}, {"0": VALUES}, ["c1"]) != base


def test_pending_blocks_sending_and_approval_allows_it():
    a = submit("ap1", "campaign1", content(), "partner-user", T0)
    assert a.state == PENDING
    gate = may_send("required", a, content())
    assert not gate.allowed and gate.reason == "pending approval"
    a = approve(a, "brand-user", T0 + timedelta(hours=1))
    assert a.state == APPROVED and a.decided_by == "brand-user"
    assert may_send("required", a, content()).allowed and a.covers(content())
    assert may_send("none", None, content()).allowed
    assert not may_send("required", None, content()).allowed


def test_self_approval_is_refused():
    a = submit("ap1", "campaign1", content(), "u1", T0)
    with pytest.raises(ApprovalError) as exc:
        approve(a, "u1", T0)
    assert exc.value.status == 403
    with pytest.raises(ApprovalError) as exc:
        reject(a, "u1", "no", T0)
    assert exc.value.status == 403


def test_rejection_needs_and_shows_a_reason():
    a = submit("ap1", "campaign1", content(), "u1", T0)
    with pytest.raises(ApprovalError) as exc:
        reject(a, "u2", "  ", T0)
    assert exc.value.status == 422
    a = reject(a, "u2", "The offer ends this week: please remove it.", T0)
    assert a.state == REJECTED and a.reason == "The offer ends this week: please remove it."
    gate = may_send("required", a, content())
    assert not gate.allowed and "The offer ends this week" in gate.reason
    with pytest.raises(ApprovalError) as exc:
        approve(a, "u3", T0)
    assert exc.value.status == 409


def test_an_edit_after_approval_supersedes_it():
    a = approve(submit("ap1", "campaign1", content(), "u1", T0), "u2", T0)
    assert on_edit(a, content(), T0) == a  # saving the same content changes nothing
    edited = content(values={**VALUES, "headline": "Spring sale at Leeds"})
    assert not may_send("required", a, edited).allowed  # the approval does not cover the edit
    b = on_edit(a, edited, T0 + timedelta(minutes=5))
    assert b.state == SUPERSEDED and not b.covers(content())
    assert not may_send("required", b, content()).allowed
    with pytest.raises(ApprovalError):
        approve(b, "u2", T0)
    # adding a contact to the audience is an edit too
    c = approve(submit("ap2", "campaign1", content(), "u1", T0), "u2", T0)
    assert on_edit(c, content(audience=("c1", "c2", "c3")), T0).state == SUPERSEDED


def test_supersede_leaves_decided_rejections():
    r = reject(submit("ap1", "s", content(), "u1", T0), "u2", "no", T0)
    assert supersede(r, T0) == r
