"""What the stream commits to the store: the store's own contract, plain data, no I/O.

One batch of events becomes:

- a `Write` per profile: its new state, the per-visitor `Op`s that must land with it (the
  activity timeline, campaign state, the CF vector: keys that carry the profile's hash tag),
  and for an identity merge the anonymous profile to delete and the visitor's alias to set;
- one `Tables`: the batch's changes to the tables shared between visitors (trending,
  neighbours, catalog fields, popularity, campaign counters, segment sizes, per-second traffic),
  aggregated in Python — one increment per key and member, not one command per event;
- `Emit`s, produced after the commit (at least once: consumers dedupe by id).

`engine.store.profiles.ProfileStore.commit` commits the `Tables` with each partition's offset
mark in the fence hash of their shard (engine/store/keys.py `fence`), so a redelivered batch
is recognised and skipped, and each profile with compare-and-set; on one server all of it is
one script call (lua/commit.lua), on a cluster one call per slot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.store.keys import shard_of_key
from models.affinity import Profile

#: The commands a per-profile `Op` may run (lua/commit.lua refuses any other).
OP_COMMANDS = frozenset({"ZINCRBY", "ZADD", "ZREM", "ZREMRANGEBYRANK", "HINCRBY", "HINCRBYFLOAT",
                         "HSET", "HDEL", "INCRBY", "SADD", "SREM", "PEXPIRE", "DEL", "SET",
                         "LPUSH", "LTRIM"})

#: The most table changes and ops one event may make (streams/plan.py counts them; what is past
#: the budget is dropped and counted, so one hostile event cannot become a script that blocks
#: Redis for everyone).
MAX_OPS_PER_EVENT = 2000


class Op:
    """A Redis command on a per-visitor key, run with the profile's write (same hash tag).

    A value (compared and hashed by its fields; not changed once made). A plain class rather
    than a frozen dataclass: the stream makes ~5 per event, and a frozen dataclass's
    `__init__` (one `object.__setattr__` per field, then `__post_init__`) costs 3x as much."""

    __slots__ = ("command", "key", "args")

    command: str
    key: str
    args: tuple[str | int | float | bytes, ...]

    def __init__(self, command: str, key: str,
                 args: tuple[str | int | float | bytes, ...] = ()) -> None:
        if command not in OP_COMMANDS:
            raise ValueError(f"{command} is not an allowed op")
        self.command = command
        self.key = key
        self.args = args

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Op):
            return NotImplemented
        return (self.command, self.key, self.args) == (other.command, other.key, other.args)

    def __hash__(self) -> int:
        return hash((self.command, self.key, self.args))

    def __repr__(self) -> str:
        return f"Op(command={self.command!r}, key={self.key!r}, args={self.args!r})"


@dataclass(frozen=True, slots=True)
class Emit:
    """A message to produce after the commit (at least once: consumers dedupe by id)."""

    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class Stored:
    """A profile as read: its revision (b'' when absent), its state, whether the privacy erase
    flow left a tombstone for it, and the per-visitor hashes hooks asked to read first."""

    rev: bytes = b""
    profile: Profile | None = None
    erased: bool = False
    side: dict[str, dict[bytes, bytes]] = field(default_factory=dict)


class Tables:
    """Changes to shared tables over one batch, aggregated: sorted-set increments (`zincr`,
    bounded by a cap the commit trims to once a table passes it by a margin), sorted-set
    "latest" scores (`zmax`: a member's score only ever rises, `ZADD GT`, e.g. a time; bounded
    the same way, so the lowest -- the oldest -- go first), hash counters (`hincr`), hash fields
    (`hset`, the last write wins), each with an optional TTL.

    `begin(partition, offset)` (the planner calls it before each event) starts the event's
    op budget and, when the batch redelivers records some shards already applied, makes the
    changes of those records to those shards no-ops (`marks`: shard -> partition -> offset)."""

    __slots__ = ("z", "zcfg", "m", "mcfg", "h", "hcfg", "s", "scfg", "marks", "budget", "spent",
                 "dropped", "_part", "_off", "_gated", "ops", "_top")

    def __init__(self, marks: Mapping[int, Mapping[int, int]] | None = None,
                 budget: int = MAX_OPS_PER_EVENT) -> None:
        self.z: dict[str, dict[str, float]] = {}
        self.zcfg: dict[str, tuple[int, int]] = {}  # key -> (cap, ttl ms)
        self.m: dict[str, dict[str, float]] = {}
        self.mcfg: dict[str, tuple[int, int]] = {}  # key -> (cap, ttl ms)
        self.h: dict[str, dict[str, int]] = {}
        self.hcfg: dict[str, int] = {}  # key -> ttl ms
        self.s: dict[str, dict[str, bytes]] = {}
        self.scfg: dict[str, tuple[int, str]] = {}  # key -> (ttl ms, field that keeps it)
        self.marks = {s: dict(m) for s, m in (marks or {}).items() if m}
        self._top: dict[int, int] = {}  # partition -> its highest mark in any shard
        for m in self.marks.values():
            for p, o in m.items():
                if o > self._top.get(p, -1):
                    self._top[p] = o
        self.budget = budget
        self.spent = 0  # ops of the current event
        self.dropped = 0  # ops past some event's budget
        self.ops = 0  # ops of the batch
        self._part = -1
        self._off = -1
        self._gated = False

    def begin(self, partition: int | None, offset: int | None) -> None:
        self.spent = 0
        if partition is None or offset is None or not self.marks:
            self._gated = False
            return
        self._part, self._off = partition, offset
        self._gated = self._top.get(partition, -1) >= offset

    def take(self, n: int = 1) -> bool:
        """Spend `n` of the current event's op budget; False (and counted) when it is gone."""
        if self.spent + n > self.budget:
            self.dropped += n
            return False
        self.spent += n
        self.ops += n
        return True

    def _skip(self, key: str) -> bool:
        s = shard_of_key(key)
        m = self.marks.get(s) if s is not None else None
        return m is not None and m.get(self._part, -1) >= self._off

    def zincr(self, key: str, member: str, amount: float, cap: int = 0, ttl_ms: int = 0) -> None:
        if self.spent >= self.budget:
            self.dropped += 1
            return
        self.spent += 1
        self.ops += 1
        if self._gated and self._skip(key):
            return
        t = self.z.get(key)
        if t is None:
            t = self.z[key] = {}
            self.zcfg[key] = (cap, ttl_ms)
        t[member] = t.get(member, 0.0) + amount

    def zmax(self, key: str, member: str, score: float, cap: int = 0, ttl_ms: int = 0) -> None:
        """Raise `member`'s score to `score` if that is higher (`ZADD GT`); trimmed like `zincr`."""
        if not self.take() or (self._gated and self._skip(key)):
            return
        t = self.m.get(key)
        if t is None:
            t = self.m[key] = {}
            self.mcfg[key] = (cap, ttl_ms)
        old = t.get(member)
        if old is None or score > old:
            t[member] = score

    def hincr(self, key: str, fld: str, n: int = 1, ttl_ms: int = 0) -> None:
        if self.spent >= self.budget:
            self.dropped += 1
            return
        self.spent += 1
        self.ops += 1
        if self._gated and self._skip(key):
            return
        t = self.h.get(key)
        if t is None:
            t = self.h[key] = {}
            self.hcfg[key] = ttl_ms
        t[fld] = t.get(fld, 0) + n

    def hset(self, key: str, fld: str, value: bytes, ttl_ms: int = 0, keep: str = "") -> None:
        """Set a hash field; with `ttl_ms` the hash expires that long after its last change,
        unless it holds the field `keep` (a curated catalog record never expires)."""
        if not self.take() or (self._gated and self._skip(key)):
            return
        t = self.s.get(key)
        if t is None:
            t = self.s[key] = {}
            self.scfg[key] = (ttl_ms, keep)
        t[fld] = value

    def touched(self) -> set[str]:
        return set(self.z) | set(self.m) | set(self.h) | set(self.s)

    def __len__(self) -> int:
        return sum(map(len, self.z.values())) + sum(map(len, self.m.values())) + \
            sum(map(len, self.h.values())) + sum(map(len, self.s.values()))

    def rows(self, only: Callable[[str], bool] | None = None) -> list[list[Any]]:
        """The changes as the commit script takes them: per key [key, kind, cap or keep, ttl,
        field, value, ...] (kind `z` sorted set, `m` sorted set of latest scores, `h` hash
        counters, `s` hash fields)."""
        out: list[list[Any]] = []
        row: list[Any]
        for kind, tables, cfg in (("z", self.z, self.zcfg), ("m", self.m, self.mcfg)):
            for key, t in tables.items():
                if only is None or only(key):
                    cap, ttl = cfg[key]
                    row = [key, kind, cap, ttl]
                    for m, v in t.items():
                        row += (m, v)
                    out.append(row)
        for key, c in self.h.items():
            if only is None or only(key):
                row = [key, "h", 0, self.hcfg[key]]
                for f, n in c.items():
                    if n:
                        row += (f, n)
                if len(row) > 4:
                    out.append(row)
        for key, fv in self.s.items():
            if only is None or only(key):
                ttl, keep = self.scfg[key]
                row = [key, "s", keep, ttl]
                for f, v in fv.items():
                    row += (f, v)
                out.append(row)
        return out


