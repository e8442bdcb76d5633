"""The served session-kNN script (engine/store/lua/session_knn.lua) on real Valkey ranks like
the Python scoring of the same tables (sample_sessions + session_candidates, which the unit
tests tie to the in-process learner), including the sampling cut and ties."""

from __future__ import annotations

import hashlib
import random

import pytest

from engine.store import keys
from engine.store.profiles import new_client
from engine.store.reco_read import RecoReader
from models.reco.online import sample_sessions, scored_candidates, session_candidates
from models.reco.sessionknn import SessionKNN

pytestmark = pytest.mark.integration
T0 = 1_764_000_000_000


def _name(s: str) -> str:  # as models.session.shared_session_name names a session
    return hashlib.blake2b(s.encode(), digest_size=8).hexdigest()


@pytest.fixture
async def reader(redis_server):
    client = new_client(str(redis_server.url))
    yield RecoReader(client, "g-knn")
    await client.aclose()


@pytest.mark.parametrize("knn", [SessionKNN(), SessionKNN(k=7, sample_size=15, lambda_time_s=600.0),
                                 SessionKNN(lambda_pos=0.0, lambda_neigh=0.0)],
                         ids=["default", "small-sample-time-decay", "plain-sknn"])
async def test_the_script_scores_like_the_python_read(reader, knn):
    rng = random.Random(11)
    tag = _name(repr(knn._settings()))[:6]
    items = [f"{tag}-i{j}" for j in range(40)]
    pipe = reader.r.pipeline(transaction=False)
    for s in range(400):  # many sessions on few items: indexes full, sampling cuts, ties in ts
        # a few names that are not hashes: their shard is the CRC (keys.session_shard)
        uid = _name(f"{tag}#{s}") if s % 50 else f"{tag}#{s}"
        last = T0 + rng.randrange(60) * 1000
        pool = items[: rng.choice((8, 40))]
        seq = rng.sample(pool, rng.randint(1, min(12, len(pool))))
        for k, iid in enumerate(seq):
            pipe.zadd(keys.session_items(uid), {iid: last - 1000 + k / 1000.0})
            pipe.zadd(keys.session_index(iid), {uid: float(last)})
    await pipe.execute()
    for iid in items:  # the stream keeps each index to its most recent sessions
        await reader.r.zremrangebyrank(keys.session_index(iid), 0, -knn.sessions_per_item - 1)
    now = T0 + 90_000
    for q in range(30):
        current = rng.sample(items, rng.randint(1, 6))
        exclude = _name(f"{tag}#{q * 7}") if q % 3 == 0 else None
        n = rng.choice((5, 20, 50))
        (rows,) = await reader.session_knn(
            [(current, exclude, n)], sample_size=knn.sample_size, per_item=knn.sessions_per_item,
            k=knn.k, lambda_pos=knn.lambda_pos, lambda_time_s=knn.lambda_time_s,
            lambda_neigh=knn.lambda_neigh, now_ms=now)
        got = scored_candidates(rows, n)
        index = await reader.session_index(current, knn.sessions_per_item)
        uids = sample_sessions(index, exclude, knn.sample_size)
        want = session_candidates(current, uids, await reader.sessions(list(uids)), now, n, knn)
        assert [(c.item_id, c.via) for c in got] == [(c.item_id, c.via) for c in want], q
        assert [c.score for c in got] == [c.score for c in want], q
    # several sessions in one pipelined round trip answer as one at a time
    many = await reader.session_knn(
        [(items[:3], None, 10), ([], None, 10), (items[5:7], None, 4)],
        sample_size=knn.sample_size, per_item=knn.sessions_per_item, k=knn.k,
        lambda_pos=knn.lambda_pos, lambda_time_s=knn.lambda_time_s,
        lambda_neigh=knn.lambda_neigh, now_ms=now)
    assert many[1] == []
    (one,) = await reader.session_knn(
        [(items[5:7], None, 4)], sample_size=knn.sample_size, per_item=knn.sessions_per_item,
        k=knn.k, lambda_pos=knn.lambda_pos, lambda_time_s=knn.lambda_time_s,
        lambda_neigh=knn.lambda_neigh, now_ms=now)
    assert sorted(many[2]) == sorted(one)
