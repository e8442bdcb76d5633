"""The decision runtime's pure parts: state adapters, decision ids and records, the stream
hook (segments, caps ops, decision bookkeeping), the config hub and preview."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import msgspec
import pytest

from engine.confighub import ConfigHub, default_hub
from engine.logic.decisions.caps import CapState
from engine.logic.decisions.config import load_config
from engine.logic.decisions.select import Decision
from engine.logic.decisions.state import (
    cap_states,
    decision_id,
    decision_record,
    parse_decision_id,
    rule_view,
)
from engine.logic.preview import PreviewError, render_preview
from engine.store import keys
from engine.store.writes import Op, Tables, Write
from models.affinity import AffinityConfig, Profile, apply_event
from streams.hooks.decisions import DecisionHook

CFG = AffinityConfig()
NOW = 1_767_268_800_000  # 2026-01-01T12:00:00Z

SEGMENT = """\
id: shoe_fans
rule:
  affinity: {dimension: category, key: shoes, op: ">=", value: 2}
"""
CAMPAIGN = """\
id: promo
status: active
zones: [hero]
caps: {per_day: 2, per_session: 1, stop_after: [dismiss]}
variants:
  - id: a
    template: {title: "Hi {{ top_category }}"}
goal: {event: purchase, window: 1d}
"""


@pytest.fixture
def cdir(tmp_path: Path) -> Path:
    (tmp_path / "segments").mkdir()
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "segments" / "shoe_fans.yaml").write_text(SEGMENT)
    (tmp_path / "campaigns" / "promo.yaml").write_text(CAMPAIGN)
    return tmp_path


def ev(n: int, etype: str = "add_to_cart", **fields) -> dict:
    return {"event_id": f"e{n}", "type": etype, "visitor_id": "v1", "ts": NOW + n, **fields}


def test_rule_view_gives_affinity_maps() -> None:
    p = Profile()
    apply_event(p, ev(1, item={"id": "s1", "categories": ["shoes"]}), CFG)
    view = rule_view(p, "v:v1", NOW + 1, CFG)
    assert view["affinities"]["category"] == pytest.approx({"shoes": 3.0})
    assert view["profile_id"] == "v:v1"
    assert rule_view(None, "v:x", NOW, CFG)["affinities"]["item"] == {}


def test_decision_ids_carry_campaign_and_arm() -> None:
    did = decision_id("promo", "control", "0123456789abc")
    assert did == "promo.control.0123456789"
    assert parse_decision_id(did) == ("promo", "control")
    assert parse_decision_id(did + ".MAC0123456xy") == ("promo", "control")  # signed
    for bad in (None, 3, "x", "a.b", "a..c", "a.b.c.d.e", "a.b..d"):
        assert parse_decision_id(bad) is None


def test_long_ids_are_rejected_at_load(cdir: Path) -> None:
    long = CAMPAIGN.replace("id: promo", "id: " + "p" * 40).replace("- id: a", "- id: " + "v" * 20)
    (cdir / "campaigns" / "promo.yaml").write_text(long)
    with pytest.raises(Exception, match="at most 52 characters"):
        load_config(cdir)


def test_decision_record_is_an_event() -> None:
    d = Decision("hero", "promo", "Promo", None, True, 0.1, None)
    rec = decision_record(d, "promo.control.x", "v1", "u1", NOW, "web")
    assert rec["event_id"] == rec["decision_id"] == "promo.control.x"
    assert rec["type"] == "decision" and rec["user_id"] == "u1" and rec["channel"] == "web"
    assert rec["props"] == {"campaign": "promo", "variant": None, "arm": "control", "control": True,
                            "zone": "hero", "probability": 0.1}


def test_cap_states_from_hashes(cdir: Path) -> None:
    config = load_config(cdir)
    state = {b"promo:arm": b"a", b"promo:at": b"123", b"promo:day": b"2026-01-01",
             b"promo:today": b"2", b"promo:dismissed": b"1", b"gone:arm": b"x"}
    caps = cap_states(state, {b"promo": b"1"}, config, NOW)
    assert caps["promo"] == CapState(today=2, session=1, dismissed=True, assigned_at=123, arm="a")
    # another day in the campaign's time zone: today's count starts again
    assert cap_states(state, {}, config, NOW + 86_400_000)["promo"].today == 0
    assert caps["gone"].arm == "x"


def _write(pid: str = "v:v1", p: Profile | None = None) -> Write:
    return Write(pid, b"", p or Profile(), tables=Tables())


def test_hook_segments_join_and_leave(cdir: Path) -> None:
    hook = DecisionHook(load_config(cdir), CFG, "segments", 1000)
    p = Profile()
    w = _write(p=p)
    e1 = ev(1, item={"id": "s1", "categories": ["shoes"]})
    apply_event(p, e1, CFG)
    hook(e1, p, "v:v1", w)
    assert [o.command for o in w.ops] == ["PEXPIRE"]  # segments wait for finish
    d = {**ev(9, "decision"), "props": {"campaign": "nope", "arm": "a"}}
    hook(d, p, "v:v1", w)  # a decision record last in the batch changes no segment itself
    hook.finish(e1, p, "v:v1", w)  # once per profile per batch
    assert p.segments == ["shoe_fans"]
    assert w.tables.h[keys.SEGMENT_SIZES] == {"shoe_fans": 1}
    (emit,) = w.emits
    (rec,) = msgspec.msgpack.decode(emit.value)
    assert emit.topic == "segments" and rec["type"] == "segment_join"
    assert rec["props"]["segment"] == "shoe_fans" and rec["props"]["profile_id"] == "v:v1"
    # no change: nothing beyond the session slide
    w = _write(p=p)
    e2 = ev(2, "page_view")
    apply_event(p, e2, CFG)
    hook(e2, p, "v:v1", w)
    hook.finish(e2, p, "v:v1", w)
    assert [o.command for o in w.ops] == ["PEXPIRE"] and not w.emits and not w.tables.h
    # 60 days later the affinity has decayed: leaving is an event too
    w = _write(p=p)
    e3 = {**ev(3, "page_view"), "ts": NOW + 60 * 86_400_000}
    apply_event(p, e3, CFG)
    hook(e3, p, "v:v1", w)
    hook.finish(e3, p, "v:v1", w)
    assert p.segments == []
    assert w.tables.h[keys.SEGMENT_SIZES] == {"shoe_fans": -1}


def test_hook_campaign_state_and_counters(cdir: Path) -> None:
    """The stream's campaign state machine (engine/logic/decisions/caps.py on the stored
    hashes): first exposure, the day's impressions, the session, the first conversion."""
    hook = DecisionHook(load_config(cdir), CFG, "segments", 1000)
    kc, kcs, kst = (keys.campaign_state("v:v1"), keys.campaign_session("v:v1"),
                    keys.campaign_stats("promo"))
    p = Profile()
    w = _write(p=p)
    d = {**ev(1, "decision"), "props": {"campaign": "promo", "arm": "a"}}
    assert hook.reads(d) and hook.reads(ev(9, "purchase")) and not hook.reads(ev(9, "page_view"))
    apply_event(p, d, CFG)
    hook(d, p, "v:v1", w)
    assert p.event_count == 0  # a decision is bookkeeping, not behaviour
    assert Op("HSET", kc, ("promo:arm", "a", "promo:at", str(NOW + 1))) in w.ops
    assert w.tables.h[kst] == {"a:assigned": 1}
    d2 = {**ev(2, "decision"), "props": {"campaign": "promo", "arm": "control"}}
    hook(d2, p, "v:v1", w)  # assigned once: the first arm stays
    assert w.tables.h[kst] == {"a:assigned": 1}
    for n in (3, 4):
        hook(ev(n, "impression", decision_id="promo.a.xyz"), p, "v:v1", w)
    assert w.tables.h[kst] == {"a:assigned": 1, "a:impressions": 2}
    assert w.side[kc][b"promo:today"] == b"2" and w.side[kc][b"promo:day"] == b"2026-01-01"
    assert w.side[kcs][b"promo"] == b"2"
    assert Op("HINCRBY", kcs, ("promo", 1)) in w.ops
    # reactions to unknown campaigns or ids count nothing
    for did in ("other.a.xyz", "garbage"):
        hook(ev(5, "click", decision_id=did), p, "v:v1", w)
    assert "a:clicks" not in w.tables.h[kst]
    hook(ev(6, "purchase"), p, "v:v1", w)
    hook(ev(7, "purchase"), p, "v:v1", w)  # the first conversion only
    assert w.tables.h[kst]["a:conversions"] == 1
    # a purchase outside the goal window (1 day after the first decision) converts nothing
    late = _write()
    late.side[kc] = {b"promo:arm": b"a", b"promo:at": str(NOW).encode()}
    hook({**ev(8, "purchase"), "ts": NOW + 2 * 86_400_000}, Profile(), "v:v1", late)
    assert not late.tables.h


