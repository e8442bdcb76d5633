"""Shared tables aggregated per batch (engine/store/writes.py `Tables`, streams/plan.py): the same
events in one batch or in many give the same tables; a batch applied again changes nothing;
consent and tombstones keep events out of profiles and learners; the op budget holds."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from engine.settings import Settings
from engine.store import keys
from engine.store.writes import MAX_OPS_PER_EVENT, Stored, Tables, Upkeep, trim_margin
from models.affinity import AffinityConfig, Profile
from streams.hooks import activity, reco, traffic
from streams.plan import plan

CFG = AffinityConfig()
T0 = 1_767_268_800_000
HOOKS = [traffic.count_traffic, activity.record_activity, reco.record_reco]


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n events of 30 visitors over 40 items, in records of 1-3 events on 4 partitions."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    offsets = [0] * 4
    while len(out) < n:
        vid = f"v{rng.randrange(30)}"
        part = hash(vid) % 4
        for _ in range(rng.randint(1, 3)):
            etype = rng.choice(["item_view"] * 5 + ["add_to_cart", "purchase", "page_view"])
            ev: dict[str, Any] = {"event_id": f"e{len(out)}", "type": etype, "visitor_id": vid,
                                  "ts": T0 + len(out) * 1000, "channel": "web",
                                  "_p": part, "_o": offsets[part], "_t": T0}
            item = {"id": f"i{rng.randrange(40)}", "categories": [rng.choice(["a/b", "a/c", "d"])],
                    "brand": rng.choice(["x", "y"])}
            if etype in ("add_to_cart", "purchase"):
                ev["items"] = [item]
            elif etype != "page_view":
                ev["item"] = item
            out.append(ev)
        offsets[part] += 1
    return out


class Shared:
    """What Redis would hold for the shared tables (lua/commit.lua's semantics, no trims)."""

    def __init__(self) -> None:
        self.z: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.h: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.s: dict[str, dict[str, bytes]] = defaultdict(dict)

    def apply(self, t: Tables) -> None:
        for row in t.rows():
            key, kind, pairs = row[0], row[1], row[4:]
            for f, v in zip(pairs[::2], pairs[1::2], strict=True):
                if kind == "z":
                    self.z[key][f] += v
                elif kind == "h":
                    self.h[key][f] += v
                else:
                    self.s[key][f] = v

    def tables(self) -> dict[str, Any]:
        return {"z": {k: {m: pytest.approx(v) for m, v in t.items()} for k, t in self.z.items()},
                "h": {k: dict(t) for k, t in self.h.items() if any(t.values())},
                "s": {k: dict(t) for k, t in self.s.items()}}


def run(batches: list[list[dict[str, Any]]], shared: Shared | None = None,
        stored: dict[str, Stored] | None = None, marks: dict[int, dict[int, int]] | None = None
        ) -> tuple[Shared, dict[str, Stored], int, dict[int, dict[int, int]]]:
    """Plan the batches one after the other as the worker would (what a batch wrote is what
    the next one reads; shard marks advance per batch)."""
    shared = shared or Shared()
    stored = dict(stored or {})
    marks = {s: dict(m) for s, m in (marks or {}).items()}
    applied = 0
    for batch in batches:
        t = Tables(marks=marks)
        out = plan(batch, {}, stored, CFG, HOOKS, t)
        shared.apply(t)
        applied += out.applied
        for w in out.writes:
            stored[w.pid] = Stored(b"x", Profile.restore(w.profile.snapshot()))
        upto: dict[int, int] = {}
        for ev in batch:
            upto[ev["_p"]] = max(upto.get(ev["_p"], -1), ev["_o"])
        for n in {keys.shard_of_key(k) for k in t.touched()} - {None}:
            for p, o in upto.items():
                marks.setdefault(n, {})[p] = max(marks.get(n, {}).get(p, -1), o)
    return shared, stored, applied, marks


def split(evs: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    """Cut at record boundaries near the given sizes."""
    out, cur = [], []
    want = iter(sizes)
    target = next(want, len(evs))
    for i, ev in enumerate(evs):
        cur.append(ev)
        nxt = evs[i + 1] if i + 1 < len(evs) else None
        if len(cur) >= target and (nxt is None or (nxt["_p"], nxt["_o"]) != (ev["_p"], ev["_o"])):
            out.append(cur)
            cur = []
            target = next(want, len(evs))
    if cur:
        out.append(cur)
    return out


def test_the_same_events_in_one_batch_or_many_give_the_same_tables():
    evs = events(400)
    one, _, n1, _ = run([evs])
    many, _, n2, _ = run(split(evs, [1, 7, 30, 3, 50, 100, 9] * 10))
    assert n1 == n2 == 400
    assert one.tables() == many.tables()
    assert one.tables()["z"] and one.tables()["h"] and one.tables()["s"]


def test_a_batch_applied_again_changes_nothing():
    evs = events(200)
    head = split(evs, [120])[0]
    shared, stored, applied, marks = run([head])
    once = shared.tables()
    twice, _, none, _ = run([head], shared=shared, stored=stored, marks=marks)
    assert none == 0 and twice.tables() == once  # the very same batch: nothing changes
    # a crash before the offsets were committed: the broker hands the same records again,
    # and more after them
    again, _, more, _ = run([evs], shared=shared, stored=stored, marks=marks)
    assert more == len(evs) - len(head)  # the profiles' marks skip what they had ...
    assert again.tables() == run([evs])[0].tables()  # ... the shard marks what the tables had


def test_shard_marks_skip_only_what_each_shard_has():
    """A batch half committed on a cluster (some shards in, others not) is finished, not doubled."""
    evs = events(60)
    full = run([evs])[0]
    t = Tables()
    plan(evs, {}, {}, CFG, HOOKS, t)
    done = {keys.shard_of_key(k) for k in sorted(t.touched())[: len(t.touched()) // 2]}
    half = Shared()
    first = Tables()
    plan(evs, {}, {}, CFG, HOOKS, first)
    for row in first.rows(only=lambda k: keys.shard_of_key(k) in done):
        key, kind, pairs = row[0], row[1], row[4:]
        for f, v in zip(pairs[::2], pairs[1::2], strict=True):
            if kind == "z":
                half.z[key][f] += v
            elif kind == "h":
                half.h[key][f] += v
            else:
                half.s[key][f] = v
    last = {n: {p: 10**9 for p in range(4)} for n in done}
    redo = Tables(marks=last)
    plan(evs, {}, {}, CFG, HOOKS, redo)  # the profiles were not written: planned afresh
    half.apply(redo)
    assert half.tables() == full.tables()


def test_consent_declined_is_counted_in_the_traffic_only():
    ev = {"event_id": "c1", "type": "item_view", "visitor_id": "v", "ts": T0,
          "context": {"consent": False}, "item": {"id": "i1", "categories": ["a"]}}
    t = Tables()
    out = plan([ev], {}, {}, CFG, HOOKS, t)
    assert out.writes == [] and out.unstored == 1
    assert set(t.h) == {keys.live_second(T0 // 1000)} and not t.z and not t.s
    assert t.h[keys.live_second(T0 // 1000)]["t:item_view"] == 1
    # consent true (or absent) is stored as usual
    ok = plan([{**ev, "context": {"consent": True}}], {}, {}, CFG, HOOKS, Tables())
    assert ok.applied == 1


def test_an_erased_profile_is_never_written_nor_learnt_from():
    from streams.hooks.cf import OnlineCF

    cf = OnlineCF(Settings(group_id="g", cf_factors=4))
    evs = [{"event_id": f"e{n}", "type": "item_view", "visitor_id": "gone", "ts": T0 + n,
            "item": {"id": f"i{n}"}, "_p": 1, "_o": n, "_t": T0} for n in range(3)]
    stored = {"v:gone": Stored(erased=True)}
    t = Tables()
    out = plan(evs, {}, stored, CFG, [*HOOKS, cf], t)
    assert out.writes == [] and out.erased == 3 and out.applied == 0
    assert not t.z and not t.s and not cf.changed  # no table, no learner
    # an erased user: an anonymous visitor identifying as them is kept out as well
    ident = {"event_id": "id", "type": "identify", "visitor_id": "anon", "user_id": "42",
             "ts": T0}
    out = plan([ident], {}, {"u:42": Stored(erased=True)}, CFG, HOOKS, Tables())
    assert out.writes == [] and out.erased == 1


def test_one_event_cannot_spend_more_than_its_budget():
    class Greedy:
        def __call__(self, event, profile, pid, out):
            for n in range(MAX_OPS_PER_EVENT + 500):
                out.tables.hincr("kx:{k0}:greedy", f"f{n}")

    evs = [{"event_id": f"e{n}", "type": "page_view", "visitor_id": "v", "ts": T0}
           for n in range(2)]
    t = Tables()
    out = plan(evs, {}, {}, CFG, [Greedy()], t)
    assert len(t.h["kx:{k0}:greedy"]) == MAX_OPS_PER_EVENT  # each event's first 2000 count
    assert out.dropped_ops == 2 * 500


def test_a_merge_redone_after_a_crash_between_its_steps_is_not_folded_twice():
    """On a cluster the merge is two steps; the user's profile records the merge it took in."""
    anon = Profile()
    first = plan([{"event_id": "a1", "type": "item_view", "visitor_id": "phone", "ts": T0,
                   "item": {"id": "x", "brand": "acme"}}], {}, {}, CFG)
    anon = first.writes[0].profile
    stored = {"v:phone": Stored(b"\0\0\0\7", anon)}
    ident = {"event_id": "id1", "type": "identify", "visitor_id": "phone", "user_id": "u1",
             "ts": T0 + 5, "_p": 0, "_o": 3, "_t": T0}
    merged = plan([ident], {}, stored, CFG)
    (w,) = merged.writes
    assert w.pid == "u:u1" and w.profile.event_count == 2 and w.deletes == [("v:phone", b"\0\0\0\7")]
    # step one landed (the user's profile), the crash came before step two (alias, delete):
    # the identify event comes again, the anonymous profile is still there, unchanged
    stored["u:u1"] = Stored(b"\0\0\0\1", Profile.restore(w.profile.snapshot()))
    redo = plan([ident], {}, stored, CFG)
    (w2,) = redo.writes
    assert w2.profile.event_count == 2  # not 3: the anonymous profile is not folded again
    assert w2.deletes == [("v:phone", b"\0\0\0\7")] and w2.aliases == [("phone", "u:u1")]
    assert redo.applied == 0 and redo.duplicates == 1


class Script:
    """lua/commit.lua's shared-table steps on a model: the increments; where the row asks for it
    (a cap), a size check that trims to the cap and returns the size; where it asks for it (a
    ttl), the expiry."""

    def __init__(self) -> None:
        self.z: dict[str, dict[str, float]] = defaultdict(dict)
        self.expires: dict[str, int] = {}  # key -> when it expires (ms)
        self.checks = 0
        self.expiries = 0

    def commit(self, rows: list[list[Any]], now: int) -> list[int]:
        sizes = []
        for row in rows:
            key, kind, cap, ttl, pairs = row[0], row[1], row[2], row[3], row[4:]
            t = self.z[key]
            for f, v in zip(pairs[::2], pairs[1::2], strict=True):
                t[f] = t.get(f, 0.0) + v if kind == "z" else max(t.get(f, v), v)
            if cap:
                self.checks += 1
                for m in sorted(t, key=t.__getitem__)[:max(0, len(t) - cap)]:
                    del t[m]
                sizes.append(len(t))
            if ttl:
                self.expiries += 1
                self.expires[key] = now + ttl
        return sizes


def bounded_rows(rng: random.Random, key: str, cap: int, ttl: int, fresh: list[int]
                 ) -> list[list[Any]]:
    """One batch's row for a capped table: a few members, new ones among them."""
    row: list[Any] = [key, "z", cap, ttl]
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.6:
            fresh[0] += 1
            row += (f"m{fresh[0]}", 1.0)
        else:
            row += (f"m{rng.randrange(max(1, fresh[0]))}", 1.0)
    return [row]


@pytest.mark.parametrize("writers", [1, 2, 3])
def test_a_bounded_table_keeps_its_bound_with_size_checks_only_when_due(writers):
    """Each writer checks a table's size only once its own additions reach its allowance, yet
    after every commit the table holds at most cap + margin, as when every batch checked."""
    rng = random.Random(writers)
    cap, key = 80, "kt:{1}:test"
    script = Script()
    upkeeps = [Upkeep() for _ in range(writers)]
    share = 1.0 / writers
    fresh = [0]
    batches, peak = 600, 0
    for n in range(batches):
        u = rng.choice(upkeeps)
        rows = bounded_rows(rng, key, cap, 0, fresh)
        pending = u.plan(rows, n, share)
        u.done(pending, script.commit(rows, n), share)
        peak = max(peak, len(script.z[key]))
        assert len(script.z[key]) <= cap + trim_margin(cap)
    assert peak > cap  # the cap was passed
    assert script.checks < batches * (0.35 if writers == 1 else 0.8)  # not every batch checked


def test_a_lone_writer_checks_a_small_table_rarely():
    """One writer (share 1) knows the size its last check returned: a table far below its cap
    is checked once, then not until it may have reached cap + margin."""
    rng = random.Random(3)
    script, u, fresh = Script(), Upkeep(), [0]
    for n in range(50):
        rows = bounded_rows(rng, "kt:{1}:small", 1000, 0, fresh)
        u.done(u.plan(rows, n), script.commit(rows, n))
    assert script.checks == 1


def test_an_expiry_is_set_the_first_time_then_once_its_refresh_passed():
    ttl = 16_000  # refresh: ttl / 16 = 1 s
    script, u = Script(), Upkeep()
    key = "kx:{2}:second"
    at = list(range(0, 10_000, 100))
    for now in at:
        rows: list[list[Any]] = [[key, "h", 0, ttl, "applied", 1]]
        u.done(u.plan(rows, now), script.commit(rows, now))
        # the table always outlives its last change by at least ttl - refresh
        assert script.expires[key] >= now + ttl - ttl // 16
    assert script.expiries == 10  # at 0 s, 1 s, ... 9 s: not on each of the 100 batches
    other: list[list[Any]] = [["kx:{2}:other", "h", 0, ttl, "applied", 1]]
    u.plan(other, 9_950)
    assert other[0][3] == ttl  # a key first seen: its expiry is set


def test_a_long_ttl_is_refreshed_at_least_every_minute():
    u = Upkeep()
    day = 86_400_000
    rows: list[list[Any]] = [["kt:{1}:x", "z", 0, day, "a", 1.0]]
    u.done(u.plan(rows, 0), [])
    rows = [["kt:{1}:x", "z", 0, day, "a", 1.0]]
    u.plan(rows, Upkeep.REFRESH_MS - 1)
    assert rows[0][3] == 0
    rows = [["kt:{1}:x", "z", 0, day, "a", 1.0]]
    u.plan(rows, Upkeep.REFRESH_MS)
    assert rows[0][3] == day


def test_steps_of_a_commit_not_in_are_due_again_after_forget():
    """Steps left out are due again once the store forgets (a commit refused, lost or failed:
    engine/store/profiles.py calls `forget`; also when Redis lost writes)."""
    u = Upkeep()
    first: list[list[Any]] = [["kt:{1}:a", "z", 10, 5_000, "m", 1.0]]
    assert u.plan(first, 0) == [("kt:{1}:a", 10)]
    assert first[0][2:4] == [10, 5_000]  # first seen: both steps
    u.done([("kt:{1}:a", 10)], [1])
    later: list[list[Any]] = [["kt:{1}:a", "z", 10, 5_000, "m", 1.0]]
    assert u.plan(later, 20) == []
    assert later[0][2:4] == [0, 0]  # neither is due
    u.forget()
    last: list[list[Any]] = [["kt:{1}:a", "z", 10, 5_000, "m", 1.0]]
    u.plan(last, 30)
    assert last[0][2:4] == [10, 5_000]


def test_the_store_forgets_the_upkeep_of_a_commit_not_in():
    from engine.store.profiles import ProfileStore

    store = ProfileStore.__new__(ProfileStore)
    store.upkeep = Upkeep()
    store.upkeep.plan([["kt:{1}:a", "z", 10, 5_000, "m", 1.0]], 0)
    assert len(store.upkeep) > 0

    class Fences:
        def advanced(self, entries: Any) -> None:
            raise AssertionError("a refused commit advances no fence")

    store.fences = Fences()  # type: ignore[assignment]
    from engine.store.profiles import _Call
    res = store._result_one([0, [1], []], [], 1, _Call())
    assert not res.ok and len(store.upkeep) == 0


def test_upkeep_changes_no_increment_and_the_batching_still_does_not_matter():
    """Only the cap and ttl fields of a row change: the same events in one batch or many still
    give the same tables, through an `Upkeep` as the store uses it."""
    evs = events(300, seed=4)

    def through_upkeep(batches: list[list[dict[str, Any]]]) -> Shared:
        shared, u, stored = Shared(), Upkeep(), {}
        marks: dict[int, dict[int, int]] = {}
        for k, batch in enumerate(batches):
            t = Tables(marks=marks)
            out = plan(batch, {}, stored, CFG, HOOKS, t)
            rows = t.rows()
            before = [r[:2] + r[4:] for r in rows]
            u.plan(rows, k * 10)
            assert [r[:2] + r[4:] for r in rows] == before
            shared.apply(t)
            for w in out.writes:
                stored[w.pid] = Stored(b"x", Profile.restore(w.profile.snapshot()))
        return shared

    assert through_upkeep([evs]).tables() == through_upkeep(split(evs, [5, 40, 2] * 20)).tables()


def test_a_profiles_timeline_trim_and_expiry_come_once_after_all_its_pushes():
    """The activity hook adds its LTRIM and PEXPIRE once per profile per batch: the commit's
    ops (coalesced) are the same as when each event added them."""
    from engine.store.writes import coalesce

    vid = "v-timeline"
    evs = [{"event_id": f"t{i}", "type": "page_view", "visitor_id": vid, "ts": T0 + i * 1000,
            "channel": "web", "_p": 0, "_o": i, "_t": T0} for i in range(5)]
    out = plan(evs, {}, {}, CFG, [activity.record_activity], Tables())
    (w,) = out.writes
    ops = coalesce(w.ops)
    key = keys.activity(w.pid)
    assert [o.command for o in ops] == ["LPUSH", "LTRIM", "PEXPIRE"]
    assert all(o.key == key for o in ops) and len(ops[0].args) == 5
