"""The repurchase rule on hand-made purchase sequences: consumables stay, durables leave, the
horizon is respected, and a setting turns it into a plain exclusion."""

from __future__ import annotations

from typing import Any

import pytest

from models.reco import RecoModels, Repurchase
from models.reco.repurchase import (
    N_BINS,
    REASON_KEEP,
    ROW,
    UNIFORM,
    cdf,
    delay_bin,
    levels_of,
    rebuy_chance,
    row_increments,
    shrunk_estimate,
    visitor_horizon_ms,
)

DAY = 86_400_000
T0 = 1_700_000_000_000


def buy(vid: str, iid: str, day: float, cat: str, n: int = 0) -> dict[str, Any]:
    return {"event_id": f"{vid}-{iid}-{day}-{n}", "type": "purchase", "visitor_id": vid,
            "ts": T0 + int(day * DAY), "items": [{"id": iid, "categories": [cat]}]}


def shop(model: Any, visitors: int = 30) -> None:
    """Others' purchases: milk rebought every 4 to 6 days; a sofa bought once; a refill
    cartridge rebought every 28 to 32 days. Fed in time order."""
    events = []
    for v in range(visitors):
        jitter = (v % 5 - 2) / 2  # -1 .. +1 day
        for r in range(6):
            events.append(buy(f"o{v}", "milk", v * 0.1 + r * (5 + jitter), "grocery/dairy"))
        events.append(buy(f"o{v}", f"sofa{v % 3}", v * 0.1, "furniture/sofas"))
        for r in range(4):
            events.append(buy(f"o{v}", "cartridge", v * 0.1 + r * (30 + 2 * jitter),
                              "office/ink"))
    for e in sorted(events, key=lambda e: e["ts"]):
        model.learn_one(e)


def test_a_consumable_stays_with_its_reason_and_a_durable_leaves() -> None:
    model = Repurchase(horizon_s=7 * 86400)
    shop(model)
    now = T0 + 200 * DAY
    milk = model.decide("milk", now - DAY, now)
    sofa = model.decide("sofa1", now - DAY, now)
    assert milk.keep and milk.reason == REASON_KEEP and milk.chance > 0.5
    assert not sofa.keep and sofa.reason == "" and sofa.chance < 0.05
    # an item never bought before speaks through its category
    assert model.decide("oat-milk", now - DAY, now, categories=["grocery/dairy"]).keep
    assert not model.decide("armchair", now - DAY, now, categories=["furniture/sofas"]).keep


def test_the_horizon_is_respected() -> None:
    model = Repurchase(horizon_s=3 * 86400)
    shop(model)
    now = T0 + 400 * DAY
    # bought yesterday, rebought after ~30 days: not within a 3-day horizon
    assert not model.decide("cartridge", now - 1 * DAY, now).keep
    # bought 28 days ago: due now
    due = model.decide("cartridge", now - 28 * DAY, now)
    assert due.keep and due.reason == REASON_KEEP
    # a 60-day horizon (a visitor who comes back rarely) keeps it from the start
    assert model.decide("cartridge", now - DAY, now, horizon_ms=60 * DAY).keep
    # the chance rises as the usual delay comes within the horizon
    c = [model.chance("cartridge", now - d * DAY, now) for d in (1, 20, 25, 28)]
    assert max(c[:2]) < 0.01 < c[2] < c[3]


def test_a_visitor_of_the_shop_gets_the_rule_through_the_ensemble() -> None:
    models = RecoModels()
    shop(models.repurchase)
    models.learn_one(buy("me", "milk", 300, "grocery/dairy"))
    models.learn_one(buy("me", "sofa2", 300, "furniture/sofas"))
    state = models.visitor_state("me", now_ms=T0 + 301 * DAY)
    assert state["purchased"] == ["sofa2"]  # what exclusions.purchased removes
    assert state["rebuy"] == {"milk": REASON_KEEP}
    assert set(state["bought"]) == {"milk", "sofa2"}


