"""Approvals: a brand user approves exactly what a partner will send.

An approval binds to a content hash of the pinned template version (or journey version), the
partner's values and the audience (the contact ids). Any edit changes the hash, and an
approval whose hash is no longer the content's is superseded: "create is not send", and
"approved" never covers what was not seen. The approver cannot be the submitter.

States: ``pending`` -> ``approved`` | ``rejected`` (with a reason) | ``superseded``;
``approved`` -> ``superseded``. Each function returns a new :class:`Approval` (the caller
stores it with a compare-and-set on ``state``) or raises :class:`ApprovalError`, whose
``status`` is the HTTP answer (403 self-approval, 409 not pending, 422 no reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from engine.logic.dm.templates import content_hash

PENDING, APPROVED, REJECTED, SUPERSEDED = "pending", "approved", "rejected", "superseded"
STATES = (PENDING, APPROVED, REJECTED, SUPERSEDED)
MAX_REASON = 2000


class ApprovalError(Exception):
    """An approval action is refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def approval_content(
    version: str | Mapping[str, str],
    values: Mapping[str, Any],
    audience: Iterable[str],
) -> str:
    """The hash an approval binds to.

    ``version`` is a template version hash, or for a journey ``{step or template id: version}``
    (or the journey's pinned version); ``values`` the partner's cleaned values (per step for a
    journey); ``audience`` the contact ids (order and repeats do not matter)."""
    return content_hash({
        "version": version if isinstance(version, str) else dict(version),
        "values": dict(values),
        "audience": sorted(set(audience)),
    })  # fmt: skip


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    subject: str  # what is approved: a campaign or quick-send id
    content: str  # approval_content(...) at submit time
    submitted_by: str
    submitted_at: datetime
    state: str = PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None

    def covers(self, content: str) -> bool:
        """Whether this approval allows sending ``content``."""
        return self.state == APPROVED and self.content == content


def _aware(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError("now must be a time-zone aware datetime")


def submit(approval_id: str, subject: str, content: str, user: str, now: datetime) -> Approval:
    """A new pending approval of ``content``, submitted by ``user``."""
    _aware(now)
    return Approval(approval_id, subject, content, user, now)


def approve(approval: Approval, approver: str, now: datetime) -> Approval:
    _aware(now)
    if approver == approval.submitted_by:
        raise ApprovalError(403, "the approver cannot be the submitter")
    if approval.state != PENDING:
        raise ApprovalError(409, f"the approval is {approval.state}, not pending")
    return replace(approval, state=APPROVED, decided_by=approver, decided_at=now)


def reject(approval: Approval, approver: str, reason: str, now: datetime) -> Approval:
    _aware(now)
    if approver == approval.submitted_by:
        raise ApprovalError(403, "the approver cannot be the submitter")
    if approval.state != PENDING:
        raise ApprovalError(409, f"the approval is {approval.state}, not pending")
    if not isinstance(reason, str) or not reason.strip():
        raise ApprovalError(422, "a rejection needs a reason")
    if len(reason) > MAX_REASON:
        raise ApprovalError(422, f"the reason must be at most {MAX_REASON} characters")
    return replace(approval, state=REJECTED, decided_by=approver, decided_at=now, reason=reason.strip())


def supersede(approval: Approval, now: datetime) -> Approval:
    """The content changed: a pending or approved approval no longer stands."""
    _aware(now)
    if approval.state in (PENDING, APPROVED):
        return replace(approval, state=SUPERSEDED, decided_at=now)
    return approval


def on_edit(approval: Approval, content: str, now: datetime) -> Approval:
    """The subject's content is now ``content``: supersede unless it is unchanged."""
    return approval if content == approval.content else supersede(approval, now)


@dataclass(frozen=True, slots=True)
class SendGate:
    allowed: bool
    reason: str  # "no approval needed", "approved", "pending approval", ...


def may_send(policy: str, approval: Approval | None, content: str) -> SendGate:
    """Whether content under a template's approval ``policy`` (``none`` / ``required``) may be
    sent given the subject's latest approval."""
    if policy == "none":
        return SendGate(True, "no approval needed")
    if approval is None:
        return SendGate(False, "approval required: submit it")
    if approval.content != content:
        return SendGate(False, "the content changed after submission: submit it again")
    if approval.state == APPROVED:
        return SendGate(True, "approved")
    if approval.state == REJECTED:
        return SendGate(False, f"rejected: {approval.reason}")
    if approval.state == PENDING:
        return SendGate(False, "pending approval")
    return SendGate(False, "superseded: submit it again")
