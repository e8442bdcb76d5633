"""What the stream commits to the store: the store's own contract, plain data, no I/O.

A `Write` is one profile's new state with what must land atomically with it (the anonymous
profile deleted after a merge, the visitor's alias set, derived-state `Op`s); `Emit`s are
produced after the commit. `engine.store.profiles.ProfileStore.commit` runs each write as
one compare-and-set script (`lua/commit_profile.lua`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.affinity import Profile

# A Redis command the commit script runs on another key iff the profile write succeeds, so
# every derived counter (trending, co-occurrence, campaign stats, segment sizes) changes
# exactly once per applied event. Only these commands are allowed (see lua/commit_profile.lua).
# `CAMPAIGN` is not a Redis command but the commit script's campaign state machine (the
# conditional parts of engine.logic.decisions.caps, which depend on stored state: see
# streams/hooks/decisions.py).
OP_COMMANDS = frozenset({"ZINCRBY", "ZADD", "ZREM", "ZREMRANGEBYRANK", "HINCRBY", "HINCRBYFLOAT",
                         "HSET", "HDEL", "INCRBY", "PFADD", "SADD", "SREM", "PEXPIRE", "DEL", "SET", "LPUSH", "LTRIM",
                         "CAMPAIGN"})


@dataclass(frozen=True, slots=True)
class Op:
    command: str
    key: str
    args: tuple[str | int | float | bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.command not in OP_COMMANDS:
            raise ValueError(f"{self.command} is not an allowed op")


@dataclass(frozen=True, slots=True)
class Emit:
    """A message to produce after the commit (at least once: consumers dedupe by id)."""

    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class Stored:
    """A profile as read: its revision (b'' when absent) and its state."""

    rev: bytes = b""
    profile: Profile | None = None


@dataclass(slots=True)
class Write:
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


_TRAILING = frozenset({"PEXPIRE", "LTRIM", "ZREMRANGEBYRANK"})
_SUMMABLE = {"HINCRBY": 1, "HINCRBYFLOAT": 1, "INCRBY": 0, "ZINCRBY": 0}


def coalesce(ops: Sequence[Op]) -> list[Op]:
    """Merge increments of the same counter and repeated identical ops (a batch of events of
    one visitor often touches the same per-second or per-campaign counters)."""
    out: dict[tuple[Any, ...], Op] = {}
    for op in ops:
        pos = _SUMMABLE.get(op.command)
        if pos is None:
            out.setdefault((op.command, op.key, op.args), op)
            continue
        if op.command == "ZINCRBY":
            ident: tuple[Any, ...] = (op.command, op.key, op.args[1])
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
    # trims and expiries go after every increment and push of the write
    return sorted(out.values(), key=lambda o: o.command in _TRAILING)


def _num(x: Any) -> Any:
    return float(x) if isinstance(x, str | bytes) else x
