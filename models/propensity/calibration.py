"""Online calibration of a classifier's scores, learnt prequentially from (score, outcome).

Both calibrators learn from the score the model gave *before* it learnt the example, so they
see out-of-sample scores, as live traffic gives.

* `PlattCalibrator`: online Platt scaling, p = sigmoid(a * logit(s) + b), (a, b) by SGD on the
  log loss with a constant step, so it follows a drifting base rate.
* `BinnedCalibrator`: isotonic regression by bins: scores fall into bins cut evenly in log-odds;
  each bin keeps (exponentially forgotten) counts of outcomes, shrunk toward the bin's own score;
  the answer is the pool-adjacent-violators fit over the bins, interpolated between bin
  centres, so it is monotone in the score.
"""

from __future__ import annotations

import math
from typing import Any

_EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class PlattCalibrator:
    """Online Platt scaling.

    Parameters
    ----------
    learning_rate
        SGD step for the slope and the intercept.
    """

    def __init__(self, learning_rate: float = 0.02) -> None:
        self.learning_rate = learning_rate
        self.a = 1.0
        self.b = 0.0
        self.n = 0

    def predict_one(self, score: float) -> float:
        return _sigmoid(self.a * _logit(score) + self.b)

    def learn_one(self, score: float, y: bool | float) -> None:
        z = _logit(score)
        g = self.predict_one(score) - float(y)
        self.a -= self.learning_rate * g * z
        self.b -= self.learning_rate * g
        self.n += 1

    def reset(self) -> None:
        self.a, self.b, self.n = 1.0, 0.0, 0

    def state(self) -> dict[str, Any]:
        return {
            "kind": "platt",
            "learning_rate": self.learning_rate,
            "a": self.a,
            "b": self.b,
            "n": self.n,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> PlattCalibrator:
        obj = cls(s["learning_rate"])
        obj.a, obj.b, obj.n = s["a"], s["b"], s["n"]
        return obj


class BinnedCalibrator:
    """Isotonic regression over score bins with forgetting.

    Parameters
    ----------
    n_bins
        Bins, cut evenly in log-odds between `low` and `high` (scores outside go to the ends).
    prior
        Pseudo-count pulling each bin toward its own score (so an empty bin answers the score).
    decay
        Every update multiplies all counts by `decay` (1.0 forgets nothing; 0.999 remembers
        about the last thousand outcomes).
    """

    def __init__(
        self,
        n_bins: int = 20,
        prior: float = 5.0,
        decay: float = 0.9995,
        low: float = -7.0,
        high: float = 4.0,
    ) -> None:
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        self.n_bins = n_bins
        self.prior = prior
        self.decay = decay
        self.low = low
        self.high = high
        self.count = [0.0] * n_bins  # sums of weights; the newest example weighs `_w`
        self.positive = [0.0] * n_bins
        self.score_sum = [0.0] * n_bins
        self._w = 1.0  # grows by 1 / decay per example: forgetting without touching every bin
        self.n = 0
        self._fit: list[float] | None = None

    def _bin(self, score: float) -> int:
        z = _logit(score)
        k = int((z - self.low) / (self.high - self.low) * self.n_bins)
        return min(max(k, 0), self.n_bins - 1)

    def _centre(self, k: int) -> float:
        return _sigmoid(self.low + (k + 0.5) * (self.high - self.low) / self.n_bins)

    def _pav(self) -> list[float]:
        rates, weights = [], []
        for k in range(self.n_bins):
            count = self.count[k] / self._w
            mean_score = self.score_sum[k] / self.count[k] if self.count[k] > 0 else self._centre(k)
            w = count + self.prior
            rates.append((self.positive[k] / self._w + self.prior * mean_score) / w)
            weights.append(w)
        # pool adjacent violators (non-decreasing)
        blocks: list[list[float]] = []  # [value, weight, size]
        for r, w in zip(rates, weights, strict=True):
            blocks.append([r, w, 1])
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                v2, w2, s2 = blocks.pop()
                v1, w1, s1 = blocks.pop()
                blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, s1 + s2])
        out: list[float] = []
        for v, _, size in blocks:
            out.extend([v] * int(size))
        return out

    def predict_one(self, score: float) -> float:
        """The fit at the score, interpolated linearly between bin centres (in log-odds), so it
        stays monotone without turning every score of a bin into a tie."""
        if self._fit is None:
            self._fit = self._pav()
        t = (_logit(score) - self.low) / (self.high - self.low) * self.n_bins - 0.5
        if t <= 0.0:
            return self._fit[0]
        if t >= self.n_bins - 1:
            return self._fit[-1]
        k = int(t)
        frac = t - k
        return self._fit[k] * (1.0 - frac) + self._fit[k + 1] * frac

    def learn_one(self, score: float, y: bool | float) -> None:
        if self.n:
            self._w /= self.decay
        if self._w > 1e100:  # rescale before the weights overflow
            self.count = [c / self._w for c in self.count]
            self.positive = [c / self._w for c in self.positive]
            self.score_sum = [c / self._w for c in self.score_sum]
            self._w = 1.0
        k = self._bin(score)
        self.count[k] += self._w
        self.positive[k] += self._w * float(y)
        self.score_sum[k] += self._w * score
        self.n += 1
        self._fit = None

    def reset(self) -> None:
        self.count = [0.0] * self.n_bins
        self.positive = [0.0] * self.n_bins
        self.score_sum = [0.0] * self.n_bins
        self._w = 1.0
        self.n = 0
        self._fit = None

    def state(self) -> dict[str, Any]:
        return {
            "kind": "bins",
            "n_bins": self.n_bins,
            "prior": self.prior,
            "decay": self.decay,
            "low": self.low,
            "high": self.high,
            "count": self.count,
            "positive": self.positive,
            "score_sum": self.score_sum,
            "w": self._w,
            "n": self.n,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> BinnedCalibrator:
        obj = cls(s["n_bins"], s["prior"], s["decay"], s["low"], s["high"])
        obj.count, obj.positive, obj.score_sum = (
            list(s["count"]),
            list(s["positive"]),
            list(s["score_sum"]),
        )
        obj._w = s["w"]
        obj.n = s["n"]
        return obj


def calibrator_from_state(s: dict[str, Any] | None) -> PlattCalibrator | BinnedCalibrator | None:
    if s is None:
        return None
    return PlattCalibrator.from_state(s) if s["kind"] == "platt" else BinnedCalibrator.from_state(s)
