"""Behaviour of each recommendation learner on small hand-made event streams."""

from __future__ import annotations

from typing import Any

import pytest

from models.reco import CO_BUY_TYPES, Affinity, CoOccurrence, History, OnlineMF, Trending
from models.reco.base import ForwardDecay

H = 3_600_000  # one hour in ms


def ev(vid: str, iid: str, ts: int, etype: str = "item_view", **item: Any) -> dict[str, Any]:
    return {
        "event_id": f"{vid}{iid}{ts}",
        "type": etype,
        "visitor_id": vid,
        "ts": ts,
        "item": {"id": iid, **item},
    }


def test_forward_decay_rescales_before_overflow() -> None:
    decay = ForwardDecay(half_life_s=1.0)
    stored, factor = decay.weight(1.0, 0)
    assert (stored, factor) == (1.0, None)
    stored, factor = decay.weight(1.0, 200_000)  # 200 half-lives later
    assert factor is not None and factor < 1e-50
    assert decay.landmark_ms == 200_000 and stored == 1.0


def test_trending_decays_and_rescales() -> None:
    model = Trending(half_life_s=3600)
    for k in range(3):
        model.learn_one(ev("v", "old", k, categories=["a/b"]))
    model.learn_one(ev("v", "new", 2 * H, categories=["a/c"]))
    assert [c.item_id for c in model.recommend(2)] == ["new", "old"]  # 1 > 3/4
    assert model.score("old", 2 * H) == pytest.approx(0.75, rel=1e-6)
    assert [c.item_id for c in model.recommend(5, category="a/b")] == ["old"]
    assert [c.item_id for c in model.recommend(5, category="a")] == ["new", "old"]
    model.learn_one(ev("v", "new", 1000 * H))  # forces a landmark move
    assert model.score("new", 1000 * H) == pytest.approx(1.0, rel=1e-6)


def test_trending_weights_purchases_more() -> None:
    model = Trending(half_life_s=None)
    model.learn_one(ev("v", "viewed", 0))
    model.learn_one(ev("v", "viewed", 1))
    model.learn_one(ev("v", "bought", 2, "purchase"))
    assert model.recommend(1)[0] == ("bought", 5.0, "")


def test_cooccurrence_neighbours_and_inverse_popularity() -> None:
    model = CoOccurrence(window=3, popularity_exponent=1.0)
    for vid in "abc":
        model.learn_one(ev(vid, "phone", 0))
        model.learn_one(ev(vid, "case", 1))
    model.learn_one(ev("d", "phone", 0))
    model.learn_one(ev("d", "charger", 1))
    for vid in "efgh":
        model.learn_one(ev(vid, "case", 2))
    top = model.neighbours("phone", 5)
    assert [c.item_id for c in top] == ["charger", "case"]  # 1/1 > 3/7
    assert top[0].via == "phone"
    plain = CoOccurrence(window=3, popularity_exponent=0.0)
    for vid in "abc":
        plain.learn_one(ev(vid, "phone", 0))
        plain.learn_one(ev(vid, "case", 1))
    assert plain.recommend("a", 5)[0].item_id == "phone"


def test_cooccurrence_respects_window_and_types() -> None:
    model = CoOccurrence(CO_BUY_TYPES, window=5, window_s=60)
    model.learn_one(ev("v", "x", 0, "add_to_cart"))
    model.learn_one(ev("v", "y", 1, "item_view"))  # not a co-buy type
    model.learn_one(ev("v", "z", 120_000, "purchase"))  # too late after x
    assert model.neighbours("x") == [] and model.neighbours("z") == []


def test_history_recency_cart_and_purchases() -> None:
    model = History(half_life_s=60)
    model.learn_one(ev("v", "a", 0))
    model.learn_one(ev("v", "b", 1_000, "add_to_cart"))
    model.learn_one(ev("v", "c", 2_000, "add_to_cart"))
    model.learn_one(ev("v", "a", 3_000))
    model.learn_one({**ev("v", "c", 4_000, "remove_from_cart")})
    assert model.recent("v") == [("a", 3_000), ("c", 2_000), ("b", 1_000)]
    assert model.in_cart("v") == ["b"]
    model.learn_one(
        {
            "event_id": "p",
            "type": "purchase",
            "visitor_id": "v",
            "ts": 5_000,
            "items": [{"id": "b", "quantity": 1}],
        }
    )
    assert model.in_cart("v") == [] and model.purchased("v") == ["b"]
    assert model.recommend("v", 1, exclude={"b"})[0].item_id in {"a", "c"}


