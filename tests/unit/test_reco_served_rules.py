"""The served path of the repurchase rule and of session-kNN: what the stream hook counts, read
back as the route reads it, decides and scores exactly like the in-process learners."""

from __future__ import annotations

from typing import Any

import pytest

from engine.logic.recipes import RecipeError, apply, parse_recipe
from engine.store import keys
from engine.store.writes import Tables
from models.affinity import REBUY_MIN_GAP_S, AffinityConfig, Profile, apply_event, merge
from models.reco import Repurchase
from models.reco.base import Candidate
from models.reco.online import (
    current_session,
    sample_sessions,
    scored_candidates,
    session_candidates,
    visitor_state,
    with_repurchase,
)
from models.reco.repurchase import REASON_KEEP, levels_of, stored_row
from models.reco.sessionknn import SessionKNN
from streams.hooks.reco import SESSION_ITEMS, SESSION_TTL_MS, SESSIONS_PER_ITEM, reco_changes
from tests.unit.test_repurchase import DAY, T0, shop

CFG = AffinityConfig()


class _Stream:
    """Events through `apply_event` and the reco hook, every profile's, into one `Tables`."""

    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.t = Tables()

    def learn_one(self, e: dict[str, Any]) -> None:
        p = self.profiles.setdefault(e["visitor_id"], Profile())
        assert apply_event(p, e, CFG)
        self.t.begin(None, None)  # each event's op budget, as the planner starts it
        reco_changes(e, p, self.t, keys.visitor_pid(e["visitor_id"]))
        assert self.t.dropped == 0

    def row(self, key: str) -> list[float] | None:
        return stored_row({f.encode(): str(v).encode() for f, v in self.t.h.get(key, {}).items()})


def _decide(stream: _Stream, rule: Repurchase, iid: str, cats: list[str], bought_ms: int,
            now: int, horizon_ms: float | None = None):
    levels = levels_of(cats[:1])
    return rule.decide_rows(iid, [stream.row(keys.repurchase_level(lv)) for lv in levels],
                            stream.row(keys.repurchase_item(iid)), bought_ms, now, horizon_ms)


def test_the_stream_counts_give_the_learners_decisions() -> None:
    learner, stream = Repurchase(horizon_s=7 * 86400), _Stream()
    shop(learner)
    shop(stream)
    rule = Repurchase(horizon_s=7 * 86400)
    now = T0 + 200 * DAY
    for iid, cat, ago in [("milk", "grocery/dairy", DAY), ("sofa1", "furniture/sofas", DAY),
                          ("cartridge", "office/ink", 28 * DAY), ("oat-milk", "grocery/dairy", DAY),
                          ("armchair", "furniture/sofas", DAY)]:
        want = learner.decide(iid, now - ago, now, categories=[cat])
        got = _decide(stream, rule, iid, [cat], now - ago, now)
        assert got.keep == want.keep and got.reason == want.reason, iid
        assert got.chance == pytest.approx(want.chance, rel=1e-3, abs=1e-6), iid
    assert _decide(stream, rule, "milk", ["grocery/dairy"], now - DAY, now).reason == REASON_KEEP
    # every counter hash expires
    assert all(ttl > 0 for ttl in stream.t.hcfg.values())


