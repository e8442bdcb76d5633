"""Forward-decayed affinities, dedupe, bounds and identity merge: pure, no servers."""

import math
import random

import pytest

from models.affinity import (
    AffinityConfig,
    Profile,
    apply_event,
    current_scores,
    merge,
    reference_scores,
    view,
)

CFG = AffinityConfig()
T0 = 1_764_000_000_000
DAY = 86_400_000


def event(i, etype="item_view", ts=T0, **item):
    item.setdefault("id", f"i{i}")
    return {"event_id": f"e{i}", "type": etype, "visitor_id": "v", "ts": ts, "item": item}


def test_scores_equal_the_decayed_sum():
    p = Profile()
    evs = [event(1, categories=["shoes/running"], brand="Acme"), event(2, "add_to_cart", T0 + DAY, categories=["shoes"])]
    for e in evs:
        apply_event(p, e, CFG)
    now = T0 + 3 * DAY
    for dim in ("category", "brand", "item"):
        got = current_scores(p, dim, now, CFG)
        want = reference_scores(evs, now, CFG, dim)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-6)
    # half-life: 14 days for categories
    s1 = current_scores(p, "category", now, CFG)["shoes"]
    s2 = current_scores(p, "category", now + 14 * DAY, CFG)["shoes"]
    assert s2 == pytest.approx(s1 / 2, rel=1e-6)


def test_ancestors_are_credited_with_a_factor():
    p = Profile()
    apply_event(p, event(1, categories=["a/b/c"]), CFG)
    s = current_scores(p, "category", T0, CFG)
    assert s == pytest.approx({"a/b/c": 1.0, "a/b": 0.5, "a": 0.25}, rel=1e-6)


def test_weights_order_view_cart_purchase():
    p = Profile()
    apply_event(p, event(1, "item_view", id="v"), CFG)
    apply_event(p, event(2, "add_to_cart", id="c"), CFG)
    apply_event(p, event(3, "purchase", id="p"), CFG)
    s = current_scores(p, "item", T0, CFG)
    assert s["v"] < s["c"] < s["p"]


def test_duplicate_event_changes_nothing():
    p = Profile()
    assert apply_event(p, event(1, brand="x"), CFG)
    before = p.snapshot()
    assert not apply_event(p, event(1, brand="x"), CFG)
    assert p.snapshot() == before
    assert p.event_count == 1


def test_clock_runs_forward_years_without_losing_precision():
    """A profile fed one event a day for ten years keeps exact scores (landmark rescales)."""
    p = Profile()
    evs = []
    for d in range(3650):
        e = event(d, ts=T0 + d * DAY, id="same", brand="b", categories=["c"])
        evs.append(e)
        apply_event(p, e, CFG)
        p = Profile.restore(p.snapshot())  # every write goes through the float32 blob
    now = T0 + 3650 * DAY
    assert p.landmark > T0 // 1000 + 3000 * 86400  # the landmark moved
    for dim in ("item", "brand", "category"):
        got = current_scores(p, dim, now, CFG)
        want = reference_scores(evs[-400:], now, CFG, dim)  # older terms are < 1e-30 of the sum
        for k in want:
            assert math.isfinite(got[k])
            assert got[k] == pytest.approx(want[k], rel=1e-5)


def test_bounded_per_dimension_lowest_pruned():
    cfg = AffinityConfig(max_keys={"category": 3, "brand": 3, "tag": 3, "item": 3})
    p = Profile()
    for i in range(10):
        for _ in range(i + 1):  # item i gets i+1 views
            apply_event(p, {**event(i), "event_id": f"e{i}-{_}"}, cfg)
    assert set(current_scores(p, "item", T0, cfg)) == {"i7", "i8", "i9"}
    assert len(p.recent) <= cfg.max_recent_items


def test_snapshot_round_trip_and_size():
    p = Profile()
    rng = random.Random(7)
    for i in range(20):
        etype = "add_to_cart" if i % 10 == 9 else "item_view"  # shopping logs are ~90 % views
        apply_event(p, event(i, etype, T0 + i * 60_000,
                             id=f"{rng.randrange(10**7)}", brand=rng.choice(["acme", "zeta"]),
                             categories=[rng.choice(["electronics/smartphone", "apparel/shoes"])]), CFG)
    blob = p.snapshot()
    q = Profile.restore(blob)
    assert q.snapshot() == blob
    assert view(q, T0, CFG) == view(p, T0, CFG)
    assert q.session == p.session and q.bought == p.bought and q.marks == p.marks
    # worst case: 20 distinct items; bench/memory.py measures real logs. Schema 2 stores each
    # item id once (the session's items overlap `recent` and the item affinities)
    assert len(blob) < 560, len(blob)