def test_affinity_top_keys_price_and_items() -> None:
    model = Affinity(half_life_s=None)
    model.learn_one(ev("w", "s1", 0, categories=["shoes"], brand="acme", price=50.0))
    model.learn_one(ev("w", "s2", 0, categories=["shoes"], brand="acme", price=50.0))
    model.learn_one(ev("w", "s2", 0, categories=["shoes"], brand="acme", price=50.0))
    model.learn_one(ev("v", "s1", 1, "add_to_cart", categories=["shoes"], brand="acme", price=40.0))
    model.learn_one(ev("v", "t1", 2, categories=["tops"], brand="zed", price=10.0))
    assert model.top_categories("v") == [("shoes", 0.75), ("tops", 0.25)]
    assert model.top_brands("v")[0] == ("acme", 0.75)
    assert 10.0 < model.typical_price("v") < 40.0  # type: ignore[operator]
    recs = model.recommend("v", 3, exclude={"s1"})
    assert recs[0].item_id == "s2" and recs[0].via in {"shoes", "acme"}
    assert model.recommend("nobody") == []


def test_cf_learns_to_rank_a_visitor_item_above_others() -> None:
    model = OnlineMF(n_factors=8, lr=0.1, n_negatives=3, seed=1)
    ts = 0
    for _ in range(60):
        for vid, items in (("v1", ["a", "b"]), ("v2", ["c", "d"]), ("v3", ["a", "b"])):
            for iid in items:
                ts += 1
                model.learn_one(ev(vid, iid, ts))
    scores = model.score("v1", ["a", "b", "c", "d", "unknown"])
    assert set(scores) == {"a", "b", "c", "d"}
    assert min(scores["a"], scores["b"]) > max(scores["c"], scores["d"])
    assert [c.item_id for c in model.recommend("v2", 2, candidates=["a", "c", "d"])] in (
        ["c", "d"],
        ["d", "c"],
    )


def test_next_item_is_directed_windowed_and_popularity_weighted() -> None:
    from models.reco import NextItem

    model = NextItem(window=2, popularity_exponent=0.0)
    for vid in "abc":
        model.learn_one(ev(vid, "phone", 0))
        model.learn_one(ev(vid, "case", 1))
    model.learn_one(ev("d", "phone", 0))
    model.learn_one(ev("d", "charger", 1))
    model.learn_one(ev("d", "cable", 2))
    model.learn_one(ev("d", "ad", 3, "page_view"))  # no item transition
    top = model.neighbours("phone", 5)
    assert [(c.item_id, c.score) for c in top] == [("case", 3.0), ("charger", 1.0), ("cable", 0.5)]
    assert top[0].via == "phone"
    assert model.neighbours("case") == []  # directed: nothing was viewed after case
    assert [c.item_id for c in model.neighbours("charger")] == ["cable"]
    model.learn_one(ev("d", "phone", 4, "favorite"))  # counts popularity, not a transition
    assert model.neighbours("cable") == []
    assert model.recent("d") == ["cable", "charger", "phone"]
    weighted = NextItem(window=2, popularity_exponent=1.0)
    for vid in "abc":
        weighted.learn_one(ev(vid, "phone", 0))
        weighted.learn_one(ev(vid, "case", 1))
    weighted.learn_one(ev("e", "case", 0))
    weighted.learn_one(ev("d", "phone", 0))
    weighted.learn_one(ev("d", "charger", 1))
    assert [c.item_id for c in weighted.neighbours("phone")] == ["charger", "case"]  # 1/1 > 3/4
    assert weighted.recommend("d", 5)[0].item_id == "charger"


def test_cf_learn_many_draws_what_learn_one_draws_and_learns_to_rank() -> None:
    one = OnlineMF(n_factors=8, lr=0.1, n_negatives=3, max_items=6, seed=1)
    many = OnlineMF(n_factors=8, lr=0.1, n_negatives=3, max_items=6, seed=1)
    evs = [ev(vid, iid, ts) for ts in range(60)
           for vid, items in (("v1", ["a", "b"]), ("v2", ["c", "d"]), ("v3", ["a", "b"]))
           for iid in items]
    evs += [ev("v4", f"x{n}", 1000 + n) for n in range(8)]  # past max_items: the oldest dropped
    want = [one.learn_one(e) for e in evs]
    got = [t for k in range(0, len(evs), 50)
           for t in many.learn_many([(e, e["visitor_id"]) for e in evs[k:k + 50]])]
    assert got == want and many._rng == one._rng and many.item_ids() == one.item_ids()
    again = OnlineMF(n_factors=8, lr=0.1, n_negatives=3, seed=1)
    for k in range(0, len(evs) - 8, 30):
        again.learn_many([(e, e["visitor_id"]) for e in evs[k:k + 30]])
    scores = again.score("v1", ["a", "b", "c", "d"])
    assert min(scores["a"], scores["b"]) > max(scores["c"], scores["d"])
    copy = OnlineMF.restore(again.snapshot())
    assert copy.snapshot() == again.snapshot() and copy.score("v1", ["a", "c"]) == \
        again.score("v1", ["a", "c"])
    assert again.export_items(["a", "zz"]) == {"a": again.export_item("a")}
