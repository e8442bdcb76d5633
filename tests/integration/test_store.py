"""The stream's commit on real Valkey: compare-and-set, fences, shared tables aggregated per
batch, merges, tombstones."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.exceptions

from engine.store import keys
from engine.store.catalog import CatalogStore
from engine.store.profiles import ProfileStore, new_client
from engine.store.writes import Op, Tables, Write
from models.affinity import AffinityConfig, Profile
from streams.applier import Applier, Lost
from streams.hooks import activity, reco, traffic
from tests.conftest import uid

pytestmark = pytest.mark.integration
CFG = AffinityConfig()
T0 = 1_764_000_000_000


@pytest.fixture
async def client(redis_url):
    c = new_client(redis_url)
    yield c
    await c.aclose()


def store_of(client, group: str | None = None) -> ProfileStore:
    return ProfileStore(client, ttl_ms=60_000, group_id=group or f"g-{uuid.uuid4().hex[:8]}")


def ev(vid, n, part=0, off=None, **extra):
    return {"event_id": f"{vid}-{n}", "type": "item_view", "visitor_id": vid, "ts": T0 + n,
            "item": {"id": f"i{n % 7}", "brand": "acme", "categories": ["a/b"]},
            "_p": part, "_o": n if off is None else off, "_t": T0, **extra}


async def test_ops_and_tables_commit_with_the_profile_and_only_then(client):
    st = store_of(client)
    vid = uid()
    pid = keys.visitor_pid(vid)
    await st.fences.claim([0])
    t = Tables()
    key = f"kx:{{k3}}:test:{vid}"
    t.hincr(key, "n", 1)
    t.zincr(key + ":z", "acme", 2.5)
    w = Write(pid, b"", Profile(), ops=[Op("LPUSH", keys.activity(pid), ("x",))], tables=t)
    res = await st.commit([w], t, {0: 5})
    assert res.ok and res.written == [0]
    assert await client.hget(key, "n") == b"1"
    assert float(await client.zscore(key + ":z", "acme")) == 2.5
    assert await client.lrange(keys.activity(pid), 0, -1) == [b"x"]
    # the same write again: its expected revision is stale, so the profile and its ops do not
    # change; on one server nothing at all does (one call), on a cluster the shared tables are
    # their own earlier step (the Applier plans the profile again without them)
    res = await st.commit([w], t, {0: 6})
    assert not res.ok and res.conflicts == [0]
    assert await client.hget(key, "n") == (b"2" if st.cluster else b"1")
    assert await client.llen(keys.activity(pid)) == 1


async def test_a_timeline_is_trimmed_only_past_its_bound(client):
    """lua/commit.lua skips an LTRIM 0 stop that the write's own push says cannot cut anything
    (the list is at most stop + 1 long); past the bound it trims as before."""
    st = store_of(client)
    await st.fences.claim([0])
    vid = uid()
    pid = keys.visitor_pid(vid)
    key = keys.activity(pid)
    expected = b""
    for n, entries in enumerate((("a", "b"), ("c", "d"))):
        w = Write(pid, expected, Profile(), ops=[Op("LPUSH", key, entries), Op("LTRIM", key, (0, 2))],
                  tables=Tables())
        res = await st.commit([w], None, {0: n})
        assert res.ok
        expected = (await client.get(keys.profile(pid)))[:4]
        assert await client.lrange(key, 0, -1) == [[b"b", b"a"], [b"d", b"c", b"b"]][n]


async def test_disallowed_op_never_reaches_redis(client):
    st = store_of(client)
    with pytest.raises(ValueError):
        Op("FLUSHALL", "x")
    pid = keys.visitor_pid(uid())
    w = Write(pid, b"", Profile(), ops=[Op("SET", f"kx:{{{pid}}}:ok", ("1",))], tables=Tables())
    object.__setattr__(w.ops[0], "command", "FLUSHALL")
    with pytest.raises(redis.exceptions.ResponseError, match="op not allowed"):
        await st.commit([w], None, {})


async def test_a_per_visitor_op_must_carry_the_profiles_hash_tag(client):
    pid = keys.visitor_pid(uid())
    w = Write(pid, b"", Profile(), ops=[Op("SET", "kx:elsewhere", ("1",))], tables=Tables())
    with pytest.raises(ValueError, match="hash tag"):
        await store_of(client).commit([w], None, {})


async def test_hooks_run_once_per_applied_event_even_when_replayed(client):
    vid = uid()
    key = f"kx:{{k1}}:test:{vid}:hook"

    def count_views(event, profile, pid, out):
        out.tables.hincr(key, "views")

    emitted = []

    async def emit(items):
        emitted.extend(items)

    ap = Applier(store_of(client), CFG, hooks=lambda: [count_views], emit=emit)
    batch = [ev(vid, i) for i in range(5)]
    assert (await ap.apply(batch)).applied == 5
    res = await ap.apply(batch + [ev(vid, 9)])  # replayed batch plus one new event
    assert (res.applied, res.duplicates) == (1, 5)
    assert await client.hget(key, "views") == b"6"


async def test_the_same_events_in_one_batch_or_many_give_the_same_tables(client):
    """The aggregated tables as Redis holds them (reco, traffic): one batch of 300 events, or
    the same events in 60 batches, on two consumer groups with their own visitors."""
    hooks = [traffic.count_traffic, activity.record_activity, reco.record_reco]
    tag = uuid.uuid4().hex[:6]

    def evs(prefix):
        out = []
        for n in range(300):
            e = ev(f"{prefix}{n % 13}", n, part=n % 3, off=n)
            e["item"] = {"id": f"{tag}-{n % 11}", "brand": f"b{tag}", "categories": [f"c{tag}/x"]}
            out.append(e)
        return out

    one = Applier(store_of(client), CFG, hooks=lambda: hooks)
    await one.apply(evs("a"))
    snap_one = await _reco_tables(client, tag)
    for k in [k async for k in _scan(client, f"*{tag}*")]:
        await client.delete(k)
    for n in range(11):
        await client.zrem(keys.popularity(keys.shard(f"{tag}-{n}")), f"{tag}-{n}")
    many = Applier(store_of(client), CFG, hooks=lambda: hooks)
    batch = evs("b")
    for i in range(0, 300, 5):
        await many.apply(batch[i:i + 5])
    assert await _reco_tables(client, tag) == snap_one
    assert snap_one  # co-view, trending, catalog fields, popularity


async def test_a_batch_planned_while_the_one_before_commits_gives_what_one_after_another_gives(
        client):
    """The worker plans a batch while Redis runs the commit of the one before (streams/
    applier.py): the same events in the same parts, one after the other or overlapped, give the
    same profiles, timelines and tables, identity merges included (an anonymous profile folded
    into its user's in one part, written on in the next)."""
    hooks = [traffic.count_traffic, activity.record_activity, reco.record_reco]
    n_vis = 17
    tag, prefix = uuid.uuid4().hex[:6], f"o{uuid.uuid4().hex[:5]}-"
    batch = []
    for n in range(400):
        v = n % n_vis
        extra = {"user_id": f"{prefix}u{v}"} if v < 3 and n >= 120 + 40 * v else {}
        e = ev(f"{prefix}{v}", n, part=v % 3, off=n, **extra)
        e["item"] = {"id": f"{tag}-{n % 11}", "brand": f"b{tag}", "categories": [f"c{tag}/x"]}
        batch.append(e)
    parts = [batch[i:i + 50] for i in range(0, 400, 50)]

    async def state(ap):
        out = {}
        for v in range(n_vis):
            found = await ap.store.find(f"{prefix}{v}")
            assert found is not None
            pid, st = found
            out[v] = (pid, st.rev, st.profile.snapshot(),
                      await client.lrange(keys.activity(pid), 0, -1))
        return out, await _reco_tables(client, tag)

    def asked_for(p):
        async def next_part():  # the worker's chain: the next part, asked for at the commit
            return p
        return next_part

    runs = []
    for mode in ("one after another", "overlapped", "asked for"):
        for k in [k async for k in _scan(client, f"*{prefix}*")] + \
                [k async for k in _scan(client, f"*{tag}*")]:
            await client.delete(k)
        for n in range(11):
            await client.zrem(keys.popularity(keys.shard(f"{tag}-{n}")), f"{tag}-{n}")
        ap = Applier(store_of(client), CFG, hooks=lambda: hooks)
        for j, part in enumerate(parts):
            nxt = None if mode == "one after another" or j + 1 == len(parts) else \
                parts[j + 1] if mode == "overlapped" else asked_for(parts[j + 1])
            if mode == "asked for" and j + 1 == len(parts):
                nxt = asked_for(None)  # nothing came: committed as without overlap
            res = await ap.apply(part, ahead=nxt)
            assert (res.applied, res.conflicts) == (50, 0)
        overlapping = mode != "one after another" and not ap.store.cluster  # one server only
        assert ap.overlapped == (7 if overlapping else 0)
        assert ap.dropped_ahead == 0
        runs.append(await state(ap))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0][0][0] == keys.user_pid(f"{prefix}u0")  # merged into its user