def test_the_same_order_twice_is_one_purchase_and_times_stay_bounded() -> None:
    p = Profile()
    t = Tables()
    e = {"event_id": "a", "type": "purchase", "visitor_id": "v", "ts": T0,
         "items": [{"id": "x", "categories": ["a/b"]}]}
    for n, dt in enumerate([0, 60_000, REBUY_MIN_GAP_S * 1000 + 1000]):
        ev = {**e, "event_id": f"e{n}", "ts": T0 + dt}
        apply_event(p, ev, CFG)
        reco_changes(ev, p, t, "v:v")
    row = t.h[keys.repurchase_item("x")]
    assert row["0"] == 2 and row["1"] == 1  # two purchases, one rebuy (the repeat was the order)
    assert p.bought["x"] == [T0 // 1000 + REBUY_MIN_GAP_S + 1, T0 // 1000]
    for n in range(30):
        apply_event(p, {**e, "event_id": f"m{n}", "items": [{"id": f"i{n}"}]}, CFG)
    assert set(p.bought) == set(p.purchased) and len(p.bought) <= CFG.max_purchased
    q = Profile.restore(p.snapshot())
    assert q.bought == p.bought and q.session.pack() == p.session.pack()


def test_merge_keeps_the_newer_purchase_times_and_the_fresher_session() -> None:
    anon, user = Profile(), Profile()
    for p, vid, ts in ((user, "u", T0), (anon, "a", T0 + DAY)):
        apply_event(p, {"event_id": vid, "type": "purchase", "visitor_id": vid, "ts": ts,
                        "items": [{"id": "x"}]}, CFG)
    merge(user, anon, CFG)
    assert user.bought["x"] == [(T0 + DAY) // 1000, T0 // 1000]
    assert user.session.last_ms == T0 + DAY and user.session.seq == 2


def test_visitor_state_with_the_rule_excludes_the_durable_and_keeps_the_consumable() -> None:
    p = Profile()
    for n, iid in enumerate(("sofa", "milk")):
        apply_event(p, {"event_id": iid, "type": "purchase", "visitor_id": "v",
                        "ts": T0 + n * 1000, "items": [{"id": iid}]}, CFG)
    v = visitor_state(p, T0 + 2000, CFG)
    assert v["purchased"] == ["milk", "sofa"]  # before the rule: a plain exclusion
    assert dict(v["bought"]) == {"milk": T0 + 1000, "sofa": T0}
    rule = Repurchase(mode="keep")
    with_repurchase(v, [rule.decide("milk", T0, T0)] +
                    [Repurchase(mode="exclude").decide("sofa", T0, T0)])
    assert v["purchased"] == ["sofa"] and v["rebuy"] == {"milk": REASON_KEEP}
    recipe = parse_recipe({"name": "t", "ingredients": {"history": 1.0}})
    cands = {"history": [Candidate("milk", 1.0), Candidate("sofa", 0.5), Candidate("tea", 0.2)]}
    recs = apply(recipe, cands, lambda _i: None, v, {"now_ms": T0}, 5)
    assert [(r.item_id, r.reason) for r in recs] == [("milk", REASON_KEEP),
                                                     ("tea", "recently viewed")]


def test_recipe_repurchase_setting_is_validated() -> None:
    assert parse_recipe({"name": "t", "ingredients": {"session_knn": 1.0},
                         "exclusions": {"repurchase": "exclude"}}).exclusions.repurchase == "exclude"
    with pytest.raises(RecipeError) as err:
        parse_recipe({"name": "t", "ingredients": {"history": 1.0}, "exclusions": {"repurchase": "maybe"}})
    assert err.value.field == "exclusions.repurchase"


def _log() -> list[dict[str, Any]]:
    """Eight visitors' sessions over a few items; visitor 3 comes back after an hour."""
    events = []
    paths = [["a", "b", "c"], ["a", "c", "d"], ["b", "c", "e"], ["a", "b", "e"], ["d", "e", "f"],
             ["a", "f"], ["c", "d", "a", "b"], ["e", "a"]]
    for v, path in enumerate(paths):
        for k, iid in enumerate(path):
            events.append({"event_id": f"{v}-{k}", "type": "item_view", "visitor_id": f"o{v}",
                           "ts": T0 + v * 60_000 + k * 1000, "item": {"id": iid}})
    events.append({"event_id": "back", "type": "item_view", "visitor_id": "o3",
                   "ts": T0 + 3_600_000, "item": {"id": "f"}})
    return sorted(events, key=lambda e: e["ts"])


def test_session_knn_from_the_stream_tables_scores_like_the_learner() -> None:
    knn, stream = SessionKNN(), _Stream()
    for e in _log():
        knn.learn_one(e)
        stream.learn_one(e)
    t = stream.t
    assert all(t.mcfg[k][1] == SESSION_TTL_MS for k in t.m)
    assert all(t.mcfg[k][0] in (SESSION_ITEMS, SESSIONS_PER_ITEM) for k in t.m)
    now = T0 + 3_600_000 + 5000
    for vid, page in (("o3", "a"), ("o7", None), ("new", "c")):
        profile = stream.profiles.get(vid)
        pid = keys.visitor_pid(vid)
        uid, current = current_session(profile, pid, page, now)
        want_uid, want_items = knn.current(vid, now)
        if page:
            want_items = [i for i in want_items if i != page] + [page]
        assert current == want_items and (uid is None) == (want_uid is None)
        index = {iid: sorted(((u, int(s)) for u, s in t.m.get(keys.session_index(iid), {}).items()),
                             key=lambda r: -r[1]) for iid in current}
        uids = sample_sessions(index, uid, knn.sample_size)
        sessions = {u: [m for m, _ in sorted(t.m[keys.session_items(u)].items(),
                                             key=lambda r: r[1])] for u in uids}
        got = session_candidates(current, uids, sessions, now, 20, knn)
        want = knn.recommend(vid, now, 20, item_id=page)
        assert [(c.item_id, c.via) for c in got] == [(c.item_id, c.via) for c in want], vid
        assert [c.score for c in got] == pytest.approx([c.score for c in want])


def test_a_session_is_sharded_by_its_hashed_name_and_other_names_by_crc() -> None:
    name = "9f86d081884c7d65"  # as models.session.shared_session_name names a session
    assert keys.session_shard(name) == 0x9F86D081 % keys.SHARDS
    assert keys.session_shard(name.upper()) == 0x9F86D081 % keys.SHARDS
    for other in ("visitor#3", "9f86d08", "0x86d081884c7d65", "", "ü9f86d081"):
        assert keys.session_shard(other) == keys.shard(other), other
    assert keys.session_items(name) == f"kss:{keys.shard_tag(0x9F86D081 % keys.SHARDS)}:{name}"


def test_the_session_knn_script_rows_rank_as_score_sessions_ranks() -> None:
    rows = [("b", 0.5, "x"), ("a", 0.5, "y"), ("c", 0.9, "x"), ("d", 0.1, "z")]
    got = scored_candidates(rows, 3)
    assert [(c.item_id, c.score, c.via) for c in got] == [("c", 0.9, "x"), ("a", 0.5, "y"),
                                                          ("b", 0.5, "x")]
    assert scored_candidates([], 5) == [] and len(scored_candidates(rows, 10)) == 4
