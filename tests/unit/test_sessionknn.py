"""Session-kNN against a brute-force reference that rescans the whole log for every query."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from models.reco import SessionKNN, score_sessions
from models.reco.sessionknn import PastSession, session_items
from models.session import Session, split_sessions

T0 = 1_700_000_000_000
MIN = 60_000


def small_log(seed: int = 3, n: int = 600) -> list[dict[str, Any]]:
    """Visitors browsing a small catalogue in short bursts (sessions), some with session ids."""
    rng = random.Random(seed)
    ts = T0
    out = []
    clock: dict[str, int] = {}
    for k in range(n):
        vid = f"v{rng.randrange(25)}"
        ts += rng.choice([5_000, 20_000, 60_000])
        last = clock.get(vid, ts)
        # now and then a return after a break: a new session
        ts_v = max(ts, last + 45 * MIN) if rng.random() < 0.15 else max(ts, last)
        clock[vid] = ts_v
        ts = max(ts, ts_v)
        ev: dict[str, Any] = {"event_id": f"e{k}", "type": rng.choice(["item_view"] * 4 +
                                                                       ["add_to_cart"]),
                              "visitor_id": vid, "ts": ts_v,
                              "item": {"id": f"i{rng.randrange(40) if rng.random() < 0.7 else rng.randrange(8)}"}}
        if int(vid[1:]) % 5 == 0:  # some visitors' events carry the beacon's session id
            ev["context"] = {"session_id": f"{vid}-s{(ts_v - T0) // (4 * 3600_000)}"}
        out.append(ev)
    out.sort(key=lambda e: e["ts"])
    return out


def brute_force(log: list[dict[str, Any]], upto: int, vid: str, now: int, *, k: int,
                sample: int, l_pos: float, l_time: float, l_neigh: float, n: int,
                page: str | None = None) -> list[tuple[str, float]]:
    """Rebuild every session from the first `upto` events, then score by STAN's definitions."""
    sessions: dict[tuple[str, int], dict[str, Any]] = {}
    cur_key = None
    for ev, (v, seq) in zip(log[:upto], split_sessions(log[:upto]), strict=True):
        s = sessions.setdefault((v, seq), {"items": [], "last": 0})
        iid = ev["item"]["id"]
        if iid in s["items"]:
            s["items"].remove(iid)
        s["items"].append(iid)
        s["last"] = max(s["last"], ev["ts"])
        if v == vid:
            cur_key = (v, seq)
    current = list(sessions[cur_key]["items"]) if cur_key else []
    if cur_key and now - sessions[cur_key]["last"] > 30 * MIN:
        current, cur_key = [], None
    if page:
        current = [i for i in current if i != page] + [page]
    if not current:
        return []
    past = [(key, s) for key, s in sessions.items()
            if key != cur_key and set(s["items"]) & set(current)]
    past.sort(key=lambda kv: (-kv[1]["last"], f"{kv[0][0]}#{kv[0][1]}"))
    past = past[:sample]
    L = len(current)
    w1 = {iid: math.exp((p - L) / l_pos) for p, iid in enumerate(current, start=1)}
    sims = []
    for key, s in past:
        items = s["items"]
        sim = sum(w1[i] for i in items if i in w1) / math.sqrt(L * len(items))
        sim *= math.exp(-(now - s["last"]) / (l_time * 1000.0)) if l_time else 1.0
        anchor = max((idx for idx, i in enumerate(items) if i in w1),
                     key=lambda idx: current.index(items[idx]))
        sims.append((sim, key, items, anchor))
    sims.sort(key=lambda row: -row[0])  # stable: ties keep the recency order
    scores: dict[str, float] = {}
    for sim, _, items, anchor in sims[:k]:
        for idx, i in enumerate(items):
            scores[i] = scores.get(i, 0.0) + sim * math.exp(-abs(idx - anchor) / l_neigh)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@pytest.mark.parametrize(
    ("k", "sample", "l_time"),
    [(100, 1000, 0.0), (5, 1000, 0.0), (10, 8, 0.0), (10, 30, 3600.0)],
)
def test_matches_the_brute_force_reference(k: int, sample: int, l_time: float) -> None:
    log = small_log()
    model = SessionKNN(k=k, sample_size=sample, lambda_pos=1.5, lambda_time_s=l_time,
                       lambda_neigh=2.5, max_session_items=1000, sessions_per_item=10_000)
    checked = 0
    for upto, ev in enumerate(log, start=1):
        model.learn_one(ev)
        if upto % 23:
            continue
        vid, now = ev["visitor_id"], ev["ts"] + 60_000
        for page in (None, "i3"):
            got = [(c.item_id, c.score) for c in model.recommend(vid, now, 15, item_id=page)]
            want = brute_force(log, upto, vid, now, k=k, sample=sample, l_pos=1.5,
                               l_time=l_time, l_neigh=2.5, n=15, page=page)
            assert [i for i, _ in got] == [i for i, _ in want], (upto, page)
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9)
            checked += bool(want)
    assert checked > 20