async def test_a_plan_ahead_made_stale_by_another_writer_is_refused_and_planned_again(client):
    tag = uuid.uuid4().hex[:6]
    vids = [uid() for _ in range(4)]
    ap = Applier(store_of(client), CFG, hooks=lambda: [reco.record_reco])
    first = [ev(vids[i % 4], i, part=0, off=i) for i in range(8)]
    second = [ev(vids[i % 4], i, part=0, off=i) for i in range(8, 16)]
    for e in first + second:
        e["item"] = {"id": f"{tag}-{e['_o'] % 3}"}
    assert (await ap.apply(first, ahead=second)).applied == 8
    # between the plan ahead and its commit another writer (no partition: the API's own
    # writes, another group) changes one of its profiles
    other = Applier(store_of(client), CFG)
    await other.apply([{"event_id": "x", "type": "item_view", "visitor_id": vids[1],
                        "ts": T0 + 99, "item": {"id": "x"}}])
    res = await ap.apply(second)
    if not ap.store.cluster:  # a cluster commits in steps, never ahead
        assert (res.applied, res.conflicts, ap.overlapped) == (8, 1, 1)
    assert res.applied == 8
    counts = []
    for v in vids:
        found = await ap.store.find(v)
        assert found is not None
        counts.append(found[1].profile.event_count)
    assert counts == [4, 5, 4, 4]


