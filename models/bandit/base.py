"""What every offer policy shares: the decision record, the per-decision random source, slots.

A policy answers three questions about a set of arms (a campaign's variants, a zone's items):

* ``probabilities(arm_ids, context)`` -- the probability of every arm for one slot;
* ``slot_probabilities(arm_ids, n_slots, context)`` -- per slot, the probability of every arm
  being shown in that slot (the marginal, what per-position evaluation needs);
* ``decide(arm_ids, decision_id, context, n_slots)`` -- the arms shown and those probabilities.

The randomness of a decision comes from ``decision_rng(seed, decision_id)``: the same model
version, seed and decision id give the same decision in every process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

ArmID = str
Context = Mapping[str, Any]


def decision_rng(seed: int, decision_id: str) -> random.Random:
    """A random source fixed by (seed, decision id): a decision is reproducible from its id."""
    key = f"{seed}\x1f{decision_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"kairos-bandit").digest()
    return random.Random(int.from_bytes(digest, "big"))


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot of a decision: the arm shown, its probability, and every arm's probability."""

    arm: ArmID
    probability: float
    probabilities: Mapping[ArmID, float]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy decided: one `Slot` per slot shown (one for an ordinary campaign)."""

    decision_id: str
    slots: tuple[Slot, ...]
    policy: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arm(self) -> ArmID:
        """The arm of the first slot."""
        return self.slots[0].arm

    @property
    def probability(self) -> float:
        """The probability of the first slot's arm."""
        return self.slots[0].probability

    @property
    def probabilities(self) -> Mapping[ArmID, float]:
        """Every arm's probability in the first slot."""
        return self.slots[0].probabilities

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a log record: arm and probability per slot."""
        return {
            "decision_id": self.decision_id,
            "policy": self.policy,
            "slots": [
                {"arm": s.arm, "probability": s.probability, "probabilities": dict(s.probabilities)}
                for s in self.slots
            ],
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


class Policy(Protocol):
    """The verbs every policy of `models.bandit` offers.

    Context-free policies accept and ignore `context`, `action_features`, `slot_features` and
    the keyword arguments of `update`, so a caller can treat every policy alike.
    """

    seed: int

    def probabilities(
        self, arm_ids: Sequence[ArmID], context: Context | None = None, action_features: Any = None
    ) -> dict[ArmID, float]: ...

    def slot_probabilities(
        self,
        arm_ids: Sequence[ArmID],
        n_slots: int,
        context: Context | None = None,
        action_features: Any = None,
        slot_features: Any = None,
    ) -> list[dict[ArmID, float]]: ...

    def decide(
        self,
        arm_ids: Sequence[ArmID],
        decision_id: str,
        context: Context | None = None,
        n_slots: int = 1,
        action_features: Any = None,
        slot_features: Any = None,
    ) -> Decision: ...

    def choose(
        self,
        arm_ids: Sequence[ArmID],
        decision_id: str,
        context: Context | None = None,
        n_slots: int = 1,
    ) -> list[ArmID]: ...

    def update(
        self,
        arm_id: ArmID,
        reward: float,
        context: Context | None = None,
        *,
        probability: float | None = None,
        arm_ids: Sequence[ArmID] | None = None,
        action_features: Any = None,
    ) -> None: ...

    def snapshot(self) -> bytes: ...

    def clone(self) -> Any: ...


def check_arms(arm_ids: Sequence[ArmID], n_slots: int = 1) -> list[ArmID]:
    """The arms as a list of distinct strings; raises ValueError when they cannot fill the slots."""
    arms = [str(a) for a in arm_ids]
    if not arms:
        raise ValueError("at least one arm is needed")
    if len(set(arms)) != len(arms):
        raise ValueError("arm ids must be distinct")
    if n_slots < 1 or n_slots > len(arms):
        raise ValueError(f"n_slots must be between 1 and the number of arms ({len(arms)})")
    return arms


def check_reward(reward: float) -> float:
    """A reward in [0, 1] (booleans allowed); raises ValueError otherwise."""
    r = float(reward)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"reward must be in [0, 1], got {reward!r}")
    return r


def draw(rng: random.Random, probs: Mapping[ArmID, float], arms: Sequence[ArmID]) -> ArmID:
    """One arm drawn from `probs` (in the order of `arms`, so a seed gives one answer)."""
    u = rng.random() * sum(probs[a] for a in arms)
    acc = 0.0
    for a in arms:
        acc += probs[a]
        if u < acc:
            return a
    return next(a for a in reversed(arms) if probs[a] > 0)


def plackett_luce_marginals(
    pmf_for: Any, arms: Sequence[ArmID], n_slots: int
) -> list[dict[ArmID, float]]:
    """Marginal probability per slot when slot s draws from `pmf_for(remaining)` (no repeats).

    `pmf_for(slot, remaining_arms) -> dict` is slot `slot`'s distribution over the arms still free.
    Exact by enumerating the earlier slots' choices: cost grows as len(arms)**(n_slots - 1),
    fine for the 1-3 slots of a zone.
    """
    out: list[dict[ArmID, float]] = [dict.fromkeys(arms, 0.0) for _ in range(n_slots)]

    def walk(prefix: tuple[ArmID, ...], weight: float) -> None:
        s = len(prefix)
        remaining = [a for a in arms if a not in prefix]
        pmf = pmf_for(s, remaining)
        for a in remaining:
            p = pmf.get(a, 0.0)
            if p <= 0.0:
                continue
            out[s][a] += weight * p
            if s + 1 < n_slots:
                walk((*prefix, a), weight * p)

    walk((), 1.0)
    return out


class SeededRanking:
    """`choose` and `decide` of a context-free policy that ranks the arms with a random source:
    the ranking is seeded by the decision id (reproducible), the probabilities are the
    policy's exact `slot_probabilities`. A subclass sets `kind` and implements `_rank`."""

    kind: str
    seed: int | None

    def _rank(self, arms: list[ArmID], rng: random.Random) -> list[ArmID]:
        raise NotImplementedError

    def slot_probabilities(self, arm_ids: Sequence[ArmID], n_slots: int,
                           context: Context | None = None, action_features: Any = None,
                           slot_features: Any = None) -> list[dict[ArmID, float]]:
        raise NotImplementedError

    def choose(self, arm_ids: Sequence[ArmID], decision_id: str, context: Context | None = None,
               n_slots: int = 1) -> list[ArmID]:
        """The arms `decide` would show, without computing probabilities (cheap)."""
        arms = check_arms(arm_ids, n_slots)
        return self._rank(arms, decision_rng(int(self.seed or 0), decision_id))[:n_slots]

    def decide(self, arm_ids: Sequence[ArmID], decision_id: str, context: Context | None = None,
               n_slots: int = 1, action_features: Any = None, slot_features: Any = None
               ) -> Decision:
        """Rank the arms (seeded by the decision id) and show the first `n_slots`."""
        arms = check_arms(arm_ids, n_slots)
        ranked = self._rank(arms, decision_rng(int(self.seed or 0), decision_id))
        probs = self.slot_probabilities(arms, n_slots)
        slots = tuple(Slot(ranked[s], probs[s][ranked[s]], probs[s]) for s in range(n_slots))
        return Decision(decision_id, slots, self.kind)
