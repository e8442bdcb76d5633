"""Offer bandits in campaigns: which variant a learning campaign shows, and with what probability.

A campaign with `policy: thompson`, `epsilon_greedy` or `contextual` keeps its control group as the
fixed, hashed holdout (`assign.bucket`: the same visitors are held out in every process, so
lift is still measured against them); outside it, the variant comes from the campaign's
published bandit model (models/bandit), drawn with the decision's own random source
(`models.bandit.base.decision_rng(seed, "<campaign>.<random part of the decision id>")`), so a
decision is reproducible from its id and the model version. The probability logged is that of
what was shown: `(1 - control share) * P_bandit(variant)`.

`policy: contextual` is `models.bandit.contextual.LinearContextual` (river's logistic
regression on the variant, the visitor's features and their crosses, softmax exploration with
an epsilon floor) over the features of engine/logic/decisions/features.py.

A campaign with `slots: N` fills N slots of its zone with N distinct variants: a context-free
policy ranks them by one set of draws (each slot's probability is the marginal P(variant ranks
there), exact); the contextual one fills the slots in order from its distribution for the
features plus the slot's position, over the variants left (each slot's probability is the
conditional one given the earlier slots, as Personalizer's multi-slot logs it).

Pure: models in, plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.logic.decisions.assign import bucket
from engine.logic.decisions.config import Campaign, PolicySpec
from models.bandit.contextual import LinearContextual
from models.bandit.epsilon import EpsilonGreedy
from models.bandit.thompson import BetaThompson

Bandit = BetaThompson | EpsilonGreedy | LinearContextual
CLASSES: dict[str, Any] = {"thompson": BetaThompson, "epsilon_greedy": EpsilonGreedy,
                           "contextual": LinearContextual}
SEED = 0  # mixed with each decision's key; the key carries the randomness
DRIFT_DELTA = 0.002  # ADWIN on each arm's rewards: on a change, the arm forgets the old evidence


@dataclass(frozen=True, slots=True)
class Pick:
    """A learning campaign's choice for one decision."""

    variant: str | None  # None: the control group
    control: bool
    probability: float  # of what was shown (control: the holdout share)
    probabilities: dict[str, float]  # every arm's probability, control included when > 0
    slots: tuple[tuple[str, float], ...] = ()  # (variant, probability) per slot, when > 1


def new_model(spec: PolicySpec) -> Bandit:
    """A fresh bandit of the campaign's policy (every arm at its prior: uniform choice)."""
    params: dict[str, Any] = dict(spec.params)
    if spec.kind == "thompson":
        return BetaThompson(seed=SEED, drift_delta=DRIFT_DELTA, **params)
    if spec.kind == "epsilon_greedy":
        return EpsilonGreedy(seed=SEED, drift_delta=DRIFT_DELTA, **params)
    if spec.kind == "contextual":
        return LinearContextual(seed=SEED, **params)
    raise ValueError(f"{spec.kind!r} is not a learning policy")


def restore_model(spec: PolicySpec, blob: bytes | None) -> Bandit:
    """The model from its published bytes, or a fresh one when there are none, they are of
    another policy (the campaign's policy changed) or they cannot be read."""
    if blob:
        cls = CLASSES.get(spec.kind)
        if cls is None:
            raise ValueError(f"{spec.kind!r} is not a learning policy")
        try:
            model = cls.restore(blob)
        except (ValueError, KeyError, TypeError):
            return new_model(spec)
        if model.get_params() == new_model(spec).get_params():
            return model  # type: ignore[no-any-return]
    return new_model(spec)


def warm(campaign: Campaign, model: Bandit) -> Bandit:
    """Compute (and cache, per model version) the probabilities `pick` asks of a freshly
    restored model, so the first decision on a new version does not integrate them (Thompson:
    ≈ 1 ms for three variants). The API calls it when it loads a version, off the request path."""
    model.probabilities([v.id for v in campaign.variants])
    return model


def decision_key(campaign_id: str, random_part: str) -> str:
    """What seeds a decision's draws: the campaign and the random part of its decision id."""
    return f"{campaign_id}.{random_part}"


def slot_features(n_slots: int) -> list[dict[str, Any]] | None:
    """What a contextual policy adds to the features per slot: its position (none for one)."""
    return [{"slot": str(s)} for s in range(n_slots)] if n_slots > 1 else None


def pick(campaign: Campaign, model: Bandit, visitor_id: str, random_part: str,
         features: dict[str, Any] | None = None) -> Pick:
    """The control group by hash, else the model's draw among the campaign's variants (for a
    contextual campaign, given `features`; for `slots` > 1, one distinct variant per slot)."""
    control = campaign.control_percent / 100.0
    arms = [v.id for v in campaign.variants]
    n = campaign.slots
    if n == 1 and not isinstance(model, LinearContextual):  # cached per model version: cheap
        probs = model.probabilities(arms)
        shown = {a: (1.0 - control) * p for a, p in probs.items()}
        if control > 0:
            shown["control"] = control
        if bucket(campaign.id, visitor_id) < control:
            return Pick(None, True, control, shown)
        arm = model.choose(arms, decision_key(campaign.id, random_part))[0]
        return Pick(arm, False, max(shown[arm], 1e-12), shown)
    if bucket(campaign.id, visitor_id) < control:  # the holdout sees none of the slots
        return Pick(None, True, control, {"control": control})
    d = model.decide(arms, decision_key(campaign.id, random_part), features, n,
                     slot_features=slot_features(n))
    first = {a: (1.0 - control) * p for a, p in d.slots[0].probabilities.items()}
    if control > 0:
        first["control"] = control
    per_slot = tuple((s.arm, max((1.0 - control) * s.probability, 1e-12)) for s in d.slots)
    return Pick(d.arm, False, per_slot[0][1], first, per_slot if n > 1 else ())
