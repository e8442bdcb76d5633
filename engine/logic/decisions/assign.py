"""Deterministic experiment assignment: a stable hash of (campaign, visitor) picks the arm.

Every process computes the same arm without coordination. The control bucket is carved out
first (``control_percent`` of the hash space), the rest is split by variant weight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

CONTROL = "control"
_SCALE = float(1 << 64)


class Assignment(NamedTuple):
    """The arm a visitor is in: ``variant`` is ``None`` for the control group (a named
    tuple: immutable, and cheap to make on every decision)."""

    variant: str | None
    control: bool
    probability: float
    bucket: float

    @property
    def arm(self) -> str:
        """The arm name used for stats counters (``"control"`` for the control group)."""
        return CONTROL if self.control else str(self.variant)


def canonical_visitor_id(profile: Mapping[str, Any]) -> str:
    """The id that assignment hashes: the profile id, else the visitor id."""
    for key in ("profile_id", "visitor_id"):
        value = profile.get(key)
        if isinstance(value, str) and value:
            return value
    raise ValueError("profile has neither profile_id nor visitor_id")


def bucket(campaign_id: str, visitor_id: str) -> float:
    """A uniform number in [0, 1) fixed by (campaign, visitor)."""
    key = campaign_id.encode() + b"\x1f" + visitor_id.encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"kairos-ab").digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(
    campaign_id: str,
    visitor_id: str,
    variants: Sequence[tuple[str, float]],
    control_percent: float = 0.0,
) -> Assignment:
    """Pick the control group or a variant for this visitor; weights need not sum to 1."""
    if not variants:
        raise ValueError("at least one variant is needed")
    total = sum(w for _, w in variants)
    if total <= 0 or any(w < 0 for _, w in variants):
        raise ValueError("variant weights must be >= 0 with a positive sum")
    if not 0.0 <= control_percent < 100.0:
        raise ValueError("control_percent must be in [0, 100)")
    return arm_of(bucket(campaign_id, visitor_id), variants, total, control_percent)


def arm_of(u: float, variants: Sequence[tuple[str, float]], total: float,
           control_percent: float) -> Assignment:
    """The arm of the bucket ``u`` (what `assign` picks, for weights and a control share it
    has validated, or that a loaded campaign has: engine/logic/decisions/config.py)."""
    control = control_percent / 100.0
    if u < control:
        return Assignment(None, True, control, u)
    target = (u - control) / (1.0 - control) * total
    acc = 0.0
    chosen = variants[-1]
    for name, weight in variants:
        acc += weight
        if target < acc and weight > 0:
            chosen = name, weight
            break
    return Assignment(chosen[0], False, (1.0 - control) * chosen[1] / total, u)


def arm_probabilities(
    variants: Sequence[tuple[str, float]], control_percent: float = 0.0
) -> dict[str, float]:
    """The configured probability of every arm, control included when it is > 0."""
    total = sum(w for _, w in variants)
    control = control_percent / 100.0
    probs = {name: (1.0 - control) * w / total for name, w in variants}
    if control > 0:
        probs[CONTROL] = control
    return probs
