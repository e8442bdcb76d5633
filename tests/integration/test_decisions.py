"""Decisions end to end on real Valkey and Kafka: events -> segment -> decision -> reactions ->
stats; caps; hot reload with a broken file; Redis stopped or hung -> empty decision in time."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.embedded import EmbeddedRedis, free_port
from engine.settings import Settings
from tests.conftest import Stack, uid, wait_for

pytestmark = pytest.mark.integration

SEGMENT = """\
id: shoe_fans
name: Shoe fans
rule:
  affinity: {dimension: category, key: shoes, op: ">=", value: 2}
"""
PROMO = """\
id: shoe_promo
name: Shoe promo
status: active
priority: 10
zones: [hero]
targeting:
  segment: shoe_fans
control_percent: 0
variants:
  - id: a
    template:
      title: "More {{ top_category }} for you"
  - id: b
    template:
      title: "Fresh {{ top_category }}"
goal:
  event: purchase
  window: 1d
"""
BANNER = """\
id: banner
name: Capped banner
status: active
zones: [banner]
targeting:
  always: true
caps:
  per_day: 1
variants:
  - id: only
    template:
      title: "Hello {{ traits.name | default('there') }}"
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def ev(vid: str, n: int, etype: str = "item_view", **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{vid}-{n}", "type": etype, "visitor_id": vid, "ts": now_ms(), **fields}




def decide(stack: Stack, vid: str, zones: list[str], **body: Any) -> dict[str, Any]:
    r = stack.http.post("/v1/decide", json={"visitor_id": vid, "context": {"zones": zones,
                                                                          "channel": "web"}, **body})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module", params=["single", "cluster"])
def dstack(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Path]]:
    """A stack with the test's decision config, on a single Valkey, then on a Redis Cluster."""
    cdir = tmp_path_factory.mktemp("decide-config")
    (cdir / "segments").mkdir()
    (cdir / "campaigns").mkdir()
    (cdir / "segments" / "shoe_fans.yaml").write_text(SEGMENT)
    (cdir / "campaigns" / "shoe_promo.yaml").write_text(PROMO)
    (cdir / "campaigns" / "banner.yaml").write_text(BANNER)
    redis = request.getfixturevalue("redis_cluster") if request.param == "cluster" else None
    stack = make_stack(name=f"decide-{request.param}", config_dir=cdir, redis=redis)
    yield stack, cdir
    stack.stop()  # now: its worker must not count in other modules' worker gauges


def stats(stack: Stack, cid: str) -> dict[str, dict[str, Any]]:
    r = stack.http.get(f"/v1/campaigns/{cid}/stats")
    assert r.status_code == 200, r.text
    return {row["arm"]: row for row in r.json()["arms"]}


def test_events_segment_decision_reactions_stats(dstack: tuple[Stack, Path]) -> None:
    stack, _ = dstack
    vid = uid()
    shoes = {"id": "s1", "categories": ["shoes"]}
    assert decide(stack, vid, ["hero"])["decisions"] == []  # not in the segment yet
    # the events sent with the decision are ingested, and the decision already sees them
    body = decide(stack, vid, ["hero"], events=[ev(vid, 1, "add_to_cart", item=shoes)])
    assert body["events"]["accepted"] == 1
    (d,) = body["decisions"]
    assert d["campaign"] == "shoe_promo" and d["zone"] == "hero" and not d["control"]
    assert d["variant"] in ("a", "b")
    assert "shoes" in d["content"]["title"]
    assert d["decision_id"].startswith(f"shoe_promo.{d['variant']}.")
    # the stream applies the event: segment joined, stored with the profile, size counted
    prof = wait_for(lambda: (p := stack.profile(vid).json()).get("segments") and p,
                    what="segment membership")
    assert prof["segments"] == ["shoe_fans"]
    seg = {s["id"]: s for s in stack.http.get("/v1/campaigns").json()["segments"]}
    assert seg["shoe_fans"]["size"] >= 1
    # same visitor, same arm, every time; the inline form of the ingest API agrees
    r = stack.post([ev(vid, 2, "page_view")], params={"decide": "hero"})
    assert r.status_code == 200, r.text
    inline = r.json()
    assert inline["accepted"] == 1
    assert [x["variant"] for x in inline["decisions"]] == [d["variant"]]
    # reactions, then a goal event: counted per arm
    did = d["decision_id"]
    assert stack.post([ev(vid, 3, "impression", decision_id=did),
                       ev(vid, 4, "click", decision_id=did),
                       ev(vid, 5, "purchase", items=[{"id": "s1"}])]).status_code == 200
    arm = d["variant"]

    def counted() -> dict[str, Any] | None:
        row = stats(stack, "shoe_promo")[arm]
        ok = (row["assigned"], row["impressions"], row["clicks"], row["conversions"]) == (1, 1, 1, 1)
        return row if ok else None

    row = wait_for(counted, what=f"stats of arm {arm}")
    assert row["ctr"] == 1.0 and row["conversion_rate"] == 1.0
    # the decisions (3 of them for one visitor) count one assignment, and no profile events
    assert stack.profile(vid).json()["event_count"] == 5
    listing = stack.http.get("/v1/campaigns").json()
    assert {c["id"] for c in listing["campaigns"]} >= {"shoe_promo", "banner"}