def _v1_blob(p: Profile) -> bytes:
    """What schema 1 wrote (before schema 2): every string in place, 5-byte fingerprints."""
    import hashlib

    import msgpack

    return msgpack.packb(
        [1, p.landmark, p.event_count, p.first_seen, p.last_seen, p.user_id, p.aff, p.recent,
         p.cart, p.purchased, p.types, p.traits, p.segments, p.channels, p.aliases,
         b"".join(hashlib.blake2b(f"e{i}".encode(), digest_size=5).digest() for i in range(16)),
         p.marks, p.merged, p.session.pack() if p.session.seq else None, p.bought],
        use_bin_type=True, use_single_float=True)


def test_a_schema_1_blob_still_reads_and_keeps_its_dedupe_marks():
    p = Profile()
    for i in range(16):
        apply_event(p, event(i, "purchase" if i % 5 == 4 else "item_view", T0 + i * 60_000,
                             id=f"sku-{i % 6}", brand="acme", categories=["a/b/c"]), CFG)
    p.advance(3, 41, T0 + DAY)
    old = Profile.restore(_v1_blob(p))
    assert view(old, T0, CFG) == view(Profile.restore(p.snapshot()), T0, CFG)
    assert old.session == p.session and old.bought == p.bought and old.marks == p.marks
    assert old.seen == p.seen  # the 5-byte fingerprints cut to schema 2's 4
    assert not apply_event(old, event(3, id="sku-3"), CFG)  # a resend is still a duplicate
    assert Profile.restore(old.snapshot()).snapshot() == old.snapshot()  # written as schema 4


def _v3_data(p: Profile) -> list:
    """What schema 3 wrote (before schema 4): the decimal ids as msgpack ints, the affinities as
    one string of 6-byte records (index, dimension << 6 | code, float32) in table order."""
    import re
    import struct

    from models.affinity import _front

    sess = p.session
    names = set(p.recent) | set(p.cart) | set(p.purchased) | set(p.bought)
    for t in p.aff:
        names |= set(t)
    if sess.seq:
        names |= set(sess.viewed) | set(sess.carted) | set(sess.bought)
    numk = sorted(n for n in names if re.fullmatch(r"0|[1-9][0-9]{0,17}", n))
    words = sorted(names - set(numk))
    ref = {n: i for i, n in enumerate(numk + words)}
    rec = "<HBf" if len(ref) > 256 else "<BBf"
    aff = b"".join(struct.pack(rec, ref[k], d << 6 | pairs[j], pairs[j + 1])
                   for d, t in enumerate(p.aff) for k, pairs in t.items()
                   for j in range(0, len(pairs), 2))
    last, ls = p.last_seen, p.last_seen // 1000
    return [3, p.landmark, p.event_count, last, last - p.first_seen, p.user_id,
            [int(k) for k in numk], _front(words), aff, [ref[i] for i in p.recent],
            [ref[i] for i in p.cart], [ref[i] for i in p.purchased],
            {k: [v[0], ls - v[1]] for k, v in p.types.items()}, p.traits, p.segments,
            {k: ls - v for k, v in p.channels.items()}, p.aliases, p.seen,
            {k: [o, last - ms] for k, (o, ms) in p.marks.items()}, p.merged,
            [sess.seq, sess.key, last - sess.start_ms, last - sess.last_ms, sess.events,
             [ref[i] for i in sess.viewed], [ref[i] for i in sess.carted],
             [ref[i] for i in sess.bought], int(sess.return_gap_ms)] if sess.seq else None,
            {ref[k]: [ls - t1, t1 - t0 + 1 if t0 else 0] for k, (t1, t0) in p.bought.items()}]


def _v3_blob(p: Profile) -> bytes:
    import msgpack

    return msgpack.packb(_v3_data(p), use_bin_type=True, use_single_float=True)


def _v2_blob(p: Profile) -> bytes:
    """What schema 2 wrote (before schema 3): schema 3 with the affinities as msgpack arrays."""
    import msgpack

    from models.affinity import _unfront

    data = _v3_data(p)
    ref = {n: i for i, n in enumerate([str(k) for k in data[6]] + _unfront(data[7]))}
    data[0] = 2
    data[8] = [[[ref[k] for k in table], list(table.values())] for table in p.aff]
    return msgpack.packb(data, use_bin_type=True, use_single_float=True)