async def _scan(client, pattern):
    from engine.store.client import is_cluster

    if is_cluster(client):
        for node in client.get_primaries():
            async for k in client.scan_iter(pattern, target_nodes=node):
                yield k
    else:
        async for k in client.scan_iter(pattern):
            yield k


async def _reco_tables(client, tag):
    out = {}
    for iid in [f"{tag}-{n}" for n in range(11)]:
        for kind in ("v", "t"):
            rows = await client.zrange(keys.neighbours(kind, iid), 0, -1, withscores=True)
            out[(kind, iid)] = [(m, round(s, 6)) for m, s in rows]
        out[("catalog", iid)] = await client.hgetall(keys.catalog_item(iid))
        out[("pop", iid)] = await client.zscore(keys.popularity(keys.shard(iid)), iid)
    return out


async def test_a_newer_owner_fences_off_the_older_one(client):
    """A worker stalled past its session comes back: its commit is refused everywhere."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    key = f"kx:{{k5}}:test:{group}"

    def count(event, profile, pid, out):
        out.tables.hincr(key, "n")

    old = Applier(store_of(client, group), CFG, hooks=lambda: [count])
    new = Applier(store_of(client, group), CFG, hooks=lambda: [count])
    vid = uid()
    await old.apply([ev(vid, 0, part=2)])
    await new.fences.claim([2])  # the group gave partition 2 to the new worker
    await new.apply([ev(vid, 1, part=2)])
    with pytest.raises(Lost) as lost:
        await old.apply([ev(vid, 2, part=2)])  # stale: nothing of it is written
    assert lost.value.partitions == {2}
    assert await client.hget(key, "n") == b"2"
    found = await new.store.find(vid)
    assert found is not None and found[1].profile.event_count == 2


async def test_a_tombstone_refuses_the_profile_inside_the_commit(client):
    """The erase flow set the tombstone between the read and the commit: nothing comes back."""
    st = store_of(client)
    vid = uid()
    pid = keys.visitor_pid(vid)
    await st.fences.claim([0])
    await client.set(keys.tombstone(pid), b"1", px=60_000)
    w = Write(pid, b"", Profile(), ops=[Op("LPUSH", keys.activity(pid), ("x",))],
              tables=Tables())
    res = await st.commit([w], None, {0: 1})
    assert not res.ok and res.erased == [0]
    assert not await client.exists(keys.profile(pid), keys.activity(pid))


async def test_concurrent_writers_to_one_merged_user_lose_nothing(client):
    """Two visitors on two partitions (two workers) write one user's profile at once."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    user = uid("user")
    a, b = uid("a"), uid("b")
    ap1, ap2 = Applier(store_of(client, group), CFG), Applier(store_of(client, group), CFG)
    await ap1.apply([ev(a, 0, part=0, user_id=user)])
    await ap2.apply([ev(b, 0, part=1, user_id=user)])
    rounds = [(ap1.apply([ev(a, i, part=0)]), ap2.apply([ev(b, i, part=1)])) for i in range(1, 30)]
    for x, y in rounds:
        await asyncio.gather(x, y)
    found = await ap1.store.find(user)
    assert found is not None
    assert found[1].profile.event_count == 60


