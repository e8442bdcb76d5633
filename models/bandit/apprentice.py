"""Apprentice mode: serve the baseline while the policy learns; switch once it agrees enough.

While `Apprentice` is learning, every decision shows the caller's baseline arm (probability 1:
that is what was shown, so the log stays honest) and the policy learns from the baseline's
rewards. Each decision also asks the policy for its own choice (its most probable arm, so
exploration does not count as disagreement) and records whether it equals the baseline. When,
over the last `window` decisions, the policy agreed at least `agreement` of the time (and at
least `window` decisions were seen), the wrapper switches to serving the policy for good.
`switch` can also be set by hand (`force_switch`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from models.bandit.base import ArmID, Context, Decision, Slot, check_arms
from models.reco.base import PickledAsSnapshot, pack, unpack

KIND = "bandit.apprentice"
VERSION = 1


def _top(probs: dict[ArmID, float], arms: list[ArmID]) -> ArmID:
    """The most probable arm (the first of the list among ties)."""
    best = arms[0]
    for a in arms:
        if probs.get(a, 0.0) > probs.get(best, 0.0):
            best = a
    return best


class Apprentice(PickledAsSnapshot):
    """Wrap any policy of `models.bandit` in apprentice mode.

    Parameters
    ----------
    policy
        The policy that learns (and serves after the switch).
    agreement
        Share of the last `window` decisions where the policy's choice must equal the baseline.
    window
        How many recent decisions the share is measured over.
    """

    def __init__(self, policy: Any, agreement: float = 0.9, window: int = 500) -> None:
        if not 0.0 < agreement <= 1.0:
            raise ValueError("agreement must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.policy = policy
        self.agreement = agreement
        self.window = window
        self._recent: deque[bool] = deque(maxlen=window)
        self.switched = False

    @property
    def seed(self) -> int:
        return int(self.policy.seed)

    @property
    def mode(self) -> str:
        """`"apprentice"` while serving the baseline, `"online"` after the switch."""
        return "online" if self.switched else "apprentice"

    @property
    def agreement_rate(self) -> float | None:
        """Share of agreement over the recent window (None before any decision)."""
        return sum(self._recent) / len(self._recent) if self._recent else None

    def force_switch(self) -> None:
        """Serve the policy from now on."""
        self.switched = True

    def decide(
        self,
        arm_ids: Sequence[ArmID],
        decision_id: str,
        baseline: ArmID | Sequence[ArmID],
        context: Context | None = None,
        n_slots: int = 1,
        **kwargs: Any,
    ) -> Decision:
        """The baseline (one arm, or one per slot) while learning; the policy's decision after."""
        arms = check_arms(arm_ids, n_slots)
        base = [baseline] if isinstance(baseline, str) else list(baseline)
        if len(base) != n_slots or any(b not in arms for b in base):
            raise ValueError("baseline must name one of the arms per slot")
        if self.switched:
            out: Decision = self.policy.decide(arms, decision_id, context, n_slots, **kwargs)
            return out
        probs = self.policy.slot_probabilities(arms, n_slots, context, **kwargs)
        agreed = all(_top(p, arms) == b for p, b in zip(probs, base, strict=True))
        self._recent.append(agreed)
        if len(self._recent) >= self.window and sum(self._recent) >= self.agreement * len(
            self._recent
        ):
            self.switched = True
        slots = tuple(Slot(b, 1.0, {a: 1.0 if a == b else 0.0 for a in arms}) for b in base)
        return Decision(decision_id, slots, KIND, {"mode": "apprentice", "agreed": agreed})

    def update(
        self, arm_id: ArmID, reward: float, context: Context | None = None, **kwargs: Any
    ) -> None:
        """The policy learns every reward, in both modes."""
        self.policy.update(arm_id, reward, context, **kwargs)

    learn_one = update

    def snapshot(self) -> bytes:
        """Versioned bytes: the settings, the window, the mode and the wrapped policy's bytes."""
        return pack(
            KIND,
            VERSION,
            {
                "agreement": self.agreement,
                "window": self.window,
                "recent": list(self._recent),
                "switched": self.switched,
                "policy": self.policy.snapshot(),
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> Apprentice:
        """Inverse of `snapshot` (the wrapped policy is restored by its kind)."""
        from models.bandit import restore as restore_policy

        state = unpack(data, KIND, VERSION)
        obj = cls(restore_policy(state["policy"]), state["agreement"], state["window"])
        obj._recent.extend(bool(x) for x in state["recent"])
        obj.switched = bool(state["switched"])
        return obj

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters: exactly the constructor's arguments."""
        return {"policy": self.policy, "agreement": self.agreement, "window": self.window}

    def clone(self) -> Apprentice:
        """A fresh wrapper around a fresh clone of the policy."""
        return Apprentice(self.policy.clone(), self.agreement, self.window)