def test_stan_weights_by_hand() -> None:
    # current session a, b (b latest); neighbour 1 holds b then x; neighbour 2 holds a then y
    past = [PastSession("n1", T0, ("b", "x")), PastSession("n2", T0, ("a", "y", "z"))]
    got = score_sessions(["a", "b"], past, T0, k=10, lambda_pos=1.0, lambda_neigh=1.0, n=10)
    s1 = 1.0 / math.sqrt(2 * 2)  # b weighs 1
    s2 = math.exp(-1.0) / math.sqrt(2 * 3)  # a weighs e^-1
    want = {"b": s1, "x": s1 * math.exp(-1), "a": s2, "y": s2 * math.exp(-1),
            "z": s2 * math.exp(-2)}
    assert {c.item_id: c.score for c in got} == pytest.approx(want)
    assert [c.item_id for c in got][:2] == ["b", "x"]
    assert {c.item_id: c.via for c in got} == {"b": "b", "x": "b", "a": "a", "y": "a",
                                               "z": "a"}
    # plain SKNN: no position weights; time decay halves an old neighbour
    plain = score_sessions(["a", "b"], past, T0, lambda_pos=0, lambda_neigh=0)
    assert {c.item_id: c.score for c in plain}["y"] == pytest.approx(1 / math.sqrt(6))
    old = [PastSession("n1", T0 - 3600_000, ("b", "x"))]
    decayed = score_sessions(["b"], old, T0, lambda_time_s=3600 / math.log(2), lambda_neigh=0)
    assert decayed[0].score == pytest.approx(0.5 / math.sqrt(2))
    assert score_sessions([], past, T0) == []


def test_own_earlier_sessions_are_neighbours_but_not_the_current_one() -> None:
    model = SessionKNN()
    for t, iid in ((0, "a"), (1, "b"), (2, "c")):
        model.learn_one({"type": "item_view", "visitor_id": "me", "ts": T0 + t * MIN,
                         "item": {"id": iid}})
    # still in that session: nobody else has a, b or c, so nothing to say
    assert model.recommend("me", T0 + 3 * MIN) == []
    # next day, a new session on a: the earlier session is a neighbour
    model.learn_one({"type": "item_view", "visitor_id": "me", "ts": T0 + 1440 * MIN,
                     "item": {"id": "a"}})
    got = [c.item_id for c in model.recommend("me", T0 + 1441 * MIN)]
    assert got[:3] == ["a", "b", "c"]
    assert model.current("me", T0 + 1441 * MIN)[0] == "me#2"
    assert model.current("me", T0 + 1500 * MIN) == (None, [])  # ended by the gap


def test_bounded_index_keeps_the_most_recent_sessions_per_item_and_random_sampling() -> None:
    model = SessionKNN(sessions_per_item=3, sample_size=2, max_sessions=5)
    for v in range(8):
        for t, iid in ((0, "hub"), (1, f"x{v}")):
            model.learn_one({"type": "item_view", "visitor_id": f"v{v}",
                             "ts": T0 + v * MIN + t, "item": {"id": iid}})
    assert list(model._index["hub"]) == ["v5#1", "v6#1", "v7#1"]
    assert [p.uid for p in model.neighbours_of(["hub"])] == ["v7#1", "v6#1"]
    assert model.size()["max_sessions"] == 5
    rnd = SessionKNN(sessions_per_item=10, sample_size=3, sampling="random", seed=4)
    for v in range(8):
        rnd.learn_one({"type": "item_view", "visitor_id": f"v{v}", "ts": T0 + v,
                       "item": {"id": "hub"}})
    a = [p.uid for p in rnd.neighbours_of(["hub"])]
    assert len(a) == 3 and a == [p.uid for p in rnd.neighbours_of(["hub"])]
    with pytest.raises(ValueError):
        SessionKNN(sampling="sometimes")


def test_session_items_reads_a_profile_session() -> None:
    s = Session(seq=1, viewed=["c", "b", "a"])
    assert session_items(s) == ["a", "b", "c"]
    assert session_items({"viewed": ["y", "x"]}) == ["x", "y"]
