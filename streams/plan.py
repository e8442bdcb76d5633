"""Turn a batch of events into profile writes and shared-table changes: pure, no I/O.

The worker reads what the batch needs (aliases; then profiles, tombstones and the per-visitor
hashes hooks asked for) in two round trips, calls `plan`, and commits (engine/store/profiles.py):
each profile with compare-and-set, the batch's shared tables once per shard with the
partitions' offset marks. A write carries the new profile (with the dedupe marks of the events
it applied), its per-visitor ops, and for an identity merge the anonymous profile to delete and
the visitor's alias to set.

What never reaches a profile:
- an event whose `context.consent` is `false` (the visitor declined): counted in the traffic
  totals (hooks' `unstored`), nothing else;
- an event of an erased profile (a tombstone `keys.tombstone(pid)` exists for the visitor's
  profile, its user's or the one its alias names): counted the same way, never stored, never
  taught to a hook. The commit checks the tombstones again in the same atomic script.

The identity merge is idempotent, so that on a Redis Cluster it can run as two steps (the
user's profile, then the visitor's alias and the anonymous profile's deletion) and be redone
after a crash between them: the user's profile remembers the merges it took in
(`Profile.merged`: visitor and the anonymous profile's revision), and a merge found there is
not folded in twice.

## Hooks

A hook is called for every event applied to a profile (never a duplicate):
`hook(event, profile, pid, out)`, where `out` is the profile's `Write`. It may change the
profile; it adds per-visitor ops with `out.op(command, key, *args)` (keys with the profile's
hash tag: they commit with the profile), emits with `out.emit(Emit(...))`, and changes to
shared tables through `out.tables` (`zincr`, `hincr`, `hset`: aggregated over the batch, one
increment per key and member, committed once per batch with the offset marks, so exactly
once). Optional methods:

- `finish(event, profile, pid, out)`: once per profile per batch, after its last applied
  event (`event`), for work that needs only the end state (segments, a vector to export);
- `reads(event) -> tuple[key function, ...]`: per-visitor hashes (`keys.campaign_state`, …)
  to read with the profile before the batch is planned; they arrive in `out.side[key]` (as
  read, bytes to bytes; the hook may update that dict for the batch's later events);
- `unstored(event, tables)`: for events counted but not stored (consent declined, erased).

Every op and table change counts against the event's budget (`MAX_OPS_PER_EVENT`); past it
they are dropped and counted (`Outcome.dropped_ops`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from engine.store import keys
from engine.store.writes import Op, Stored, Tables, Write
from models.affinity import AffinityConfig, Profile, apply_event, merge

if TYPE_CHECKING:
    from engine.confighub import ConfigHub
    from engine.settings import Settings
    from engine.store.snapshots import ModelSnapshots

#: Events from the decisions topic carry marks of partition + this (streams/batch.py), apart
#: from the events topic's.
DECISIONS_MARK_BASE = 1 << 20
#: Merges a profile remembers (for redoing a merge interrupted between its two steps).
MERGES_KEPT = 8


class Hook(Protocol):
    """See the module docstring."""

    def __call__(self, event: Mapping[str, Any], profile: Profile, pid: str, out: Write) -> None: ...


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
    tables: Tables = field(default_factory=Tables)
    unstored: int = 0  # consent declined: counted, not stored
    erased: int = 0  # of an erased profile: counted, not stored

    @property
    def applied(self) -> int:
        return sum(w.applied for w in self.writes)

    @property
    def duplicates(self) -> int:
        return sum(w.duplicates for w in self.writes)

    @property
    def dropped_ops(self) -> int:
        return self.tables.dropped


def declined(event: Mapping[str, Any]) -> bool:
    """The visitor declined consent for this event (`context.consent` is `false`)."""
    ctx = event.get("context")
    if ctx is None:
        return False
    # a dict, as decoded: the abstract class's check costs more than the rest of the test
    return (ctx.__class__ is dict or isinstance(ctx, Mapping)) and ctx.get("consent") is False


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


def side_reads(events: Iterable[Mapping[str, Any]], aliases: Mapping[str, str | None],
               hooks: Sequence[Any]) -> dict[str, set[Callable[[str], str]]]:
    """pid -> the per-visitor hashes hooks want read before the batch is planned."""
    readers = [h.reads for h in hooks if hasattr(h, "reads")]
    out: dict[str, set[Callable[[str], str]]] = {}
    if not readers:
        return out
    for ev in events:
        want: set[Callable[[str], str]] = set()
        for r in readers:
            want.update(r(ev))
        if not want:
            continue
        vid = ev["visitor_id"]
        for pid in (_current(vid, aliases), keys.visitor_pid(vid)):
            out.setdefault(pid, set()).update(want)
        if uid := ev.get("user_id"):
            out.setdefault(keys.user_pid(uid), set()).update(want)
    return out


def _rev_int(rev: bytes) -> int:
    return int.from_bytes(rev, "big") if rev else 0


def _retag(op: Op, src: str, dst: str) -> Op:
    """A per-visitor op of an anonymous profile, moved onto the profile it merged into."""
    return Op(op.command, op.key.replace("{" + src + "}", "{" + dst + "}"), op.args)


def plan(
    events: Sequence[Mapping[str, Any]],
    aliases: Mapping[str, str | None],
    stored: Mapping[str, Stored],
    cfg: AffinityConfig,
    hooks: Sequence[Hook] = (),
    tables: Tables | None = None,
) -> Outcome:
    tables = Tables() if tables is None else tables
    alias = dict(aliases)
    state: dict[str, Profile] = {}
    writes: dict[str, Write] = {}
    deleted: set[str] = set()
    out = Outcome(writes=[], tables=tables)
    counters = [h.unstored for h in hooks if hasattr(h, "unstored")]  # type: ignore[attr-defined]

    def get(pid: str) -> Write:
        w = writes.get(pid)
        if w is None:
            s = stored.get(pid) or Stored()
            prof = state.get(pid) or s.profile or Profile()
            w = writes[pid] = Write(pid, s.rev, prof, tables=tables,
                                    side={k: dict(v) for k, v in s.side.items()} if s.side else {})
        return w

    tombs = {pid for pid, s in stored.items() if s.erased}

    # the offset marks as read: this batch advances the profiles' own marks as it goes, and
    # every event of one record shares its offset, so checks must not see those advances
    read_marks = {pid: {p: (m[0], m[1]) for p, m in s.profile.marks.items()}
                  for pid, s in stored.items() if s.profile is not None and s.profile.marks}

    def redelivered(ev: Mapping[str, Any], pid: str) -> bool:
        part = ev.get("_p")
        if part is None or not read_marks:
            return False
        off, ms = ev["_o"], ev["_t"]
        for candidate in (pid, keys.visitor_pid(ev["visitor_id"])):
            marks = read_marks.get(candidate)
            if marks is not None:
                m = marks.get(part)
                if m is not None and off <= m[0] and ms <= m[1]:
                    return True
        return False

    for i, ev in enumerate(events):
        tables.begin(ev.get("_p"), ev.get("_o"))
        vid = ev["visitor_id"]
        pid = _current(vid, alias)
        uid = ev.get("user_id")
        upid = keys.user_pid(uid) if uid else None
        said_no = declined(ev)
        if said_no or tombs and (pid in tombs or keys.visitor_pid(vid) in tombs or
                                 (upid is not None and upid in tombs)):
            if said_no:
                out.unstored += 1
            else:
                out.erased += 1
            for count in counters:
                count(ev, tables)
            continue
        if upid is not None and pid != upid:
            target = get(upid)
            anon = keys.visitor_pid(vid)
            if pid == anon:
                # first link of this visitor: fold the anonymous profile into the user's
                src = writes.pop(anon, None)
                st = stored.get(anon) or Stored()
                src_prof = src.profile if src else st.profile
                if src_prof is not None:
                    rev = src.expected if src else st.rev
                    record = [vid, _rev_int(rev)]
                    redo = record in target.profile.merged  # taken in before a crash
                    if not redo:
                        merge(target.profile, src_prof, cfg)
                        target.profile.merged = [*target.profile.merged, record][-MERGES_KEPT:]
                    target.deletes.append((anon, rev))
                    deleted.add(anon)
                    if src and not redo:
                        target.events.extend(src.events)
                        target.applied += src.applied
                        target.duplicates += src.duplicates
                        target.ops.extend(_retag(op, anon, target.pid) for op in src.ops)
                        target.emits.extend(src.emits)
                        target.last = target.last or src.last
                        target.deletes.extend(src.deletes)
                        target.aliases.extend(src.aliases)
                    elif src:
                        target.events.extend(src.events)
                        target.duplicates += src.applied + src.duplicates
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
                hook(ev, w.profile, w.pid, w)
        else:
            w.duplicates += 1
    out.writes = [w for pid, w in writes.items() if pid not in deleted]
    finishers = [h.finish for h in hooks if hasattr(h, "finish")]  # type: ignore[attr-defined]
    if finishers:
        for w in out.writes:
            if w.last is not None:
                tables.begin(w.last.get("_p"), w.last.get("_o"))
                for finish in finishers:
                    finish(w.last, w.profile, w.pid, w)
    return out
