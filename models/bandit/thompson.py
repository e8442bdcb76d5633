"""Thompson sampling over Beta-Bernoulli posteriors, with the probability of every arm.

`BetaThompson` is river's `bandit.ThompsonSampling` with a Beta prior, made fit for logged
decisions:

* rewards in [0, 1] update the posterior fractionally (alpha += r, beta += 1 - r); river's
  `proba.Beta.update` counts any truthy reward as a full success;
* a decision's draws come from `decision_rng(seed, decision_id)`, not from one stateful random
  source, so every API process makes the same decision for the same id and model version;
* `probabilities` are exact (numerical integration, `models.bandit.betamax`, error ~1e-8), and
  cached until the next update, so a model version costs one integration however many decisions
  it serves;
* optional drift reaction per arm (`drift_delta`): an ADWIN on the arm's rewards; when it fires
  the arm's posterior restarts from the prior plus ADWIN's recent window (its width and mean),
  i.e. the evidence from before the change is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from river import bandit as river_bandit
from river import proba

from models.bandit.base import (
    ArmID,
    Context,
    SeededRanking,
    check_arms,
    check_reward,
)
from models.drift import Adwin
from models.reco.base import PickledAsSnapshot, pack, unpack

KIND = "bandit.thompson"
VERSION = 1


class BetaThompson(PickledAsSnapshot, SeededRanking, river_bandit.ThompsonSampling):
    """Beta-Bernoulli Thompson sampling over a campaign's arms.

    Parameters
    ----------
    alpha, beta
        The Beta prior of every arm (1, 1 is uniform).
    seed
        Mixed with the decision id to seed each decision's draws.
    drift_delta
        ADWIN confidence for the per-arm drift reaction; None turns it off.
    points_per_arm
        Integration grid size per arm (see `models.bandit.betamax`).
    """

    kind = KIND

    def _rank(self, arms: list[ArmID], rng: Any) -> list[ArmID]:
        return self._draws(arms, rng)

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        seed: int = 0,
        drift_delta: float | None = None,
        points_per_arm: int = 8,
    ) -> None:
        if alpha <= 0 or beta <= 0:
            raise ValueError("alpha and beta must be > 0")
        super().__init__(reward_obj=proba.Beta(alpha, beta), burn_in=0, seed=seed)  # type: ignore[arg-type]
        self.alpha = alpha
        self.beta = beta
        self.drift_delta = drift_delta
        self.points_per_arm = points_per_arm
        self._drift: dict[ArmID, Adwin] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters: exactly the constructor's arguments."""
        return self._get_params()

    # -- state -----------------------------------------------------------------------------

    def _post(self, arm_id: ArmID) -> proba.Beta:
        return cast(proba.Beta, self._rewards[arm_id])

    def posterior(self, arm_id: ArmID) -> tuple[float, float]:
        """(alpha, beta) of an arm's posterior (the prior for an arm never updated)."""
        post = cast("proba.Beta | None", self._rewards.get(arm_id))
        if post is None:
            return float(self.alpha), float(self.beta)
        return float(post.alpha), float(post.beta)

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
        post = self._post(arm_id)
        post.alpha += r  # type: ignore[assignment]  # river types Beta's counts as int
        post.beta += 1.0 - r  # type: ignore[assignment]
        self._counts[arm_id] += 1
        self._n += 1
        self._cache.clear()
        if self.drift_delta is not None:
            det = self._drift.get(arm_id)
            if det is None:
                det = self._drift[arm_id] = Adwin(self.drift_delta)
            if det.update(r):
                post.alpha = self.alpha + det.mean * det.width  # type: ignore[assignment]
                post.beta = self.beta + (1.0 - det.mean) * det.width  # type: ignore[assignment]

    learn_one = update

    # -- probabilities ---------------------------------------------------------------------

    def _params(self, arms: Sequence[ArmID]) -> tuple[np.ndarray, np.ndarray]:
        ab = [self.posterior(a) for a in arms]
        return np.array([x for x, _ in ab]), np.array([y for _, y in ab])

    def probabilities(
        self, arm_ids: Sequence[ArmID], context: Context | None = None, action_features: Any = None
    ) -> dict[ArmID, float]:
        """P(each arm is shown) in a one-slot decision: P(its draw is the largest)."""
        return self.slot_probabilities(arm_ids, 1)[0]

    def slot_probabilities(
        self,
        arm_ids: Sequence[ArmID],
        n_slots: int,
        context: Context | None = None,
        action_features: Any = None,
        slot_features: Any = None,
    ) -> list[dict[ArmID, float]]:
        """Per slot, P(each arm's draw ranks there) when a zone shows the top `n_slots` draws."""
        arms = check_arms(arm_ids, n_slots)
        key = (tuple(arms), n_slots)
        hit = self._cache.get(key)
        if hit is not None:
            return cast(list[dict[ArmID, float]], hit)
        a, b = self._params(arms)
        if n_slots == 1:
            from models.bandit.betamax import max_probabilities

            p, _ = max_probabilities(a, b, self.points_per_arm)
            out = [dict(zip(arms, p.tolist(), strict=True))]
        else:
            from models.bandit.betamax import rank_probabilities

            m = rank_probabilities(a, b, n_slots, 2 * self.points_per_arm)
            out = [dict(zip(arms, m[:, s].tolist(), strict=True)) for s in range(n_slots)]
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = out
        return out

    # -- decisions -------------------------------------------------------------------------

    def _draws(self, arms: Sequence[ArmID], rng: Any) -> list[ArmID]:
        scored = [(rng.betavariate(*self.posterior(a)), rng.random(), a) for a in arms]
        scored.sort(reverse=True)
        return [a for _, _, a in scored]

    def pull(self, arm_ids: Sequence[ArmID], context: Context | None = None) -> ArmID:  # type: ignore[override]
        """river's verb: one Thompson draw from the policy's own random source."""
        arms = check_arms(arm_ids)
        return self._draws(arms, self._rng)[0]

    def _pull(self, arm_ids: list[ArmID]) -> ArmID:  # type: ignore[override]
        return self.pull(arm_ids)  # river's hook, replaced by pull

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes: hyper-parameters, each arm's posterior and drift window."""
        return pack(
            KIND,
            VERSION,
            {
                "params": self._get_params(),
                "n": self._n,
                "arms": [
                    [arm, *self.posterior(arm), self._counts[arm]]
                    for arm in map(str, self._rewards)
                ],
                "drift": [[arm, d.state()] for arm, d in self._drift.items()],
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> BetaThompson:
        """Inverse of `snapshot`; ValueError for another kind or version."""
        state = unpack(data, KIND, VERSION)
        obj = cls(**state["params"])
        for arm, a, b, count in state["arms"]:
            post = obj._post(arm)
            post.alpha, post.beta = a, b
            obj._counts[arm] = count
        obj._n = state["n"]
        obj._drift = {arm: Adwin.from_state(s) for arm, s in state["drift"]}
        return obj