def _older_profile() -> Profile:
    p = Profile()
    for i in range(16):
        apply_event(p, event(i, "purchase" if i % 5 == 4 else "item_view", T0 + i * 60_000,
                             id=f"sku-{i % 6}" if i % 3 else str(4_000_000 + i),
                             brand="acme", categories=["a/b/c"], tags=["t"]), CFG)
    p.advance(3, 41, T0 + DAY)
    return p


@pytest.mark.parametrize("old_blob", [_v2_blob, _v3_blob], ids=["schema 2", "schema 3"])
def test_schema_2_and_3_blobs_still_read_and_are_written_as_schema_4(old_blob):
    import msgpack

    p = _older_profile()
    old = Profile.restore(old_blob(p))
    assert old.snapshot() == p.snapshot()  # the same profile, now as schema 4
    assert msgpack.unpackb(old.snapshot(), strict_map_key=False)[0] == 4
    assert view(old, T0, CFG, explain=True) == view(Profile.restore(p.snapshot()), T0, CFG, explain=True)
    assert old.session == p.session and old.bought == p.bought and old.marks == p.marks
    assert old.seen == p.seen
    assert not apply_event(old, event(3, id="sku-3"), CFG)  # a resend is still a duplicate
    assert len(p.snapshot()) < len(_v3_blob(p)) < len(_v2_blob(p))


def test_schema_4_affinities_round_trip_with_more_than_256_strings():
    p = Profile(landmark=1, last_seen=T0)
    p.aff[3] = {f"i{n}": [2, 1.5, 5, 0.25 * n] for n in range(300)}  # beyond any cap: the wide form
    p.aff[0] = {"a": [0, 3.0], "a/b": [63, 0.5, 200, 0.75]}  # codes past the head's 6 bits
    p.aff[1] = {str(10**17 + n): [1, float(n)] for n in range(3)}  # 8-byte decimal ids
    q = Profile.restore(p.snapshot())
    assert q.aff == p.aff  # each key's [code, value, ...] in its order (keys: in table order)
    small = Profile(landmark=1, last_seen=T0)
    small.aff = [{"c": [1, 1.0]}, {}, {"t1": [2, 0.5], "t9": [2, 0.25]},
                 {str(n): [2, n % 1000 / 8] for n in (0, 7, 255, 70_000, 2**24 + 1)}]
    assert Profile.restore(small.snapshot()).aff == small.aff


def test_schema_4_snapshot_reuses_the_restored_string_table_and_writes_the_same_bytes():
    p = _older_profile()
    blob = p.snapshot()
    q = Profile.restore(blob)
    assert q.snapshot() == blob  # the restored table, reused as it was read
    apply_event(q, event(100, ts=T0 + DAY, id="sku-1", brand="acme", categories=["a/b/c"]), CFG)
    apply_event(p, event(100, ts=T0 + DAY, id="sku-1", brand="acme", categories=["a/b/c"]), CFG)
    fresh = Profile.restore(q.snapshot())  # the same strings: the table is reused
    fresh._table = None
    assert fresh.snapshot() == q.snapshot()  # and gives the bytes a table built anew gives
    apply_event(q, event(101, ts=T0 + DAY, id="new-item", brand="zeta", categories=["x/y"]), CFG)
    r = Profile.restore(q.snapshot())  # new strings: a new table
    assert "new-item" in r.recent and "zeta" in r.aff[1] and "x/y" in r.aff[0]
    r._table = None
    assert r.snapshot() == q.snapshot()


@pytest.mark.parametrize("blob", [
    b"", b"\x00", b"not msgpack at all", b"\x93\x04\x01",  # truncated, or not an array
    b"\x91\x09",  # an unknown schema
    b"\x92\x04\x01",  # schema 4 with too few parts
])
def test_bytes_that_are_not_a_profile_blob_are_refused_with_a_clear_error(blob):
    with pytest.raises(ValueError, match="profile"):
        Profile.restore(blob)