def test_modes_plain_exclusion_and_keep() -> None:
    plain = Repurchase(mode="exclude")
    shop(plain)
    now = T0 + 200 * DAY
    assert not plain.decide("milk", now - DAY, now).keep
    keep = Repurchase(mode="keep")
    assert keep.decide("sofa1", now - DAY, now).keep
    models = RecoModels(repurchase=Repurchase(mode="exclude"))
    shop(models.repurchase)
    models.learn_one(buy("me", "milk", 300, "grocery/dairy"))
    assert models.visitor_state("me", now_ms=T0 + 301 * DAY)["purchased"] == ["milk"]
    with pytest.raises(ValueError):
        Repurchase(mode="sometimes")


def test_repeats_within_one_order_are_not_rebuys() -> None:
    model = Repurchase()
    for v in range(20):  # every sofa "bought" twice a few seconds apart (a resent line)
        model.learn_one(buy(f"o{v}", "sofa", v, "furniture"))
        model.learn_one(buy(f"o{v}", "sofa", v + 0.0001, "furniture", n=1))
    p, _, n = model.estimate("sofa")
    assert n == 20 and p < 0.05


def test_few_purchases_shrink_to_the_category_and_estimates_stay_sane() -> None:
    model = Repurchase()
    shop(model)
    p_new, bins, n = model.estimate("unknown", ["grocery/dairy"])
    p_cat, _, _ = model.estimate("milk")
    assert n == 0 and p_new == pytest.approx(p_cat, abs=0.15)
    assert sum(m for m, _ in bins) == pytest.approx(1.0)
    assert delay_bin(80 * 3600) == delay_bin(60 * 3600) != delay_bin(90 * 3600) and delay_bin(10**9) == N_BINS - 1
    assert cdf(UNIFORM, 0) == 0.0 and cdf(UNIFORM, 10**12) == pytest.approx(1.0)
    assert visitor_horizon_ms(0, 5.0) == 5.0
    assert visitor_horizon_ms(3 * DAY, 5.0) == 6 * DAY
    assert visitor_horizon_ms(60 * DAY, 5.0) == 30 * DAY


def test_memory_stays_bounded() -> None:
    model = Repurchase(max_items=5, max_categories=4, max_visitors=3, max_bought_per_visitor=2)
    for k in range(200):
        model.learn_one(buy(f"v{k % 7}", f"i{k % 11}", k, f"c{k % 5}/s{k % 3}"))
        for key, value in model.size().items():
            assert value <= getattr(model, key), (key, value)
    many = Repurchase(max_bought_per_visitor=2)
    for k in range(5):
        many.learn_one(buy("v", f"i{k}", k, "c"))
    assert many.bought("v") == [("i4", T0 + 4 * DAY), ("i3", T0 + 3 * DAY)]
    assert "*" in model._cats  # the root is never evicted


def test_counters_kept_elsewhere_give_the_same_decision() -> None:
    """What the online path does: add `row_increments` to per-level counters (Redis hashes),
    then `shrunk_estimate` + `rebuy_chance` on what it reads back."""
    model = Repurchase()
    shop(model)
    counters: dict[str, list[float]] = {}
    last: dict[tuple[str, str], int] = {}
    events = []
    shop(type("Sink", (), {"learn_one": lambda self, e: events.append(e)})())
    for e in events:
        item = e["items"][0]
        key = (e["visitor_id"], item["id"])
        delay = None if key not in last else (e["ts"] - last[key]) / 1000.0
        last[key] = e["ts"]
        for level in [*levels_of(item["categories"]), "i:" + item["id"]]:
            row = counters.setdefault(level, [0.0] * ROW)
            for idx, amount in row_increments(delay).items():
                row[idx] += amount
    now = T0 + 400 * DAY
    for iid, cats in (("milk", ["grocery/dairy"]), ("cartridge", ["office/ink"]),
                      ("sofa1", ["furniture/sofas"])):
        chain = [(counters.get(level), 2.0 if level == "*" else 5.0)
                 for level in [*levels_of(cats), "i:" + iid]]
        p, bins = shrunk_estimate(chain, 0.05)
        for days in (1, 4, 28):
            online = rebuy_chance(p, bins, days * 86400.0, 7 * 86400.0)
            assert online == pytest.approx(model.chance(iid, now - days * DAY, now))
