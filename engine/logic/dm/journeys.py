"""Journeys: a brand's multi-step e-mail sequence, and each member's way through it.

A journey file (``config/dm/journeys/<id>.yaml``)::

    id: welcome
    name: Welcome series
    description: Three mails over a week for a new customer of a store.
    steps:
      - {template: welcome, wait_after: 2d}      # send, then wait 2 days
      - {template: welcome-guide, wait_after: 5d}
      - {template: seasonal-picks}               # the last step has no wait
    exit:
      events:                                    # leave when the contact does one of these
        - {type: purchase}
        - {type: add_to_cart, category: electronics.smartphone}

Unsubscribed, bounced and suppressed members always leave (a journey cannot keep mailing
them); ``exit.unsubscribed`` / ``exit.bounced`` may be written ``true`` for the reader, never
``false``. An exit event matches on its ``type`` and, when given, on ``channel`` and on one of
the event's item categories being ``category`` or under it (``electronics`` matches
``electronics.smartphone``).

Each member is a :class:`Member`, an immutable value the caller stores (one row per campaign
and contact); every function takes the time (``now``, time-zone aware) and returns the next
value. Nothing here reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from engine.logic.decisions.config import FieldError
from engine.logic.decisions.rules import Path, parse_duration_ms
from engine.logic.dm.templates import content_hash

ACTIVE, DONE, EXITED = "active", "done", "exited"
EXIT_UNSUBSCRIBED, EXIT_BOUNCED, EXIT_SUPPRESSED, EXIT_EVENT, EXIT_REMOVED, EXIT_FAILED = (
    "unsubscribed", "bounced", "suppressed", "event", "removed", "failed",
)  # fmt: skip
ALWAYS_EXIT = (EXIT_UNSUBSCRIBED, EXIT_BOUNCED)
MAX_STEPS = 20
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    template: str
    wait_after: timedelta


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """``exit when the contact does X``."""

    type: str
    category: str | None = None
    channel: str | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        if event.get("type") != self.type:
            return False
        if self.channel is not None and event.get("channel") != self.channel:
            return False
        if self.category is None:
            return True
        return any(_under(c, self.category) for c in _event_categories(event))


def _under(category: str, ancestor: str) -> bool:
    return category == ancestor or category.startswith(ancestor + ".") or category.startswith(ancestor + "/")


def _event_categories(event: Mapping[str, Any]) -> Iterable[str]:
    item = event.get("item")
    if isinstance(item, Mapping):
        yield from (c for c in item.get("categories") or () if isinstance(c, str))
    for line in event.get("items") or ():
        if isinstance(line, Mapping):
            yield from (c for c in line.get("categories") or () if isinstance(c, str))


@dataclass(frozen=True, slots=True)
class Journey:
    id: str
    name: str
    description: str
    steps: tuple[Step, ...]
    exit_events: tuple[ExitEvent, ...]
    document: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def version(self) -> str:
        """Hash of the journey document (templates are pinned apart: :meth:`pinned_version`)."""
        return content_hash({"journey": dict(self.document)})

    def pinned_version(self, template_versions: Mapping[str, str]) -> str:
        """Hash of the journey and the version of each step's template: what a campaign
        built on this journey pins (and what an approval of it binds to)."""
        return content_hash({
            "journey": dict(self.document),
            "templates": [template_versions[s.template] for s in self.steps],
        })  # fmt: skip

    def exits_on(self, event: Mapping[str, Any]) -> bool:
        return any(rule.matches(event) for rule in self.exit_events)


@dataclass(frozen=True, slots=True)
class Member:
    """One contact's place in one journey campaign.

    ``step`` is the index of the next step to send; ``due_at`` when it is due (None once
    the member is done or exited)."""

    contact: str
    status: str
    step: int
    due_at: datetime | None
    enrolled_at: datetime
    updated_at: datetime
    exit_reason: str | None = None
    sent: tuple[datetime, ...] = ()  # when each step went out

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError("now must be a time-zone aware datetime")
    return now


def enrol(journey: Journey, contact: str, now: datetime) -> Member:
    """A new member: the first step is due at once."""
    _aware(now)
    return Member(contact, ACTIVE, 0, now, now, now)


def due_step(journey: Journey, member: Member, now: datetime) -> Step | None:
    """The step to send now, if any."""
    _aware(now)
    if not member.active or member.due_at is None or member.due_at > now:
        return None
    if member.step >= len(journey.steps):
        return None
    return journey.steps[member.step]


def step_sent(journey: Journey, member: Member, step: int, sent_at: datetime) -> Member:
    """Step ``step`` went out at ``sent_at``: the next one is due after its wait. A report for a
    step other than the current one (a retry's late answer) changes nothing."""
    _aware(sent_at)
    if not member.active or step != member.step:
        return member
    nxt = step + 1
    sent = member.sent + (sent_at,)
    if nxt >= len(journey.steps):
        return replace(member, status=DONE, step=nxt, due_at=None, updated_at=sent_at, sent=sent)
    due = sent_at + journey.steps[step].wait_after
    return replace(member, step=nxt, due_at=due, updated_at=sent_at, sent=sent)


def exit_member(member: Member, reason: str, now: datetime) -> Member:
    """Leave the journey (``unsubscribed``, ``bounced``, ``suppressed``, ``event``,
    ``removed``, ``failed``); a member already out stays as it was."""
    _aware(now)
    if not member.active:
        return member
    return replace(member, status=EXITED, due_at=None, exit_reason=reason, updated_at=now)


def on_event(journey: Journey, member: Member, event: Mapping[str, Any], now: datetime) -> Member:
    """An event of the contact (from the ``events`` topic, as a plain dict): exits the member
    when it matches an exit rule and happened after the enrolment."""
    ts = event.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts < member.enrolled_at.timestamp() * 1000:
        return member
    if member.active and journey.exits_on(event):
        return exit_member(member, EXIT_EVENT, now)
    return member


def on_send_outcome(journey: Journey, member: Member, step: int, outcome: str, now: datetime) -> Member:
    """What a step's send ended as (``sending.SENT`` / ``HARD_BOUNCE`` / ``SUPPRESSED`` /
    ``RETRY`` / ``FAILED``) does to the member: sent advances, a hard bounce or suppression
    exits, a retry waits, a send given up (retries exhausted) exits as ``failed``."""
    if outcome == "sent":
        return step_sent(journey, member, step, now)
    if outcome == "hard_bounce":
        return exit_member(member, EXIT_BOUNCED, now)
    if outcome == "suppressed":
        return exit_member(member, EXIT_SUPPRESSED, now)
    if outcome == "failed":
        return exit_member(member, EXIT_FAILED, now)
    return member


def next_due(members: Iterable[Member]) -> datetime | None:
    """The earliest time at which any active member has a step due (to sleep until)."""
    times = [m.due_at for m in members if m.active and m.due_at is not None]
    return min(times) if times else None


def due_members(journey: Journey, members: Iterable[Member], now: datetime) -> list[tuple[Member, Step]]:
    """Every member with a step due at ``now``, earliest first."""
    out = [(m, s) for m in members if (s := due_step(journey, m, now)) is not None]
    return sorted(out, key=lambda pair: (pair[0].due_at, pair[0].contact))


# --- loading --------------------------------------------------------------------------------

JOURNEY_KEYS = frozenset({"id", "name", "description", "steps", "exit"})


def parse_journey_doc(
    doc: Mapping[str, Any],
    templates: Sequence[str] | Callable[[str], bool] | None = None,
    source: str = "",
) -> tuple[Journey | None, list[FieldError]]:
    """Validate one journey document; ``templates`` (ids, or a predicate) checks that each
    step's template exists."""
    errors: list[FieldError] = []
    known: Callable[[str], bool] | None
    if templates is None:
        known = None
    elif callable(templates):
        known = templates
    else:
        ids = frozenset(templates)
        known = ids.__contains__
    for key in doc:
        if key not in JOURNEY_KEYS:
            errors.append(FieldError((str(key),), f"is not a known field (expected {sorted(JOURNEY_KEYS)})"))
    jid = doc.get("id")
    if not isinstance(jid, str) or not _ID_RE.match(jid):
        errors.append(FieldError(("id",), "must be 1-64 characters of a-z, 0-9, '_' or '-'"))
    name = doc.get("name", jid)
    if not isinstance(name, str) or len(name) > 200:
        errors.append(FieldError(("name",), "must be a string of at most 200 characters"))
    description = doc.get("description") or ""
    if not isinstance(description, str) or len(description) > 2000:
        errors.append(FieldError(("description",), "must be a string of at most 2000 characters"))

    steps: list[Step] = []
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        errors.append(FieldError(("steps",), "must be a non-empty list of {template, wait_after}"))
        raw_steps = []
    if len(raw_steps) > MAX_STEPS:
        errors.append(FieldError(("steps",), f"must have at most {MAX_STEPS} steps"))
    for i, raw in enumerate(raw_steps):
        path = ("steps", i)
        if not isinstance(raw, Mapping):
            errors.append(FieldError(path, "must be a mapping with template and wait_after"))
            continue
        for key in raw:
            if key not in ("template", "wait_after"):
                errors.append(FieldError(path + (str(key),), "is not a known option (template, wait_after)"))
        template = raw.get("template")
        if not isinstance(template, str) or not _ID_RE.match(template):
            errors.append(FieldError(path + ("template",), "must be a template id"))
            continue
        if known is not None and not known(template):
            errors.append(FieldError(path + ("template",), f"unknown template {template!r}"))
        last = i == len(raw_steps) - 1
        wait = raw.get("wait_after")
        if wait is None:
            if not last:
                errors.append(FieldError(path + ("wait_after",), 'is required before the next step (like "2d")'))
                continue
            steps.append(Step(i, template, timedelta(0)))
            continue
        if last:
            errors.append(FieldError(path + ("wait_after",), "the last step has no next step to wait for"))
            continue
        try:
            ms = parse_duration_ms(wait, path + ("wait_after",))
        except FieldError as exc:
            errors.append(exc)
            continue
        steps.append(Step(i, template, timedelta(milliseconds=ms)))

    exits: list[ExitEvent] = []
    raw_exit = doc.get("exit")
    if raw_exit is not None and not isinstance(raw_exit, Mapping):
        errors.append(FieldError(("exit",), "must be a mapping with unsubscribed, bounced, events"))
        raw_exit = {}
    for key, value in (raw_exit or {}).items():
        if key in ALWAYS_EXIT:
            if value is not True:
                errors.append(FieldError(("exit", key), f"is always true: a journey never mails {key} members"))
        elif key == "events":
            if not isinstance(value, list):
                errors.append(FieldError(("exit", "events"), "must be a list of {type, category, channel}"))
                continue
            for i, rule in enumerate(value):
                rule_path: Path = ("exit", "events", i)
                if not isinstance(rule, Mapping) or set(rule) - {"type", "category", "channel"}:
                    errors.append(FieldError(rule_path, "must be a mapping with type (and category, channel)"))
                    continue
                etype = rule.get("type")
                if not isinstance(etype, str) or not _TYPE_RE.match(etype):
                    errors.append(FieldError(rule_path + ("type",), "must be an event type"))
                    continue
                cat, chan = rule.get("category"), rule.get("channel")
                if cat is not None and (not isinstance(cat, str) or not cat or len(cat) > 256):
                    errors.append(FieldError(rule_path + ("category",), "must be a category path"))
                    continue
                if chan is not None and (not isinstance(chan, str) or not chan or len(chan) > 32):
                    errors.append(FieldError(rule_path + ("channel",), "must be a channel name"))
                    continue
                exits.append(ExitEvent(etype, cat, chan))
        else:
            errors.append(FieldError(("exit", str(key)), "is not a known option (unsubscribed, bounced, events)"))
    if errors:
        return None, errors
    assert isinstance(jid, str)
    return Journey(jid, name or jid, description, tuple(steps), tuple(exits), dict(doc), source), []