def test_a_corrupt_schema_4_blob_is_refused_not_half_read():
    import msgpack

    p = _older_profile()
    good = msgpack.unpackb(p.snapshot(), raw=False, strict_map_key=False)
    rng = random.Random(3)
    broken = []
    for part, bad in [(6, b"\x03\x01"), (6, b"\x09" + b"\x00" * 9), (8, [1, 2, 3]),
                      (8, [99, 0] * 4), (8, [*good[8], 7]), (8, [-1, 0, *good[8][2:]]), (9, good[9][:-1]), (9, b"\xff" + good[9][1:]),
                      (10, [250]), (22, {200: [1, 0]}), (19, "x"), (21, [1, 2])]:
        data = list(good)
        data[part] = bad
        broken.append(msgpack.packb(data, use_bin_type=True))
    for _ in range(200):  # random byte flips and cuts: refused, or read as some profile
        b = bytearray(p.snapshot())
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        broken.append(bytes(b[: rng.randrange(len(b), len(b) + 1)]))
        broken.append(p.snapshot()[: rng.randrange(len(b))])
    refused = 0
    for b in broken:
        try:
            q = Profile.restore(b)
        except ValueError as exc:
            assert "profile" in str(exc)
            refused += 1
        else:
            assert isinstance(q, Profile)
    assert refused >= 12 + 200  # every crafted one and every cut


def test_schema_2_interns_every_string_once():
    p = Profile()
    ids = ["10042", "0042", "007", "x-1", "12345678901234567890", "٣", "0"]
    for i, iid in enumerate(ids):
        apply_event(p, event(i, "purchase", T0 + i * 60_000, id=iid, categories=["a/b"],
                             brand=iid), CFG)
    q = Profile.restore(p.snapshot())
    assert q.recent == p.recent and q.purchased == p.purchased and q.bought == p.bought
    assert [set(t) for t in q.aff] == [set(t) for t in p.aff] and q.session == p.session
    assert p.snapshot().count(b"x-1") == 1  # once, though it is an item, a brand, recent, bought


def test_merge_adds_decayed_scores_and_keeps_dedupe():
    cfg = CFG
    anon, known = Profile(), Profile()
    a_events = [event(1, brand="x", ts=T0), event(2, brand="y", ts=T0 + DAY)]
    k_events = [event(3, brand="x", ts=T0 + 2 * DAY)]
    for e in a_events:
        apply_event(anon, e, cfg)
    for e in k_events:
        apply_event(known, e, cfg)
    merge(known, anon, cfg)
    now = T0 + 5 * DAY
    want = reference_scores(a_events + k_events, now, cfg, "brand")
    assert current_scores(known, "brand", now, cfg) == pytest.approx(want, rel=1e-6)
    assert known.event_count == 3
    assert known.first_seen == T0
    assert not apply_event(known, a_events[0], cfg)  # already counted before the merge


def test_explain_splits_by_event_type():
    p = Profile()
    apply_event(p, event(1, "item_view", brand="acme"), CFG)
    apply_event(p, event(2, "purchase", brand="acme"), CFG)
    row = view(p, T0, CFG, explain=True)["affinities"]["brand"][0]
    assert row["key"] == "acme"
    assert row["by_type"] == pytest.approx({"item_view": 1.0, "purchase": 5.0})
    assert row["score"] == pytest.approx(6.0)


def test_cart_and_purchase_lists():
    p = Profile()
    apply_event(p, event(1, "add_to_cart", id="a"), CFG)
    apply_event(p, event(2, "add_to_cart", id="b"), CFG)
    apply_event(p, event(3, "remove_from_cart", id="a"), CFG)
    assert p.cart == ["b"]
    apply_event(p, event(4, "purchase", id="b"), CFG)
    assert p.cart == [] and p.purchased == ["b"]


def test_redelivered_records_are_skipped_by_offset_marks():
    """However many events of one visitor a crash replays, the offset mark skips them all."""
    from engine.store.writes import Stored
    from streams.plan import plan

    evs = [{**event(i, brand="b"), "_p": 2, "_o": 100 + i, "_t": T0 + i} for i in range(100)]
    first = plan(evs[:60], {}, {}, CFG)
    (w,) = first.writes
    stored = {"v:v": Stored(b"\0\0\0\1", Profile.restore(w.profile.snapshot()))}
    again = plan(evs, {}, stored, CFG)  # the first 60 come again, beyond the 32-id ring
    assert again.duplicates == 60 and again.applied == 40
    assert again.writes[0].profile.event_count == 100
    # a recreated topic (offsets restart, later record times) is not mistaken for a replay
    fresh = [{**event(1000 + i, brand="b"), "_p": 2, "_o": i, "_t": T0 + 10_000 + i} for i in range(3)]
    assert plan(fresh, {}, stored, CFG).applied == 3


