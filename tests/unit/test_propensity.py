"""Session features, the propensity model, its calibration and its drift reaction."""

from __future__ import annotations

import math
import os
import pickle
import random

import numpy as np
import pytest

from models import serialize
from models.drift import Adwin
from models.evaluation import calibration_error, roc_auc
from models.propensity import (
    BinnedCalibrator,
    PlattCalibrator,
    PropensityModel,
    prepare,
    referrer_type,
    session_examples,
    session_features,
    split_sessions,
)

T = 1_767_614_400_000  # 2026-01-05 12:00 UTC, a Monday


def ev(kind: str, s: float, **kw) -> dict:
    out = {"event_id": f"{kind}{s}", "type": kind, "visitor_id": "v", "ts": T + int(s * 1000)}
    out.update(kw)
    return out


SESSION = [
    ev(
        "page_view",
        0,
        channel="web",
        context={
            "device": "Mobile",
            "page_type": "home",
            "url": "https://shop.example/",
            "referrer": "https://www.google.com/search?q=x",
        },
    ),
    ev("item_view", 20, item={"id": "i1", "price": 10.0}),
    ev("item_view", 80, item={"id": "i2", "price": 25.0}),
    ev("item_view", 100, item={"id": "i1", "price": 10.0}),
    ev("add_to_cart", 130, item={"id": "i1", "price": 10.0}),
    ev("add_to_cart", 135, item={"id": "i1", "price": 10.0}),
    ev("search", 150),
    ev("impression", 151, decision_id="d"),
]


def test_session_features_by_hand() -> None:
    x = session_features(SESSION, T + 200_000, returning=True)
    assert x["pages"] == 4 and x["product_pages"] == 3 and x["other_pages"] == 1
    assert x["distinct_products"] == 2 and x["repeat_views"] == 1
    assert x["other_seconds"] == 20.0  # the home page until the first item view
    assert x["product_seconds"] == 60.0 + 20.0 + 30.0
    assert x["seconds_since_landing"] == 200.0 and x["seconds_since_last"] == 49.0
    assert x["mean_gap_seconds"] == pytest.approx(151 / 7)
    assert (x["cart_adds"], x["cart_items"], x["cart_value"]) == (2, 2, 20.0)
    assert x["searches"] == 1 and x["reactions"] == 1
    assert x["single_page"] is False and x["bounce_like"] is False and x["purchased"] is False
    assert (x["device"], x["channel"], x["referrer_type"], x["landing_page_type"]) == (
        "mobile",
        "web",
        "search",
        "home",
    )
    assert (x["hour"], x["weekday"], x["returning"]) == (12, "mon", True)


def test_bounce_like_and_referrers() -> None:
    one = [ev("page_view", 0, context={"referrer": ""})]
    assert session_features(one, T + 30_000)["bounce_like"] is False
    x = session_features(one, T + 90_000)
    assert x["bounce_like"] is True and x["single_page"] is True and x["referrer_type"] == "none"
    assert referrer_type("https://l.facebook.com/x") == "social"
    assert referrer_type("https://shop.example/a", "shop.example") == "internal"
    assert referrer_type("https://mail.google.com/") == "email"
    assert referrer_type("https://outlook.live.com/") == "email"
    assert referrer_type("https://blog.example.org/") == "other"
    email = [ev("page_view", 0, context={"utm": {"medium": "email"}, "referrer": "https://x.org"})]
    assert session_features(email, T)["referrer_type"] == "email"
    with pytest.raises(ValueError):
        session_features([], T)


def test_sessions_and_examples() -> None:
    events = SESSION + [ev("purchase", 300), ev("page_view", 320), ev("page_view", 4000)]
    sessions = split_sessions(events)
    assert [len(s) for s in sessions] == [10, 1]  # a gap of over 30 minutes
    examples = session_examples(sessions[0])
    assert len(examples) == 8  # up to (not including) the purchase
    assert all(bought for _, bought, _ in examples)
    assert [ended for _, _, ended in examples] == [False] * 8
    x, bought, ended = session_examples(sessions[1])[0]
    assert (bought, ended, x["pages"]) == (False, True, 1)


def test_prepare() -> None:
    out = prepare(
        {"n": 9.0, "neg": -math.e + 1, "flag": True, "s": "x", "bad": float("nan"), "o": [1]}
    )
    assert out == {
        "n": pytest.approx(math.log(10)),
        "neg": pytest.approx(-1.0),
        "flag": 1.0,
        "s": "x",
    }
    assert prepare({"n": 9}, log_transform=False) == {"n": 9.0}


def miscalibrated_stream(n: int, seed: int):
    """Raw scores s whose true probability is sigmoid(2 logit(s) - 1): over-confident."""
    rng = random.Random(seed)
    for _ in range(n):
        z = rng.gauss(-1.5, 1.2)
        s = 1 / (1 + math.exp(-z))
        p = 1 / (1 + math.exp(-(2 * z - 1)))
        yield s, rng.random() < p