def test_hub_keeps_last_good_config(cdir: Path) -> None:
    hub = default_hub(cdir)
    assert hub.reload() == {"decisions": True}
    good = hub.decisions
    assert good is not None and "promo" in good.campaigns
    (cdir / "campaigns" / "promo.yaml").write_text(CAMPAIGN.replace("status: active", "status: on"))
    assert hub.reload() == {"decisions": False}
    assert hub.decisions is good
    (err,) = hub.errors["decisions"]
    assert err.startswith(f"{cdir / 'campaigns' / 'promo.yaml'}:2:") and "status" in err
    (cdir / "campaigns" / "promo.yaml").write_text(CAMPAIGN.replace("Hi", "Hello"))
    assert hub.reload() == {"decisions": True}
    assert hub.decisions is not good and not hub.errors


def test_hub_other_loaders(tmp_path: Path) -> None:
    hub = ConfigHub(tmp_path)
    hub.register("sitemap", lambda d: (d / "sitemap.yaml").read_text(), ("sitemap.yaml",))
    (tmp_path / "sitemap.yaml").write_text("a")
    hub.reload()
    assert hub.get("sitemap") == "a"
    assert hub._affected({str(tmp_path / "sitemap.yaml")}) == ["sitemap"]
    assert hub._affected({str(tmp_path / "other.yaml")}) == []