def test_every_event_of_a_record_applies_on_an_existing_profile():
    """Events of one record share an offset; advancing the mark must not skip its siblings."""
    from engine.store.writes import Stored
    from streams.plan import plan

    first = plan([{**event(0), "_p": 0, "_o": 5, "_t": T0}], {}, {}, CFG)
    stored = {"v:v": Stored(b"\0\0\0\1", Profile.restore(first.writes[0].profile.snapshot()))}
    record = [{**event(i), "_p": 0, "_o": 9, "_t": T0 + 1} for i in range(1, 5)]
    out = plan(record, {}, stored, CFG)
    assert (out.applied, out.duplicates) == (4, 0)
    assert out.writes[0].profile.event_count == 5


def test_finish_hooks_run_once_per_profile_per_batch():
    from streams.plan import plan

    calls = []

    class Hook:
        def __call__(self, event, profile, pid, out):
            out.op("INCRBY", "per-event", 1)

        def finish(self, event, profile, pid, out):
            calls.append((pid, event["event_id"], profile.event_count))
            out.op("INCRBY", "per-profile", 1)

    evs = [event(i) for i in range(5)] + [{**event(9), "visitor_id": "w"}]
    out = plan(evs, {}, {}, CFG, [Hook()])
    assert sorted(calls) == [("v:v", "e4", 5), ("v:w", "e9", 1)]
    ops = {w.pid: [o.key for o in w.ops] for w in out.writes}
    assert ops["v:v"].count("per-event") == 5 and ops["v:v"].count("per-profile") == 1


def test_profile_keeps_bounded_traits_types_and_channels():
    from models.affinity import MAX_CHANNELS, MAX_TRAITS, MAX_TYPES, Profile, apply_event, view

    cfg = AffinityConfig()
    p = Profile()
    t0 = 1_764_000_000_000
    for n in range(1000):
        apply_event(p, {"event_id": f"i{n}", "type": "identify", "visitor_id": "v", "ts": t0 + n,
                        "props": {"traits": {f"k{n}": n, "plan": "gold"}}}, cfg)
    assert len(p.traits) == MAX_TRAITS
    assert p.traits["plan"] == "gold" and p.traits["k999"] == 999 and "k0" not in p.traits
    for n in range(500):
        apply_event(p, {"event_id": f"c{n}", "type": f"custom_{n}", "visitor_id": "v",
                        "channel": f"ch{n}", "ts": t0 + 1000 * (n + 1)}, cfg)
    apply_event(p, {"event_id": "pv", "type": "page_view", "visitor_id": "v", "ts": t0 + 10**6}, cfg)
    assert len(p.types) <= MAX_TYPES and len(p.channels) == MAX_CHANNELS
    v = view(p, t0 + 10**6, cfg)
    # counts are kept: the evicted custom types are folded into "other"
    assert sum(x["count"] for x in v["types"].values()) == 1501
    assert v["types"]["identify"]["count"] == 1000 and "custom_499" in v["types"]
    assert "other" in v["types"] and "ch499" in v["channels"] and "ch0" not in v["channels"]
    blob = p.snapshot()
    assert Profile.restore(blob).traits == p.traits


def test_traits_stay_within_their_byte_budget():
    import msgpack

    from models.affinity import MAX_TRAITS_BYTES, Profile, apply_event

    p = Profile()
    for n in range(40):
        apply_event(p, {"event_id": f"i{n}", "type": "identify", "visitor_id": "v",
                        "ts": 1_764_000_000_000 + n, "props": {"traits": {f"k{n}": "x" * 1000}}},
                    AffinityConfig())
    assert len(msgpack.packb(p.traits)) <= MAX_TRAITS_BYTES and "k39" in p.traits


def test_schema_4_tables_carried_from_blob_to_blob_write_what_a_fresh_table_writes():
    """Items come and go (pruned past the caps, dropped from recent): each write, whether it
    reuses, updates or rebuilds the string table, gives the bytes a table built anew gives."""
    rng = random.Random(5)
    cfg = AffinityConfig(max_keys={"category": 3, "brand": 2, "tag": 2, "item": 3}, max_recent_items=3)
    p = Profile()
    for i in range(300):
        etype = rng.choice(["item_view", "item_view", "add_to_cart", "purchase", "remove_from_cart"])
        apply_event(p, event(i, etype, T0 + i * 60_000, id=rng.choice([str(rng.randrange(50)), f"s{rng.randrange(20)}"]),
                             brand=f"b{rng.randrange(6)}", tags=[f"t{rng.randrange(4)}"],
                             categories=[f"c{rng.randrange(3)}/d{rng.randrange(3)}"]), cfg)
        blob = p.snapshot()
        fresh = Profile.restore(blob)
        fresh._table = None
        assert fresh.snapshot() == blob, i
        q = Profile.restore(blob)
        assert q.aff == Profile.restore(blob).aff and q.recent == p.recent and q.cart == p.cart
        p = q if i % 2 else p  # half the time carry on from the restored profile


