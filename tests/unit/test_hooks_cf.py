"""The online-CF hook (streams/hooks/cf.py) and serving from its exported vectors."""

from __future__ import annotations

import struct

import numpy as np

from engine.settings import Settings
from engine.store import keys
from engine.store.writes import Tables, Write
from models.affinity import AffinityConfig, Profile
from models.reco.cf import OnlineMF, score_exported
from streams.hooks.cf import OnlineCF
from streams.plan import DECISIONS_MARK_BASE, plan

SETTINGS = Settings(group_id="g", cf_factors=8)


def view(vid: str, n: int, iid: str, p: int = 1, etype: str = "item_view") -> dict:
    return {"event_id": f"{vid}-{n}", "type": etype, "visitor_id": vid, "ts": 1_700_000_000_000 + n,
            "item": {"id": iid}, "_p": p, "_o": n, "_t": 1_700_000_000_000 + n}


def _write(pid: str, prof: Profile) -> Write:
    return Write(pid, b"", prof, tables=Tables())


def test_learns_per_partition_and_writes_the_vectors_once_per_profile():
    cf = OnlineCF(SETTINGS)
    prof = Profile()
    w = _write("v:x", prof)
    for n, iid in enumerate(["a", "b", "a", "c"]):
        cf(view("x", n, iid), prof, "v:x", w)  # learnt; written at finish
    assert not w.ops and not w.tables.s
    cf.finish(view("x", 3, "c"), prof, "v:x", w)
    assert [(o.command, o.key) for o in w.ops] == [("SET", keys.cf_visitor("v:x"))]
    model = cf.models[1]
    value, px, ttl = w.ops[0].args
    assert struct.unpack("<H", value[:2]) == (1,) and value[2:] == model.export_user("v:x")
    assert (px, ttl) == ("PX", SETTINGS.profile_ttl_ms)
    fields = w.tables.s[keys.cf_items("g", 1)]
    assert set(fields) == {"a", "b", "c"}  # positives and the negatives drawn among them
    assert all(fields[i] == model.export_item(i) for i in fields)
    again = _write("v:x", prof)
    cf.finish(view("x", 3, "c"), prof, "v:x", again)
    assert not again.ops and not again.tables.s  # nothing pending any more
    assert cf.changed == {1} and set(cf.models) == {1}


def test_decisions_records_and_other_types_teach_nothing():
    cf = OnlineCF(SETTINGS)
    prof = Profile()
    w = _write("v:x", prof)
    cf(view("x", 1, "a", p=DECISIONS_MARK_BASE + 1), prof, "v:x", w)
    cf({**view("x", 2, "a"), "type": "page_view"}, prof, "v:x", w)
    cf.finish(view("x", 2, "a"), prof, "v:x", w)
    assert not w.ops and not w.tables.s
    assert not cf.changed


def test_the_hook_runs_in_the_planner_with_the_merged_profile_id():
    cf = OnlineCF(SETTINGS)
    events = [view("x", 1, "a"), view("x", 2, "b"),
              {**view("x", 3, "b"), "type": "identify", "user_id": "u1"}, view("x", 4, "c")]
    out = plan(events, {}, {}, AffinityConfig(), [cf])
    ops = [(o.command, o.key) for w in out.writes for o in w.ops]
    assert ("SET", keys.cf_visitor("u:u1")) in ops  # the known user's vector after the merge
    assert cf.models[1].export_user("u:u1") is not None


def test_served_scores_equal_the_model_scores():
    model = OnlineMF(n_factors=8, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(400):
        model.learn_one({"type": "item_view", "visitor_id": f"v{rng.integers(20)}",
                         "item": {"id": f"i{rng.integers(30)}"}})
    ids = [f"i{k}" for k in range(35)]  # i30.. i34 unknown: no score
    for vid in ("v3", "nobody"):
        want = model.score(vid, ids)
        got = score_exported(model.export_user(vid), {i: model.export_item(i) for i in ids})
        assert set(got) == set(want)
        assert all(abs(got[i] - want[i]) < 1e-5 for i in want)


def test_score_exported_skips_vectors_of_another_width():
    model = OnlineMF(n_factors=4)
    model.learn_one({"type": "item_view", "visitor_id": "v", "item": {"id": "a"}})
    other = OnlineMF(n_factors=6)
    other.learn_one({"type": "item_view", "visitor_id": "v", "item": {"id": "b"}})
    got = score_exported(model.export_user("v"), {"a": model.export_item("a"),
                                                  "b": other.export_item("b"), "c": None})
    assert list(got) == ["a"]
