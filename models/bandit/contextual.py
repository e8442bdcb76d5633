"""Contextual policies over visitor features: a river linear model and Vowpal Wabbit.

Both take the visitor's features as a dict (`context`: affinities, segments, device, channel,
page type, propensities...) and, optionally, each action's own features (`action_features`),
and give every action a probability. Strings are categorical (one-hot), numbers are values,
booleans count as 0/1.

* `LinearContextual`: river's `LogisticRegression` on the action, its features, the context and
  the context x action crosses, learnt per reward by SGD; exploration by a softmax of the
  predicted log-odds (`temperature`) with an `epsilon` floor, or plain epsilon-greedy when
  `temperature` is None.
* `VWContextual`: Vowpal Wabbit's `--cb_explore_adf` (contextual bandit with action-dependent
  features), which returns the probability distribution itself; learnt from (action, cost,
  probability) with its default importance-weighted regression.

Slots: slot s draws from the policy's distribution for the context plus `slot_features[s]`,
over the actions not yet shown (the logged probability is that conditional one);
`slot_probabilities` gives the marginal per slot, exactly, by enumerating earlier slots.
A decision's draw comes from `decision_rng(seed, decision_id)`.
"""

from __future__ import annotations

import math
import os
import random
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from river import linear_model, optim, utils

from models.bandit.base import (
    ArmID,
    Context,
    Decision,
    Slot,
    check_arms,
    check_reward,
    decision_rng,
    draw,
    plackett_luce_marginals,
)
from models.reco.base import PickledAsSnapshot, pack, unpack

ActionFeatures = Mapping[ArmID, Mapping[str, Any]]