def _same_state(p, q):
    """Equal, and the tables, traits and types in the same order (what a hook iterates)."""
    assert p == q
    assert [list(t.items()) for t in p.aff] == [list(t.items()) for t in q.aff]
    assert list(p.traits.items()) == list(q.traits.items())
    assert list(p.types) == list(q.types) and p.session == q.session


def test_a_settled_profile_is_what_its_blob_restores():
    """`settle()` after `snapshot()` leaves the profile as `restore` of that blob gives it
    (float32 values, the blob's order, whole-ms session gaps, float32 traits), so the plan
    ahead (streams/applier.py) can go on with it instead of decoding what it just encoded."""
    rng = random.Random(11)
    cfg = AffinityConfig(max_keys={"category": 4, "brand": 3, "tag": 3, "item": 5}, max_recent_items=4)
    p, other = Profile(), Profile()
    ts = T0
    for i in range(400):
        ts += rng.choice([1_000, 60_000, 3_600_000, 40 * DAY if i % 97 == 0 else 5_000])
        etype = rng.choice(["item_view", "item_view", "add_to_cart", "purchase", "remove_from_cart",
                            "page_view", "identify", "my_custom", "click"])
        ev = event(i, etype, ts, id=rng.choice([str(rng.randrange(60)), f"sku-{rng.randrange(30)}"]),
                   brand=f"B{rng.randrange(7)}", tags=[f"t{rng.randrange(5)}"],
                   categories=[f"c{rng.randrange(3)}/d{rng.randrange(4)}"])
        ev["channel"] = rng.choice(["web", "app", "mail"])
        if etype == "identify":
            ev["props"] = {"traits": {f"k{rng.randrange(5)}": rng.random() * 1000,
                                      "n": rng.randrange(10), "nest": [0.1 * i, {"x": 1 / 3}]}}
        target = other if i % 7 == 0 else p
        apply_event(target, ev, cfg)
        if i % 50 == 49:
            merge(p, other, cfg)
            other = Profile()
        blob = p.snapshot()
        if i % 3:
            p.settle()
            _same_state(p, Profile.restore(blob))
            assert p.snapshot() == blob, i  # and it writes the same bytes again
            p.settle()
        else:
            p = Profile.restore(blob)  # and sometimes from the blob, as a fresh read
    with pytest.raises(ValueError):
        p.settle()  # only right after a snapshot


def test_front_coding_updated_in_place_equals_front_coding_anew():
    """`_refront` (the string table's words after a few came and went) codes what `_front` of
    the new words codes: neighbours sharing prefixes, ancestors, the first and last word."""
    from models.affinity import _front, _refront

    rng = random.Random(3)
    pool = [f"{a}{b}" for a in ("", "shoes", "shoes/run", "sku-1", "sku-12", "z") for b in
            ("", "a", "ab", "/trail", "0", "00", "9")]
    words = sorted(set(rng.sample(pool, 10)))
    for _ in range(500):
        gone = set(rng.sample(words, rng.randrange(0, min(4, len(words)) + 1)))
        added = set(rng.sample(pool, rng.randrange(0, 4))).difference(words)
        new = sorted(set(words).difference(gone).union(added))
        assert _refront(words, _front(words), new, added, gone) == _front(new), (words, new)
        words = new or sorted(set(rng.sample(pool, 5)))


def test_a_blob_with_its_words_out_of_order_gets_a_table_made_anew():
    """A table that `snapshot` would not write (words unsorted) is read as it is, and the next
    snapshot with other strings makes its table anew rather than update it in place."""
    import msgpack

    from models.affinity import _front

    p = Profile(recent=["a", "b"])
    data = msgpack.unpackb(p.snapshot(), raw=False, strict_map_key=False)
    data[7], data[10] = _front(["b", "a"]), [1, 0]  # the same recent items, the words unsorted
    q = Profile.restore(msgpack.packb(data, use_bin_type=True, use_single_float=True))
    assert q.recent == ["a", "b"]
    q.recent = ["c", "a", "b"]
    fresh = Profile(recent=["c", "a", "b"])
    assert q.snapshot() == fresh.snapshot()
    assert Profile.restore(q.snapshot()).recent == ["c", "a", "b"]
