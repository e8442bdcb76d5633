"""The `history` ingredient: the visitor's own items scored by recency, item affinity and the
page's category, read from the profile and the visitor's latest sessions' item tables; the
replay's offline twin of those tables gives what the stream hook writes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from engine.logic.candidates import own_items
from engine.store import keys
from engine.store.writes import Tables
from models.affinity import AffinityConfig, Profile, apply_event
from models.reco.online import (
    HISTORY_FREQUENCY,
    HISTORY_OFFSET,
    HISTORY_SAME_CATEGORY,
    earlier_items,
    history_candidates,
    own_session_names,
    visitor_state,
)
from streams.hooks.reco import SESSION_ITEMS, SESSION_TTL_MS, reco_changes
from tests.unit.bench import bench_module

ROOT = Path(__file__).resolve().parents[2]
CFG = AffinityConfig()
T0 = 1_700_000_000_000
MIN = 60_000


def _bench() -> Any:
    return bench_module("reco_replay")


def reference(recent: list[str], scores: dict[str, float], cats: dict[str, str], page: str | None,
              earlier: list[str]) -> list[str]:
    """The scoring written out longhand, item by item."""
    order: list[str] = []
    for i in recent + earlier:
        if i not in order:
            order.append(i)
    pool = order + sorted((i for i in scores if i not in order), key=lambda i: (-scores[i], i))
    top = max(scores.values(), default=0.0)
    rows = []
    for i in pool:
        r = order.index(i) if i in order else len(order)
        s = HISTORY_OFFSET / (HISTORY_OFFSET + r)
        if top > 0:
            s += HISTORY_FREQUENCY * scores.get(i, 0.0) / top
        if page is not None and cats.get(i) == page:
            s += HISTORY_SAME_CATEGORY
        rows.append((-s, i))
    return [i for _, i in sorted(rows)]


def test_recency_leads_without_other_signals() -> None:
    assert [c.item_id for c in history_candidates(["a", "b", "a", "c"])] == ["a", "b", "c"]
    assert history_candidates([]) == []


def test_affinity_and_the_page_category_lift_an_older_item() -> None:
    recent = ["a", "b", "c", "d", "e", "f"]
    # "f" (5/10 + 0.1) was interacted with most: it passes "e" (5/9), not "d" (5/8)
    got = [c.item_id for c in history_candidates(recent, {"f": 6.0, "a": 1.0})]
    assert got == ["a", "b", "c", "d", "f", "e"]
    cat = {"d": {"categories": ["shoes"]}, "a": {"categories": ["hats"]}}.get
    # "d" of the page's category: 5/8 + 0.1 passes "c" (5/7)
    got = [c.item_id for c in history_candidates(recent[:4], {}, cat, "shoes")]
    assert got == ["a", "b", "d", "c"]
    assert [c.item_id for c in history_candidates(recent[:4], {}, cat, None)] == recent[:4]
    # an item only the affinity table holds comes after every recent one at equal affinity
    got = [c.item_id for c in history_candidates(["a"], {"z": 1.0, "a": 1.0})]
    assert got == ["a", "z"]


def test_earlier_sessions_extend_the_recent_items() -> None:
    got = [c.item_id for c in history_candidates(["a", "b"], earlier=["b", "x", "y"])]
    assert got == ["a", "b", "x", "y"]
    names = ["s3", "s2", "s1"]
    sessions = {"s3": ["p", "q"], "s1": [f"i{k}" for k in range(25)] + ["q"]}
    # newest session first, each newest first, each item once, 20 per session
    want = ["q", "p"] + [f"i{k}" for k in range(24, 5, -1)]
    assert earlier_items(names, sessions) == want


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_longhand_reference(seed: int) -> None:
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(30)]
    recent = rng.sample(items, 8)
    earlier = rng.sample(items, 15)
    scores = {i: rng.choice([0.5, 1.0, 3.0, 7.5]) for i in rng.sample(items, 10)}
    cats = {i: rng.choice(["a", "b", "c"]) for i in items}
    page = rng.choice(["a", "b", None])
    got = history_candidates(recent, scores, lambda i: {"categories": [cats[i]]}, page, earlier)
    assert [c.item_id for c in got] == reference(recent, scores, cats, page, earlier)


def _log(seed: int, n: int = 400) -> list[dict[str, Any]]:
    """Two visitors over 40 items, with gaps that cut sessions."""
    rng = random.Random(seed)
    ts, out = T0, []
    for k in range(n):
        ts += rng.choice([5_000, 20_000, 40 * MIN, 3 * 86_400_000 if k % 150 == 149 else 30_000])
        out.append({"event_id": f"e{k}", "type": rng.choice(["item_view"] * 5 + ["add_to_cart"]),
                    "visitor_id": rng.choice(["v1", "v2"]), "ts": ts,
                    "item": {"id": f"i{rng.randrange(40)}", "categories": [f"c{k % 3}"]}})
    return out


@pytest.mark.parametrize("seed", range(3))
def test_the_replay_twin_reads_what_the_hook_writes(seed: int) -> None:
    """The replay's `SessionTables` against the hook's session item tables, read as the route
    reads them (the newest `SESSION_ITEMS` of each of the visitor's latest sessions)."""
    bench = _bench()
    twin = bench.SessionTables()
    profiles: dict[str, Profile] = {}
    store: dict[str, tuple[dict[str, float], int]] = {}  # the hook's sets, last change
    for e in _log(seed):
        p = profiles.setdefault(e["visitor_id"], Profile())
        assert apply_event(p, e, CFG)
        pid = keys.visitor_pid(e["visitor_id"])
        t = Tables()  # a batch of one event, committed: ZADD GT, then the expiry reset
        reco_changes(e, p, t, pid)
        for key, rows in t.m.items():
            if key.startswith("kss:"):
                old = store.get(key, ({}, 0))[0]
                store[key] = ({i: max(v, old.get(i, v)) for i, v in {**old, **rows}.items()},
                              e["ts"])
        twin.learn(e, p, pid)
        names = own_session_names(pid, p)
        assert len(names) == min(4, p.session.seq)
        hook = {}
        for name in names:
            rows, changed = store.get(keys.session_items(name), ({}, 0))
            if rows and e["ts"] - changed <= SESSION_TTL_MS:
                hook[name] = [i for i, _ in sorted(rows.items(), key=lambda kv: (kv[1], kv[0]))]
        # within the tables' 2 days: the twin holds what the hook wrote, trimmed to the newest
        assert earlier_items(names, twin.read(names, e["ts"])) == earlier_items(names, hook)
        for items in twin.read(names, e["ts"]).values():
            assert len(items) <= SESSION_ITEMS + SESSION_ITEMS // 8 + 1
    # and the route's ingredient is the twin's: the same function on the same state
    p = profiles["v1"]
    pid = keys.visitor_pid("v1")
    cat = {f"i{k}": {"categories": [f"c{k % 3}"]} for k in range(40)}.get
    now = _log(seed)[-1]["ts"]
    visitor = visitor_state(p, now, CFG)
    visitor["earlier"] = earlier_items(own_session_names(pid, p),
                                       twin.read(own_session_names(pid, p), now))
    served = own_items(p.recent, visitor, p.recent[0], cat, 50)
    assert served == bench.own_history(p, pid, twin, p.recent[0], cat, CFG, now, 50)
    assert {c.item_id for c in served} >= set(p.recent[1:])
