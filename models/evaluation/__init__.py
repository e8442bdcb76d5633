"""Offline evaluation: off-policy estimators (IPS, SNIPS, DR), the replay method, metrics."""

from models.evaluation.estimators import (
    Estimate,
    bootstrap,
    difference,
    dr,
    effective_sample_size,
    evaluate,
    events_needed,
    importance_weights,
    ips,
    snips,
)
from models.evaluation.metrics import brier, calibration_error, log_loss, roc_auc
from models.evaluation.replay import ReplayResult, replay

__all__ = [
    "Estimate",
    "ReplayResult",
    "bootstrap",
    "brier",
    "calibration_error",
    "difference",
    "dr",
    "effective_sample_size",
    "evaluate",
    "events_needed",
    "importance_weights",
    "ips",
    "log_loss",
    "replay",
    "roc_auc",
    "snips",
]
