"""The online path's pure parts: hook ops, catalog validation and records, recipe inputs."""

from __future__ import annotations

import pytest

from engine.logic.catalog import (
    ItemError,
    _csv_row,
    from_event_item,
    validate_item,
    validate_items,
)
from engine.store import keys
from engine.store.catalog import decode_hash, event_fields
from engine.store.writes import Tables
from models.affinity import AffinityConfig, Profile, apply_event
from models.reco.online import history_candidates, neighbour_candidates, seed_weights, visitor_state
from streams.hooks.reco import (
    CAPS,
    CO_BUY_WINDOW,
    CO_VIEW_WINDOW,
    ITEM_TTL_MS,
    MAX_ITEMS,
    reco_changes,
)

CFG = AffinityConfig()
T0 = 1_700_000_000_000


def ev(n: int, iid: str, etype: str = "item_view", **item):
    return {"event_id": f"e{n}", "type": etype, "visitor_id": "v", "ts": T0 + n * 1000,
            "item": {"id": iid, **item}}


def run(events):
    """Each event's table changes (a Tables of its own)."""
    p = Profile()
    out = []
    for e in events:
        assert apply_event(p, e, CFG)
        t = Tables()
        reco_changes(e, p, t)
        out.append(t)
    return p, out


def test_view_changes_pair_with_recent_items_both_ways_and_are_bounded():
    _, changes = run([ev(1, "a"), ev(2, "b"), ev(3, "c", categories=["Shoes/Run"], brand="Acme")])
    last = changes[-1]
    unit = keys.NEIGHBOUR_UNIT  # weights 1/d, as integers (keys.NEIGHBOUR_UNIT)
    assert last.z[keys.neighbours("v", "c")] == {"b": unit, "a": unit // 2}
    assert last.z[keys.neighbours("v", "a")] == {"c": unit // 2}
    assert all(last.zcfg[k] == (CAPS["neighbours"], ITEM_TTL_MS) for k in last.z
               if k.startswith("kn:"))
    cats = {k for k in last.z if k.startswith("ktc:")}
    assert any(k.endswith(":shoes") for k in cats) and any(k.endswith(":shoes/run") for k in cats)
    assert set(last.s[keys.catalog_item("c")]) == {"e.categories", "e.brand"}
    assert last.scfg[keys.catalog_item("c")] == (ITEM_TTL_MS, "c")  # unless curated
    assert last.z[keys.popularity(keys.shard("c"))] == {"c": 1.0}


def test_every_pair_weight_is_a_whole_number_of_the_tables_unit():
    """1/d for each distance of every window, as an integer (keys.NEIGHBOUR_UNIT): so the
    neighbour tables' sums stay integers, which a listpack keeps (and increments) cheaply."""
    from models.reco.nextitem import NEXT_ITEM_WINDOW

    for d in range(1, max(CO_VIEW_WINDOW, CO_BUY_WINDOW, NEXT_ITEM_WINDOW) + 1):
        assert keys.NEIGHBOUR_UNIT % d == 0


def test_cart_and_purchase_pair_for_co_buy_and_page_views_count_nothing():
    _, changes = run([ev(1, "a", "add_to_cart"), ev(2, "b", "add_to_cart")])
    assert changes[-1].z[keys.neighbours("b", "b")] == {"a": keys.NEIGHBOUR_UNIT}
    page = {"event_id": "p", "type": "page_view", "visitor_id": "v", "ts": T0}
    t = Tables()
    reco_changes(page, Profile(), t)
    assert len(t) == 0


def test_a_huge_event_changes_a_bounded_number_of_table_entries():
    lines = [{"id": f"i{n}", "categories": ["/".join(f"c{d}" for d in range(40))] * 32,
              "brand": "b"} for n in range(200)]
    e = {"event_id": "big", "type": "purchase", "visitor_id": "v", "ts": T0, "items": lines}
    p = Profile()
    p.recent = [f"r{n}" for n in range(8)]
    p.purchased = [f"r{n}" for n in range(10)]
    t = Tables()
    reco_changes(e, p, t)
    assert len(t) <= 2000 and t.dropped == 0
    assert len(t.s) == MAX_ITEMS  # the catalog fields of the first MAX_ITEMS lines only


def test_event_fields_merge_and_curated_wins():
    rec = from_event_item({"id": "x", "name": "X", "brand": "ACME", "categories": ["/A/B/"]})
    assert rec == {"id": "x", "name": "X", "brand": "acme", "categories": ["a/b"]}
    assert from_event_item({"id": "x"}) is None
    h = dict(event_fields(rec))
    h.update(event_fields({"id": "x", "price": 3.0}))
    got = decode_hash("x", h)
    assert got == {"id": "x", "name": "X", "brand": "acme", "categories": ["a/b"], "price": 3.0}
    from engine.store.catalog import pack

    h[b"c"] = pack({"id": "x", "name": "Curated"})
    assert decode_hash("x", h)["name"] == "Curated"
    assert decode_hash("x", {}) is None


@pytest.mark.parametrize("raw, field", [
    ({"price": 1}, "id"),
    ({"id": "a", "price": -1}, "price"),
    ({"id": "a", "currency": "eur"}, "currency"),
    ({"id": "a", "url": "ftp://x"}, "url"),
    ({"id": "a", "colour": "red"}, "colour"),
    ({"id": "a", "created_at": "2026-01-01T00:00:00"}, "created_at"),
    ({"id": "a", "categories": ["a//b"]}, "categories[0]"),
    ({"id": "a", "in_stock": "yes"}, "in_stock"),
])
def test_item_errors_name_the_field(raw, field):
    with pytest.raises(ItemError) as exc:
        validate_item(raw)
    assert exc.value.field == field


def test_valid_items_are_normalised():
    good, bad = validate_items([{"id": "a", "brand": " Acme ", "categories": ["Shoes/Run/"],
                                 "created_at": "2026-01-01T00:00:00Z"}, "nope"])
    assert good == [{"id": "a", "brand": "acme", "categories": ["shoes/run"],
                     "created_at": 1767225600000}]
    assert bad == [{"index": 1, "id": None, "field": "item", "reason": "must be an object"}]


def test_csv_rows_split_lists_and_keep_free_columns_as_attributes():
    raw = _csv_row({"id": "a", "price": "9.5", "categories": "x/y|z", "in_stock": "false",
                    "color": "red", "tags": ""})
    assert raw == {"id": "a", "price": 9.5, "categories": ["x/y", "z"], "in_stock": False,
                   "attributes": {"color": "red"}}
    assert validate_item(raw)["attributes"] == {"color": "red"}


def test_seeds_neighbours_and_history():
    assert seed_weights("p", ["a", "b"]) == {"p": 1.0, "a": 0.7, "b": pytest.approx(0.49)}
    assert seed_weights(None, ["a", "b"]) == {"a": 1.0, "b": 0.7}
    tables = {"a": [("x", 4.0), ("y", 4.0)], "b": [("x", 1.0)]}
    got = neighbour_candidates({"a": 1.0, "b": 0.5}, tables, {"y": 16.0, "x": 4.0}, 10)
    assert [(c.item_id, c.via) for c in got] == [("x", "a"), ("y", "a")]
    assert got[0].score == pytest.approx(4 / 2 + 0.5 / 2)
    assert [c.item_id for c in history_candidates(["a", "b", "a"])] == ["a", "b"]


def test_visitor_state_from_a_profile():
    p, _ = run([ev(1, "a", categories=["shoes"], brand="Acme"), ev(2, "b", "add_to_cart")])
    v = visitor_state(p, T0 + 5000, CFG)
    assert [i for i, _ in v["recent"]] == ["b", "a"] and v["cart"] == ["b"]
    assert list(v["categories"]) == ["shoes"] and list(v["brands"]) == ["acme"]
    assert visitor_state(None, T0, CFG)["recent"] == []


def test_next_item_ops_are_directed_and_match_the_in_process_learner():
    from models.reco.nextitem import NEXT_ITEM_WINDOW, NextItem

    seq = ["a", "b", "c", "b", "d", "a", "e", "e", "f", "g", "c"]
    types = ["item_view", "item_view", "add_to_cart", "item_view", "favorite", "purchase",
             "item_view", "item_view", "item_view", "page_view", "item_view"]
    events = []
    for n, (iid, t) in enumerate(zip(seq, types, strict=True)):
        e = ev(n, iid, t)
        if t == "page_view":
            del e["item"]
        events.append(e)
    _, changes = run(events)
    online: dict[str, dict[str, float]] = {}
    for t in changes:
        for key, table in t.z.items():
            if key.startswith("kn:") and key.split(":")[2] == "t":
                dst = online.setdefault(key.split(":", 3)[3], {})
                for m, v in table.items():
                    dst[m] = dst.get(m, 0.0) + v
    first = changes[2].z  # c after b, a
    assert first[keys.neighbours("t", "b")]["c"] == keys.NEIGHBOUR_UNIT
    assert first[keys.neighbours("t", "a")]["c"] == keys.NEIGHBOUR_UNIT // 2
    assert keys.neighbours("t", "c") not in first  # directed: no c -> b
    model = NextItem(max_neighbours=1000)
    for e in events:
        model.learn_one(e)
    assert online.keys() == model._neigh.keys()
    for a, row in online.items():  # the same weights, in the tables' integer unit
        assert {b: v / keys.NEIGHBOUR_UNIT for b, v in row.items()} == pytest.approx(model._neigh[a])
    assert model.window == NEXT_ITEM_WINDOW


def _state(t: Tables) -> tuple:
    return (t.z, t.zcfg, t.m, t.mcfg, t.h, t.hcfg, t.s, t.scfg, t.spent, t.ops, t.dropped)


def test_direct_changes_equal_the_changes_made_one_call_at_a_time():
    """`reco_changes` adds an event's changes straight to the tables when its budget allows;
    that gives exactly (the same float sums) what `Tables`' methods give, one call per change."""
    import random

    from streams.hooks import reco

    rng = random.Random(5)
    types = ["item_view"] * 5 + ["favorite", "add_to_cart", "purchase", "page_view"]
    p = Profile()
    direct, per_call = Tables(), Tables()
    for n in range(600):
        etype = rng.choice(types)
        items = [{"id": f"i{rng.randrange(60)}", "price": float(rng.randrange(3)),
                  "categories": [rng.choice(["a/b", "a/c/d", "e", "F/G"])][: rng.randrange(2)],
                  "brand": rng.choice(["x", "y", None])} for _ in range(rng.choice([1, 1, 3]))]
        e = {"event_id": f"e{n}", "type": etype, "visitor_id": "v",
             "ts": T0 + n * 97_000 + rng.randrange(1000)}
        if etype in ("add_to_cart", "purchase"):
            e["items"] = items
        elif etype != "page_view":
            e["item"] = items[0]
        assert apply_event(p, e, CFG)
        spent = rng.randrange(5)  # what earlier hooks spent
        for t in (direct, per_call):
            t.begin(0, n)
            t.spent = spent
        reco_changes(e, p, direct, "v:v")
        found = reco.event_items(e)[: reco.MAX_ITEMS]
        if found:
            reco._per_call(per_call, etype, int(e["ts"]), [str(it["id"]) for it in found],
                           [reco._item_facts(it) for it in found], p, "v:v")
        assert _state(direct) == _state(per_call)
    assert direct.z and direct.s and direct.h and direct.m


def test_the_bound_holds_for_a_maximal_event():
    from streams.hooks import reco

    lines = [{"id": f"i{n}", "name": "n", "price": 1.0, "tags": ["t"], "brand": "b",
              "categories": ["/".join(f"c{k}{d}" for d in range(40)) for k in range(8)]}
             for n in range(200)]
    p = Profile()
    p.recent = [f"r{n}" for n in range(20)]
    p.cart = [f"c{n}" for n in range(20)]
    p.purchased = [f"r{n}" for n in range(20)]
    for it in lines:
        p.bought[it["id"]] = [T0 // 1000, T0 // 1000 - 86_400]
    p.session.seq = 1
    t = Tables()
    found = lines[: reco.MAX_ITEMS]
    reco._per_call(t, "purchase", T0, [it["id"] for it in found],
                   [reco._item_facts(it) for it in found], p, "v:v")
    assert t.dropped == 0 and 0 < t.ops <= reco.most_ops(len(found)) <= 2000


def test_an_items_table_keys_at_once_are_its_keys():
    for iid in ("a", "sku-123", "é/x"):
        assert keys.item_tables(iid) == (
            keys.neighbours("v", iid), keys.neighbours("b", iid), keys.neighbours("t", iid),
            keys.catalog_item(iid), keys.popularity(keys.shard(iid)), keys.session_index(iid))
