"""Off-policy evaluation of a learning campaign from its logged decisions. Pure.

The rows are what the learner logs per closed decision (`arm`, the `probability` with which it
was shown, its `reward`); the control group is not in them. Probabilities are read
conditionally on "not held out" (divided by `1 - control share`), so every candidate is a
distribution over the campaign's variants:

* `logged`: the logging policy itself (its value is the mean reward: a check);
* `uniform`: every variant alike;
* `fixed_split`: the campaign's configured weights (what it would do without a bandit);
* `bandit`: the current published model's probabilities (a contextual model's per row, from the
  features logged with the row: `bandit_candidate`);
* `greedy`: always the variant with the best smoothed mean reward in this log (fitted on the
  same rows: optimistic, read it as an upper reference);
* any named distribution given by the caller.

Each gets IPS, SNIPS and DR (reward model: each variant's smoothed mean reward in the log) with
percentile bootstrap intervals and the effective sample size (models/evaluation), and, against
`logged`, the paired interval of the SNIPS difference. The replay method (Li et al. 2011) of a
Thompson sampler learnt from scratch is given too, with `valid` true only when the log's
probabilities were uniform over the variants (the method's assumption).

A multi-slot campaign is evaluated on its first slot's rows (the other slots' probabilities are
conditional on the first, or marginals of a ranking: another question).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from models.bandit.thompson import BetaThompson
from models.evaluation import difference, evaluate, events_needed, replay

Row = Mapping[str, Any]
Distribution = Mapping[str, float]
#: a candidate: one distribution over the variants, or one per row (a contextual policy's)
Candidate = Distribution | Callable[[Row], Distribution]


def bandit_candidate(model: Any, arms: Sequence[str]) -> Candidate:
    """The published model as a candidate: its distribution, or for a contextual model the
    distribution it gives each row's logged features (the row's slot among them)."""
    if not getattr(model, "kind", "").startswith("bandit.linear"):
        return dict(model.probabilities(list(arms)))

    def per_row(row: Row) -> Distribution:
        x = dict(row.get("features") or {})
        if row.get("slot") is not None:
            x["slot"] = str(row["slot"])
        return dict(model.probabilities(list(arms), x))

    return per_row


def _means(rows: Sequence[Row], arms: Sequence[str]) -> dict[str, float]:
    """Each arm's mean reward, smoothed towards the overall mean by one pseudo-row."""
    overall = float(np.mean([float(r["reward"]) for r in rows])) if rows else 0.0
    out = {}
    for a in arms:
        rs = [float(r["reward"]) for r in rows if r["arm"] == a]
        out[a] = (sum(rs) + overall) / (len(rs) + 1)
    return out


def candidates_for(arms: Sequence[str], weights: Mapping[str, float],
                   bandit: Candidate | None, rows: Sequence[Row]
                   ) -> dict[str, Candidate]:
    """The standard candidates (see the module docstring), except `logged`."""
    k = len(arms)
    total = sum(weights.get(a, 0.0) for a in arms) or 1.0
    out: dict[str, Candidate] = {"uniform": dict.fromkeys(arms, 1.0 / k),
                                 "fixed_split": {a: weights.get(a, 0.0) / total for a in arms}}
    if callable(bandit):
        out["bandit"] = bandit
    elif bandit:
        s = sum(bandit.get(a, 0.0) for a in arms) or 1.0
        out["bandit"] = {a: bandit.get(a, 0.0) / s for a in arms}
    if rows:
        means = _means(rows, arms)
        best = max(arms, key=lambda a: (means[a], -arms.index(a)))
        out["greedy"] = {a: 1.0 if a == best else 0.0 for a in arms}
    return out


def evaluate_log(rows: Sequence[Row], arms: Sequence[str], control_share: float = 0.0,
                 candidates: Mapping[str, Candidate] | None = None,
                 n_bootstrap: int = 500, seed: int = 0) -> dict[str, Any]:
    """The evaluation document (plain data) of `rows` over the variants `arms`."""
    rows = [r for r in rows if r.get("arm") in arms and float(r.get("probability", 0)) > 0
            and not r.get("slot")]
    n = len(rows)
    out: dict[str, Any] = {"rows": n, "arms": list(arms), "control_share": control_share,
                           "policies": {}, "traffic": {}}
    if n == 0:
        return out
    scale = 1.0 - control_share
    logging = np.array([min(1.0, float(r["probability"]) / scale) for r in rows])
    rewards = np.array([float(r["reward"]) for r in rows])
    logged_arms = [str(r["arm"]) for r in rows]
    means = _means(rows, arms)
    q_logged = np.array([means[a] for a in logged_arms])
    out["traffic"] = {a: logged_arms.count(a) / n for a in arms}
    out["mean_reward"] = float(rewards.mean())
    policies: dict[str, np.ndarray] = {"logged": logging}
    q_targets: dict[str, np.ndarray] = {"logged": q_logged}
    shown: dict[str, dict[str, float]] = {}
    for name, d in (candidates or {}).items():
        dists = [d(r) for r in rows] if callable(d) else [d] * n
        policies[name] = np.array([float(x.get(a, 0.0)) for x, a in zip(dists, logged_arms,
                                                                        strict=True)])
        q_targets[name] = np.array([sum(float(x.get(a, 0.0)) * means[a] for a in arms)
                                    for x in dists])
        shown[name] = ({a: float(np.mean([float(x.get(a, 0.0)) for x in dists])) for a in arms}
                       if callable(d) else dict(d))
    base = {"rewards": rewards, "logging": logging}
    for name, target in policies.items():
        dist = shown.get(name)
        q_target = q_targets[name]  # the logged policy (weights 1): DR is the mean reward
        est = evaluate(rewards, target, logging, q_logged, q_target, n_bootstrap=n_bootstrap,
                       seed=seed)
        doc: dict[str, Any] = {k: v.as_dict() for k, v in est.items()}
        if dist is not None:
            doc["distribution"] = dist  # a per-row candidate's mean over the rows
            if callable((candidates or {}).get(name)):
                doc["per_row"] = True
            value, ci = difference("snips", {**base, "target": target},
                                   {**base, "target": logging}, n_bootstrap=n_bootstrap,
                                   seed=seed)
            doc["snips_vs_logged"] = {"value": value, "ci": list(ci),
                                      "separated": bool(ci[0] > 0 or ci[1] < 0)}
        out["policies"][name] = doc
    uniform = bool(np.allclose(logging, 1.0 / len(arms), atol=1e-6))
    ts = BetaThompson(seed=seed)
    res = replay(rows, lambda i, r: ts.choose(list(arms), f"replay.{i}")[0],
                 lambda r: r["arm"], lambda r: float(r["reward"]),
                 lambda r: ts.update(str(r["arm"]), float(r["reward"])))
    out["replay"] = {"policy": "thompson from scratch", "value": res.value,
                     "matched": res.matched, "rows": res.rows, "valid": uniform}
    p = out["mean_reward"]
    if 0 < p < 1:
        out["events_needed_for_10pct_lift"] = events_needed(p, 0.10)
    return out
