"""Exact metrics for scores and probabilities: ROC AUC, log loss, Brier, calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata  # type: ignore[import-untyped]


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties), not a threshold grid."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError("y_true and scores must have one shape")
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise ValueError("ROC AUC needs both classes")
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(y_true: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of binary outcomes."""
    y = np.asarray(y_true, dtype=float)
    q = np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))


def brier(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of probabilities."""
    y = np.asarray(y_true, dtype=float)
    return float(np.mean((np.asarray(p, dtype=float) - y) ** 2))


def calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: |mean predicted - observed rate| per equal-width bin,
    weighted by the bin's share of rows."""
    y = np.asarray(y_true, dtype=float)
    q = np.asarray(p, dtype=float)
    bins = np.minimum((q * n_bins).astype(int), n_bins - 1)
    err = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            err += m.mean() * abs(q[m].mean() - y[m].mean())
    return float(err)
