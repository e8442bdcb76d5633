"""Selection per zone, eligibility reasons, and cap/counter effects."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.logic.decisions.assign import assign
from engine.logic.decisions.caps import (
    CapState,
    cap_reason,
    conversion_effects,
    day_key,
    reaction_effects,
)
from engine.logic.decisions.config import load_config
from engine.logic.decisions.rules import as_ms
from engine.logic.decisions.select import explain, select

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(ROOT / "config")
NOW = datetime(2025, 3, 5, 14, 30, tzinfo=UTC)
NOW_MS = as_ms(NOW)
DAY = 86_400_000

ABANDONER = {
    "profile_id": "v:abandoner",
    "visitor_id": "abandoner",
    "user_id": None,
    "event_count": 9,
    "first_seen": NOW_MS - 5 * DAY,
    "affinities": {"category": {"shoes": 4.0, "hats": 1.0}, "brand": {"acme": 2.0}},
    "types": {"add_to_cart": {"count": 2, "last": NOW_MS - DAY}},
    "segments": [],
    "cart": ["sku-1", "sku-2"],
    "traits": {"first_name": "<b>Ada</b>"},
}
NEWCOMER = {
    "profile_id": "v:new",
    "visitor_id": "new",
    "first_seen": NOW_MS - 60_000,
    "event_count": 1,
}
WEB = {"channel": "web", "page_type": "product", "zones": ["exit_intent", "cart_reminder"]}


def test_highest_priority_wins_and_one_campaign_per_response():
    decisions = select(CONFIG, ABANDONER, WEB, NOW)
    # cart_reminder (priority 80) takes exit_intent; it cannot fill its second zone too
    assert [(d.zone, d.campaign_id) for d in decisions] == [("exit_intent", "cart_reminder")]
    d = decisions[0]
    assert d.variant_id == "reminder" and not d.control and d.probability == 1.0
    assert d.content["title"] == "You left 2 items in your cart"
    assert (
        "&lt;b&gt;Ada&lt;/b&gt;" in d.content["html"] and 'data-item="sku-2"' in d.content["html"]
    )
    assert d.to_dict()["campaign"] == "cart_reminder"


def test_zone_order_and_fallthrough():
    ctx = dict(WEB, zones=["cart_reminder", "exit_intent", "unknown"])
    decisions = select(CONFIG, ABANDONER, ctx, NOW)
    # cart_reminder fills its own zone first, so exit intent falls through to the next eligible
    assert [(d.zone, d.campaign_id) for d in decisions] == [
        ("cart_reminder", "cart_reminder"),
        ("exit_intent", "email_capture"),
    ]
    # a newcomer on web gets the first-visit discount on exit intent (or is in its control)
    (d,) = select(CONFIG, NEWCOMER, WEB, NOW)
    assert d.campaign_id == "first_visit_discount"


def test_caps_and_reasons():
    caps = {"cart_reminder": {"session": 1, "today": 1}}
    (d,) = select(CONFIG, ABANDONER, WEB, NOW, caps_state=caps)
    assert d.campaign_id != "cart_reminder"
    reasons = dict(explain(CONFIG, ABANDONER, WEB, NOW, caps_state=caps)["exit_intent"])
    assert reasons["cart_reminder"] == "capped:per_session"
    assert reasons["first_visit_discount"] == "targeting"
    reasons = dict(explain(CONFIG, ABANDONER, dict(WEB, channel="atm"), NOW)["exit_intent"])
    assert reasons["cart_reminder"] == "channel"


def test_schedule_and_status(tmp_path):
    (tmp_path / "campaigns").mkdir()
    base = "status: {s}\nzones: [z]\nvariants: [{{id: a, template: {{title: x}}}}]\n"
    (tmp_path / "campaigns" / "a.yaml").write_text(
        "id: a\npriority: 9\n" + base.format(s="active")
        + "schedule: {start: 2025-03-06, timezone: UTC}\n"
    )  # fmt: skip
    (tmp_path / "campaigns" / "b.yaml").write_text("id: b\npriority: 5\n" + base.format(s="paused"))
    (tmp_path / "campaigns" / "c.yaml").write_text("id: c\npriority: 5\n" + base.format(s="active"))
    (tmp_path / "campaigns" / "d.yaml").write_text("id: d\npriority: 5\n" + base.format(s="active"))
    config = load_config(tmp_path)
    ctx = {"zones": ["z"]}
    assert select(config, NEWCOMER, ctx, NOW)[0].campaign_id == "c"  # tie broken by id
    assert dict(explain(config, NEWCOMER, ctx, NOW)["z"]) == {
        "a": "schedule", "b": "status:paused", "c": None, "d": None,
    }  # fmt: skip
    assert select(config, NEWCOMER, ctx, datetime(2025, 3, 6, tzinfo=UTC))[0].campaign_id == "a"


def test_home_hero_ab_with_control():
    ctx = {"channel": "web", "page_type": "home", "zones": ["home_hero"]}
    arms = {}
    for i in range(400):
        profile = dict(ABANDONER, profile_id=f"v:{i}")
        (d,) = select(CONFIG, profile, ctx, NOW)
        expected = assign("home_hero", f"v:{i}", [("a", 1), ("b", 1)], 10)
        assert (d.variant_id, d.control) == (expected.variant, expected.control)
        arms[d.arm] = arms.get(d.arm, 0) + 1
        if d.control:
            assert d.content is None and d.probability == pytest.approx(0.1)
        else:
            assert "Shoes" in d.content["title"] or "shoes" in d.content["title"]
    assert set(arms) == {"a", "b", "control"}


def test_cap_reason_order():
    from engine.logic.decisions.config import Caps

    caps = Caps(per_day=2, per_session=1, stop_after=frozenset({"dismiss"}))
    assert cap_reason(caps, CapState()) is None
    assert cap_reason(caps, CapState(dismissed=True)) == "dismissed"
    assert cap_reason(caps, CapState(converted=True)) is None
    assert cap_reason(caps, CapState(session=1)) == "per_session"
    assert cap_reason(caps, CapState(today=2)) == "per_day"


def test_effects_lifecycle():
    campaign = CONFIG.campaigns["first_visit_discount"]  # goal purchase within 7d
    state = CapState()
    eff = reaction_effects(campaign, state, "decision", "popup", NOW_MS)
    assert (
        eff.set_assigned == ("popup", NOW_MS)
        and eff.stats == {"assigned": 1}
        and eff.arm == "popup"
    )
    state = CapState(assigned_at=NOW_MS, arm="popup")
    assert reaction_effects(campaign, state, "decision", "popup", NOW_MS + 1).empty
    eff = reaction_effects(campaign, state, "impression", "popup", NOW_MS)
    assert (eff.incr_today, eff.incr_session, eff.stats) == (1, 1, {"impressions": 1})
    assert reaction_effects(campaign, state, "click", "popup", NOW_MS).stats == {"clicks": 1}
    eff = reaction_effects(campaign, state, "dismiss", "popup", NOW_MS)
    assert eff.set_flags == {"dismissed"} and eff.stats == {"dismissals": 1}
    eff = conversion_effects(campaign, state, "purchase", NOW_MS + 3 * DAY)
    assert eff.set_flags == {"converted"} and eff.stats == {"conversions": 1} and eff.arm == "popup"
    assert conversion_effects(campaign, state, "purchase", NOW_MS + 8 * DAY).empty  # too late
    assert conversion_effects(campaign, state, "add_to_cart", NOW_MS).empty
    assert conversion_effects(campaign, CapState(), "purchase", NOW_MS).empty  # never assigned
    done = CapState(assigned_at=NOW_MS, arm="popup", converted=True)
    assert conversion_effects(campaign, done, "purchase", NOW_MS).empty  # first conversion only
    control = CapState(assigned_at=NOW_MS, arm="control")
    assert conversion_effects(campaign, control, "purchase", NOW_MS + DAY).arm == "control"
    with pytest.raises(ValueError):
        reaction_effects(campaign, state, "hover", "popup", NOW_MS)
    assert CONFIG.campaigns_with_goal("identify") == [CONFIG.campaigns["email_capture"]]


def test_day_key_uses_campaign_time_zone():
    campaign = CONFIG.campaigns["first_visit_discount"]  # Europe/Paris
    assert day_key(campaign, datetime(2025, 3, 5, 23, 30, tzinfo=UTC)) == "2025-03-06"
    assert (
        day_key(CONFIG.campaigns["home_hero"], datetime(2025, 3, 5, 23, 30, tzinfo=UTC))
        == "2025-03-05"
    )


def test_cap_state_from_untrusted_mapping():
    s = CapState.from_mapping(
        {"today": "3", "session": 2, "dismissed": 1, "assigned_at": True, "arm": 5}
    )
    assert s == CapState(today=0, session=2, dismissed=True)


def test_only_the_segments_the_requested_zones_read_are_evaluated(tmp_path: Path) -> None:
    """`Config.segments_for`: a selection evaluates the segments its candidates' targeting
    names (with the segments those name), all of them when a template reads `segments`;
    the decisions are those of a selection that evaluated every segment."""
    from engine.logic.decisions.select import with_live_segments

    (tmp_path / "segments").mkdir()
    (tmp_path / "campaigns").mkdir()
    for sid, rule in (("base", "event_count: {op: '>=', value: 1}"),
                      ("keen", "all: [{segment: base}, {event_count: {op: '>=', value: 3}}]"),
                      ("other", "event_count: {op: '>=', value: 0}")):
        (tmp_path / "segments" / f"{sid}.yaml").write_text(f"id: {sid}\nrule:\n  {rule}\n")
    (tmp_path / "campaigns" / "k.yaml").write_text(
        "id: k\nstatus: active\nzones: [hero]\ntargeting: {segment: keen}\n"
        "variants:\n  - id: a\n    template: {title: hi}\n")
    (tmp_path / "campaigns" / "s.yaml").write_text(
        "id: s\nstatus: active\nzones: [side]\n"
        "variants:\n  - id: a\n    template: {title: \"{{ segments | join(',') }}\"}\n")
    config = load_config(tmp_path)
    assert config.segments_for(("hero",)) == frozenset({"keen", "base"})
    assert config.segments_for(("hero", "side")) is None
    assert config.segments_for(("nowhere",)) == frozenset()
    profile = {"profile_id": "v:1", "event_count": 5, "segments": ["gone"]}
    assert with_live_segments(config, profile, {}, 0, ["hero"])["segments"] == \
        ["gone", "base", "keen"]
    assert with_live_segments(config, profile, {}, 0)["segments"] == \
        ["gone", "base", "keen", "other"]
    for zones in (["hero"], ["side"], ["hero", "side"]):
        got = select(config, profile, {}, 0, zones=zones)
        assert [d.campaign_id for d in got] == [{"hero": "k", "side": "s"}[z] for z in zones]
    side = select(config, profile, {}, 0, zones=["side"])[0]
    assert side.content == {"title": "gone,base,keen,other"}