@dataclass(slots=True)
class Write:
    """One profile's new state and what must land atomically with it. Hooks add their
    per-visitor ops with `op` (counted in the event's budget), read `side` (the hashes they
    asked for, as read, which they may update for the batch's later events) and keep what
    they need until `finish` in `scratch` (one dict per profile and batch)."""

    pid: str
    expected: bytes
    profile: Profile
    deletes: list[tuple[str, bytes]] = field(default_factory=list)  # (pid, expected rev)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (visitor_id, pid)
    events: list[int] = field(default_factory=list)  # indices into the batch
    applied: int = 0
    duplicates: int = 0
    ops: list[Op] = field(default_factory=list)
    emits: list[Emit] = field(default_factory=list)
    last: Mapping[str, Any] | None = None  # the last event applied to this profile
    side: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    tables: Tables = field(default_factory=Tables)
    scratch: dict[str, Any] = field(default_factory=dict)  # hooks' state for this batch

    def op(self, command: str, key: str, *args: str | int | float | bytes) -> None:
        if self.tables.take():
            self.ops.append(Op(command, key, args))

    def emit(self, item: Emit) -> None:
        self.emits.append(item)


_TRAILING = frozenset({"PEXPIRE", "LTRIM", "ZREMRANGEBYRANK"})
_SUMMABLE = {"HINCRBY": 1, "HINCRBYFLOAT": 1, "INCRBY": 0, "ZINCRBY": 0}


