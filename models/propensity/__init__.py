"""Purchase and exit propensity: session features, a calibrated online model, drift."""

from models.propensity.calibration import BinnedCalibrator, PlattCalibrator
from models.propensity.features import (
    SESSION_GAP_MS,
    referrer_type,
    session_examples,
    session_features,
    split_sessions,
)
from models.propensity.model import PropensityModel, prepare

__all__ = [
    "SESSION_GAP_MS",
    "BinnedCalibrator",
    "PlattCalibrator",
    "PropensityModel",
    "prepare",
    "referrer_type",
    "session_examples",
    "session_features",
    "split_sessions",
]