def _merge(context: Context | None, slot: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(context or {})
    if slot:
        out.update(slot)
    return out


class _Contextual(PickledAsSnapshot):
    """Slots, decisions and the check of arguments shared by the contextual policies."""

    kind = ""
    seed = 0
    _rng: random.Random

    def pmf(
        self,
        arm_ids: Sequence[ArmID],
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
    ) -> dict[ArmID, float]:
        raise NotImplementedError

    def probabilities(
        self,
        arm_ids: Sequence[ArmID],
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
    ) -> dict[ArmID, float]:
        """Every arm's probability for one slot."""
        return self.pmf(check_arms(arm_ids), context, action_features)

    def slot_probabilities(
        self,
        arm_ids: Sequence[ArmID],
        n_slots: int,
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
        slot_features: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[dict[ArmID, float]]:
        """Per slot, the marginal probability of every arm (exact; cost K**(n_slots-1) pmfs)."""
        arms = check_arms(arm_ids, n_slots)

        def pmf_for(slot: int, remaining: list[ArmID]) -> dict[ArmID, float]:
            sf = slot_features[slot] if slot_features else None
            return self.pmf(remaining, _merge(context, sf), action_features)

        return plackett_luce_marginals(pmf_for, arms, n_slots)

    def decide(
        self,
        arm_ids: Sequence[ArmID],
        decision_id: str,
        context: Context | None = None,
        n_slots: int = 1,
        action_features: ActionFeatures | None = None,
        slot_features: Sequence[Mapping[str, Any]] | None = None,
    ) -> Decision:
        """Fill `n_slots` slots in order; each slot's probability is given the earlier slots."""
        arms = check_arms(arm_ids, n_slots)
        rng = decision_rng(self.seed, decision_id)
        remaining = list(arms)
        slots = []
        for s in range(n_slots):
            sf = slot_features[s] if slot_features else None
            probs = self.pmf(remaining, _merge(context, sf), action_features)
            arm = draw(rng, probs, remaining)
            slots.append(Slot(arm, probs[arm], {a: probs.get(a, 0.0) for a in arms}))
            remaining.remove(arm)
        return Decision(decision_id, tuple(slots), self.kind)

    def choose(
        self,
        arm_ids: Sequence[ArmID],
        decision_id: str,
        context: Context | None = None,
        n_slots: int = 1,
        action_features: ActionFeatures | None = None,
        slot_features: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[ArmID]:
        """The arms `decide` would show."""
        d = self.decide(arm_ids, decision_id, context, n_slots, action_features, slot_features)
        return [s.arm for s in d.slots]

    def pull(
        self,
        arm_ids: Sequence[ArmID],
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
    ) -> ArmID:
        """One arm for one slot, drawn from the policy's own random source."""
        arms = check_arms(arm_ids)
        return draw(self._rng, self.pmf(arms, context, action_features), arms)

    def snapshot(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def restore(cls, data: bytes) -> Any:
        raise NotImplementedError

    def _get_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters: exactly the constructor's arguments."""
        return self._get_params()

    def clone(self) -> Any:
        """A fresh, untrained policy with the same hyper-parameters (river's verb)."""
        return type(self)(**self._get_params())


def _softmax(logits: dict[ArmID, float], temperature: float) -> dict[ArmID, float]:
    top = max(logits.values())
    ex = {a: math.exp((v - top) / temperature) for a, v in logits.items()}
    total = sum(ex.values())
    return {a: v / total for a, v in ex.items()}


def _explore(
    scores: dict[ArmID, float], epsilon: float, temperature: float | None
) -> dict[ArmID, float]:
    """Scores (log-odds) -> probabilities: softmax with an epsilon floor, or epsilon-greedy."""
    k = len(scores)
    if temperature is not None:
        soft = _softmax(scores, temperature)
        return {a: (1.0 - epsilon) * p + epsilon / k for a, p in soft.items()}
    best = max(scores.values())
    winners = [a for a, v in scores.items() if v == best]
    return {
        a: epsilon / k + ((1.0 - epsilon) / len(winners) if a in winners else 0.0) for a in scores
    }


class LinearContextual(_Contextual):
    """A river logistic regression on (context, action) with softmax or epsilon exploration.

    Parameters
    ----------
    epsilon
        Share of uniform exploration (the floor under the softmax).
    temperature
        Softmax temperature on the predicted log-odds; None for epsilon-greedy.
    learning_rate
        SGD step of the weights (the intercept's step too).
    l2
        L2 penalty.
    crosses
        Add context x action crosses (per-action effects of each context feature).
    seed
        Mixed with the decision id to seed each decision.
    """

    kind = "bandit.linear"
    VERSION = 1

    def __init__(
        self,
        epsilon: float = 0.02,
        temperature: float | None = 0.1,
        learning_rate: float = 0.1,
        l2: float = 0.0,
        crosses: bool = True,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        if temperature is not None and temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.epsilon = epsilon
        self.temperature = temperature
        self.learning_rate = learning_rate
        self.l2 = l2
        self.crosses = crosses
        self.seed = seed
        self._model = self._new_model()
        self._rng = decision_rng(seed, "")
        self.n = 0

    def _new_model(self) -> linear_model.LogisticRegression:
        return linear_model.LogisticRegression(
            optimizer=optim.SGD(self.learning_rate),
            intercept_lr=self.learning_rate,
            l2=self.l2,
        )

    def _get_params(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "temperature": self.temperature,
            "learning_rate": self.learning_rate,
            "l2": self.l2,
            "crosses": self.crosses,
            "seed": self.seed,
        }

    def features(
        self, context: Context | None, arm: ArmID, action: Mapping[str, Any] | None
    ) -> dict[str, float]:
        """The model's input for one (context, action) pair."""
        return self._inputs(_flat(context, "c"), arm, _flat(action, "f"))

    def _inputs(
        self, ctx: dict[str, float], arm: ArmID, act: dict[str, float]
    ) -> dict[str, float]:
        """`features` from the flattened context (flattened once per decision, not per arm)."""
        out: dict[str, float] = {f"a={arm}": 1.0}
        out.update(act)
        out.update(ctx)
        if self.crosses:
            suffix = f"|a={arm}"
            for k, v in ctx.items():
                out[k + suffix] = v
            if act:
                for k, v in ctx.items():
                    if v == 1.0:  # categorical context x action features
                        for j, u in act.items():
                            out[f"{k}|{j}"] = u
        return out

    def _action_z(self, w: Any, ctx: dict[str, float], arm: ArmID,
                  act: dict[str, float]) -> float:
        """The action's terms of the log-odds: those of `_inputs` less the context's own."""
        z = w.get(f"a={arm}", 0.0) + sum(w.get(k, 0.0) * v for k, v in act.items())
        if self.crosses:
            suffix = f"|a={arm}"
            z += sum(w.get(k + suffix, 0.0) * v for k, v in ctx.items())
            if act:
                for k, v in ctx.items():
                    if v == 1.0:
                        z += sum(w.get(f"{k}|{j}", 0.0) * u for j, u in act.items())
        return float(z)

    def _probability(self, x: Mapping[str, float]) -> float:
        w = self._model._weights
        z = self._model.intercept + sum(w.get(k, 0.0) * v for k, v in x.items())
        return 1.0 / (1.0 + math.exp(-min(max(z, -35.0), 35.0)))

    def score(
        self, context: Context | None, arm: ArmID, action: Mapping[str, Any] | None = None
    ) -> float:
        """Predicted reward (click) probability of one action."""
        return self._probability(self.features(context, arm, action))

    def pmf(
        self,
        arm_ids: Sequence[ArmID],
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
    ) -> dict[ArmID, float]:
        af = action_features or {}
        ctx = _flat(context, "c")
        w = self._model._weights
        # the context's own terms are the same for every action: summed once per decision
        shared = self._model.intercept + sum(w.get(k, 0.0) * v for k, v in ctx.items())
        logits = {}
        for a in arm_ids:
            z = shared + self._action_z(w, ctx, a, _flat(af.get(a), "f"))
            p = 1.0 / (1.0 + math.exp(-min(max(z, -35.0), 35.0)))
            p = min(max(p, 1e-12), 1.0 - 1e-12)
            logits[a] = math.log(p / (1.0 - p))
        return _explore(logits, self.epsilon, self.temperature)

    def update(
        self,
        arm_id: ArmID,
        reward: float,
        context: Context | None = None,
        *,
        probability: float | None = None,
        arm_ids: Sequence[ArmID] | None = None,
        action_features: ActionFeatures | None = None,
    ) -> None:
        """Learn the reward of the action shown (a supervised step on its features).

        The logged probability is not used: on a log from another policy, learning the reward
        of what was shown is a (direct-method) regression; exploration keeps it covered.
        """
        r = check_reward(reward)
        af = (action_features or {}).get(arm_id)
        x = self.features(context, arm_id, af)
        if r in (0.0, 1.0):
            self._model.learn_one(x, r == 1.0)
        else:  # a reward in (0, 1) is a soft label: its two sides, weighted
            self._model.learn_one(x, True, w=r)
            self._model.learn_one(x, False, w=1.0 - r)
        self.n += 1

    learn_one = update

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes: hyper-parameters, weights, intercept, update count."""
        return pack(
            self.kind,
            self.VERSION,
            {
                "params": self._get_params(),
                "weights": self._model._weights.to_dict(),
                "intercept": float(self._model.intercept),
                "iterations": self._model.optimizer.n_iterations,
                "n": self.n,
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> LinearContextual:
        """Inverse of `snapshot`."""
        state = unpack(data, cls.kind, cls.VERSION)
        obj = cls(**state["params"])
        obj._model._weights = utils.VectorDict(dict(state["weights"]))
        obj._model.intercept = state["intercept"]
        obj._model.optimizer.n_iterations = state["iterations"]
        obj.n = state["n"]
        return obj


def _flat(features: Mapping[str, Any] | None, prefix: str) -> dict[str, float]:
    """Numbers as values, strings as one-hot `k=v`, booleans as 0/1; others dropped."""
    out: dict[str, float] = {}
    for k, v in (features or {}).items():
        if isinstance(v, bool):
            out[f"{prefix}:{k}"] = 1.0 if v else 0.0
        elif isinstance(v, int | float):
            if math.isfinite(v):
                out[f"{prefix}:{k}"] = float(v)
        elif isinstance(v, str):
            out[f"{prefix}:{k}={v}"] = 1.0
        elif isinstance(v, list | tuple | set | frozenset):
            for item in v:
                if isinstance(item, str):
                    out[f"{prefix}:{k}={item}"] = 1.0
    return out


_BAD = re.compile(r"[\s:|]")


def _vw_features(features: Mapping[str, Any] | None) -> str:
    parts = []
    for k, v in (features or {}).items():
        name = _BAD.sub("_", str(k))
        if isinstance(v, bool):
            if v:
                parts.append(name)
        elif isinstance(v, int | float):
            if math.isfinite(v) and v != 0:
                parts.append(f"{name}:{float(v):.6g}")
        elif isinstance(v, str):
            parts.append(f"{name}={_BAD.sub('_', v)}")
        elif isinstance(v, list | tuple | set | frozenset):
            parts.extend(f"{name}={_BAD.sub('_', str(i))}" for i in v if isinstance(i, str))
    return " ".join(parts)


class VWContextual(_Contextual):
    """Vowpal Wabbit `--cb_explore_adf` over (context, actions).

    Parameters
    ----------
    exploration
        `"epsilon"` (uses `epsilon`), `"softmax"` (uses `temperature` as VW's `--lambda` =
        1 / temperature), or `"squarecb"` (VW's SquareCB, uses `gamma_scale`).
    epsilon, temperature, gamma_scale
        Settings of the exploration above.
    learning_rate
        VW's `-l`.
    bits
        VW's `-b`: 2**bits hashed weights (the snapshot's size grows with it).
    seed
        VW's `--random_seed`, and mixed with the decision id to seed each decision.
    """

    kind = "bandit.vw"
    VERSION = 1

    def __init__(
        self,
        exploration: str = "epsilon",
        epsilon: float = 0.05,
        temperature: float = 0.5,
        gamma_scale: float = 10.0,
        learning_rate: float = 0.5,
        bits: int = 18,
        seed: int = 0,
    ) -> None:
        if exploration not in ("epsilon", "softmax", "squarecb"):
            raise ValueError("exploration must be epsilon, softmax or squarecb")
        if not 1 <= bits <= 30:
            raise ValueError("bits must be in [1, 30]")
        self.exploration = exploration
        self.epsilon = epsilon
        self.temperature = temperature
        self.gamma_scale = gamma_scale
        self.learning_rate = learning_rate
        self.bits = bits
        self.seed = seed
        self._vw = self._workspace()
        self._rng = decision_rng(seed, "")
        self.n = 0

    def _args(self) -> list[str]:
        args = [
            "--cb_explore_adf",
            "--quiet",
            "-q",
            "CA",
            "-b",
            str(self.bits),
            "-l",
            repr(self.learning_rate),
            "--random_seed",
            str(self.seed),
        ]
        if self.exploration == "epsilon":
            args += ["--epsilon", repr(self.epsilon)]
        elif self.exploration == "softmax":
            args += [
                "--softmax",
                "--lambda",
                repr(1.0 / self.temperature),
                "--epsilon",
                repr(self.epsilon),
            ]
        else:
            args += ["--squarecb", "--gamma_scale", repr(self.gamma_scale)]
        return args

    def _workspace(self, model_file: str | None = None) -> Any:
        from vowpalwabbit import Workspace  # type: ignore[import-untyped]

        args = self._args() + (["-i", model_file] if model_file else [])
        return Workspace(arg_list=args)

    def _get_params(self) -> dict[str, Any]:
        return {
            "exploration": self.exploration,
            "epsilon": self.epsilon,
            "temperature": self.temperature,
            "gamma_scale": self.gamma_scale,
            "learning_rate": self.learning_rate,
            "bits": self.bits,
            "seed": self.seed,
        }

    def _example(
        self,
        arms: Sequence[ArmID],
        context: Context | None,
        action_features: ActionFeatures | None,
        label: tuple[ArmID, float, float] | None = None,
    ) -> list[str]:
        af = action_features or {}
        lines = [f"shared |C {_vw_features(context)}"]
        for a in arms:
            feats = _vw_features({"id": str(a), **(af.get(a) or {})})
            head = ""
            if label is not None and label[0] == a:
                head = f"0:{label[1]:.6g}:{label[2]:.6g} "
            lines.append(f"{head}|A {feats}")
        return lines

    def pmf(
        self,
        arm_ids: Sequence[ArmID],
        context: Context | None = None,
        action_features: ActionFeatures | None = None,
    ) -> dict[ArmID, float]:
        arms = list(arm_ids)
        p = self._vw.predict(self._example(arms, context, action_features))
        total = float(sum(p))
        return {a: float(x) / total for a, x in zip(arms, p, strict=True)}

    def update(
        self,
        arm_id: ArmID,
        reward: float,
        context: Context | None = None,
        *,
        probability: float | None = None,
        arm_ids: Sequence[ArmID] | None = None,
        action_features: ActionFeatures | None = None,
    ) -> None:
        """Learn (action shown, its logged probability, cost = -reward) over the action set."""
        r = check_reward(reward)
        if not arm_ids or arm_id not in arm_ids:
            raise ValueError("VWContextual.update needs arm_ids containing arm_id")
        if probability is None or not 0.0 < probability <= 1.0:
            raise ValueError("VWContextual.update needs the logged probability in (0, 1]")
        self._vw.learn(
            self._example(list(arm_ids), context, action_features, (arm_id, -r, probability))
        )
        self.n += 1

    learn_one = update

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes: hyper-parameters, the update count and VW's model file."""
        fd, path = tempfile.mkstemp(prefix="kairos-vw-")
        os.close(fd)
        try:
            self._vw.save(path)
            with open(path, "rb") as fh:
                model = fh.read()
        finally:
            os.unlink(path)
        return pack(
            self.kind, self.VERSION, {"params": self._get_params(), "n": self.n, "vw": model}
        )

    @classmethod
    def restore(cls, data: bytes) -> VWContextual:
        """Inverse of `snapshot`."""
        state = unpack(data, cls.kind, cls.VERSION)
        obj = cls(**state["params"])
        fd, path = tempfile.mkstemp(prefix="kairos-vw-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(state["vw"])
            obj._vw.finish()
            obj._vw = obj._workspace(path)
        finally:
            os.unlink(path)
        obj.n = state["n"]
        return obj