def coalesce(ops: Sequence[Op]) -> list[Op]:
    """Merge increments of the same counter, pushes onto the same list and repeated identical
    ops (a batch of one visitor's events often touches the same keys)."""
    out: dict[tuple[Any, ...], Op] = {}
    for op in ops:
        command = op.command
        if command == "LPUSH":
            ident: tuple[Any, ...] = ("LPUSH", op.key)
            prev = out.get(ident)
            out[ident] = op if prev is None else Op("LPUSH", op.key, (*prev.args, *op.args))
            continue
        pos = _SUMMABLE.get(command)
        if pos is None:
            ident = (command, op.key, op.args)
            if ident in out:
                del out[ident]  # a repeated op moves to the end
            out[ident] = op
            continue
        if op.command == "ZINCRBY":
            ident = (op.command, op.key, op.args[1])
            amount = op.args[0]
        elif op.command == "INCRBY":
            ident, amount = (op.command, op.key), op.args[0]
        else:
            ident, amount = (op.command, op.key, op.args[0]), op.args[1]
        prev = out.get(ident)
        if prev is None:
            out[ident] = op
            continue
        total = _num(amount) + _num(prev.args[1] if pos == 1 else prev.args[0])
        if op.command == "HINCRBYFLOAT" or op.command == "ZINCRBY":
            total = float(total)
        else:
            total = int(total)
        args = (op.args[0], total) if pos == 1 else (total, *op.args[1:])
        out[ident] = Op(op.command, op.key, args)
    # trims and expiries go after every increment and push of the write (in their order)
    done = list(out.values())
    trailing = [o for o in done if o.command in _TRAILING]
    if not trailing:
        return done
    return [o for o in done if o.command not in _TRAILING] + trailing


def _num(x: Any) -> Any:
    return float(x) if isinstance(x, str | bytes) else x


_LOW = (1 << 32) - 1


def trim_margin(cap: int) -> int:
    """How far past its cap a bounded table may grow between two size checks."""
    return cap // 8 + 1


