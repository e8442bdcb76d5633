"""Catalog and recommendations on real servers: events stream in, GET /v1/recommendations moves."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Stack, uid, wait_for

pytestmark = pytest.mark.integration


def ev(vid: str, n: int, iid: str, etype: str = "item_view", **fields):
    body = {"event_id": f"{vid}-{n}", "type": etype, "visitor_id": vid,
            "ts": int(time.time() * 1000)}
    if etype == "purchase":
        body["items"] = [{"id": iid, **fields}]
    else:
        body["item"] = {"id": iid, **fields}
    return body


def recs(stack: Stack, **params) -> list[dict]:
    r = stack.http.get("/v1/recommendations", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]




def test_catalog_api_validates_and_round_trips(any_stack: Stack):
    stack = any_stack
    iid = f"sku-{uuid.uuid4().hex[:8]}"
    r = stack.http.post("/v1/catalog/items", json=[
        {"id": iid, "name": "Trail shoe", "price": 89.5, "currency": "EUR",
         "categories": ["Shoes/Trail"], "brand": "Acme", "in_stock": True,
         "created_at": "2026-01-02T03:04:05Z", "attributes": {"color": "red"}},
        {"id": "bad-1", "price": -3},
        {"id": "bad-2", "currency": "euro"},
        {"name": "no id"},
    ])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["rejected"]] == [
        (1, "price"), (2, "currency"), (3, "id")]
    got = stack.http.get(f"/v1/catalog/items/{iid}").json()
    assert got["categories"] == ["shoes/trail"] and got["brand"] == "acme"
    assert got["attributes"] == {"color": "red"}
    assert stack.http.delete(f"/v1/catalog/items/{iid}").status_code == 204
    assert stack.http.get(f"/v1/catalog/items/{iid}").status_code == 404
    r = stack.http.post("/v1/catalog/items", json=[{"id": str(i)} for i in range(1001)])
    assert r.status_code == 413


def test_recommendations_follow_the_stream(any_stack: Stack):
    stack = any_stack
    tag = uuid.uuid4().hex[:8]
    cat = f"gear{tag}/tents"
    a, b, c, new = (f"{x}-{tag}" for x in ("a", "b", "c", "new"))
    # other visitors view a then b (co-view a -> b), and a then c once
    evs = []
    for _ in range(3):
        v = uid("o")
        evs += [ev(v, 1, a, categories=[cat], name="Tent A"),
                ev(v, 2, b, categories=[cat], name="Tent B", price=120.0)]
    v = uid("o")
    evs += [ev(v, 1, a, categories=[cat]), ev(v, 2, c, categories=[cat])]
    assert stack.post(evs).status_code == 200
    me = uid()
    assert stack.post([ev(me, 1, a, categories=[cat])]).status_code == 200
    stack.wait_profile(me, 1)

    def b_first():
        items = recs(stack, visitor_id=me, recipe="fresh", n=5)
        return items if items and items[0]["id"] == b else None

    items = wait_for(b_first)
    assert items[0]["reason"] == "viewed with Tent A"
    assert items[0]["name"] == "Tent B" and items[0]["price"] == 120.0
    # the default recipe leads with the visitor's own recent items (revisits are frequent)
    assert recs(stack, visitor_id=me, recipe="default", n=5)[0]["id"] == a

    # the visitor buys b: it disappears from a recipe that excludes purchases
    assert stack.post([ev(me, 2, b, "purchase", categories=[cat])]).status_code == 200
    stack.wait_profile(me, 2)
    after = [i["id"] for i in recs(stack, visitor_id=me, recipe="fresh", n=5)]
    assert b not in after and c in after

    # a new catalog item, viewed by others, shows up as trending in the category
    r = stack.http.post("/v1/catalog/items", json=[{"id": new, "name": "New tent",
                                                   "categories": [cat], "price": 99.0}])
    assert r.json()["accepted"] == 1
    fans = [uid("f") for _ in range(6)]
    assert stack.post([ev(f, 1, new, categories=[cat]) for f in fans]).status_code == 200
    stack.wait_profile(fans[-1], 1)

    def new_trending():
        items = recs(stack, category=cat, recipe="fresh", n=10)
        hit = [i for i in items if i["id"] == new]
        return hit[0] if hit else None

    hit = wait_for(new_trending)
    assert hit["reason"] == "trending in tents" and hit["name"] == "New tent"

    trend = stack.http.get("/v1/stats/trending", params={"dim": "category", "half_life": "1h",
                                                         "k": 200}).json()
    assert trend["dim"] == "category" and trend["half_life"] == "1h"
    assert cat in [row["key"] for row in trend["items"]]


def test_recommendations_reject_bad_requests(stack: Stack):
    assert stack.http.get("/v1/recommendations", params={"recipe": "nope"}).status_code == 404
    assert stack.http.get("/v1/recommendations", params={"n": "0"}).status_code == 400
    assert stack.http.get("/v1/stats/trending", params={"dim": "x"}).status_code == 400
    # a new visitor still gets something (trending) or an empty list, never an error
    r = stack.http.get("/v1/recommendations", params={"visitor_id": uid()})
    assert r.status_code == 200


CF_RECIPE = """name: cf_test
ingredients: {co_view: 0.01, trending: 0.01, cf: 1.0}
normalise: max
exclusions: {current_item: false}
"""


def test_online_cf_learns_in_the_worker_serves_and_resumes_after_a_kill(make_stack, tmp_path,
                                                                         redis_server):
    """The worker's per-partition CF model writes vectors the API ranks with; it is snapshotted
    to Redis, and a worker started after a SIGKILL resumes from the snapshot (its next step is
    exactly the restored model's next step, as the hook takes it: `learn_many`)."""
    import shutil
    import struct

    import redis as redis_sync

    from engine.store import keys
    from models.reco.cf import OnlineMF, score_exported

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    (config / "recipes" / "cf_test.yaml").write_text(CF_RECIPE)
    stack = make_stack(name="cf", config_dir=config, cf_snapshot_s=0.3)
    r = redis_sync.Redis.from_url(redis_server.url)
    tag = uuid.uuid4().hex[:6]
    items = [f"cf{tag}-{k}" for k in range(8)]
    evs, n = [], 0
    for v in range(12):  # two tastes: items 0-3 and items 4-7
        vid = f"cfv{tag}-{v}"
        for k in range(4):
            n += 1
            evs.append(ev(vid, n, items[(v % 2) * 4 + (k + v) % 4]))
    assert stack.post(evs).status_code == 200
    me = f"cfv{tag}-0"
    stack.wait_profile(f"cfv{tag}-11", 4)
    stack.wait_profile(me, 4)

    user = wait_for(lambda: r.get(keys.cf_visitor(keys.visitor_pid(me))))
    (part,) = struct.unpack("<H", user[:2])
    assert len(user) == 2 + 4 * stack.settings.cf_factors

    # served: the top item is the one the exported vectors score highest
    got = recs(stack, visitor_id=me, recipe="cf_test", n=8)
    assert got and got[0]["ingredient"] == "cf"
    user = r.get(keys.cf_visitor(keys.visitor_pid(me)))
    vectors = dict(zip([g["id"] for g in got],
                       r.hmget(keys.cf_items(stack.settings.group_id, part), [g["id"] for g in got]),
                       strict=True))
    scores = score_exported(user[2:], vectors)
    assert got[0]["id"] == max(scores, key=lambda i: (scores[i], i))

    # snapshotted: wait until the snapshot holds my current vector, then kill the worker
    snap_key = keys.cf_snapshot(stack.settings.group_id, part)

    def snapshot_current():
        blob = r.get(snap_key)
        if not blob:
            return None
        model = OnlineMF.restore(blob)
        cur = r.get(keys.cf_visitor(keys.visitor_pid(me)))
        return model if model.export_user(keys.visitor_pid(me)) == cur[2:] else None

    reference = wait_for(snapshot_current)
    stack.workers[0].kill()
    stack.workers[0].wait()
    stack.start_worker()
    step = ev(me, 999, items[5])
    assert stack.post([step]).status_code == 200
    stack.wait_profile(me, 5)
    # the hook learns a batch at a time (OnlineMF.learn_many): this batch is the one event
    pid = keys.visitor_pid(me)
    (touched,) = reference.learn_many([({**step, "visitor_id": pid}, pid)])
    after = wait_for(lambda: (v := r.get(keys.cf_visitor(keys.visitor_pid(me)))) != user and v)
    assert after[2:] == reference.export_user(keys.visitor_pid(me))
    stored = r.hmget(keys.cf_items(stack.settings.group_id, part), touched)
    assert stored == [reference.export_item(i) for i in touched]


NEXT_RECIPE = """name: next_test
ingredients: {next_item: 1.0}
fallbacks: []
"""


def test_next_item_transitions_are_written_by_the_stream_and_served_directed(make_stack,
                                                                            tmp_path):
    import shutil

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    (config / "recipes" / "next_test.yaml").write_text(NEXT_RECIPE)
    stack = make_stack(name="next", config_dir=config)
    tag = uuid.uuid4().hex[:8]
    a, b = f"na-{tag}", f"nb-{tag}"
    others = [uid("n") for _ in range(3)]
    assert stack.post([e for v in others for e in (ev(v, 1, a, name="Lamp A"),
                                                   ev(v, 2, b, name="Lamp B"))]
                      ).status_code == 200
    for v in others:
        stack.wait_profile(v, 2)

    def b_after_a():
        items = recs(stack, item_id=a, recipe="next_test", n=5)
        return items if items and items[0]["id"] == b else None

    top = wait_for(b_after_a)[0]
    assert top["ingredient"] == "next_item" and top["reason"] == "viewed next after Lamp A"
    # directed: nobody viewed anything after b
    assert recs(stack, item_id=b, recipe="next_test", n=5) == []


def test_a_worker_stopped_cleanly_snapshots_what_it_learnt(make_stack, redis_server):
    """SIGTERM: the models are written at shutdown, not only on the (here hour-long) timer."""
    import signal

    import redis as redis_sync

    from engine.store import keys
    from models.reco.cf import OnlineMF

    stack = make_stack(name="cfstop", cf_snapshot_s=3600)
    r = redis_sync.Redis.from_url(redis_server.url)
    tag = uuid.uuid4().hex[:6]
    me = f"stop{tag}"
    assert stack.post([ev(me, k, f"s{tag}-{k % 3}") for k in range(6)]).status_code == 200
    stack.wait_profile(me, 6)
    pid = keys.visitor_pid(me)
    user = wait_for(lambda: r.get(keys.cf_visitor(pid)))
    part = int.from_bytes(user[:2], "little")
    assert r.get(keys.cf_snapshot(stack.settings.group_id, part)) is None  # timer not due
    w = stack.workers[0]
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    blob = r.get(keys.cf_snapshot(stack.settings.group_id, part))
    assert blob is not None
    assert OnlineMF.restore(blob).export_user(pid) == r.get(keys.cf_visitor(pid))[2:]


def test_a_broken_recipe_file_is_named_not_hidden(make_stack, tmp_path):
    """Recipe files that do not load leave no recipe to serve: 503 naming the file and field,
    not a 404 listing no recipe."""
    import shutil

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    (config / "recipes" / "broken.yaml").write_text("name: broken\ningredients: {cf: 1}\n"
                                                   "normalise: score\n")
    stack = make_stack(name="badrecipe", config_dir=config, workers=0)
    r = stack.http.get("/v1/recommendations", params={"recipe": "default"})
    assert r.status_code == 503, r.text
    assert r.json()["field"] == "recipe"
    assert "broken.yaml: normalise: must be 'max' or 'rank'" in r.json()["reason"]


def test_a_bought_durable_leaves_a_consumable_stays_often_bought_again(any_stack: Stack):
    """The repurchase rule learnt in the stream, served: others rebuy the milk every 5 days and
    buy the sofa once; a visitor who bought both no longer sees the sofa, and sees the milk
    again with the reason."""
    stack = any_stack
    tag = uuid.uuid4().hex[:8]
    sofa, milk = f"sofa-{tag}", f"milk-{tag}"
    day = 86_400_000
    now = int(time.time() * 1000)
    sofas, dairy = [f"furniture{tag}/sofas"], [f"grocery{tag}/dairy"]

    def buy(vid: str, n: int, iid: str, ts: int, cats: list[str]) -> dict:
        return {"event_id": f"{vid}-{n}", "type": "purchase", "visitor_id": vid, "ts": ts,
                "items": [{"id": iid, "categories": cats, "name": iid}]}

    evs = []
    for _ in range(8):
        o = uid("o")
        evs.append(buy(o, 0, sofa, now - 20 * day, sofas))
        evs += [buy(o, 1 + r, milk, now - (20 - 5 * r) * day, dairy) for r in range(4)]
    assert stack.post(evs).status_code == 200
    me = uid()
    views = [ev(me, 1, sofa, categories=sofas, name="Sofa"),
             ev(me, 2, milk, categories=dairy, name="Milk")]
    assert stack.post(views).status_code == 200
    stack.wait_profile(me, 2)
    before = {i["id"] for i in recs(stack, visitor_id=me, n=20)}
    assert {sofa, milk} <= before  # recently viewed, not bought yet
    assert stack.post([buy(me, 3, sofa, now - 60_000, sofas),
                       buy(me, 4, milk, now - 60_000, dairy)]).status_code == 200
    stack.wait_profile(me, 4)
    got = {i["id"]: i for i in recs(stack, visitor_id=me, n=20)}
    assert sofa not in got
    assert got[milk]["reason"] == "often bought again", got[milk]
    # "this session" is in the profile, apart from the history
    assert stack.profile(me).json()["session"]["bought"] == [milk, sofa]


def test_an_anonymous_short_session_gets_what_similar_sessions_went_on_to(any_stack: Stack):
    """Session-kNN from the stream: others' sessions went from tent A through eight other items
    to tent B (too far apart for co-view); a new visitor who has only viewed tent A is served
    tent B from those sessions."""
    stack = any_stack
    tag = uuid.uuid4().hex[:8]
    a, b = f"tent-a-{tag}", f"tent-b-{tag}"
    path = [a, *(f"x{k}-{tag}" for k in range(8)), b]
    now = int(time.time() * 1000)
    evs = []
    # every event names tent A alike: the partitions apply them in any order, and the reason
    # shows the catalog's name (the last applied)
    for v in range(3):
        o = uid("o")
        evs += [{**ev(o, k, iid, name="Tent A" if iid == a else iid),
                 "ts": now - 600_000 + v * 20_000 + k * 1000} for k, iid in enumerate(path)]
    assert stack.post(evs).status_code == 200
    anon = uid("anon")
    assert stack.post([ev(anon, 1, a, name="Tent A")]).status_code == 200
    stack.wait_profile(anon, 1)

    def served():
        items = {i["id"]: i for i in recs(stack, visitor_id=anon, n=20)}
        return items if b in items else None

    items = wait_for(served, what="tent B from session-kNN")
    assert items[b]["ingredient"] == "session_knn"
    assert items[b]["reason"] == "viewed in sessions with Tent A", items[b]


def test_a_mail_batch_gets_the_session_knn_items_one_request_gets(any_stack: Stack):
    """`Recommender.recommend_many` (the mailer's batched read: one session-kNN script call per
    recipient, pipelined; on a cluster the Python scoring) serves each recipient what one
    request would, session-kNN included."""
    import asyncio

    import yaml

    from engine.flows.recommend import Recommender
    from engine.logic.recipes import parse_recipe
    from engine.store.catalog import CachedCatalog, CatalogStore
    from engine.store.profiles import ProfileStore, new_client
    from engine.store.reco_read import RecoReader
    from tests.conftest import run_async

    stack = any_stack
    tag = uuid.uuid4().hex[:8]
    a, b = f"pole-a-{tag}", f"pole-b-{tag}"
    path = [a, *(f"y{k}-{tag}" for k in range(8)), b]
    now = int(time.time() * 1000)
    evs = []
    for v in range(3):
        o = uid("o")
        evs += [{**ev(o, k, iid, name=iid), "ts": now - 600_000 + v * 20_000 + k * 1000}
                for k, iid in enumerate(path)]
    assert stack.post(evs).status_code == 200
    anon, other = uid("anon"), uid("other")
    assert stack.post([ev(anon, 1, a, name="Pole A"), ev(other, 1, path[3])]).status_code == 200
    stack.wait_profile(anon, 1)
    stack.wait_profile(other, 1)
    wait_for(lambda: b in {i["id"] for i in recs(stack, visitor_id=anon, n=20)},
             what="pole B from session-kNN")
    root = Path(__file__).resolve().parents[2]
    recipe = parse_recipe(yaml.safe_load((root / "config/recipes/default.yaml").read_text()),
                          "default")
    s = stack.settings

    async def go():
        client = new_client(str(s.redis_url))
        try:
            rec = Recommender(ProfileStore(client, s.profile_ttl_ms), RecoReader(client, s.group_id),
                              CachedCatalog(CatalogStore(client), ttl_s=2.0), s.affinity,
                              lambda: {"default": recipe})
            t = int(time.time() * 1000)
            many = await rec.recommend_many(recipe, [anon, None, other], 20, t)
            one = await asyncio.gather(*(rec.recommend(recipe, v, None, None, 20, t)
                                         for v in (anon, None, other)))
            return many, one
        finally:
            await client.aclose()

    many, one = run_async(go())
    assert [[r["id"] for r in rows] for rows in many] == [[r["id"] for r in rows] for rows in one]
    got = {r["id"]: r for r in many[0]}
    assert got[b]["ingredient"] == "session_knn", got[b]


def test_the_history_ingredient_reads_the_visitors_earlier_session(any_stack: Stack):
    """The visitor's own items beyond the profile's 8 recent ones come from the session item
    tables the stream keeps: twelve items viewed in a session two hours ago, then eight others
    now; the first session's oldest items (no seed's neighbours, in no other session) are
    served by `history`."""
    stack = any_stack
    tag = uuid.uuid4().hex[:8]
    me = uid()
    now = int(time.time() * 1000)
    first = [f"x{k}-{tag}" for k in range(12)]
    second = [f"y{k}-{tag}" for k in range(8)]
    evs = [{**ev(me, k, iid), "ts": now - 7_200_000 + k * 10_000} for k, iid in enumerate(first)]
    evs += [{**ev(me, 20 + k, iid), "ts": now - 600_000 + k * 10_000}
            for k, iid in enumerate(second)]
    assert stack.post(evs).status_code == 200
    stack.wait_profile(me, len(evs))
    items = {i["id"]: i for i in recs(stack, visitor_id=me, n=30)}
    old = first[:5]  # out of the profile's recent items, and of every other ingredient's reach
    assert set(old) <= set(items), sorted(items)
    assert {items[i]["ingredient"] for i in old} == {"history"}
    assert {items[i]["reason"] for i in old} == {"recently viewed"}