async def test_find_is_one_call_that_finds_what_the_pipelines_find(client):
    """On one server `find` is one script call (lua/find.lua, which follows the alias itself):
    it finds what `find_many` (the pipelines, as on a cluster) finds: the aliased profile
    while it exists, else the visitor's own, else the user's, else no one."""
    st = store_of(client)
    tag = uuid.uuid4().hex[:6]

    async def put(pid: str, n: int) -> None:
        await client.set(keys.profile(pid), b"\0\0\0\1" + Profile(event_count=n).snapshot())

    aliased, own, gone, user, nobody = (f"{w}-{tag}" for w in ("al", "own", "gone", "usr", "no"))
    await put(keys.user_pid(f"target-{tag}"), 1)
    await client.set(keys.alias(aliased), keys.user_pid(f"target-{tag}"))
    await put(keys.visitor_pid(aliased), 2)  # the aliased profile wins over the visitor's own
    await put(keys.visitor_pid(own), 3)
    await client.set(keys.alias(gone), keys.user_pid(f"none-{tag}"))  # its target is gone
    await put(keys.visitor_pid(gone), 4)
    await put(keys.user_pid(user), 5)
    ids = [aliased, own, gone, user, nobody]
    found = [await st.find(i) for i in ids]
    assert [(f[0], f[1].profile.event_count) if f else None for f in found] == [
        (keys.user_pid(f"target-{tag}"), 1), (keys.visitor_pid(own), 3),
        (keys.visitor_pid(gone), 4), (keys.user_pid(user), 5), None]
    assert [(f[0], f[1].rev, f[1].profile.event_count) if f else None for f in found] == [
        (f[0], f[1].rev, f[1].profile.event_count) if f else None
        for f in await st.find_many(ids)]


async def test_item_keys_expire_unless_curated(client):
    tag = uuid.uuid4().hex[:6]
    ap = Applier(store_of(client), CFG, hooks=lambda: [reco.record_reco])
    curated, seen = f"{tag}-cur", f"{tag}-seen"
    await CatalogStore(client).upsert([{"id": curated, "name": "Curated"}])
    vid = uid()
    await ap.apply([{**ev(vid, 0), "item": {"id": curated, "name": "from event"}},
                    {**ev(vid, 1), "item": {"id": seen, "name": "from event"}}])
    assert await client.pttl(keys.catalog_item(curated)) == -1
    assert 0 < await client.pttl(keys.catalog_item(seen)) <= reco.ITEM_TTL_MS
    assert 0 < await client.pttl(keys.neighbours("v", seen)) <= reco.ITEM_TTL_MS


