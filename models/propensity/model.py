"""Purchase and exit propensity: a river pipeline learnt per event, calibrated, watched for drift.

`PropensityModel` takes a dict of session features (`models.propensity.features`) and answers a
calibrated probability. Per example, in prequential order (`predict_learn_one`):

1. the pipeline scores the features: numbers through sign(x) * log1p(|x|) (counts and
   durations are heavy-tailed) and river's `StandardScaler`, strings through river's
   `OneHotEncoder`, then river's `LogisticRegression` (SGD) -- or, with `model="forest"`,
   river's adaptive random forest on the raw features;
2. the calibrator (`calibration`: online Platt scaling or isotonic-by-bins) turns the raw score
   into the answer, then learns from (raw score, outcome);
3. ADWIN watches the absolute error |outcome - answer|; when it detects a change the model
   reacts (`drift_reaction`): `"boost"` multiplies the learning rate by `boost` for the next
   `boost_steps` examples and resets the calibrator; `"reset"` starts the pipeline and the
   calibrator afresh; None only counts the detection;
4. the pipeline learns the example.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from river import compose, forest, linear_model, optim, preprocessing

from models import serialize
from models.drift import Adwin
from models.propensity.calibration import (
    BinnedCalibrator,
    PlattCalibrator,
    calibrator_from_state,
)
from models.reco.base import PickledAsSnapshot, pack, unpack

KIND = "propensity"
VERSION = 1


def prepare(x: Mapping[str, Any], log_transform: bool = True) -> dict[str, Any]:
    """Numbers (log-compressed), booleans as 0/1, strings kept for one-hot; the rest dropped."""
    out: dict[str, Any] = {}
    for k, v in x.items():
        if isinstance(v, bool):
            out[k] = 1.0 if v else 0.0
        elif isinstance(v, int | float):
            if math.isfinite(v):
                out[k] = math.copysign(math.log1p(abs(v)), v) if log_transform else float(v)
        elif isinstance(v, str):
            out[k] = v
    return out


class PropensityModel(PickledAsSnapshot):
    """A calibrated, drift-aware online classifier of sessions.

    Parameters
    ----------
    model
        `"logistic"` (scaler + one-hot + logistic regression) or `"forest"` (river's ARF).
    learning_rate
        SGD step of the logistic regression (weights and intercept).
    l2
        L2 penalty of the logistic regression.
    log_transform
        Compress numbers with sign(x) * log1p(|x|) before scaling.
    calibration
        `"platt"`, `"bins"` or None.
    calibration_rate
        SGD step of the Platt calibrator (ignored for bins).
    drift_delta
        ADWIN confidence on the absolute error; None turns drift detection off.
    drift_reaction
        `"boost"`, `"reset"` or None (see the module docstring).
    boost, boost_steps
        The learning-rate factor and for how many examples it lasts.
    n_models
        Trees of the forest.
    seed
        Seed of the forest (the logistic model has no randomness).
    """

    def __init__(
        self,
        model: str = "logistic",
        learning_rate: float = 0.02,
        l2: float = 0.0,
        log_transform: bool = True,
        calibration: str | None = "bins",
        calibration_rate: float = 0.002,
        drift_delta: float | None = 0.002,
        drift_reaction: str | None = "boost",
        boost: float = 2.0,
        boost_steps: int = 300,
        n_models: int = 10,
        seed: int = 0,
    ) -> None:
        if model not in ("logistic", "forest"):
            raise ValueError("model must be logistic or forest")
        if calibration not in ("platt", "bins", None):
            raise ValueError("calibration must be platt, bins or None")
        if drift_reaction not in ("boost", "reset", None):
            raise ValueError("drift_reaction must be boost, reset or None")
        self.model = model
        self.learning_rate = learning_rate
        self.l2 = l2
        self.log_transform = log_transform
        self.calibration = calibration
        self.calibration_rate = calibration_rate
        self.drift_delta = drift_delta
        self.drift_reaction = drift_reaction
        self.boost = boost
        self.boost_steps = boost_steps
        self.n_models = n_models
        self.seed = seed
        self._pipe = self._new_pipeline()
        self._cal = self._new_calibrator()
        self._drift = Adwin(drift_delta) if drift_delta is not None else None
        self._boost_left = 0
        self.n = 0
        self.detections = 0

    # -- parts -----------------------------------------------------------------------------

    def _new_pipeline(self) -> Any:
        if self.model == "forest":
            return forest.ARFClassifier(n_models=self.n_models, seed=self.seed)
        return compose.TransformerUnion(
            compose.SelectType(numbers.Number) | preprocessing.StandardScaler(),
            compose.SelectType(str) | preprocessing.OneHotEncoder(),
        ) | linear_model.LogisticRegression(
            optimizer=optim.SGD(self.learning_rate), intercept_lr=self.learning_rate, l2=self.l2
        )

    def _new_calibrator(self) -> PlattCalibrator | BinnedCalibrator | None:
        if self.calibration == "platt":
            return PlattCalibrator(self.calibration_rate)
        if self.calibration == "bins":
            return BinnedCalibrator()
        return None

    def _set_rate(self, rate: float) -> None:
        if self.model != "logistic":
            return
        lr = self._pipe["LogisticRegression"]
        lr.optimizer.lr = optim.schedulers.Constant(rate)
        lr.intercept_lr = optim.schedulers.Constant(rate)

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters: exactly the constructor's arguments."""
        return {
            "model": self.model,
            "learning_rate": self.learning_rate,
            "l2": self.l2,
            "log_transform": self.log_transform,
            "calibration": self.calibration,
            "calibration_rate": self.calibration_rate,
            "drift_delta": self.drift_delta,
            "drift_reaction": self.drift_reaction,
            "boost": self.boost,
            "boost_steps": self.boost_steps,
            "n_models": self.n_models,
            "seed": self.seed,
        }

    def clone(self) -> PropensityModel:
        """A fresh, untrained model with the same hyper-parameters."""
        return PropensityModel(**self.get_params())

    # -- verbs -----------------------------------------------------------------------------

    def _x(self, x: Mapping[str, Any]) -> dict[str, Any]:
        if self.model == "forest":
            return {k: v for k, v in prepare(x, False).items() if not isinstance(v, str)} | {
                k: v for k, v in x.items() if isinstance(v, str)
            }
        return prepare(x, self.log_transform)

    def predict_raw(self, x: Mapping[str, Any]) -> float:
        """The pipeline's score before calibration."""
        proba = self._pipe.predict_proba_one(self._x(x))
        return float(proba.get(True, 0.0)) if proba else 0.0

    def predict_one(self, x: Mapping[str, Any]) -> float:
        """The calibrated probability of the positive outcome."""
        raw = self.predict_raw(x)
        return self._cal.predict_one(raw) if self._cal is not None else raw

    def learn_one(self, x: Mapping[str, Any], y: bool) -> None:
        """Learn one example (calibrator and drift detector from the score before learning)."""
        self.predict_learn_one(x, y)

    def predict_learn_one(self, x: Mapping[str, Any], y: bool) -> float:
        """One prequential step: the calibrated answer before learning, then learn (x, y)."""
        xx = self._x(x)
        proba = self._pipe.predict_proba_one(xx)
        raw = float(proba.get(True, 0.0)) if proba else 0.0
        p = self._cal.predict_one(raw) if self._cal is not None else raw
        if self._cal is not None:
            self._cal.learn_one(raw, y)
        if self._drift is not None and self._drift.update(abs(float(y) - p)):
            self.detections += 1
            self._react()
        self._pipe.learn_one(xx, bool(y))
        if self._boost_left:
            self._boost_left -= 1
            if not self._boost_left:
                self._set_rate(self.learning_rate)
        self.n += 1
        return p

    def _react(self) -> None:
        if self.drift_reaction == "boost":
            self._set_rate(self.learning_rate * self.boost)
            self._boost_left = self.boost_steps
            if self._cal is not None:
                self._cal.reset()
        elif self.drift_reaction == "reset":
            self._pipe = self._new_pipeline()
            self._cal = self._new_calibrator()
            self._boost_left = 0

    @property
    def boosted(self) -> bool:
        """True while a drift reaction's faster learning rate is in force."""
        return self._boost_left > 0

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Versioned bytes: hyper-parameters, the river pipeline, calibrator and drift window."""
        return pack(
            KIND,
            VERSION,
            {
                "params": self.get_params(),
                "pipeline": serialize.dumps(self._pipe),
                "calibrator": self._cal.state() if self._cal is not None else None,
                "drift": self._drift.state() if self._drift is not None else None,
                "boost_left": self._boost_left,
                "n": self.n,
                "detections": self.detections,
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> PropensityModel:
        """Inverse of `snapshot`; ValueError for another kind, version or river version."""
        s = unpack(data, KIND, VERSION)
        obj = cls(**s["params"])
        obj._pipe = serialize.loads(s["pipeline"])
        obj._cal = calibrator_from_state(s["calibrator"])
        obj._drift = Adwin.from_state(s["drift"]) if s["drift"] is not None else None
        obj._boost_left = s["boost_left"]
        obj.n = s["n"]
        obj.detections = s["detections"]
        return obj