async def test_hub_watches_the_folder(cdir: Path) -> None:
    hub = default_hub(cdir, debounce_ms=50)
    await hub.start()
    try:
        first = hub.decisions
        await asyncio.sleep(0.3)  # the watcher is up
        (cdir / "campaigns" / "promo.yaml").write_text(CAMPAIGN.replace("Hi", "Hello"))
        for _ in range(100):
            if hub.decisions is not first:
                break
            await asyncio.sleep(0.05)
        assert hub.decisions is not first
    finally:
        await hub.stop()


def test_preview_renders_and_explains(cdir: Path) -> None:
    config = load_config(cdir)
    p = Profile()
    apply_event(p, ev(1, item={"id": "s1", "categories": ["shoes"]}), CFG)
    text = render_preview(config, "promo", rule_view(p, "v:v1", NOW, CFG), {}, NOW)
    assert "[title]\nHi shoes" in text and "eligible  yes" in text and "shoe_fans" in text
    with pytest.raises(PreviewError, match="unknown campaign"):
        render_preview(config, "nope", rule_view(p, "v:v1", NOW, CFG), {}, NOW)


def test_decide_request_parsing() -> None:
    from engine.logic.decide_request import RequestError, parse_request

    body = b'{"visitor_id": "v1", "user_id": "u1", "context": {"zones": ["a", "b", "a"]},' \
           b' "events": [{"event_id": "e1", "type": "page_view"}]}'
    req = parse_request(body, "text/plain")  # what the beacon sends: no CORS preflight
    assert req["zones"] == ["a", "b"] and req["user_id"] == "u1"
    assert req["events"] == [{"event_id": "e1", "type": "page_view", "visitor_id": "v1",
                              "user_id": "u1"}]
    assert parse_request(msgspec.msgpack.encode({"visitor_id": "v", "zones": "x,y"}),
                         "application/msgpack")["zones"] == ["x", "y"]
    for raw, mtype, field in [
        (b'{"context": {}}', "application/json", "visitor_id"),
        (b'{"visitor_id": 3}', "application/json", "visitor_id"),
        (b'{"visitor_id": "v", "context": []}', "application/json", "context"),
        (b'{"visitor_id": "v", "context": {"zones": [1]}}', "application/json", "context.zones"),
        (b'{"visitor_id": "v", "events": {}}', "application/json", "events"),
        (b"{nope", "application/json", "body"),
        (b"{}", "text/html", "content-type"),
        # msgpack carries what JSON cannot: a 400 naming the context, never a TypeError
        (msgpack.packb({"visitor_id": "v", "context": {None: 1}}), "application/msgpack",
         "context"),
        (msgpack.packb({"visitor_id": "v", "context": {"a": msgpack.ExtType(5, b"x")}}),
         "application/msgpack", "context"),
    ]:
        with pytest.raises(RequestError) as info:
            parse_request(raw, mtype)
        assert info.value.field == field, raw


def test_template_memo_is_keyed_by_the_variables_used() -> None:
    from engine.logic.decisions.templates import compile_template

    t = compile_template({"title": "Hi {{ traits.name | default('there') }}", "x": "{{ top_category }}"})
    assert t._uses == ("top_category", "traits")
    assert t.render({"traits": {"name": "<b>"}})["title"] == "Hi &lt;b&gt;"
    assert t.render({"traits": {"name": "Ann"}, "cart": [1]})["title"] == "Hi Ann"
    assert t.render({"traits": {"name": "<b>"}, "cart": [2]})["title"] == "Hi &lt;b&gt;"
    assert len(t._cache) == 2
    first = t.render({"traits": {}})
    first["title"] = "changed"  # callers get copies
    assert t.render({"traits": {}})["title"] == "Hi there"
    assert compile_template({"t": "{{ [1, 2] | random }}"})._uses is None
