"""What a recommendation reads from Redis, in domain words.

`RecoReader.tables` is one script call (lua/reco_read.lua) for the neighbour tables of the
seed items (co-view, co-buy, next item), the trending tables (overall and per category; two
epochs each) with the neighbours' popularity, the visitor's online-CF vector and the items of
the visitor's latest sessions (the `history` ingredient's: in the same call, not a round trip
of their own). `tables_and_knn` sends those calls and the session-kNN ones on one connection
at once (one round trip: each costs this process a send, a wake-up and a read, which on a small
machine weigh more than the Python around them). On a Redis Cluster (whose keys span many
slots) the same reads are two pipelines instead.
`cf_items` reads the candidates' CF vectors from the model of the visitor's partition;
`trending` is the read behind GET /v1/stats/trending; `repurchase_rows` the repurchase
counters (one pipeline). `session_knn` is the served session-kNN on a single server: one script
call (lua/session_knn.lua) that samples the sessions, scores them and returns only the best
items; on a cluster (a session's key has its own slot) the flow reads the state with
`session_index` and `sessions` (a pipeline each) and scores it in Python instead. The tables are written by the stream hooks (streams/hooks/reco.py,
streams/hooks/cf.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.store import keys
from engine.store.client import Script, is_cluster, pipelined_scripts

#: neighbour ingredients and the kind of their tables (keys.neighbours), in read order
NEIGHBOUR_KINDS = (("co_view", "v"), ("co_buy", "b"), ("next_item", "t"))

#: Tables kept decoded across requests (key -> (reply, rows)): a table read again unchanged (the
#: trending tables, the neighbours of popular items) is compared with its last reply, not
#: decoded again; beyond this many the oldest go (~10-25 MB at most: 30-100 rows a table).
DECODED_TABLES = 1024

Rows = list[tuple[str, float]]  # (member, score: a neighbour's in weights, not units), best first
Epochs = list[tuple[Rows, float]]  # each epoch's rows with its decay factor to now


@dataclass(slots=True)
class RecoTables:
    """What `RecoReader.tables` read."""

    neighbours: dict[str, dict[str, Rows]] = field(
        default_factory=lambda: {name: {} for name, _ in NEIGHBOUR_KINDS})  # name -> seed -> rows
    trending: Epochs = field(default_factory=list)
    in_category: dict[str, Epochs] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)  # of the neighbours read
    cf_user: bytes | None = None
    sessions: dict[str, list[str]] = field(default_factory=dict)  # items oldest first; gone: left out


def _rows(flat: Sequence[Any], unit: float = 1.0) -> Rows:
    """(member, score / `unit`) pairs of a ZREVRANGE WITHSCORES reply."""
    return [(flat[j].decode(), float(flat[j + 1]) / unit) for j in range(0, len(flat), 2)]


def _wanted(*, neighbours: Sequence[str], seeds: Sequence[str], trending: bool, categories: Sequence[str],
            half_life: str, factors: Sequence[tuple[int, float]], rows_per_seed: int, rows: int,
            cf_pid: str | None, sessions: Sequence[str] = ()
            ) -> tuple[list[tuple[str, str, float, str]], int, dict[str, Any]]:
    """The tables one request reads: ([(what, via, factor, key)], how many are neighbour
    tables, the request)."""
    wanted: list[tuple[str, str, float, str]] = []  # (what, via, factor, key)
    for name, kind in NEIGHBOUR_KINDS:
        if name in neighbours:
            wanted += [(name, seed, 1.0, keys.neighbours(kind, seed)) for seed in seeds]
    n_neigh = len(wanted)
    for epoch, f in factors:
        if trending:
            wanted.append(("trending", "", f, keys.trending(half_life, "item", epoch)))
        for c in categories:
            wanted.append(("in_category", c, f, keys.trending_in_category(half_life, c, epoch)))
    return wanted, n_neigh, {"rows_per_seed": rows_per_seed, "rows": rows, "cf_pid": cf_pid,
                             "sessions": list(sessions)}


def _tables(wanted: Sequence[tuple[str, str, float, str]], replies: Sequence[Any],
            seen: dict[str, tuple[Any, Rows]] | None = None,
            sessions: Sequence[str] = ()) -> RecoTables:
    """One request's tables from its script reply (with the items of `sessions`, the session
    names it asked for). `seen`: the tables decoded before (key -> (reply, rows); the reader's
    memo across requests, which a mail batch's recipients share too); a table whose reply is
    the same list is not decoded again (requests read the same trending tables and the
    neighbours of the same popular items). The rows are then shared: read them, never change
    them."""
    out = RecoTables()
    for (what, via, f, key), flat in zip(wanted, replies, strict=False):
        got = seen.get(key) if seen is not None else None
        if got is not None and got[0] == flat:
            pairs = got[1]
        else:
            pairs = _rows(flat, keys.NEIGHBOUR_UNIT if what in out.neighbours else 1.0)
            if seen is not None:
                seen[key] = (flat, pairs)
        if what in out.neighbours:
            out.neighbours[what][via] = pairs
        elif what == "trending":
            out.trending.append((pairs, f))
        else:
            out.in_category.setdefault(via, []).append((pairs, f))
    ids, counts = replies[len(wanted)], replies[len(wanted) + 1]
    out.popularity = {i.decode(): float(c) for i, c in zip(ids, counts, strict=True) if c is not None}
    out.cf_user = replies[len(wanted) + 2] or None
    if sessions:
        out.sessions = {u: [m.decode() for m in rows]
                        for u, rows in zip(sessions, replies[len(wanted) + 3], strict=True) if rows}
    return out


def _tables_of(plans: Sequence[tuple[list[tuple[str, str, float, str]], int, dict[str, Any]]],
               calls: Sequence[tuple[int, Any, Any]], got: Sequence[Any],
               seen: dict[str, tuple[Any, Rows]]) -> list[RecoTables]:
    """Each request's tables from the replies of its calls (`RecoReader._table_calls`);
    `seen` the tables decoded before (`_tables`)."""
    replies: list[Any] = [None] * len(plans)
    for (i, _, _), reply in zip(calls, got, strict=True):
        replies[i] = reply
    out = [_tables(wanted, reply, seen, req["sessions"]) if reply is not None else RecoTables()
           for (wanted, _, req), reply in zip(plans, replies, strict=True)]
    while len(seen) > DECODED_TABLES:
        del seen[next(iter(seen))]
    return out


def _knn_rows(got: Sequence[Any]) -> list[list[tuple[str, float, str]]]:
    """The session-kNN script's replies as (item, score, via) rows."""
    return [[(flat[j].decode(), float(flat[j + 1]), flat[j + 2].decode())
             for j in range(0, len(flat), 3)] for flat in got]


class RecoReader:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.r = redis
        self.group_id = group_id
        self._read = Script(redis, "reco_read")
        self._sessions = Script(redis, "session_items")
        self._knn = Script(redis, "session_knn")
        self.cluster = is_cluster(redis)
        self._popularity = [keys.popularity(n) for n in range(keys.SHARDS)]
        self._decoded: dict[str, tuple[Any, Rows]] = {}  # `DECODED_TABLES`

    async def tables(self, *, neighbours: Sequence[str], seeds: Sequence[str], trending: bool,
                     categories: Sequence[str], half_life: str,
                     factors: Sequence[tuple[int, float]], rows_per_seed: int, rows: int,
                     cf_pid: str | None, sessions: Sequence[str] = ()) -> RecoTables:
        """The tables of one request in one round trip: for each neighbour ingredient named in
        `neighbours`, each seed's table (`rows_per_seed` rows); the overall trending table when
        `trending` and each of `categories`' tables (`rows` rows; every epoch of `factors`);
        the popularity of the neighbours read; `cf_pid`'s CF vector when given; the items of
        the sessions named in `sessions` (as `sessions` reads them)."""
        return (await self.tables_many([dict(
            neighbours=neighbours, seeds=seeds, trending=trending, categories=categories,
            half_life=half_life, factors=factors, rows_per_seed=rows_per_seed, rows=rows, cf_pid=cf_pid,
            sessions=sessions)]))[0]

    async def tables_many(self, requests: Sequence[dict[str, Any]]) -> list[RecoTables]:
        """`tables` for many requests (each a dict of its keyword arguments) in one round trip:
        the script calls on one pipeline (a mail batch's recipients). On a cluster, each
        request's two pipelines, concurrently."""
        plans, calls = self._table_calls(requests)
        if self.cluster:
            got = await asyncio.gather(*(self._cluster_read(plans[i][0], plans[i][1], plans[i][2]["rows_per_seed"],
                                                            plans[i][2]["rows"], plans[i][2]["cf_pid"],
                                                            plans[i][2]["sessions"])
                                         for i, _, _ in calls))
        elif len(calls) == 1:
            got = [await self._read(calls[0][1], calls[0][2])]
        else:
            got = await self._read.pipelined([(k, a) for _, k, a in calls]) if calls else []
        return _tables_of(plans, calls, got, self._decoded)

    async def tables_and_knn(self, requests: Sequence[dict[str, Any]],
                             sessions: Sequence[tuple[Sequence[str], str | None, int]],
                             **knn: Any) -> tuple[list[RecoTables], list[list[tuple[str, float, str]]]]:
        """`tables_many(requests)` and `session_knn(sessions, **knn)` in one round trip: every
        script call on one connection (a request's reads beside each other cost one connection
        and one wake-up, not one each). A single server only, as `session_knn`."""
        if self.cluster:
            raise RuntimeError("session_knn reads many slots: use session_index and sessions")
        plans, calls = self._table_calls(requests)
        knn_calls = self._knn_calls(sessions, **knn)
        got = await pipelined_scripts(self.r, [*((self._read, k, a) for _, k, a in calls),
                                               *((self._knn, k, a) for k, a in knn_calls)])
        return (_tables_of(plans, calls, got[:len(calls)], self._decoded),
                _knn_rows(got[len(calls):]))

    def _table_calls(self, requests: Sequence[dict[str, Any]]
                     ) -> tuple[list[tuple[list[tuple[str, str, float, str]], int, dict[str, Any]]],
                                list[tuple[int, list[str], list[Any]]]]:
        """Each request's plan (`_wanted`) and the script calls to make: (plan index, keys,
        args); none for a request that reads nothing (keys and args empty on a cluster)."""
        plans = [_wanted(**r) for r in requests]
        calls: list[tuple[int, list[str], list[Any]]] = []
        for i, (wanted, n_neigh, req) in enumerate(plans):
            if not wanted and req["cf_pid"] is None and not req["sessions"]:
                continue
            if self.cluster:
                calls.append((i, [], []))
                continue
            rkeys = [t[3] for t in wanted] + self._popularity
            rkeys += [keys.session_items(u) for u in req["sessions"]]
            if req["cf_pid"] is not None:
                rkeys.append(keys.cf_visitor(req["cf_pid"]))
            calls.append((i, rkeys, [n_neigh, req["rows_per_seed"], req["rows"], len(wanted), keys.SHARDS,
                                     len(req["sessions"])]))
        return plans, calls

    async def _cluster_read(self, wanted: Sequence[tuple[str, str, float, str]], n_neigh: int,
                            rows_per_seed: int, rows: int, cf_pid: str | None,
                            sessions: Sequence[str]) -> list[Any]:
        """The script's answer, read with two pipelines (a cluster routes each command)."""
        pipe = self.r.pipeline(transaction=False)
        for i, (_, _, _, key) in enumerate(wanted):
            pipe.zrevrange(key, 0, (rows_per_seed if i < n_neigh else rows) - 1, withscores=True)
        for u in sessions:
            pipe.zrange(keys.session_items(u), 0, -1)
        if cf_pid is not None:
            pipe.get(keys.cf_visitor(cf_pid))
        got = await pipe.execute()
        own = got[len(wanted):len(wanted) + len(sessions)]
        tables = [[x for m, sc in rows_ for x in (m, sc)] for rows_ in got[:len(wanted)]]
        ids = list(dict.fromkeys(m for flat in tables[:n_neigh] for m in flat[0::2]))
        pipe = self.r.pipeline(transaction=False)
        for m in ids:
            pipe.zscore(self._popularity[keys.shard(m.decode())], m)
        pops = await pipe.execute() if ids else []
        return [*tables, ids, pops, got[-1] if cf_pid is not None else None, own]

    async def repurchase_rows(self, levels: Sequence[str], items: Sequence[str]
                              ) -> tuple[dict[str, dict[bytes, bytes]], dict[str, dict[bytes, bytes]]]:
        """The repurchase counter hashes of category levels and of items (one pipeline)."""
        if not levels and not items:
            return {}, {}
        pipe = self.r.pipeline(transaction=False)
        for level in levels:
            pipe.hgetall(keys.repurchase_level(level))
        for iid in items:
            pipe.hgetall(keys.repurchase_item(iid))
        got = await pipe.execute()
        return (dict(zip(levels, got[:len(levels)], strict=True)),
                dict(zip(items, got[len(levels):], strict=True)))

    async def session_index(self, items: Sequence[str], per_item: int
                            ) -> dict[str, list[tuple[str, int]]]:
        """Each item's `per_item` most recent sessions: (session name, last time ms)."""
        if not items:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for iid in items:
            pipe.zrevrange(keys.session_index(iid), 0, per_item - 1, withscores=True)
        got = await pipe.execute()
        return {iid: [(u.decode(), int(sc)) for u, sc in rows]
                for iid, rows in zip(items, got, strict=True)}

    async def session_knn(self, sessions: Sequence[tuple[Sequence[str], str | None, int]], *,
                          sample_size: int, per_item: int, k: int, lambda_pos: float,
                          lambda_time_s: float, lambda_neigh: float, now_ms: int
                          ) -> list[list[tuple[str, float, str]]]:
        """For each (current items oldest first, the session's name or None, n): the items
        scored at least the n-th best by session-kNN (lua/session_knn.lua: the `sample_size`
        most recent sessions of the items' indexes, `per_item` rows each, the `k` most similar
        kept), as (item, score, via), unordered. One script call per session, pipelined. A
        single server only (on a cluster: `session_index`, `sessions`)."""
        if self.cluster:
            raise RuntimeError("session_knn reads many slots: use session_index and sessions")
        calls = self._knn_calls(sessions, sample_size=sample_size, per_item=per_item, k=k,
                                lambda_pos=lambda_pos, lambda_time_s=lambda_time_s,
                                lambda_neigh=lambda_neigh, now_ms=now_ms)
        if not calls:
            return []
        return _knn_rows([await self._knn(*calls[0])] if len(calls) == 1
                         else await self._knn.pipelined(calls))

    @staticmethod
    def _knn_calls(sessions: Sequence[tuple[Sequence[str], str | None, int]], *,
                   sample_size: int, per_item: int, k: int, lambda_pos: float,
                   lambda_time_s: float, lambda_neigh: float, now_ms: int
                   ) -> list[tuple[list[str], list[Any]]]:
        return [([keys.session_index(iid) for iid in items],
                 [uid or "", sample_size, per_item, k, float(lambda_pos), float(lambda_time_s),
                  float(lambda_neigh), n, now_ms, keys.SHARDS, *items])
                for items, uid, n in sessions]

    async def sessions(self, uids: Sequence[str]) -> dict[str, list[str]]:
        """Each session's items, oldest first; a session gone is left out."""
        if not uids:
            return {}
        skeys = [keys.session_items(u) for u in uids]
        if self.cluster:
            pipe = self.r.pipeline(transaction=False)
            for k in skeys:
                pipe.zrange(k, 0, -1)
            got = await pipe.execute()
        else:  # one command, not one per session (redis-py packs each command in Python)
            got = await self._sessions(skeys, [])
        return {u: [m.decode() for m in rows] for u, rows in zip(uids, got, strict=True) if rows}

    async def cf_items(self, partition: int, item_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The CF vectors of items in the model of one events partition (None: not learnt)."""
        vectors = await self.r.hmget(keys.cf_items(self.group_id, partition), item_ids)
        return dict(zip(item_ids, vectors, strict=True))

    async def trending(self, half_life: str, dim: str, factors: Sequence[tuple[int, float]],
                       k: int) -> Epochs:
        """The top `k` stored rows of a trending table in each epoch of `factors` (one
        pipeline), each with its factor; engine.logic.trending.merge ranks them."""
        pipe = self.r.pipeline(transaction=False)
        for epoch, _ in factors:
            pipe.zrevrange(keys.trending(half_life, dim, epoch), 0, k - 1, withscores=True)
        replies = await pipe.execute()
        return [([(m.decode(), s) for m, s in rows], f)
                for rows, (_, f) in zip(replies, factors, strict=True)]