def test_cap_reached_no_more_content(dstack: tuple[Stack, Path]) -> None:
    stack, _ = dstack
    vid = uid()
    (d,) = decide(stack, vid, ["banner"])["decisions"]
    assert d["content"]["title"] == "Hello there"
    assert stack.post([ev(vid, 1, "impression", decision_id=d["decision_id"])]).status_code == 200
    wait_for(lambda: decide(stack, vid, ["banner"])["decisions"] == [], what="per-day cap")
    other = decide(stack, uid(), ["banner"])["decisions"]
    assert other and other[0]["campaign"] == "banner"  # the cap is per visitor


def test_hot_reload_keeps_last_good_config(dstack: tuple[Stack, Path]) -> None:
    stack, cdir = dstack
    vid = uid()
    assert decide(stack, vid, ["footer"])["decisions"] == []
    path = cdir / "campaigns" / "footer.yaml"
    good = BANNER.replace("id: banner", "id: footer").replace("[banner]", "[footer]") \
        .replace("per_day: 1", "per_day: 5")
    path.write_text(good)
    first = wait_for(lambda: decide(stack, vid, ["footer"])["decisions"], timeout=15,
                     what="new campaign served")
    assert first[0]["content"]["title"] == "Hello there"
    # a broken edit is rejected with file and line; the last good version keeps serving
    path.write_text(good.replace("status: active", "status: activ"))

    def rejected() -> list[str]:
        return stack.http.get("/v1/campaigns").json()["config"]["errors"].get("decisions", [])

    errors = wait_for(rejected, timeout=15, what="config error reported")
    assert any("footer.yaml:3:" in e and "status" in e for e in errors), errors
    assert decide(stack, vid, ["footer"])["decisions"][0]["campaign"] == "footer"
    # fixed: the new content is served, the error is gone
    path.write_text(good.replace("Hello", "Welcome"))
    wait_for(lambda: decide(stack, vid, ["footer"])["decisions"][0]["content"]["title"]
             == "Welcome there", timeout=15, what="fixed campaign served")
    assert rejected() == []
    path.unlink()


def test_redis_stopped_gives_empty_decision_within_deadline(kafka_server, postgres_server,
                                                            tmp_root: Path) -> None:
    from engine.db import migrate
    from engine.services import own_origins
    from tests.conftest import seed_control_plane

    redis = EmbeddedRedis(tmp_root / "redis-decide-outage", appendonly=False).start()
    name = "decide-outage"
    db = postgres_server.create_database("kairos_decide_outage")
    migrate(db)
    settings = Settings(port=free_port(), redis_url=redis.url, kafka_bootstrap=kafka_server.bootstrap,
                        database_url=db,
                        events_topic=f"events-{name}", decisions_topic=f"decisions-{name}",
                        group_id=f"kairos-{name}", var_dir=tmp_root / f"var-{name}",
                        produce_timeout_s=3.0, decide_deadline_ms=50)
    log_dir = tmp_root / f"logs-{name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, log_dir, seed_control_plane(db, own_origins(settings)))  # API alone
    try:
        stack.start_api()
        body = {"visitor_id": uid(), "context": {"zones": ["home_hero"], "page_type": "home"}}
        r = stack.http.post("/v1/decide", json=body)
        assert r.status_code == 200 and r.json()["decisions"], r.text  # healthy: decided
        assert "degraded" not in r.json()

        def timed() -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter()
            r = stack.http.post("/v1/decide", content=_json(body), headers={"content-type": "text/plain"})
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0, r.json()

        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)  # hung: answers nothing
        try:
            for _ in range(3):
                elapsed, got = timed()
                assert got["decisions"] == [] and got["degraded"]
                assert elapsed < 0.5, elapsed
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        redis.stop()  # gone: connection refused
        for _ in range(3):
            elapsed, got = timed()
            assert got["decisions"] == [] and got["degraded"]
            assert elapsed < 0.5, elapsed
    finally:
        stack.stop()
        redis.stop()


