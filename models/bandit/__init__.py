"""Offer policies that learn: every decision comes with the probability of what it showed.

One module per family, river's verbs (`pull`, `update`/`learn_one`), hyper-parameters exactly
the constructor arguments, a decision reproducible from (seed, decision id) and the model
version, versioned bytes through `snapshot()` / `restore()`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from models.bandit.apprentice import Apprentice
from models.bandit.base import Decision, Policy, Slot, decision_rng
from models.bandit.contextual import LinearContextual, VWContextual
from models.bandit.epsilon import EpsilonGreedy
from models.bandit.thompson import BetaThompson

KINDS: dict[str, Any] = {
    "bandit.thompson": BetaThompson,
    "bandit.epsilon_greedy": EpsilonGreedy,
    "bandit.linear": LinearContextual,
    "bandit.vw": VWContextual,
    "bandit.apprentice": Apprentice,
}


def restore(data: bytes) -> Any:
    """Any policy's snapshot back into its class, chosen by the kind written in the bytes."""
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types
        raise ValueError("not a policy snapshot") from exc
    kind = doc.get("kind") if isinstance(doc, dict) else None
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown policy kind {kind!r}")
    return cls.restore(data)


__all__ = [
    "KINDS",
    "Apprentice",
    "BetaThompson",
    "Decision",
    "EpsilonGreedy",
    "LinearContextual",
    "Policy",
    "Slot",
    "VWContextual",
    "decision_rng",
    "restore",
]
