"""The stream's bounds and refusals on real servers: consent declined, erased profiles
(tombstones), a record written straight to the topic that cannot be applied, the op budget of a
maximal event, and keys that never outlive their TTL or cap."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import msgpack
import pytest

from engine.embedded import EmbeddedRedis
from engine.logic import events as spec
from engine.settings import Settings
from engine.store import keys
from engine.store.client import new_client, new_sync_client
from engine.store.profiles import ProfileStore
from engine.store.writes import MAX_OPS_PER_EVENT, Tables
from models.affinity import Profile
from streams.applier import Applier
from streams.hooks import setup_hooks
from streams.plan import plan
from tests.conftest import Stack, uid, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def now_ms() -> int:
    return int(time.time() * 1000)


def ev(vid: str, n: int, iid: str, **extra) -> dict:
    return {"event_id": f"{vid}-{n}", "type": "item_view", "visitor_id": vid, "ts": now_ms(),
            "item": {"id": iid, "categories": ["bounds/x"]}, "channel": "web", **extra}




def applied_marker(stack: Stack) -> None:
    """A normal event posted last: once it is applied, everything posted before it was seen."""
    vid = uid("marker")
    assert stack.post([ev(vid, 1, f"m-{vid}")]).status_code == 200
    stack.wait_profile(vid, 1)


def test_consent_declined_is_counted_in_the_traffic_but_never_stored_nor_learnt(stack: Stack):
    r = new_sync_client(stack.settings.redis_url)
    vid, iid = uid("noconsent"), f"nc-{uuid.uuid4().hex[:8]}"
    etype = f"declined_{uuid.uuid4().hex[:6]}"  # a custom type: its traffic count is ours alone
    evs = [{**ev(vid, n, iid, context={"consent": False}), "type": t}
           for n, t in enumerate([etype, "item_view", "add_to_cart"])]
    unstored = _metric(stack, "kairos_worker_unstored_total")
    assert stack.post(evs).json()["accepted"] == 3
    applied_marker(stack)
    assert stack.profile(vid).status_code == 404
    for key in (keys.activity(keys.visitor_pid(vid)), keys.catalog_item(iid),
                keys.neighbours("v", iid), keys.cf_visitor(keys.visitor_pid(vid))):
        assert not r.exists(key), key
    assert r.zscore(keys.popularity(keys.shard(iid)), iid) is None
    # counted apart by the worker (the live traffic keeps only the biggest types per second)
    assert wait_for(lambda: _metric(stack, "kairos_worker_unstored_total") >= unstored + 3)
    r.close()


def test_an_erased_profile_never_comes_back(stack: Stack):
    """The erase flow deleted the profile and left a tombstone: the same events posted again
    (a client resending) and written straight to the topic again (a replay) store nothing."""
    r = new_sync_client(stack.settings.redis_url)
    vid, iid = uid("erased"), f"er-{uuid.uuid4().hex[:8]}"
    pid = keys.visitor_pid(vid)
    evs = [ev(vid, n, iid) for n in range(3)]
    assert stack.post(evs).status_code == 200
    stack.wait_profile(vid, 3)
    pop = r.zscore(keys.popularity(keys.shard(iid)), iid)
    # what the erase flow does (the lead's): delete the profile's keys, set the tombstone
    r.set(keys.tombstone(pid), b"1", px=7 * 86_400_000)
    r.delete(keys.profile(pid), keys.activity(pid), keys.cf_visitor(pid))
    assert stack.post(evs + [ev(vid, 9, iid)]).status_code == 200
    asyncio.run(_produce(stack.settings, [(vid.encode(), msgpack.packb(evs))]))
    applied_marker(stack)
    assert stack.profile(vid).status_code == 404
    assert not r.exists(keys.activity(pid), keys.cf_visitor(pid), keys.campaign_session(pid))
    assert r.zscore(keys.popularity(keys.shard(iid)), iid) == pop  # nothing learnt either
    r.close()


async def _produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await p.start()
    try:
        for key, value in records:
            await p.send_and_wait(settings.events_topic, value, key=key)
    finally:
        await p.stop()


def _metric(stack: Stack, name: str) -> float:
    text = stack.http.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_a_record_that_cannot_be_applied_is_skipped_counted_and_the_stream_goes_on(make_stack):
    """Records written straight to the topic, past the API: one not msgpack at all, one whose
    traits nest 600 deep (it decodes, but is past the spec's nesting bound). Both are counted
    and skipped,
    the good records around them are applied, the lag returns to 0."""
    stack = make_stack(name="poison", workers=1)
    deep: object = "x"
    for _ in range(600):
        deep = {"d": deep}
    vid = uid("poison")
    before = [ev(vid, 1, "p-1")]
    nested = [{"event_id": f"{vid}-2", "type": "identify", "visitor_id": vid, "ts": now_ms(),
               "props": {"traits": {"deep": deep}}}]
    after = [ev(vid, 3, "p-3")]
    asyncio.run(_produce(stack.settings, [
        (vid.encode(), msgpack.packb(before)), (vid.encode(), b"\xc1\xc1 not msgpack"),
        (vid.encode(), msgpack.packb(nested)), (vid.encode(), msgpack.packb(after))]))
    prof = stack.wait_profile(vid, 2, timeout=90)
    assert prof["event_count"] == 2 and prof["traits"] == {}
    assert wait_for(lambda: _metric(stack, "kairos_worker_bad_records_total") >= 1)
    assert wait_for(lambda: _metric(stack, "kairos_worker_bad_events_total") >= 1)
    assert wait_for(lambda: (lags := [float(x.rsplit(" ", 1)[1]) for x in
                                      stack.http.get("/metrics").text.splitlines()
                                      if x.startswith("kairos_worker_lag_events{")])
                    and all(v == 0 for v in lags))
    stack.check_alive()


def _limit(t, attr: str):
    """A msgspec type's constraint, through a `T | None` union."""
    import msgspec.inspect as mi

    if isinstance(t, mi.UnionType):
        t = next(x for x in t.types if not isinstance(x, mi.NoneType))
    return t, getattr(t, attr)


def maximal_event(vid: str) -> dict:
    """The biggest event the spec admits: the most lines, each with the most categories, each
    path as long and as deep as a path may be. The limits are read from the spec
    (engine/logic/events.py, which another change tightens: its field constraints, and a
    path-depth constant if it has one), so this test follows them."""
    import msgspec.inspect as mi

    fields = {f.name: f.type for f in mi.type_info(spec.Event).fields}
    items, lines = _limit(fields["items"], "max_length")
    line_fields = {f.name: f.type for f in items.item_type.fields}
    cats_t, cats = _limit(line_fields["categories"], "max_length")
    path_len = cats_t.item_type.max_length or 256
    depth = next((getattr(spec, n) for n in ("MAX_CATEGORY_DEPTH", "MAX_PATH_DEPTH", "MAX_DEPTH")
                  if hasattr(spec, n)), path_len // 2)
    seg = max(1, (path_len - depth) // max(1, depth))
    path = "/".join("c" * seg for _ in range(depth))[: path_len - 3]
    return {"event_id": f"{vid}-max", "type": "purchase", "visitor_id": vid, "ts": now_ms(),
            "items": [{"id": f"{vid}-line{n}", "brand": "b" * 200, "price": 1.0, "quantity": 1,
                       "categories": [f"{k:02d}{path}" for k in range(cats or 32)]}
                      for n in range(lines or 200)]}


async def test_a_maximal_event_emits_a_bounded_number_of_ops(redis_server):
    settings = Settings(redis_url=redis_server.url, config_dir=ROOT / "config", group_id="maximal")
    client = new_client(redis_server.url)
    hooks = await setup_hooks(settings, client)
    vid = uid("max")
    big = {**maximal_event(vid), "_p": 0, "_o": 1, "_t": now_ms()}
    prof = Profile()
    prof.recent = [f"r{n}" for n in range(8)]
    prof.purchased = [f"r{n}" for n in range(10)]
    t = Tables()
    out = plan([big], {}, {}, settings.affinity, hooks(), t)
    (w,) = out.writes
    ops = t.ops  # every table change and per-visitor op the event made
    assert ops <= MAX_OPS_PER_EVENT and len(w.ops) <= ops
    # and it commits, all of it, on real Valkey
    ap = Applier(ProfileStore(client, settings.profile_ttl_ms, "maximal"), settings.affinity,
                 hooks=hooks)
    res = await ap.apply([big])
    assert res.applied == 1
    await client.aclose()


async def test_keys_expire_or_sit_under_a_cap_after_100k_random_item_ids(tmp_path: Path):
    """100,000 random item ids (in purchases of 20 lines) through the worker's Applier with every
    hook: every key Redis holds afterwards has a TTL, or is one of the capped tables."""
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        settings = Settings(redis_url=redis.url, config_dir=ROOT / "config", group_id="ttl")
        client = new_client(redis.url)
        hooks = await setup_hooks(settings, client)
        ap = Applier(ProfileStore(client, settings.profile_ttl_ms, "ttl"), settings.affinity,
                     hooks=hooks)
        rng = random.Random(5)
        t0 = now_ms()
        fresh = iter(f"{rng.getrandbits(48):x}" for _ in range(100_000))

        def line() -> dict:
            return {"id": next(fresh), "brand": "b", "categories": [f"c{rng.randrange(100)}/x"],
                    "price": 1.0}

        # 100,000 new ids: in carts (catalog fields only), views (every table an item has) and
        # purchases of 20 lines (co-buy pairs)
        shapes = ([("remove_from_cart", 20)] * 4000 + [("item_view", 1)] * 10_000 +
                  [("purchase", 20)] * 500)
        rng.shuffle(shapes)
        batch: list[dict] = []
        for n, (etype, k) in enumerate(shapes):
            body = {"event_id": f"e{n}", "type": etype, "visitor_id": f"ttl-{rng.randrange(500)}",
                    "ts": t0, "channel": "web", "_p": n % 4, "_o": n, "_t": t0}
            if k == 1:
                body["item"] = line()
            else:
                body["items"] = [line() for _ in range(k)]
            batch.append(body)
            if len(batch) == 1000:
                await ap.apply(batch)
                batch = []
        if batch:
            await ap.apply(batch)
        assert next(fresh, None) is None  # all 100,000 ids were used
        capped = {"km", "knp", "ksg", "kst", "kcf:i", "kcf:s", "kx:workers"}
        held = [key.decode() async for key in client.scan_iter(count=5000)]
        checked = [k for k in held if not (k.startswith(("kcf:i:", "kcf:s:", "kx:workers"))
                                           or keys.family(k) in capped)]
        unbounded = []
        for i in range(0, len(checked), 5000):  # the TTLs a page at a time (one round trip)
            page = checked[i:i + 5000]
            pipe = client.pipeline(transaction=False)
            for k in page:
                pipe.pttl(k)
            unbounded += [k for k, ttl in zip(page, await pipe.execute(), strict=True) if ttl < 0]
        assert checked and unbounded == []
        for n in range(keys.SHARDS):  # the popularity tables stay near their cap
            from streams.hooks.reco import CAPS

            assert await client.zcard(keys.popularity(n)) <= CAPS["popularity"] * 1.2
        await client.aclose()
    finally:
        redis.stop()