def _json(doc: Any) -> bytes:
    import orjson

    return orjson.dumps(doc)


async def test_campaign_op_matches_the_pure_caps_logic(redis_url: str, tmp_path: Path) -> None:
    """The stream's campaign state and counters, through the Applier on real Redis, against
    engine.logic.decisions.caps run on its own over random sequences."""
    import random

    from engine.logic.decisions.caps import CapState, conversion_effects, reaction_effects
    from engine.logic.decisions.config import load_config
    from engine.store import keys
    from engine.store.profiles import ProfileStore, new_client
    from models.affinity import AffinityConfig
    from streams.applier import Applier
    from streams.hooks.decisions import DecisionHook

    (tmp_path / "campaigns").mkdir()
    cid = f"c{uid()[2:]}".replace("-", "")[:20]
    (tmp_path / "campaigns" / "c.yaml").write_text(PROMO.replace("shoe_promo", cid).replace(
        "targeting:\n  segment: shoe_fans\n", ""))
    config = load_config(tmp_path)
    campaign = config.campaigns[cid]
    client = new_client(redis_url)
    cfg = AffinityConfig()
    ap = Applier(ProfileStore(client, 60_000), cfg,
                 hooks=lambda: [DecisionHook(config, cfg, "segments-test", 60_000)])
    rng = random.Random(7)
    t0 = 1_767_268_800_000
    for trial in range(4):
        vid = uid()
        state, stats = CapState(), {}
        events = []
        for n in range(60):
            kind = rng.choice(["decision", "impression", "impression", "click", "dismiss", "purchase"])
            arm = rng.choice(["a", "b"])
            ts = t0 + rng.randrange(0, 3 * 86_400_000)
            e = {"event_id": f"{vid}-{n}", "type": kind, "visitor_id": vid, "ts": ts}
            if kind == "decision":
                e["props"] = {"campaign": cid, "arm": arm}
            elif kind != "purchase":
                e["decision_id"] = f"{cid}.{arm}.x"
            events.append(e)
            if kind == "purchase":
                eff = conversion_effects(campaign, state, kind, ts)
            else:
                eff = reaction_effects(campaign, state, kind, arm, ts)
            assigned = eff.set_assigned
            state = CapState(
                session=state.session + eff.incr_session,
                dismissed=state.dismissed or "dismissed" in eff.set_flags,
                clicked=state.clicked or "clicked" in eff.set_flags,
                converted=state.converted or "converted" in eff.set_flags,
                assigned_at=assigned[1] if assigned else state.assigned_at,
                arm=assigned[0] if assigned else state.arm,
            )
            for k, v in eff.stats.items():
                stats[f"{eff.arm}:{k}"] = stats.get(f"{eff.arm}:{k}", 0) + v
        for i in range(0, len(events), 7):  # a few batches
            await ap.apply(events[i:i + 7])
        pid = keys.visitor_pid(vid)
        got = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.campaign_state(pid))).items()}
        assert got.get(f"{cid}:arm") == state.arm, trial
        assert (int(got[f"{cid}:at"]) if f"{cid}:at" in got else None) == state.assigned_at
        for flag in ("dismissed", "clicked", "converted"):
            assert (f"{cid}:{flag}" in got) == getattr(state, flag), (trial, flag)
        assert int(await client.hget(keys.campaign_session(pid), cid) or 0) == state.session
        raw = await client.hgetall(keys.campaign_stats(cid))
        assert {k.decode(): int(v) for k, v in raw.items()} == stats, trial
        await client.delete(keys.campaign_stats(cid))
    await client.aclose()