class Upkeep:
    """When the commit sets a shared table's expiry and checks its size (lua/commit.lua's
    PEXPIRE and ZCARD + trim): not on every batch that touches the table (they were about half
    the script's commands), but

    - the expiry: the first time this worker commits to the key, then again once `refresh`
      has passed since this worker last set it (`min(ttl / 16, REFRESH_MS)`): a table expires
      between `ttl - refresh` and `ttl` after its last change (was: exactly `ttl`);
    - the size check: the first time, then once the members this worker added to the key
      since its last check (each member of a batch's row may be new) reach its allowance. At
      a check the script trims the set to its cap when it is above it and returns its size.
      A worker that holds every partition (`share` 1) is the only writer: its allowance is
      `cap + margin - size` (the size the last check returned). Otherwise each worker allows
      itself `share` (its partitions / all of them) of the margin, so that together they add
      at most the margin between the last check of any and the next. Either way a table holds
      at most `cap + trim_margin(cap)` members after any commit, as when every batch checked.

    Pure (the store calls it): `plan(rows, now_ms, share)` zeroes the cap and ttl of each row
    (the script then skips that step) where the step is not due, notes the steps it leaves
    as done, and returns the (key, cap) of the rows whose size the script checks;
    `done(checked, sizes, share)` takes the sizes the script returned. A commit that is not
    known to be in (refused, lost, failed) must be followed by `forget()`, which makes every
    step due again (also for Redis losing writes); so must a restarted Redis. Keys seen
    lately only: past `max_keys` the older half is forgotten (a forgotten key is treated as
    never seen: its steps are due)."""

    REFRESH_MS = 60_000

    __slots__ = ("_exp", "_size", "max_keys")

    def __init__(self, max_keys: int = 200_000) -> None:
        # plain ints, not lists: 200k small containers kept alive would be walked by every
        # collection of the garbage collector
        self._exp: dict[str, int] = {}  # key -> when this worker last set its expiry (ms)
        # key -> (how many members it may add before the next size check) << 32 | (members it
        # added since the last)
        self._size: dict[str, int] = {}
        self.max_keys = max_keys

    def forget(self) -> None:
        self._exp.clear()
        self._size.clear()

    def __len__(self) -> int:
        return len(self._exp) + len(self._size)

    def plan(self, rows: list[list[Any]], now_ms: int, share: float = 1.0
             ) -> list[tuple[str, int]]:
        """Zero the steps of `rows` (Tables.rows' format, keys still as names) that are not
        due; returns the (key, cap) of the rows left with a size check, in order."""
        exp, size = self._exp, self._size
        if len(exp) + len(size) > self.max_keys:
            for d in (exp, size):  # the first noted (dicts keep their insertion order)
                for k in list(d)[:len(d) // 2]:
                    del d[k]
        refresh = self.REFRESH_MS
        long_ttl = 16 * refresh
        low = _LOW
        partial = share < 1.0
        checked: list[tuple[str, int]] = []
        for row in rows:  # (names and calls kept out of the loop: it runs for every row)
            ttl, cap = row[3], row[2]
            if ttl:
                key = row[0]
                last = exp.get(key)
                if last is None or now_ms - last >= (refresh if ttl >= long_ttl else ttl >> 4):
                    exp[key] = now_ms
                else:
                    row[3] = 0
            if cap and (row[1] == "z" or row[1] == "m"):
                key = row[0]
                v = size.get(key)
                if v is None:  # first seen: checked; no allowance until its size is known
                    size[key] = 0
                    checked.append((key, cap))
                    continue
                added = (v & low) + ((len(row) - 4) >> 1)
                allow = v >> 32
                if partial:
                    mine = int((cap // 8 + 1) * share)  # trim_margin(cap) * share
                    if mine < allow:
                        allow = mine
                if added < allow:
                    size[key] = (v & ~low) | (added if added < low else low)
                    row[2] = 0
                else:
                    checked.append((key, cap))
        return checked

    def done(self, checked: Sequence[tuple[str, int]], sizes: Sequence[Any],
             share: float = 1.0) -> None:
        """The commit planned with `checked` is in; `sizes`: what the script returned for the
        rows it checked, in the same order."""
        size = self._size
        for (key, cap), n in zip(checked, sizes, strict=False):
            if key in size:
                allow = cap + trim_margin(cap) - int(n) if share >= 1.0 \
                    else int(trim_margin(cap) * share)
                size[key] = max(0, allow) << 32
