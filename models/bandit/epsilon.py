"""Epsilon-greedy over a campaign's arms, with the probability of every arm.

`EpsilonGreedy` is river's `bandit.EpsilonGreedy` (mean reward per arm, epsilon decaying as
`epsilon * exp(-decay * n)`), made fit for logged decisions: draws come from
`decision_rng(seed, decision_id)`, ties between best arms are broken at random (river takes the
first), and the probabilities are closed-form:

    P(arm) = epsilon_n / K + (1 - epsilon_n) * [arm among the best] / (number of best arms).

In a zone of several slots a decision shows, with probability 1 - epsilon_n, the arms ranked by
mean reward (ties in random order), else a uniformly random ranking: so per slot
P(arm in slot s) = epsilon_n / K + (1 - epsilon_n) * P(greedy ranking puts it at s).

Drift (`drift_delta`): an ADWIN per arm; when it fires, the arm's mean restarts from ADWIN's
recent window (its mean, counted `width` times).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

from river import bandit as river_bandit
from river import stats

from models.bandit.base import (
    ArmID,
    Context,
    SeededRanking,
    check_arms,
    check_reward,
)
from models.drift import Adwin
from models.reco.base import PickledAsSnapshot, pack, unpack

KIND = "bandit.epsilon_greedy"
VERSION = 1


class EpsilonGreedy(PickledAsSnapshot, SeededRanking, river_bandit.EpsilonGreedy):
    """Epsilon-greedy with logged probabilities.

    Parameters
    ----------
    epsilon
        Share of decisions that explore (uniformly), before decay.
    decay
        Epsilon after n updates is `epsilon * exp(-decay * n)`.
    seed
        Mixed with the decision id to seed each decision.
    drift_delta
        ADWIN confidence for the per-arm drift reaction; None turns it off.
    """

    kind = KIND

    def _rank(self, arms: list[ArmID], rng: Any) -> list[ArmID]:
        return self._ranking(arms, rng)

    def __init__(
        self,
        epsilon: float = 0.1,
        decay: float = 0.0,
        seed: int = 0,
        drift_delta: float | None = None,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        super().__init__(
            epsilon=epsilon, decay=decay, reward_obj=stats.Mean(), burn_in=0, seed=seed
        )
        self.drift_delta = drift_delta
        self._drift: dict[ArmID, Adwin] = {}

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters: exactly the constructor's arguments."""
        return self._get_params()

    def _stat(self, arm_id: ArmID) -> stats.Mean:
        return cast(stats.Mean, self._rewards[arm_id])

    def mean(self, arm_id: ArmID) -> float:
        """Mean reward of an arm so far (0 for an arm never updated)."""
        m = cast("stats.Mean | None", self._rewards.get(arm_id))
        return float(m.get()) if m is not None else 0.0

    @property
    def drift_detections(self) -> dict[ArmID, int]:
        """Per arm, how many times the drift reaction fired."""
        return {arm: d.detections for arm, d in self._drift.items() if d.detections}

    def update(
        self,
        arm_id: ArmID,
        reward: float,
        context: Context | None = None,
        *,
        probability: float | None = None,
        arm_ids: Sequence[ArmID] | None = None,
        action_features: Any = None,
    ) -> None:
        """Learn one reward in [0, 1] for `arm_id` (context and the rest are ignored)."""
        r = check_reward(reward)
        m = self._stat(arm_id)
        m.update(r)
        self._counts[arm_id] += 1
        self._n += 1
        if self.drift_delta is not None:
            det = self._drift.get(arm_id)
            if det is None:
                det = self._drift[arm_id] = Adwin(self.drift_delta)
            if det.update(r):
                m.n, m._mean = float(det.width), det.mean

    learn_one = update

    def _groups(self, arms: Sequence[ArmID]) -> list[list[ArmID]]:
        """Arms grouped by equal mean, best first."""
        by: dict[float, list[ArmID]] = {}
        for a in arms:
            by.setdefault(self.mean(a), []).append(a)
        return [by[k] for k in sorted(by, reverse=True)]

    def probabilities(
        self, arm_ids: Sequence[ArmID], context: Context | None = None, action_features: Any = None
    ) -> dict[ArmID, float]:
        """Every arm's probability in a one-slot decision."""
        return self.slot_probabilities(arm_ids, 1)[0]

    def slot_probabilities(
        self,
        arm_ids: Sequence[ArmID],
        n_slots: int,
        context: Context | None = None,
        action_features: Any = None,
        slot_features: Any = None,
    ) -> list[dict[ArmID, float]]:
        """Per slot, P(arm shown there) (see the module docstring)."""
        arms = check_arms(arm_ids, n_slots)
        eps = self.current_epsilon
        k = len(arms)
        out = [dict.fromkeys(arms, eps / k) for _ in range(n_slots)]
        start = 0
        for group in self._groups(arms):
            for s in range(start, min(start + len(group), n_slots)):
                for a in group:
                    out[s][a] += (1.0 - eps) / len(group)
            start += len(group)
            if start >= n_slots:
                break
        return out

    @property
    def current_epsilon(self) -> float:
        """Epsilon after the decay."""
        return self.epsilon * math.exp(-self._n * self.decay) if self.decay else self.epsilon

    def _ranking(self, arms: Sequence[ArmID], rng: Any) -> list[ArmID]:
        if rng.random() < self.current_epsilon:
            order = list(arms)
            rng.shuffle(order)
            return order
        out: list[ArmID] = []
        for group in self._groups(arms):
            g = list(group)
            rng.shuffle(g)
            out.extend(g)
        return out

    def pull(self, arm_ids: Sequence[ArmID], context: Context | None = None) -> ArmID:  # type: ignore[override]
        """river's verb: one decision from the policy's own random source."""
        return self._ranking(check_arms(arm_ids), self._rng)[0]

    def _pull(self, arm_ids: list[ArmID]) -> ArmID:  # type: ignore[override]
        return self.pull(arm_ids)  # river's hook, replaced by pull

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes: hyper-parameters, each arm's mean and count, drift windows."""
        return pack(
            KIND,
            VERSION,
            {
                "params": self._get_params(),
                "n": self._n,
                "arms": [
                    [arm, float(self._stat(arm).n), float(self._stat(arm)._mean), self._counts[arm]]
                    for arm in map(str, self._rewards)
                ],
                "drift": [[arm, d.state()] for arm, d in self._drift.items()],
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> EpsilonGreedy:
        """Inverse of `snapshot`; ValueError for another kind or version."""
        state = unpack(data, KIND, VERSION)
        obj = cls(**state["params"])
        for arm, n, mean, count in state["arms"]:
            m = obj._stat(arm)
            m.n, m._mean = n, mean
            obj._counts[arm] = count
        obj._n = state["n"]
        obj._drift = {arm: Adwin.from_state(s) for arm, s in state["drift"]}
        return obj
