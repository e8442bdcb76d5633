"""Off-policy estimators: what a target policy would have earned, from a logging policy's log.

Each logged row t has the reward r_t of the action shown, the probability p_t with which the
logging policy showed it, and the probability pi_t with which the *target* policy would have
shown that same action in that context (and slot). With importance weights w_t = pi_t / p_t:

* IPS (inverse propensity scoring): mean(w * r). Unbiased when every action the target may take
  had p > 0; its variance grows with the weights.
* SNIPS (self-normalised IPS): sum(w * r) / sum(w). Slightly biased, much less variance; the
  usual headline figure.
* DR (doubly robust, Dudik et al. 2011): mean(q_target + w * (r - q_logged)), where a reward
  model q gives q_logged (its estimate for the logged action) and q_target (its expectation
  under the target policy, sum over actions of pi(a) * q(a)). Unbiased if either the
  propensities or the reward model are right.

Every estimate has a seeded percentile bootstrap interval (rows resampled with replacement) and
the effective sample size (sum w)^2 / sum(w^2) (Kish): how many rows the estimate is worth.
`difference` bootstraps two policies on the same resampled rows (a paired interval).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

Arrays = Mapping[str, np.ndarray]
_CHUNK = 200


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy value with its bootstrap interval and effective sample size."""

    name: str
    value: float
    ci: tuple[float, float]
    ess: float
    n: int

    def as_dict(self) -> dict[str, object]:
        return {
            "estimator": self.name,
            "value": self.value,
            "ci": list(self.ci),
            "ess": self.ess,
            "n": self.n,
        }


def _arrays(**kw: object) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v, dtype=float) for k, v in kw.items() if v is not None}
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        raise ValueError("all arrays must have one length")
    if not n.pop():
        raise ValueError("the log is empty")
    if "logging" in out and np.any(out["logging"] <= 0):
        raise ValueError("logging probabilities must be > 0")
    if "target" in out and (np.any(out["target"] < 0) or np.any(out["target"] > 1)):
        raise ValueError("target probabilities must be in [0, 1]")
    return out


def importance_weights(target: np.ndarray, logging: np.ndarray) -> np.ndarray:
    """w = target / logging."""
    return np.asarray(np.asarray(target, dtype=float) / np.asarray(logging, dtype=float))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum(w^2); 0 when every weight is 0."""
    w = np.asarray(weights, dtype=float)
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def _ips(a: Arrays) -> np.ndarray:
    w = a["target"] / a["logging"]
    return np.asarray(np.mean(w * a["rewards"], axis=-1))


def _snips(a: Arrays) -> np.ndarray:
    w = a["target"] / a["logging"]
    den = np.sum(w, axis=-1)
    return np.asarray(
        np.where(den > 0, np.sum(w * a["rewards"], axis=-1) / np.where(den > 0, den, 1.0), 0.0)
    )


def _dr(a: Arrays) -> np.ndarray:
    w = a["target"] / a["logging"]
    return np.asarray(np.mean(a["q_target"] + w * (a["rewards"] - a["q_logged"]), axis=-1))


STATISTICS: dict[str, Callable[[Arrays], np.ndarray]] = {"ips": _ips, "snips": _snips, "dr": _dr}


def _resamples(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_bootstrap:
        b = min(_CHUNK, n_bootstrap - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def bootstrap(
    statistic: Callable[[Arrays], np.ndarray],
    arrays: Arrays,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over rows resampled with replacement."""
    n = len(next(iter(arrays.values())))
    stats = np.concatenate(
        [
            statistic({k: v[idx] for k, v in arrays.items()})
            for idx in _resamples(n, n_bootstrap, seed)
        ]
    )
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _estimate(name: str, arrays: Arrays, n_bootstrap: int, alpha: float, seed: int) -> Estimate:
    stat = STATISTICS[name]
    value = float(stat(arrays))
    ci = bootstrap(stat, arrays, n_bootstrap, alpha, seed)
    ess = effective_sample_size(arrays["target"] / arrays["logging"])
    return Estimate(name, value, ci, ess, len(arrays["rewards"]))


def ips(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Estimate:
    """Inverse propensity scoring: mean(target / logging * reward)."""
    a = _arrays(rewards=rewards, target=target, logging=logging)
    return _estimate("ips", a, n_bootstrap, alpha, seed)


def snips(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Estimate:
    """Self-normalised IPS: sum(w * reward) / sum(w)."""
    a = _arrays(rewards=rewards, target=target, logging=logging)
    return _estimate("snips", a, n_bootstrap, alpha, seed)


def dr(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    q_logged: np.ndarray,
    q_target: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Estimate:
    """Doubly robust: mean(q_target + w * (reward - q_logged))."""
    a = _arrays(
        rewards=rewards, target=target, logging=logging, q_logged=q_logged, q_target=q_target
    )
    return _estimate("dr", a, n_bootstrap, alpha, seed)


def difference(
    name: str,
    a: Mapping[str, object],
    b: Mapping[str, object],
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Value of policy a minus policy b by estimator `name`, with a paired bootstrap interval.

    `a` and `b` hold the arrays of the two policies on the same log (`rewards`, `logging` the
    same for both; `target`, and for DR `q_logged` / `q_target`, their own).
    """
    stat = STATISTICS[name]
    aa = _arrays(**a)
    bb = _arrays(**b)
    n = len(aa["rewards"])
    if len(bb["rewards"]) != n:
        raise ValueError("the two policies must be evaluated on the same log")
    value = float(stat(aa) - stat(bb))
    diffs = np.concatenate(
        [
            stat({k: v[idx] for k, v in aa.items()}) - stat({k: v[idx] for k, v in bb.items()})
            for idx in _resamples(n, n_bootstrap, seed)
        ]
    )
    lo, hi = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return value, (float(lo), float(hi))


def evaluate(
    rewards: np.ndarray,
    target: np.ndarray,
    logging: np.ndarray,
    q_logged: np.ndarray | None = None,
    q_target: np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS and SNIPS, and DR when a reward model's arrays are given."""
    out = {
        "ips": ips(rewards, target, logging, n_bootstrap=n_bootstrap, alpha=alpha, seed=seed),
        "snips": snips(rewards, target, logging, n_bootstrap=n_bootstrap, alpha=alpha, seed=seed),
    }
    if q_logged is not None and q_target is not None:
        out["dr"] = dr(
            rewards,
            target,
            logging,
            q_logged,
            q_target,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            seed=seed,
        )
    return out


def events_needed(base_rate: float, lift: float, ess_ratio: float = 1.0, z: float = 2.8) -> int:
    """Rough number of logged events to tell a relative `lift` over `base_rate` apart.

    A candidate estimated off-policy from n logged events (effective sample `ess_ratio * n`)
    against the logged policy's own rate (n events): the difference p * lift must exceed z
    standard errors, z = 2.8 for 95 % confidence and 80 % power:
    n = z^2 * p (1 - p) * (1 + 1 / ess_ratio) / (p * lift)^2. Conservative: the paired
    interval of `difference` is usually a little narrower.
    """
    if not 0 < base_rate < 1 or lift == 0 or not 0 < ess_ratio <= 1:
        raise ValueError("need 0 < base_rate < 1, lift != 0, 0 < ess_ratio <= 1")
    p = base_rate
    return int(np.ceil(z * z * p * (1.0 - p) * (1.0 + 1.0 / ess_ratio) / (p * lift) ** 2))
