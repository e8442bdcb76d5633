"""The Redis edge for profiles, in domain words.

`ProfileStore` reads what a batch needs (aliases; profiles with their tombstones and the
per-visitor hashes hooks asked for), commits a planned batch (`commit`: lua/commit.lua), and
finds a profile by visitor or user id for the API. Key formats live in `engine.store.keys`, the
write contract in `engine.store.writes`, the partitions' fences in `engine.store.fences`.

A commit on one server is ONE script call: the fences of the touched shards (owner epoch and
offset marks), every profile's compare-and-set, the shared tables, the merges — all or nothing.
On a Redis Cluster every call stays in one slot, so a batch is committed in steps, each
idempotent and each fenced or compare-and-set (`Phase`): the shared tables, one call per shard
with the shard's fence; the profiles, one call each; the second step of each identity merge (the
visitor's alias and the anonymous profile's deletion); the partitions' applied marks last. A
crash between steps is redone by the redelivered batch: the shard marks skip what is in, the
profiles' marks skip what they applied, a merge the user's profile already took in is not
folded twice (streams/plan.py).
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.store import keys
from engine.store.client import Script, is_cluster, mget, new_client, slot
from engine.store.fences import Fences
from engine.store.writes import Op, Stored, Tables, Upkeep, Write, coalesce
from models.affinity import Profile

__all__ = ["CommitResult", "Phase", "ProfileStore", "decode", "new_client"]

_REV = struct.Struct(">I")


def _next_rev(rev: bytes) -> bytes:
    n = _REV.unpack(rev)[0] if rev else 0
    return _REV.pack((n + 1) & 0xFFFFFFFF)


def _arg(a: Any) -> bytes | str:
    return a if a.__class__ is str or isinstance(a, bytes | str) else repr(a)


def decode(blob: bytes | None) -> Stored:
    if not blob:
        return Stored()
    return Stored(bytes(blob[:4]), Profile.restore(bytes(blob[4:])))


class Phase(enum.Flag):
    """Which parts of a batch a commit call carries (a single server takes them all at once)."""

    SHARED = enum.auto()  # the shared tables with their shards' fences
    PROFILES = enum.auto()  # the profile writes (and, on one server, the whole merge)
    APPLIED = enum.auto()  # the partitions' applied marks (home shards)
    ALL = SHARED | PROFILES | APPLIED


@dataclass(slots=True)
class CommitResult:
    ok: bool = True
    conflicts: list[int] = field(default_factory=list)  # indices of writes not written
    erased: list[int] = field(default_factory=list)  # of writes refused by a tombstone
    fenced: bool = False  # a fence refused the call (nothing of it written)
    written: list[int] = field(default_factory=list)  # indices of writes written


class _Call:
    """One script call being built: its keys (deduplicated, by index) and its plan."""

    __slots__ = ("keys", "index", "fences", "writes", "tables", "write_ids", "fence_entries",
                 "blobs", "upkeep")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.fences: list[list[Any]] = []
        self.writes: list[list[Any]] = []
        self.tables: list[list[Any]] = []
        self.write_ids: list[int] = []
        self.fence_entries: list[tuple[int, int, str, str, str, int]] = []
        self.blobs: dict[str, bytes] = {}  # pid -> the value its write sets
        self.upkeep: list[tuple[str, int]] = []  # the size checks Upkeep.plan left in it

    def k(self, key: str) -> int:
        i = self.index.get(key)
        if i is None:
            self.keys.append(key)
            i = self.index[key] = len(self.keys)
        return i

    def args(self) -> list[bytes]:
        # raw strings, not msgpack's bin type: Lua's cmsgpack predates bin and Lua strings are
        # binary-safe anyway
        return [msgpack.packb([self.fences, self.writes, self.tables], use_bin_type=False)]


class ProfileStore:
    """Profiles, aliases, and the batch commit."""

    def __init__(self, client: Any, ttl_ms: int, group_id: str = "kairos",
                 share: Callable[[], float] | None = None) -> None:
        self.r = client
        self.ttl_ms = ttl_ms
        self.cluster = is_cluster(client)
        self.fences = Fences(client, group_id)
        # this writer's share of the shared tables' writers (writes.py `Upkeep`; the worker: its
        # partitions of the events topic / all of them); none: the only writer
        self.share: Callable[[], float] = share or (lambda: 1.0)
        self.upkeep = Upkeep()  # when the shared tables' expiries and sizes are seen to
        self._commit = Script(client, "commit")
        self._read = Script(client, "read")
        self._find = Script(client, "find")
        self._profile_format = keys.template(keys.profile)

    # -- reads ------------------------------------------------------------------------------
    async def aliases(self, visitor_ids: Iterable[str]) -> dict[str, str | None]:
        vids = list(dict.fromkeys(visitor_ids))
        if not vids:
            return {}
        vals = await mget(self.r, [keys.alias(v) for v in vids])
        return {v: (x.decode() if x else None) for v, x in zip(vids, vals, strict=True)}

    async def load(self, pids: Iterable[str],
                   side: Mapping[str, Iterable[Callable[[str], str]]] | None = None
                   ) -> dict[str, Stored]:
        """Each profile with its tombstone flag and the per-visitor hashes `side` names
        (pid -> key functions of keys, e.g. keys.campaign_state)."""
        pids = list(pids)
        if not pids:
            return {}
        wanted = [(pid, fn(pid)) for pid, fns in (side or {}).items() for fn in fns]
        if self.cluster:
            pipe = self.r.pipeline(transaction=False)
            for pid in pids:
                pipe.get(keys.profile(pid))
                pipe.exists(keys.tombstone(pid))
            for _, key in wanted:
                pipe.hgetall(key)
            replies = await pipe.execute()
            blobs, tombs = replies[0:2 * len(pids):2], replies[1:2 * len(pids):2]
            hashes = replies[2 * len(pids):]
        else:
            ks = [keys.profile(p) for p in pids] + [keys.tombstone(p) for p in pids] + \
                 [k for _, k in wanted]
            blobs, tombs, flat = await self._read(ks, [len(pids), len(wanted)])
            hashes = [dict(zip(h[::2], h[1::2], strict=True)) for h in flat]
        out = {pid: decode(b) for pid, b in zip(pids, blobs, strict=True)}
        for pid, t in zip(pids, tombs, strict=True):
            if t:
                out[pid].erased = True
        for (pid, key), h in zip(wanted, hashes, strict=True):
            st = out.get(pid)
            if st is None:
                st = out[pid] = Stored()
            st.side[key] = dict(h)
        return out

    # -- the commit -------------------------------------------------------------------------
    def _upkeep(self, call: _Call, rows: list[list[Any]]) -> None:
        call.upkeep = self.upkeep.plan(rows, int(time.monotonic() * 1000), self.share())

    def _noted(self, call: _Call, reply: Any) -> None:
        if call.upkeep:
            self.upkeep.done(call.upkeep, reply[1] if len(reply) > 1 else (), self.share())

    async def _sent(self, call: Awaitable[Any]) -> Any:
        """A commit call's reply; one that fails leaves the tables' upkeep unknown (Upkeep)."""
        try:
            return await call
        except BaseException:
            self.upkeep.forget()
            raise

    def _write_row(self, call: _Call, w: Write, *, merge_step: bool) -> list[Any]:
        """A write as the script takes it. `merge_step`: on one server the whole write; on a
        cluster the profile step (False) — the merge's second step is `_finish_row`."""
        ops = coalesce(w.ops)
        tag = "{" + w.pid + "}"
        for op in ops:
            if tag not in op.key:
                raise ValueError(f"op {op.command} {op.key!r} of profile {w.pid} lacks its hash tag "
                                 f"{tag}: a per-visitor key commits with the profile, in its slot")
        dels = [[call.k(keys.profile(pid)), rev] for pid, rev in w.deletes] if merge_step else []
        alias_rows = [[call.k(keys.alias(vid)), target] for vid, target in w.aliases] \
            if merge_step else []
        blob = call.blobs[w.pid] = _next_rev(w.expected) + w.profile.snapshot()
        k = call.k
        return [k(keys.profile(w.pid)), w.expected, blob, self.ttl_ms,
                k(keys.tombstone(w.pid)), dels, alias_rows,
                [[op.command, k(op.key), *map(_arg, op.args)] for op in ops]]

    def _finish_rows(self, w: Write) -> dict[int, tuple[_Call, list[Any]]]:
        """The second step of a merge on a cluster: per visitor slot, delete the anonymous
        profile (if unchanged) and set the alias."""
        by: dict[int, tuple[_Call, list[Any]]] = {}
        for pid, rev in w.deletes:
            s = slot(keys.profile(pid))
            call = by.get(s, (_Call(), []))[0]
            by[s] = (call, [0, "", "", self.ttl_ms, 0, [[call.k(keys.profile(pid)), rev]], [], []])
        for vid, target in w.aliases:
            s = slot(keys.alias(vid))
            call, row = by.get(s) or (_Call(), [0, "", "", self.ttl_ms, 0, [], [], []])
            row[6].append([call.k(keys.alias(vid)), target])
            by[s] = (call, row)
        return by

    async def commit(self, writes: Sequence[Write], tables: Tables | None,
                     upto: Mapping[int, int], phases: Phase = Phase.ALL) -> CommitResult:
        """Commit a planned batch: `writes`, the shared `tables`, and the offset marks of the
        batch's partitions (`upto`: partition -> its last offset in the batch; every one
        claimed in `self.fences`)."""
        if not self.cluster:
            return await self._commit_one(writes, tables, upto, phases)
        return await self._commit_cluster(writes, tables, upto, phases)

    async def start_commit(self, writes: Sequence[Write], tables: Tables | None,
                           upto: Mapping[int, int]
                           ) -> tuple[Callable[[], Awaitable[CommitResult]], dict[str, bytes]]:
        """`commit` on one server, in two steps: send the call (returns once Redis has all of
        it) and, with the returned coroutine function, read its result. Also returns what each
        written profile's key is set to (pid -> revision + snapshot), for a caller that plans
        its next batch on top of this one while Redis runs it (streams/applier.py)."""
        assert not self.cluster, "a cluster commits in steps: use commit"
        call, entries = self._build_one(writes, tables, upto, Phase.ALL)
        if call is None:
            async def nothing() -> CommitResult:
                return CommitResult()
            return nothing, {}
        answer = await self._sent(self._commit.start(call.keys, call.args()))

        async def result() -> CommitResult:
            return self._result_one(await self._sent(answer()), entries, len(writes), call)
        return result, call.blobs

    def _build_one(self, writes: Sequence[Write], tables: Tables | None, upto: Mapping[int, int],
                   phases: Phase) -> tuple[_Call | None, list[tuple[int, int, str, str, str, int]]]:
        try:
            return self._build(writes, tables, upto, phases)
        except BaseException:
            self.upkeep.forget()  # its rows were planned as if they were to be sent
            raise

    def _build(self, writes: Sequence[Write], tables: Tables | None, upto: Mapping[int, int],
               phases: Phase) -> tuple[_Call | None, list[tuple[int, int, str, str, str, int]]]:
        call = _Call()
        rows = tables.rows() if tables is not None and Phase.SHARED in phases else []
        shards = {keys.shard_of_key(r[0]) for r in rows} - {None}
        self._upkeep(call, rows)
        entries = self.fences.entries(upto, shards, applied=Phase.APPLIED in phases) \
            if upto else []
        for n, p, epoch, expected, new, home in entries:
            call.fences.append([call.k(keys.fence(n, self.fences.group_id)), p, epoch,
                                expected, new, home])
        k = call.k
        for r in rows:
            r[0] = k(r[0])
        call.tables = rows
        for w in writes:
            call.writes.append(self._write_row(call, w, merge_step=True))
        if not call.writes and not call.tables and not call.fences:
            return None, entries
        return call, entries

    async def _commit_one(self, writes: Sequence[Write], tables: Tables | None,
                          upto: Mapping[int, int], phases: Phase) -> CommitResult:
        call, entries = self._build_one(writes, tables, upto, phases)
        if call is None:
            return CommitResult()
        return self._result_one(await self._sent(self._commit(call.keys, call.args())), entries,
                                len(writes), call)

    def _result_one(self, reply: Any, entries: list[tuple[int, int, str, str, str, int]],
                    n_writes: int, call: _Call) -> CommitResult:
        status = int(reply[0])
        if status == 1:
            self.fences.advanced(entries)
            self._noted(call, reply)
            return CommitResult(written=list(range(n_writes)))
        self.upkeep.forget()  # nothing of it was written
        if status == -1:
            return CommitResult(ok=False, fenced=True)
        return CommitResult(ok=False, conflicts=[int(i) - 1 for i in reply[1]],
                            erased=[int(i) - 1 for i in reply[2]])

    async def _commit_cluster(self, writes: Sequence[Write], tables: Tables | None,
                              upto: Mapping[int, int], phases: Phase) -> CommitResult:
        res = CommitResult()
        group = self.fences.group_id
        if Phase.SHARED in phases:
            rows = tables.rows() if tables is not None else []
            by_shard: dict[int, list[list[Any]]] = {}
            for r in rows:
                by_shard.setdefault(keys.shard_of_key(r[0]) or 0, []).append(r)
            calls = []
            for n, shard_rows in sorted(by_shard.items()):
                call = _Call()
                entries = self.fences.entries(upto, [n], applied=False)
                call.fence_entries = entries
                for _, p, epoch, expected, new, home in entries:
                    call.fences.append([call.k(keys.fence(n, group)), p, epoch, expected, new,
                                        home])
                self._upkeep(call, shard_rows)
                for r in shard_rows:
                    r[0] = call.k(r[0])
                call.tables = shard_rows
                calls.append(call)
            for call, reply in zip(calls, await self._sent(self._run(calls)), strict=True):
                if int(reply[0]) == -1:
                    self.upkeep.forget()
                    return CommitResult(ok=False, fenced=True)
                self.fences.advanced(call.fence_entries)
                self._noted(call, reply)
        if Phase.PROFILES in phases and writes:
            calls = []
            for i, w in enumerate(writes):
                call = _Call()
                call.writes.append(self._write_row(call, w, merge_step=False))
                call.write_ids.append(i)
                calls.append(call)
            finishing: list[int] = []
            for call, reply in zip(calls, await self._run(calls), strict=True):
                i = call.write_ids[0]
                status = int(reply[0])
                if status == 1:
                    res.written.append(i)
                    if writes[i].deletes or writes[i].aliases:
                        finishing.append(i)
                elif reply[2]:
                    res.erased.append(i)
                else:
                    res.conflicts.append(i)
            steps = []
            for i in finishing:
                for call, row in self._finish_rows(writes[i]).values():
                    call.writes.append(row)
                    steps.append(call)
            for reply in await self._run(steps):
                if int(reply[0]) != 1:
                    # the anonymous profile changed since it was read: the user's profile has
                    # the merge recorded, the visitor's next identified event finishes it
                    res.ok = False
        if Phase.APPLIED in phases and upto and not res.conflicts:
            calls = []
            for p in sorted(upto):
                call = _Call()
                n = keys.home_shard(p)
                entries = self.fences.entries({p: upto[p]}, [n], applied=True)
                call.fence_entries = entries
                for _, q, epoch, expected, new, home in entries:
                    call.fences.append([call.k(keys.fence(n, group)), q, epoch, expected, new,
                                        home])
                calls.append(call)
            for call, reply in zip(calls, await self._run(calls), strict=True):
                if int(reply[0]) == -1:
                    res.fenced = True
                else:
                    self.fences.advanced(call.fence_entries)
        res.ok = res.ok and not (res.conflicts or res.erased or res.fenced)
        return res

    async def _run(self, calls: Sequence[_Call]) -> list[Any]:
        return await self._commit.run_all([(call.keys, call.args()) for call in calls])

    # -- the API's reads --------------------------------------------------------------------
    async def find(self, some_id: str) -> tuple[str, Stored] | None:
        """A profile by visitor id (following its alias) or by user id. On one server one
        script call (lua/find.lua; a request's first read, as `find_many` the pipeline and,
        for an alias, one read more)."""
        if self.cluster or not some_id:
            return (await self.find_many([some_id]))[0]
        got = await self._find([keys.alias(some_id), keys.profile(keys.visitor_pid(some_id)),
                                keys.profile(keys.user_pid(some_id))], [self._profile_format])
        if not got:
            return None
        who, blob = got
        pid = (keys.visitor_pid(some_id) if who == 1 else keys.user_pid(some_id) if who == 2
               else who.decode())
        return pid, decode(blob)

    async def find_many(self, ids: Sequence[str | None]) -> list[tuple[str, Stored] | None]:
        """`find` for many ids (None: no one) in one pipeline, and one more for the aliases
        found (a mail batch's recipients)."""
        pipe = self.r.pipeline(transaction=False)
        asked = [i for i in ids if i]
        for some_id in asked:
            pipe.get(keys.alias(some_id))
            pipe.get(keys.profile(keys.visitor_pid(some_id)))
            pipe.get(keys.profile(keys.user_pid(some_id)))
        got = await pipe.execute() if asked else []
        first = {some_id: got[3 * j : 3 * j + 3] for j, some_id in enumerate(asked)}
        aliased = list(dict.fromkeys(a.decode() for a, _, _ in first.values() if a))
        blobs: dict[str, Any] = {}
        if len(aliased) == 1:
            blobs[aliased[0]] = await self.r.get(keys.profile(aliased[0]))
        elif aliased:
            pipe = self.r.pipeline(transaction=False)
            for pid in aliased:
                pipe.get(keys.profile(pid))
            blobs = dict(zip(aliased, await pipe.execute(), strict=True))
        out: list[tuple[str, Stored] | None] = []
        for some_id in ids:
            if not some_id:
                out.append(None)
                continue
            alias, vblob, ublob = first[some_id]
            if alias and blobs.get(alias.decode()):
                out.append((alias.decode(), decode(blobs[alias.decode()])))
            elif vblob:
                out.append((keys.visitor_pid(some_id), decode(vblob)))
            elif ublob:
                out.append((keys.user_pid(some_id), decode(ublob)))
            else:
                out.append(None)
        return out


def ops_of(writes: Iterable[Write]) -> list[Op]:
    """Every per-visitor op of some writes (for tests and benchmarks)."""
    return [op for w in writes for op in w.ops]
