"""The profile store's atomic commit on real Valkey: CAS, merges, derived-state ops."""

from __future__ import annotations

import pytest
import redis.exceptions

from engine.store import keys
from engine.store.profiles import ProfileStore, new_client
from engine.store.writes import Op, Write
from models.affinity import AffinityConfig, Profile
from streams.applier import Applier
from tests.conftest import uid

pytestmark = pytest.mark.integration
CFG = AffinityConfig()


@pytest.fixture
async def store(redis_server):
    client = new_client(redis_server.url)
    yield ProfileStore(client, ttl_ms=60_000)
    await client.aclose()


def ev(vid, n, **extra):
    return {"event_id": f"{vid}-{n}", "type": "item_view", "visitor_id": vid, "ts": 1_764_000_000_000,
            "item": {"id": f"i{n}", "brand": "acme"}, **extra}


async def test_ops_commit_with_the_profile_and_only_then(store):
    vid = uid()
    counter = f"test:{vid}:views"
    prof = Profile()
    w = Write(keys.visitor_pid(vid), b"", prof, ops=[Op("HINCRBY", counter, ("n", 1)),
                                                     Op("ZINCRBY", counter + ":z", (2.5, "acme"))])
    assert await store.commit([w]) == [True]
    assert await store.r.hget(counter, "n") == b"1"
    assert float(await store.r.zscore(counter + ":z", "acme")) == 2.5
    # the same write again: its expected revision is stale, so neither profile nor ops change
    assert await store.commit([w]) == [False]
    assert await store.r.hget(counter, "n") == b"1"


async def test_disallowed_op_never_reaches_redis(store):
    with pytest.raises(ValueError):
        Op("FLUSHALL", "x")
    w = Write(keys.visitor_pid(uid()), b"", Profile(), ops=[Op("SET", "ok", ("1",))])
    object.__setattr__(w.ops[0], "command", "FLUSHALL")
    with pytest.raises(redis.exceptions.ResponseError, match="op not allowed"):
        await store.commit([w])


async def test_hooks_run_once_per_applied_event_even_when_replayed(store):
    vid = uid()
    key = f"test:{vid}:hook"

    def count_views(event, profile, pid):
        return [Op("INCRBY", key, (1,))]

    emitted = []

    async def emit(items):
        emitted.extend(items)

    ap = Applier(store, CFG, hooks=lambda: [count_views], emit=emit)
    batch = [ev(vid, i) for i in range(5)]
    assert (await ap.apply(batch)).applied == 5
    res = await ap.apply(batch + [ev(vid, 9)])  # replayed batch plus one new event
    assert (res.applied, res.duplicates) == (1, 5)
    assert await store.r.get(key) == b"6"


async def test_concurrent_writers_to_one_merged_user_lose_nothing(store):
    """Two visitors on two partitions (two workers) write one user's profile at once."""
    import asyncio

    user = uid("user")
    a, b = uid("a"), uid("b")
    ap1, ap2 = Applier(store, CFG), Applier(store, CFG)
    await ap1.apply([ev(a, 0, user_id=user)])
    await ap2.apply([ev(b, 0, user_id=user)])
    rounds = [(ap1.apply([ev(a, i)]), ap2.apply([ev(b, i)])) for i in range(1, 30)]
    for x, y in rounds:
        await asyncio.gather(x, y)
    found = await store.find(user)
    assert found is not None
    assert found[1].profile.event_count == 60
