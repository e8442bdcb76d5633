"""The served default recipe blends session_knn and applies the repurchase rule, and the
replay's loader reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.logic.recipes import INGREDIENTS, apply, parse_recipe
from models.reco import RecoModels
from models.reco.ensemble import INGREDIENTS as MODEL_INGREDIENTS
from tests.unit.bench import bench_module

ROOT = Path(__file__).resolve().parents[2]
SERVED = ROOT / "config/recipes/default.yaml"


def _bench() -> Any:
    return bench_module("reco_replay")


def test_served_default_blends_session_knn_and_learns_repurchase() -> None:
    served = parse_recipe(yaml.safe_load(SERVED.read_text()))
    assert served.exclusions.purchased is True and served.exclusions.repurchase == "learnt"
    assert served.ingredients["session_knn"] > 0
    assert set(MODEL_INGREDIENTS) <= set(INGREDIENTS)


def test_the_replay_loads_the_default_recipe_and_apply_blends_session_knn() -> None:
    recipe = _bench().load_recipe(SERVED)
    assert recipe.ingredients["session_knn"] > 0 and "session_knn" in recipe.needed()
    models = RecoModels()
    t0 = 1_700_000_000_000
    for v in range(6):  # others' sessions: a then b
        for k, iid in enumerate(("a", "b")):
            models.learn_one({"event_id": f"{v}{k}", "type": "item_view", "visitor_id": f"o{v}",
                              "ts": t0 + v * 10_000 + k, "item": {"id": iid}})
    models.learn_one({"event_id": "me", "type": "item_view", "visitor_id": "me",
                      "ts": t0 + 100_000, "item": {"id": "a"}})
    context = {"item_id": "a", "category": None, "now_ms": t0 + 100_000}
    cands = models.candidates(recipe.needed(), "me", context)
    assert [c.item_id for c in cands["session_knn"]][:2] == ["a", "b"]
    recs = apply(recipe, cands, lambda _i: None, models.visitor_state("me"), context, 5)
    assert recs[0].item_id == "b"


def test_derived_session_log_keeps_views_only_without_categories(tmp_path: Path) -> None:
    csv = tmp_path / "tb.csv"
    rows = [(1, 10, 5, "pv", 1000), (1, 11, 5, "cart", 1010), (1, 12, 6, "pv", 1020),
            (1, 13, 6, "pv", 1020 + 3600), (2, 10, 5, "buy", 1030), (2, 14, 7, "pv", 1040)]
    csv.write_text("".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in rows))
    bench = _bench()
    out = bench.derive_session_log(str(csv), str(tmp_path))
    from streams.sources import load_events

    events = load_events(out)
    assert [(e["visitor_id"], e["item"]) for e in events] == [
        ("tb1#1", {"id": "10"}), ("tb1#1", {"id": "12"}), ("tb2#1", {"id": "14"}),
        ("tb1#2", {"id": "13"})]
    assert {e["type"] for e in events} == {"item_view"}
    assert bench.blend([["a", "b"], ["b", "c"]], [1.0, 1.0], 2, {"c"}) == ["b", "a"]