async def test_the_reco_read_finds_each_neighbours_popularity_in_its_shard(client):
    """lua/reco_read.lua computes an item's shard (CRC-32) itself: it must agree with
    keys.shard for any id (on a cluster the reader does the same in Python)."""
    import random

    from engine.store.reco_read import RecoReader

    tag = uuid.uuid4().hex[:6]
    rng = random.Random(3)
    ids = [f"{tag}-{rng.getrandbits(40):x}-é{n}" for n in range(60)]
    seed = f"{tag}-seed"
    for n, iid in enumerate(ids):
        await client.zadd(keys.popularity(keys.shard(iid)), {iid: n + 1})
        await client.zadd(keys.neighbours("v", seed), {iid: 1.0})
    got = await RecoReader(client, "g").tables(
        neighbours=["co_view"], seeds=[seed], trending=False, categories=[], half_life="1d",
        factors=[], rows_per_seed=100, rows=10, cf_pid=None)
    assert got.popularity == {iid: float(n + 1) for n, iid in enumerate(ids)}
    assert {m for m, _ in got.neighbours["co_view"][seed]} == set(ids)


async def test_a_batch_of_many_profiles_commits_in_one_go(client):
    """One-event records of many visitors, a batch as big as the worker takes (up to
    `commit_max_events`): on a cluster each profile is its own script call, and far more of
    them than the client's connections per node must still commit (redis-py's cluster client
    refuses a call beyond them with MaxConnectionsError instead of waiting: a worker retrying
    such a batch would retry it forever)."""
    tag = uuid.uuid4().hex[:6]
    ap = Applier(store_of(client), CFG)
    batch = [ev(f"many-{tag}-{i}", 0, off=i) for i in range(2000)]
    res = await ap.apply(batch)
    assert (res.applied, res.duplicates) == (2000, 0)
    for i in (0, 999, 1999):
        found = await ap.store.find(f"many-{tag}-{i}")
        assert found is not None and found[1].profile.event_count == 1


async def test_the_learner_commit_turns_a_rising_drift_counter_into_one_event(client):
    from engine.store.learning import LearnerStore, ModelStore

    group = f"g-{uuid.uuid4().hex[:8]}"
    store, read = LearnerStore(client, group), ModelStore(client, group)
    assert await store.hold("me", 5000)
    stats = {"decisions": 3, "drift:hero:a": 0, "drift:propensity:exit": 0}
    await store.commit("me", {}, {}, None, stats, 100, now_ms=T0)
    assert await read.drift_events() == []  # counters at 0: no event, but /metrics shows them
    assert (await read.learner_stats())["drift:hero:a"] == 0
    await store.commit("me", {}, {}, None, {**stats, "drift:hero:a": 1}, 100, now_ms=T0 + 1)
    await store.commit("me", {}, {}, None, {**stats, "drift:hero:a": 1}, 100, now_ms=T0 + 2)
    assert await read.drift_events() == [{"at": T0 + 1, "model": "hero:a", "detections": 1}]
    # a learner restarted from an older snapshot counts from 0 again: the same detection adds
    # no event and the counter in /metrics does not go back
    await store.commit("me", {}, {}, None, stats, 100, now_ms=T0 + 3)
    await store.commit("me", {}, {}, None, {**stats, "drift:hero:a": 1}, 100, now_ms=T0 + 4)
    assert len(await read.drift_events()) == 1
    assert (await read.learner_stats())["drift:hero:a"] == 1
    for i in range(3):  # capped to the newest `drift_keep`
        await store.commit("me", {}, {}, None, {**stats, "drift:propensity:exit": i + 1}, 100,
                           now_ms=T0 + 10 + i, drift_keep=2)
    got = await read.drift_events()
    assert [(e["model"], e["detections"], e["at"]) for e in got] == [
        ("propensity:exit", 2, T0 + 11), ("propensity:exit", 3, T0 + 12)]
    assert await read.drift_events(last=1) == got[-1:]
    # fenced: a learner without the lease writes nothing
    with pytest.raises(Exception, match="lease"):
        await store.commit("other", {}, {}, None, {**stats, "drift:hero:b": 5}, 100, now_ms=T0)
    assert len(await read.drift_events()) == 2
