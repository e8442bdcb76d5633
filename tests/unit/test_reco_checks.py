"""The check-suite every recommendation learner passes: determinism, snapshots, bounded memory."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from models.reco import (
    CO_BUY_TYPES,
    Affinity,
    CoOccurrence,
    History,
    NextItem,
    OnlineMF,
    RecoModels,
    Repurchase,
    SessionKNN,
    Trending,
)
from models.session import SessionTracker

TYPES = ["item_view"] * 6 + ["add_to_cart", "favorite", "purchase", "remove_from_cart"]
LATE = 1_700_000_000_000 + 10**12  # a query time after every event


def make_events(
    n: int, seed: int = 7, items: int = 300, visitors: int = 60
) -> list[dict[str, Any]]:
    """Synthetic events over a small catalogue, time increasing, with occasional long gaps."""
    rng = random.Random(seed)
    ts = 1_700_000_000_000
    out = []
    for k in range(n):
        ts += rng.choice([1_000, 30_000, 600_000, 40 * 86_400_000 if k % 997 == 0 else 5_000])
        iid = rng.randrange(items)
        item = {
            "id": f"i{iid}",
            "categories": [f"c{iid % 7}/s{iid % 13}"],
            "brand": f"b{iid % 5}",
            "price": 5.0 + iid,
        }
        out.append(
            {
                "event_id": f"e{k}",
                "type": rng.choice(TYPES),
                "visitor_id": f"v{rng.randrange(visitors)}",
                "ts": ts,
                "item": item,
            }
        )
    return out


Query = Callable[[Any, str], list[Any]]

# name -> (small-caps factory, query of its recommendations)
LEARNERS: dict[str, tuple[Callable[[int], Any], Query]] = {
    "trending": (
        lambda seed: Trending(
            half_life_s=3600, max_items=50, max_categories=20, max_items_per_category=10, top_k=10
        ),
        lambda m, v: m.recommend(10) + m.recommend(10, category="c1"),
    ),
    "co_view": (
        lambda seed: CoOccurrence(window=5, max_neighbours=8, max_items=40, max_visitors=20),
        lambda m, v: m.recommend(v, 10) + m.neighbours("i3", 10),
    ),
    "co_buy": (
        lambda seed: CoOccurrence(
            CO_BUY_TYPES, window=5, max_neighbours=8, max_items=40, max_visitors=20
        ),
        lambda m, v: m.recommend(v, 10) + m.similar({f"i{k}": 1.0 for k in range(0, 300, 7)}, 10),
    ),
    "next_item": (
        lambda seed: NextItem(
            window=3, recent_items=5, max_neighbours=8, max_items=40, max_visitors=20
        ),
        lambda m, v: m.recommend(v, 10) + m.neighbours("i3", 10) + m.recent(v),
    ),
    "history": (
        lambda seed: History(max_items_per_visitor=7, max_visitors=15),
        lambda m, v: m.recommend(v, 10) + m.recent(v) + m.in_cart(v) + m.purchased(v),
    ),
    "affinity": (
        lambda seed: Affinity(
            max_visitors=15, max_keys_per_visitor=3, max_keys=12, max_items_per_key=6
        ),
        lambda m, v: m.recommend(v, 10) + m.top_categories(v) + [m.typical_price(v)],
    ),
    "cf": (
        lambda seed: OnlineMF(n_factors=4, max_visitors=15, max_items=40, pool_size=30, seed=seed),
        lambda m, v: m.recommend(v, 10) + m.recommend("v2", 5, candidates=["i1", "i2", "i3"]),
    ),
    "session_knn": (
        lambda seed: SessionKNN(k=8, sample_size=12, max_session_items=6, sessions_per_item=5,
                                max_sessions=40, max_items=60, max_visitors=20,
                                lambda_time_s=86400.0, seed=seed),
        lambda m, v: m.recommend(v, LATE, 10) + m.similar(["i1", "i2", "i3", "i4"], LATE, 10)
        + [m.current(v)],
    ),
    "session_knn_random": (
        lambda seed: SessionKNN(k=8, sample_size=3, sampling="random", sessions_per_item=6,
                                max_sessions=40, max_items=60, max_visitors=20, seed=seed),
        lambda m, v: m.similar([f"i{k}" for k in range(0, 300, 3)], LATE, 10),
    ),
    "repurchase": (
        lambda seed: Repurchase(max_items=12, max_categories=10, max_visitors=15,
                                max_bought_per_visitor=3),
        lambda m, v: m.for_visitor(v, LATE) + m.for_visitor("v3", LATE) + [m.estimate("i3")],
    ),
    "sessions": (
        lambda seed: SessionTracker(max_items=4, max_visitors=15),
        lambda m, v: [m.get(v), m.get("v3")],
    ),
}


def last_viewer(events: list[dict[str, Any]]) -> str:
    """The visitor of the last item view (so every learner knows them)."""
    return next(e["visitor_id"] for e in reversed(events) if e["type"] == "item_view")


def caps(model: Any) -> dict[str, int]:
    return {key: getattr(model, key) for key in model.size()}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events(3_000)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_same_seed_same_output(name: str, events: list[dict[str, Any]]) -> None:
    factory, query = LEARNERS[name]
    a, b = factory(1), factory(1)
    for ev in events[:800]:
        a.learn_one(ev)
        b.learn_one(ev)
    v = last_viewer(events[:800])
    assert query(a, v) == query(b, v)
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("name", list(LEARNERS))
def test_snapshot_restore_round_trip(name: str, events: list[dict[str, Any]]) -> None:
    factory, query = LEARNERS[name]
    model = factory(3)
    for ev in events[:1_000]:
        model.learn_one(ev)
    copy = type(model).restore(model.snapshot())
    v = last_viewer(events[:1_000])
    assert query(copy, v) == query(model, v)
    assert query(model, v), "the query should return something"
    for ev in events[1_000:1_400]:  # and they keep learning identically
        model.learn_one(ev)
        copy.learn_one(ev)
    v = last_viewer(events[:1_400])
    assert query(copy, v) == query(model, v)
    assert copy.snapshot() == model.snapshot()


@pytest.mark.parametrize("name", list(LEARNERS))
def test_memory_stays_bounded(name: str, events: list[dict[str, Any]]) -> None:
    factory, _ = LEARNERS[name]
    model = factory(0)
    for k, ev in enumerate(events):
        model.learn_one(ev)
        if k % 250 == 0 or k == len(events) - 1:
            size, cap = model.size(), caps(model)
            assert all(size[key] <= cap[key] for key in size), (size, cap)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_snapshot_rejects_other_kinds(name: str) -> None:
    factory, _ = LEARNERS[name]
    other = "history" if name != "history" else "trending"
    data = LEARNERS[other][0](0).snapshot()
    with pytest.raises(ValueError):
        type(factory(0)).restore(data)


def test_ensemble_round_trip(events: list[dict[str, Any]]) -> None:
    models = RecoModels(seed=5)
    for ev in events[:600]:
        models.learn_one(ev)
    copy = RecoModels.restore(models.snapshot())
    needed = ["history", "co_view", "co_buy", "next_item", "trending", "trending_in_category",
              "affinity", "cf", "session_knn"]
    ctx = {"item_id": "i3", "category": "c3/s3", "now_ms": events[599]["ts"]}
    assert copy.candidates(needed, "v1", ctx) == models.candidates(needed, "v1", ctx)
    assert copy.visitor_state("v1") == models.visitor_state("v1")
    assert any(copy.candidates(["session_knn"], v, {**ctx, "item_id": None}).get("session_knn")
               for v in {e["visitor_id"] for e in events[590:600]})