@pytest.mark.parametrize(
    "cal", [PlattCalibrator(0.02), BinnedCalibrator(decay=1.0)], ids=["platt", "bins"]
)
def test_calibrators_fix_miscalibrated_scores(cal) -> None:
    raw, fixed, ys = [], [], []
    for i, (s, y) in enumerate(miscalibrated_stream(20_000, 1)):
        if i >= 10_000:  # measure on the second half, prequentially
            raw.append(s)
            fixed.append(cal.predict_one(s))
            ys.append(y)
        cal.learn_one(s, y)
    ece_raw = calibration_error(np.array(ys), np.array(raw))
    ece_cal = calibration_error(np.array(ys), np.array(fixed))
    assert ece_cal < 0.02 < ece_raw
    grid = [cal.predict_one(s) for s in np.linspace(0.001, 0.999, 200)]
    assert all(b >= a - 1e-12 for a, b in zip(grid, grid[1:], strict=False))  # monotone
    copy = type(cal).from_state(cal.state())
    assert [copy.predict_one(s) for s in (0.05, 0.3, 0.8)] == [
        cal.predict_one(s) for s in (0.05, 0.3, 0.8)
    ]


def test_binned_calibrator_forgets_with_decay() -> None:
    forgetful, steady = BinnedCalibrator(decay=0.99), BinnedCalibrator(decay=1.0)
    for cal in (forgetful, steady):
        for _ in range(2000):
            cal.learn_one(0.3, False)
        for _ in range(500):
            cal.learn_one(0.3, True)
    assert forgetful.predict_one(0.3) > 0.6  # the recent outcomes dominate
    assert steady.predict_one(0.3) < 0.3  # 500 of 2,500


def synthetic_sessions(n: int, seed: int, flip_at: int | None = None):
    rng = random.Random(seed)
    for i in range(n):
        pages = rng.randrange(1, 40)
        cart = rng.randrange(0, 3)
        device = rng.choice(["mobile", "desktop"])
        z = -3.0 + 0.08 * pages + 1.2 * cart + (0.7 if device == "desktop" else 0.0)
        if flip_at is not None and i >= flip_at:
            z = -1.0 - 0.08 * pages + 1.2 * cart  # the relation changes
        y = rng.random() < 1 / (1 + math.exp(-z))
        yield (
            {"pages": pages, "cart_items": cart, "device": device, "seconds": rng.random() * 900},
            y,
        )


def test_model_learns_prequentially() -> None:
    m = PropensityModel()
    ps, ys = [], []
    for x, y in synthetic_sessions(4000, 2):
        ps.append(m.predict_learn_one(x, y))
        ys.append(y)
    assert roc_auc(np.array(ys[2000:]), np.array(ps[2000:])) > 0.75
    assert m.n == 4000
    assert 0.0 < m.predict_one({"pages": 3, "cart_items": 2, "device": "desktop"}) < 1.0


def test_drift_triggers_the_documented_reactions() -> None:
    boost = PropensityModel(drift_delta=0.002, drift_reaction="boost", boost=4.0, boost_steps=200)
    lr = boost._pipe["LogisticRegression"]
    saw_boost = False
    for i, (x, y) in enumerate(synthetic_sessions(6000, 3, flip_at=3000)):
        boost.learn_one(x, y)
        if boost.boosted:
            saw_boost = True
            assert lr.optimizer.learning_rate == pytest.approx(boost.learning_rate * 4.0)
        elif i > 0:
            assert lr.optimizer.learning_rate == pytest.approx(boost.learning_rate)
    assert boost.detections >= 1 and saw_boost

    reset = PropensityModel(drift_delta=0.002, drift_reaction="reset")
    pipes = set()
    for x, y in synthetic_sessions(6000, 3, flip_at=3000):
        reset.learn_one(x, y)
        pipes.add(id(reset._pipe))
    assert reset.detections >= 1 and len(pipes) == 1 + reset.detections

    quiet = PropensityModel(drift_delta=None)
    for x, y in synthetic_sessions(500, 3):
        quiet.learn_one(x, y)
    assert quiet.detections == 0


def test_adwin_state_round_trip() -> None:
    a = Adwin(0.01)
    rng = random.Random(1)
    for i in range(2000):
        a.update(rng.random() < (0.2 if i < 1000 else 0.7))
    assert a.detections >= 1 and 0.5 < a.mean < 0.9
    b = Adwin.from_state(a.state())
    for _ in range(300):
        x = rng.random() < 0.1
        assert a.update(x) == b.update(x)
    assert a == b
    with pytest.raises(ValueError):
        Adwin(0.0)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_model_snapshots_refuse_foreign_code_and_other_river_versions() -> None:
    doc = serialize.dumps(PropensityModel()._pipe)
    assert serialize.loads(doc) is not None
    with pytest.raises(ValueError, match="not allowed"):
        serialize.loads({"river": doc["river"], "pickle": pickle.dumps(Evil())})
    with pytest.raises(ValueError, match="river"):
        serialize.loads({"river": "0.0.1", "pickle": doc["pickle"]})


def test_bad_settings_are_refused() -> None:
    for kw in ({"model": "svm"}, {"calibration": "temperature"}, {"drift_reaction": "panic"}):
        with pytest.raises(ValueError):
            PropensityModel(**kw)
