"""Turn a batch of events into profile writes: pure, no I/O.

The worker reads what the batch needs (aliases, then profiles) in two round trips, calls
`plan`, and commits the writes with compare-and-set. A write carries the new profile (with
the dedupe marks of the events it applied), plus the merge side effects that must land with
it atomically (the anonymous profile deleted, the visitor's alias set).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.store import keys
from engine.store.writes import Emit, Op, Stored, Write
from models.affinity import AffinityConfig, Profile, apply_event, merge

if TYPE_CHECKING:
    from engine.confighub import ConfigHub
    from engine.settings import Settings
    from engine.store.snapshots import ModelSnapshots

#: Events from the decisions topic carry marks of partition + this (streams/batch.py), apart
#: from the events topic's.
DECISIONS_MARK_BASE = 1 << 20


class Hook(Protocol):
    """Runs after an event was applied to a profile (never for a duplicate). It may change
    the profile (e.g. its segment memberships) and returns ops and emits to commit with it.

    A hook may also have `finish(event, profile, pid)`: called once per profile per batch,
    after the last event applied to it (`event`), for work that only needs the end state,
    such as evaluating segments."""

    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str) -> Iterable[Op | Emit]: ...


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a hook module's `setup` gets: made once by the worker (streams/hooks/__init__.py),
    so that the hooks themselves do no I/O."""

    settings: Settings
    hub: ConfigHub | None = None  # the decision configuration, hot-reloaded
    snapshots: ModelSnapshots | None = None  # where per-partition models are saved


@dataclass(slots=True)
class Outcome:
    writes: list[Write]

    @property
    def applied(self) -> int:
        return sum(w.applied for w in self.writes)

    @property
    def duplicates(self) -> int:
        return sum(w.duplicates for w in self.writes)


def _current(vid: str, aliases: Mapping[str, str | None]) -> str:
    return aliases.get(vid) or keys.visitor_pid(vid)


def needed_pids(events: Iterable[Mapping[str, Any]], aliases: Mapping[str, str | None]) -> set[str]:
    """Every profile the batch may read or write."""
    out: set[str] = set()
    for ev in events:
        vid = ev["visitor_id"]
        out.add(_current(vid, aliases))
        out.add(keys.visitor_pid(vid))
        if uid := ev.get("user_id"):
            out.add(keys.user_pid(uid))
    return out


def plan(
    events: Sequence[Mapping[str, Any]],
    aliases: Mapping[str, str | None],
    stored: Mapping[str, Stored],
    cfg: AffinityConfig,
    hooks: Sequence[Hook] = (),
) -> Outcome:
    alias = dict(aliases)
    state: dict[str, Profile] = {}
    writes: dict[str, Write] = {}
    deleted: set[str] = set()
    out = Outcome(writes=[])

    def get(pid: str) -> Write:
        w = writes.get(pid)
        if w is None:
            s = stored.get(pid) or Stored()
            prof = state.get(pid) or s.profile or Profile()
            w = writes[pid] = Write(pid, s.rev, prof)
        return w

    # the offset marks as read: this batch advances the profiles' own marks as it goes, and
    # every event of one record shares its offset, so checks must not see those advances
    read_marks = {pid: Profile(marks={p: list(m) for p, m in s.profile.marks.items()})
                  for pid, s in stored.items() if s.profile is not None and s.profile.marks}

    def redelivered(ev: Mapping[str, Any], pid: str) -> bool:
        if "_p" not in ev:
            return False
        part, off, ms = ev["_p"], ev["_o"], ev["_t"]
        for candidate in (pid, keys.visitor_pid(ev["visitor_id"])):
            marks = read_marks.get(candidate)
            if marks is not None and marks.covers(part, off, ms):
                return True
        return False

    for i, ev in enumerate(events):
        vid = ev["visitor_id"]
        pid = _current(vid, alias)
        uid = ev.get("user_id")
        if uid and pid != keys.user_pid(uid):
            target = get(keys.user_pid(uid))
            anon = keys.visitor_pid(vid)
            if pid == anon:
                # first link of this visitor: fold the anonymous profile into the user's
                src = writes.pop(anon, None)
                src_prof = src.profile if src else (stored.get(anon) or Stored()).profile
                if src_prof is not None:
                    merge(target.profile, src_prof, cfg)
                    rev = src.expected if src else (stored.get(anon) or Stored()).rev
                    target.deletes.append((anon, rev))
                    deleted.add(anon)
                    if src:
                        target.events.extend(src.events)
                        target.applied += src.applied
                        target.duplicates += src.duplicates
                        target.ops.extend(src.ops)
                        target.emits.extend(src.emits)
                        target.last = target.last or src.last
                        target.deletes.extend(src.deletes)
                        target.aliases.extend(src.aliases)
            target.aliases.append((vid, target.pid))
            if vid not in target.profile.aliases:
                target.profile.aliases = [*target.profile.aliases, vid][-32:]
            alias[vid] = target.pid
            pid = target.pid
        w = get(pid)
        w.events.append(i)
        if redelivered(ev, pid):
            w.duplicates += 1
            continue
        if "_p" in ev:
            w.profile.advance(ev["_p"], ev["_o"], ev["_t"])
        if apply_event(w.profile, ev, cfg):
            w.applied += 1
            w.last = ev
            for hook in hooks:
                for item in hook(ev, w.profile, w.pid):
                    (w.ops if isinstance(item, Op) else w.emits).append(item)
        else:
            w.duplicates += 1
    out.writes = [w for pid, w in writes.items() if pid not in deleted]
    finishers = [h.finish for h in hooks if hasattr(h, "finish")]
    if finishers:
        for w in out.writes:
            if w.last is not None:
                for finish in finishers:
                    for item in finish(w.last, w.profile, w.pid):
                        (w.ops if isinstance(item, Op) else w.emits).append(item)
    return out
