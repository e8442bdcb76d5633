"""Sessions: cut by the beacon's session id or by 30 minutes of inactivity; what they keep."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from models.session import (
    SESSION_GAP_MS,
    Session,
    SessionConfig,
    SessionTracker,
    advance,
    features,
    session_key,
    session_uid,
    split_sessions,
    starts_new,
)

T0 = 1_700_000_000_000
MIN = 60_000


def ev(t_min: float, iid: str | None = "a", etype: str = "item_view", sid: str | None = None,
       vid: str = "v") -> dict[str, Any]:
    out: dict[str, Any] = {"event_id": f"{vid}{t_min}{iid}", "type": etype, "visitor_id": vid,
                           "ts": T0 + int(t_min * MIN)}
    if iid is not None:
        if etype in ("add_to_cart", "purchase"):
            out["items"] = [{"id": iid}]
        else:
            out["item"] = {"id": iid}
    if sid is not None:
        out["context"] = {"session_id": sid}
    return out


DEFAULT = SessionConfig()


def run(events: list[dict[str, Any]], cfg: SessionConfig = DEFAULT) -> list[Session]:
    out, s = [], None
    for e in events:
        s = advance(s, e, cfg)
        out.append(Session.unpack(s.pack()))  # a copy as it was then
    return out


def test_a_gap_of_more_than_30_minutes_starts_a_new_session() -> None:
    got = run([ev(0, "a"), ev(10, "b"), ev(40, "c"), ev(70, "d"), ev(100.01, "e")])
    assert [s.seq for s in got] == [1, 1, 1, 1, 2]  # 30 min exactly still belongs
    assert got[3].viewed == ["d", "c", "b", "a"]
    assert got[4].viewed == ["e"] and got[4].start_ms == T0 + int(100.01 * MIN)
    assert SESSION_GAP_MS == 30 * MIN


def test_the_beacon_session_id_decides_when_events_carry_one() -> None:
    got = run([ev(0, "a", sid="s1"), ev(90, "b", sid="s1"), ev(91, "c", sid="s2"),
               ev(92, "d")])
    # same id after 90 minutes: same session; a new id: a new session; no id: the gap rule
    assert [s.seq for s in got] == [1, 1, 2, 2]
    assert got[2].key == "s2" and got[3].viewed == ["d", "c"]


def test_a_session_cut_by_gap_adopts_an_id_that_arrives_within_it() -> None:
    got = run([ev(0, "a"), ev(5, "b", sid="tab-1"), ev(50, "c", sid="tab-1")])
    assert [s.seq for s in got] == [1, 1, 1] and got[1].key == "tab-1"
    assert run([ev(0, "a"), ev(45, "b", sid="tab-1")])[1].seq == 2


def test_session_keeps_viewed_carted_bought_and_its_start() -> None:
    got = run([ev(0, "a"), ev(1, "b", "add_to_cart"), ev(2, "c", "add_to_cart"),
               ev(3, "c", "remove_from_cart"), ev(4, "b", "purchase"), ev(5, None, "page_view")])
    s = got[-1]
    assert s.viewed == ["b", "c", "a"]  # every item interaction, newest first
    assert s.carted == [] and s.bought == ["b"]
    assert s.start_ms == T0 and s.last_ms == T0 + 5 * MIN and s.events == 6
    assert s.items() == ["b", "c", "a"]
    view = s.view(T0 + 10 * MIN, SessionConfig())
    assert view["open"] is True and view["age_s"] == 600.0 and view["id"] is None
    assert s.view(T0 + 40 * MIN, SessionConfig())["open"] is False


def test_lists_are_capped_and_late_events_stay_in_the_session() -> None:
    cfg = SessionConfig(max_items=3)
    got = run([ev(k, f"i{k}") for k in range(6)] + [ev(1.5, "late")], cfg)
    assert got[5].viewed == ["i5", "i4", "i3"]
    assert got[6].seq == 1 and got[6].viewed[0] == "late" and got[6].last_ms == T0 + 5 * MIN


def test_return_gap_is_a_moving_average_of_the_time_between_session_starts() -> None:
    day = 24 * 60
    got = run([ev(0), ev(day), ev(2 * day), ev(4 * day)])
    assert got[0].return_gap_ms == 0.0
    assert got[1].return_gap_ms == day * MIN
    assert got[2].return_gap_ms == day * MIN
    assert got[3].return_gap_ms == pytest.approx(day * MIN + 0.3 * day * MIN)


def test_pack_is_compact_and_round_trips() -> None:
    s = run([ev(0, "sku-000001", sid="b3f1c2"), ev(1, "sku-000002", "add_to_cart")])[-1]
    assert Session.unpack(s.pack()) == s
    assert Session.unpack(None) == Session() and Session.unpack([]) == Session()
    blob = msgpack.packb(s.pack(), use_bin_type=True)
    assert len(blob) < 80, len(blob)


def test_session_key_reads_the_context_and_ignores_junk() -> None:
    assert session_key({"context": {"session_id": " s1 "}}) == "s1"
    assert session_key({"context": {"session_id": 42}}) == "42"
    assert session_key({"context": {"session_id": ["x"]}}) == ""
    assert session_key({"context": "nope"}) == "" and session_key({}) == ""
    assert len(session_key({"context": {"session_id": "x" * 500}})) == 64
    assert starts_new(None, ev(0), SessionConfig())


def test_tracker_and_split_agree_and_are_bounded() -> None:
    events = [ev(0, "a", vid="x"), ev(1, "b", vid="y"), ev(50, "c", vid="x"),
              ev(51, "d", vid="z")]
    assert list(split_sessions(events)) == [("x", 1), ("y", 1), ("x", 2), ("z", 1)]
    tracker = SessionTracker(max_visitors=2)
    for e in events:
        tracker.learn_one(e)
    assert tracker.get("y") is None  # least recently active dropped
    x = tracker.get("x")
    assert x is not None and x.seq == 2 and session_uid("x", x) == "x#2"
    assert tracker.size() == {"max_visitors": 2, "max_items": 1}
    copy = SessionTracker.restore(tracker.snapshot())
    assert copy.get("x") == x and copy.snapshot() == tracker.snapshot()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SessionConfig(gap_ms=0)
    with pytest.raises(ValueError):
        SessionConfig(max_items=0)


def test_features_for_propensity_learners() -> None:
    got = run([ev(0, "a"), ev(60 * 24, "b"), ev(60 * 24 + 1, "c", "add_to_cart")])
    f = features(got[-1], T0 + int((60 * 24 + 11) * MIN))
    assert f == {"session_events": 2.0, "session_age_s": 660.0, "session_viewed": 2.0,
                 "session_carted": 1.0, "session_bought": 0.0, "session_open": 1.0,
                 "session_idle_s": 600.0, "returning": 1.0, "return_gap_h": 24.0}
    assert set(features(None, T0)) == set(f) and not any(features(None, T0).values())
