"""Exact probabilities of Thompson sampling over Beta posteriors, by numerical integration.

With independent posteriors X_j ~ Beta(a_j, b_j), Thompson sampling shows arm i when X_i is the
largest draw, so

    P(i first) = integral over [0, 1] of f_i(x) * prod_{j != i} F_j(x) dx

(f, F the Beta density and CDF). In a zone of several slots ranked by the draws,

    P(i in slot s) = integral of f_i(x) * P(exactly s of the other draws exceed x) dx,

the inner probability a Poisson-binomial computed by dynamic programming over the arms.

The integral is split at every arm's quantiles (so a narrow posterior gets as many intervals as
a wide one; tails down to 1e-13) and each interval takes 3-point Gauss-Legendre, with CDFs from
`scipy.special.betainc`. `max_probabilities` also returns an error estimate: the largest change
of any probability when the grid is doubled. Against a 4,096-point reference the error is about
1e-8 with 34 arms (see tests/unit/test_bandit.py); the sampler's frequencies are tested too.
"""

from __future__ import annotations

import numpy as np
from scipy import special  # type: ignore[import-untyped]

_TAILS = np.array([1e-13, 1e-10, 1e-8, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3])
_XI = np.array([-np.sqrt(0.6), 0.0, np.sqrt(0.6)])
_W = np.array([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0])


def _check(
    alphas: np.ndarray | list[float], betas: np.ndarray | list[float]
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alphas, dtype=float)
    b = np.asarray(betas, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("alphas and betas must be 1-d and of one length")
    if np.any(~np.isfinite(a)) or np.any(~np.isfinite(b)) or np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("Beta parameters must be finite and > 0")
    return a, b


def _nodes(a: np.ndarray, b: np.ndarray, points_per_arm: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on a grid cut at every arm's quantiles."""
    mid = (np.arange(points_per_arm) + 0.5) / points_per_arm
    u = np.concatenate([_TAILS, mid, 1.0 - _TAILS])
    q = special.betaincinv(a[:, None], b[:, None], u[None, :])
    x = np.unique(np.concatenate([[0.0, 1.0], q.ravel()]))
    x = x[(x >= 0.0) & (x <= 1.0)]
    h = np.diff(x)
    keep = h > 0
    lo, h = x[:-1][keep], h[keep]
    nodes = (lo[:, None] + h[:, None] * (1.0 + _XI) / 2.0).ravel()
    weights = (h[:, None] * _W / 2.0).ravel()
    inside = (nodes > 0.0) & (nodes < 1.0)
    return nodes[inside], weights[inside]


def _densities(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cdf = special.betainc(a[:, None], b[:, None], x[None, :])
    logpdf = (
        (a[:, None] - 1.0) * np.log(x)[None, :]
        + (b[:, None] - 1.0) * np.log1p(-x)[None, :]
        - special.betaln(a, b)[:, None]
    )
    return cdf, np.exp(logpdf)


def _others_product(f: np.ndarray) -> np.ndarray:
    """Row i: the product over rows j != i (prefix and suffix products, no division)."""
    ones = np.ones((1, f.shape[1]))
    prefix = np.vstack([ones, np.cumprod(f, axis=0)[:-1]])
    suffix = np.vstack([np.cumprod(f[::-1], axis=0)[::-1][1:], ones])
    return np.asarray(prefix * suffix)


def _first(a: np.ndarray, b: np.ndarray, points_per_arm: int) -> np.ndarray:
    x, w = _nodes(a, b, points_per_arm)
    cdf, pdf = _densities(a, b, x)
    return np.asarray((pdf * _others_product(cdf)) @ w)


def max_probabilities(
    alphas: np.ndarray | list[float],
    betas: np.ndarray | list[float],
    points_per_arm: int = 8,
) -> tuple[np.ndarray, float]:
    """P(each arm's draw is the largest), normalised to sum to 1, and an error estimate.

    The estimate is the largest difference between this grid and one twice as fine (the finer
    result is returned), plus how far the raw sum was from 1.
    """
    a, b = _check(alphas, betas)
    if len(a) == 1:
        return np.ones(1), 0.0
    coarse = _first(a, b, points_per_arm)
    fine = _first(a, b, 2 * points_per_arm)
    total = float(fine.sum())
    err = float(np.max(np.abs(fine - coarse))) + abs(1.0 - total)
    return fine / total, err


def rank_probabilities(
    alphas: np.ndarray | list[float],
    betas: np.ndarray | list[float],
    n_slots: int,
    points_per_arm: int = 16,
) -> np.ndarray:
    """Matrix [arm, slot]: P(the arm's draw is the (slot+1)-th largest), slots 0..n_slots-1.

    Each column is normalised to sum to 1 (the raw sums differ from 1 by the integration error).
    """
    a, b = _check(alphas, betas)
    k = len(a)
    if not 1 <= n_slots <= k:
        raise ValueError("n_slots must be between 1 and the number of arms")
    if k == 1:
        return np.ones((1, 1))
    x, w = _nodes(a, b, points_per_arm)
    cdf, pdf = _densities(a, b, x)
    # dp[i, c, :] = P(exactly c of the arms folded in so far, other than i, exceed x)
    dp = np.zeros((k, n_slots, len(x)))
    dp[:, 0, :] = 1.0
    idx = np.arange(k)
    for j in range(k):
        mask = idx != j
        cur = dp[mask]
        new = cur * cdf[j]
        new[:, 1:, :] += cur[:, :-1, :] * (1.0 - cdf[j])
        dp[mask] = new
    out = np.einsum("kn,ksn,n->ks", pdf, dp, w)
    return np.asarray(out / out.sum(axis=0, keepdims=True))
