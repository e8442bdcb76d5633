"""Off-policy evaluation of the offer bandits on an Open Bandit Dataset log.

    python bench/bandit_replay.py ../shared/data/open_bandit/random/men/men.csv

The file is a log of a uniformly random policy (ZOZOTOWN, "men" campaign: 34 items, 3
positions, the true propensity of every shown item, the click). An impression's action is its
item in its slot. Printed:

* the logged policy's CTR by IPS and SNIPS (both are the plain CTR on a uniform log);
* for each candidate policy, learnt in log order from every impression (the estimate at row t
  uses the model as published before row t; context-free models are republished every
  `--refresh` rows, as the API reloads a version, contextual ones every row), per position and
  overall: IPS, SNIPS and DR (reward model: per item x position click rate, smoothed, learnt in
  log order) with 95 % bootstrap intervals, the paired interval of its SNIPS minus uniform's,
  and the effective sample size;
* the replay method (Li et al. 2011) over 20 seeds: mean CTR on matched rows, rows matched;
* microseconds per decision and per learn step, and snapshot sizes, with the machine's load.

Context-free policies fill a zone by ranking (Thompson: by the posterior draws, so slot k's
probability is that of the arm's draw ranking k-th; epsilon-greedy: by mean); contextual ones
decide each position as its own slot, with the position as a feature. The last line is one
JSON object (the project's bandit: `--bandit`, by default `thompson`).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._learn import last_line, per_call_us, table, uptime  # noqa: E402
from models.bandit import BetaThompson, EpsilonGreedy, LinearContextual, VWContextual  # noqa: E402
from models.evaluation import difference, dr, ips, replay, snips  # noqa: E402

N_BOOT = 1000


@dataclass
class Log:
    items: list[str]
    item_features: dict[str, dict[str, Any]]
    item: list[str]
    pos: np.ndarray  # 1-based
    click: np.ndarray
    p: np.ndarray
    users: list[dict[str, Any]]
    affinity: list[dict[str, float]]

    def __len__(self) -> int:
        return len(self.item)

    def context(self, t: int) -> dict[str, Any]:
        return {**self.users[t], "slot": f"s{int(self.pos[t])}"}

    def actions(self, t: int) -> dict[str, dict[str, Any]]:
        aff = self.affinity[t]
        return {i: {**self.item_features[i], "affinity": aff.get(i, 0.0)} for i in self.items}


def load(path: Path) -> Log:
    items_path = path.parent / "item_context.csv"
    feats: dict[str, dict[str, Any]] = {}
    with items_path.open() as fh:
        for row in csv.DictReader(fh):
            feats[row["item_id"]] = {
                "price": float(row["item_feature_0"]),
                "f1": row["item_feature_1"][:8],
                "f2": row["item_feature_2"][:8],
                "f3": row["item_feature_3"][:8],
            }
    item, pos, click, p, users, aff = [], [], [], [], [], []
    with path.open() as fh:
        reader = csv.DictReader(fh)
        aff_cols = [c for c in reader.fieldnames or [] if c.startswith("user-item_affinity_")]
        for row in reader:
            item.append(row["item_id"])
            pos.append(int(row["position"]))
            click.append(float(row["click"]))
            p.append(float(row["propensity_score"]))
            users.append({f"u{k}": row[f"user_feature_{k}"][:8] for k in range(4)})
            aff.append(
                {c.rsplit("_", 1)[1]: float(row[c]) for c in aff_cols if float(row[c]) != 0.0}
            )
    items = sorted(feats, key=int)
    return Log(items, feats, item, np.array(pos), np.array(click), np.array(p), users, aff)


class RewardModel:
    """Click rate per (item, position), shrunk to the position's rate, learnt in log order."""

    def __init__(self, items: list[str], prior: float = 20.0) -> None:
        self.items = items
        self.prior = prior
        self.n: dict[tuple[str, int], float] = {}
        self.c: dict[tuple[str, int], float] = {}
        self.pos_n: dict[int, float] = {}
        self.pos_c: dict[int, float] = {}

    def q(self, item: str, pos: int) -> float:
        base = (self.pos_c.get(pos, 0.0) + 0.5) / (self.pos_n.get(pos, 0.0) + 100.0)
        k = (item, pos)
        return (self.c.get(k, 0.0) + self.prior * base) / (self.n.get(k, 0.0) + self.prior)

    def learn(self, item: str, pos: int, r: float) -> None:
        k = (item, pos)
        self.n[k] = self.n.get(k, 0.0) + 1
        self.c[k] = self.c.get(k, 0.0) + r
        self.pos_n[pos] = self.pos_n.get(pos, 0.0) + 1
        self.pos_c[pos] = self.pos_c.get(pos, 0.0) + r


@dataclass
class Candidate:
    name: str
    make: Callable[[int], Any]
    contextual: bool
    note: str


def candidates() -> dict[str, Candidate]:
    return {
        "thompson": Candidate(
            "thompson",
            lambda s: BetaThompson(seed=s),
            False,
            "Beta(1,1) per item, zone ranked by draws",
        ),
        "thompson_prior": Candidate(
            "thompson_prior",
            lambda s: BetaThompson(alpha=1.0, beta=50.0, seed=s),
            False,
            "Beta(1,50) prior (mean 2 %) per item",
        ),
        "epsilon_greedy": Candidate(
            "epsilon_greedy",
            lambda s: EpsilonGreedy(epsilon=0.1, seed=s),
            False,
            "eps 0.1, zone ranked by mean",
        ),
        "linear": Candidate(
            "linear",
            lambda s: LinearContextual(seed=s),  # the defaults: eps 0.02, T 0.1, step 0.1
            True,
            "river LR, context x action crosses, softmax T=0.1, eps 0.02",
        ),
        "vw_squarecb": Candidate(
            "vw_squarecb",
            lambda s: VWContextual(exploration="squarecb", seed=s),
            True,
            "VW --cb_explore_adf --squarecb",
        ),
        "vw_epsilon": Candidate(
            "vw_epsilon",
            lambda s: VWContextual(exploration="epsilon", epsilon=0.2, seed=s),
            True,
            "VW --cb_explore_adf --epsilon 0.2",
        ),
    }


def learn_in_order(cand: Candidate, log: Log, refresh: int) -> dict[str, np.ndarray]:
    """Target probability of each logged action, DR's q arrays, from a model learnt in order."""
    pol = cand.make(0)
    rm = RewardModel(log.items)
    n = len(log)
    target = np.zeros(n)
    q_logged = np.zeros(n)
    q_target = np.zeros(n)
    published: list[dict[str, float]] | None = None
    for t in range(n):
        pos = int(log.pos[t])
        item = log.item[t]
        if cand.contextual:
            pmf = pol.probabilities(log.items, log.context(t), log.actions(t))
        else:
            if published is None or t % refresh == 0:
                published = pol.slot_probabilities(log.items, 3)
            pmf = published[pos - 1]
        target[t] = pmf[item]
        q_logged[t] = rm.q(item, pos)
        q_target[t] = sum(pmf[i] * rm.q(i, pos) for i in log.items)
        r = float(log.click[t])
        if cand.contextual:
            pol.update(
                item,
                r,
                log.context(t),
                probability=float(log.p[t]),
                arm_ids=log.items,
                action_features=log.actions(t),
            )
        else:
            pol.update(item, r)
        rm.learn(item, pos, r)
    return {"target": target, "q_logged": q_logged, "q_target": q_target, "policy": pol}


def frozen_half(cand: Candidate, log: Log) -> np.ndarray:
    """Learn the first half in order, then freeze: target probabilities on the second half."""
    pol = cand.make(0)
    n = len(log)
    half = n // 2
    for t in range(half):
        r = float(log.click[t])
        if cand.contextual:
            pol.update(
                log.item[t],
                r,
                log.context(t),
                probability=float(log.p[t]),
                arm_ids=log.items,
                action_features=log.actions(t),
            )
        else:
            pol.update(log.item[t], r)
    out = np.zeros(n - half)
    fixed = None if cand.contextual else pol.slot_probabilities(log.items, 3)
    for t in range(half, n):
        if fixed is None:
            pmf = pol.probabilities(log.items, log.context(t), log.actions(t))
        else:
            pmf = fixed[int(log.pos[t]) - 1]
        out[t - half] = pmf[log.item[t]]
    return out


def replay_seed(cand: Candidate, log: Log, seed: int) -> tuple[float, int]:
    pol = cand.make(seed)

    def choose(i: int, t: int) -> str:
        pos = int(log.pos[t])
        if cand.contextual:
            return pol.choose(log.items, f"r{i}", log.context(t), 1, log.actions(t))[0]
        return pol.choose(log.items, f"r{i}", None, pos)[pos - 1]

    def learn(t: int) -> None:
        r = float(log.click[t])
        if cand.contextual:
            pmf = pol.probabilities(log.items, log.context(t), log.actions(t))
            pol.update(
                log.item[t],
                r,
                log.context(t),
                probability=pmf[log.item[t]],
                arm_ids=log.items,
                action_features=log.actions(t),
            )
        else:
            pol.update(log.item[t], r)

    res = replay(
        range(len(log)), choose, lambda t: log.item[t], lambda t: float(log.click[t]), learn
    )
    return res.value, res.matched


def costs(cand: Candidate, pol: Any, log: Log) -> dict[str, float]:
    """Microseconds per decision (one slot; a 3-slot zone for context-free) and learn step."""
    if cand.contextual:
        dec = per_call_us(
            lambda i: pol.decide(log.items, f"b{i}", log.context(i), 1, log.actions(i)), 500
        )
        t0 = time.perf_counter()
        copy = type(pol).restore(pol.snapshot())
        restore_ms = (time.perf_counter() - t0) * 1e3
        learn = per_call_us(
            lambda i: copy.update(
                log.item[i],
                float(log.click[i]),
                log.context(i),
                probability=float(log.p[i]),
                arm_ids=log.items,
                action_features=log.actions(i),
            ),
            500,
        )
        version_ms = 0.0
    else:
        copy = type(pol).restore(pol.snapshot())
        t0 = time.perf_counter()
        copy.slot_probabilities(log.items, 3)
        version_ms = (time.perf_counter() - t0) * 1e3
        dec = per_call_us(lambda i: copy.decide(log.items, f"b{i}", None, 3), 2000)
        t0 = time.perf_counter()
        type(pol).restore(pol.snapshot())
        restore_ms = (time.perf_counter() - t0) * 1e3
        learn = per_call_us(lambda i: copy.update(log.item[i], float(log.click[i])), 5000)
    return {
        "decide_us": dec,
        "learn_us": learn,
        "version_ms": version_ms,
        "restore_ms": restore_ms,
        "snapshot_bytes": len(pol.snapshot()),
    }


def simulate(cand: Candidate, steps: int, seed: int) -> tuple[float, float, float]:
    """A synthetic tie-break for contextual learners (known truth, on-policy learning).

    12 visitor types (device x segment), 10 offers; click probability
    sigmoid(-4 + offer effect + a device x offer and a segment x offer effect), so the best
    offer depends on the visitor. Returns (policy's mean reward, uniform's, oracle's).
    """
    import math
    import random

    rng = random.Random(seed)
    devices, segments = ["mobile", "desktop", "tablet"], ["new", "loyal", "deal", "browse"]
    offers = [f"o{k}" for k in range(10)]
    eff = {o: rng.gauss(0, 0.3) for o in offers}
    dev = {(d, o): rng.gauss(0, 0.8) for d in devices for o in offers}
    seg = {(g, o): rng.gauss(0, 0.8) for g in segments for o in offers}

    def ctr(ctx: dict[str, str], o: str) -> float:
        return 1 / (1 + math.exp(-(-3.5 + eff[o] + dev[ctx["device"], o] + seg[ctx["segment"], o])))

    pol = cand.make(seed)
    got = uni = best = 0.0
    for t in range(steps):
        ctx = {"device": rng.choice(devices), "segment": rng.choice(segments)}
        if cand.contextual:
            d = pol.decide(offers, f"s{t}", ctx)
            arm = d.arm
        else:
            arm = pol.choose(offers, f"s{t}")[0]
        p = ctr(ctx, arm)
        r = 1.0 if rng.random() < p else 0.0
        got += p
        uni += sum(ctr(ctx, o) for o in offers) / len(offers)
        best += max(ctr(ctx, o) for o in offers)
        if cand.contextual:
            pol.update(arm, r, ctx, probability=d.probability, arm_ids=offers)
        else:
            pol.update(arm, r)
    return got / steps, uni / steps, best / steps


def pct(x: float) -> str:
    return f"{100 * x:.3f}%"


def ci(c: tuple[float, float]) -> str:
    return f"[{100 * c[0]:.3f}, {100 * c[1]:.3f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--bandit", default="thompson", help="the project's bandit (JSON line)")
    ap.add_argument("--only", default="", help="comma-separated candidates (default: all)")
    ap.add_argument("--refresh", type=int, default=50, help="rows between published versions")
    ap.add_argument("--seeds", type=int, default=20, help="replay seeds of the project's bandit")
    ap.add_argument(
        "--other-seeds", type=int, default=5, help="replay seeds of the other candidates"
    )
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--sim-steps", type=int, default=20_000, help="synthetic tie-break steps (0: skip)"
    )
    a = ap.parse_args(argv)

    print(uptime())
    t0 = time.perf_counter()
    log = load(a.path)
    n, k = len(log), len(log.items)
    r = log.click
    print(f"{a.path}: {n} rows, {int(r.sum())} clicks, {k} items, positions {sorted(set(log.pos))}")
    uniform_target = np.full(n, 1.0 / k)
    u_ips = ips(r, uniform_target, log.p, n_bootstrap=N_BOOT, seed=a.seed)
    u_snips = snips(r, uniform_target, log.p, n_bootstrap=N_BOOT, seed=a.seed)
    print(
        f"uniform: IPS {pct(u_ips.value)} {ci(u_ips.ci)}, SNIPS {pct(u_snips.value)} {ci(u_snips.ci)}"
    )
    per_clicks = {p: int(r[log.pos == p].sum()) for p in (1, 2, 3)}
    print(f"clicks per position: {per_clicks}")

    cands = candidates()
    names = [x for x in a.only.split(",") if x] or list(cands)
    if a.bandit not in names:
        names.append(a.bandit)
    results: dict[str, dict[str, Any]] = {}
    rows_overall = []
    rows_pos = []
    rows_cost = []
    rows_frozen = []
    for name in names:
        cand = cands[name]
        ts = time.perf_counter()
        arr = learn_in_order(cand, log, a.refresh)
        learn_s = time.perf_counter() - ts
        est = {
            "ips": ips(r, arr["target"], log.p, n_bootstrap=N_BOOT, seed=a.seed),
            "snips": snips(r, arr["target"], log.p, n_bootstrap=N_BOOT, seed=a.seed),
            "dr": dr(
                r,
                arr["target"],
                log.p,
                arr["q_logged"],
                arr["q_target"],
                n_bootstrap=N_BOOT,
                seed=a.seed,
            ),
        }
        diff, diff_ci = difference(
            "snips",
            {"rewards": r, "target": arr["target"], "logging": log.p},
            {"rewards": r, "target": uniform_target, "logging": log.p},
            n_bootstrap=N_BOOT,
            seed=a.seed,
        )
        for p in (1, 2, 3):
            m = log.pos == p
            e_i = ips(r[m], arr["target"][m], log.p[m], n_bootstrap=N_BOOT, seed=a.seed)
            e_s = snips(r[m], arr["target"][m], log.p[m], n_bootstrap=N_BOOT, seed=a.seed)
            e_d = dr(
                r[m],
                arr["target"][m],
                log.p[m],
                arr["q_logged"][m],
                arr["q_target"][m],
                n_bootstrap=N_BOOT,
                seed=a.seed,
            )
            rows_pos.append(
                [
                    name,
                    p,
                    int(m.sum()),
                    pct(r[m].mean()),
                    pct(e_i.value),
                    pct(e_s.value),
                    ci(e_s.ci),
                    pct(e_d.value),
                    f"{e_s.ess:.0f}",
                ]
            )
        half = n // 2
        frozen = frozen_half(cand, log)
        fz = snips(r[half:], frozen, log.p[half:], n_bootstrap=N_BOOT, seed=a.seed)
        fz_diff, fz_ci = difference(
            "snips",
            {"rewards": r[half:], "target": frozen, "logging": log.p[half:]},
            {"rewards": r[half:], "target": uniform_target[half:], "logging": log.p[half:]},
            n_bootstrap=N_BOOT,
            seed=a.seed,
        )
        rows_frozen.append(
            [name, pct(fz.value), ci(fz.ci), f"{100 * fz_diff:+.3f} {ci(fz_ci)}", f"{fz.ess:.0f}"]
        )
        ts = time.perf_counter()
        n_seeds = a.seeds if name == a.bandit else a.other_seeds
        rep = [replay_seed(cand, log, s) for s in range(n_seeds)]
        replay_s = time.perf_counter() - ts
        rep_mean = float(np.mean([v for v, _ in rep]))
        rep_rows = float(np.mean([m for _, m in rep]))
        rep_sd = float(np.std([v for v, _ in rep]))
        cost = costs(cand, arr["policy"], log)
        results[name] = {
            "ips": est["ips"].value,
            "snips": est["snips"].value,
            "dr": est["dr"].value,
            "ips_ci": list(est["ips"].ci),
            "snips_ci": list(est["snips"].ci),
            "dr_ci": list(est["dr"].ci),
            "diff": diff,
            "diff_ci": list(diff_ci),
            "ess": est["snips"].ess,
            "replay_mean": rep_mean,
            "replay_sd": rep_sd,
            "replay_rows": rep_rows,
            "frozen_snips": fz.value,
            "frozen_snips_ci": list(fz.ci),
            "frozen_diff_ci": list(fz_ci),
            **cost,
        }
        rows_overall.append(
            [
                name,
                pct(est["ips"].value),
                ci(est["ips"].ci),
                pct(est["snips"].value),
                ci(est["snips"].ci),
                pct(est["dr"].value),
                ci(est["dr"].ci),
                f"{100 * diff:+.3f} {ci(diff_ci)}",
                f"{est['snips'].ess:.0f}",
                f"{pct(rep_mean)} ±{100 * rep_sd:.2f} ({rep_rows:.0f}; {n_seeds} seeds)",
            ]
        )
        rows_cost.append(
            [
                name,
                f"{cost['decide_us']:.0f}",
                f"{cost['learn_us']:.0f}",
                f"{cost['version_ms']:.1f}",
                f"{cost['restore_ms']:.2f}",
                cost["snapshot_bytes"],
                f"{learn_s:.1f}+{replay_s:.1f}",
                cand.note,
            ]
        )
        print(f"  {name}: done in {time.perf_counter() - ts + learn_s:.1f}s", flush=True)

    print()
    print(
        "Learnt in log order, all positions (95 % bootstrap intervals, in % CTR; diff = SNIPS - uniform, paired)"
    )
    print(
        table(
            [
                "policy",
                "IPS",
                "IPS ci",
                "SNIPS",
                "SNIPS ci",
                "DR",
                "DR ci",
                "diff vs uniform",
                "ESS",
                "replay mean ±sd (rows; seeds)",
            ],
            rows_overall,
        )
    )
    print()
    second = r[n // 2 :]
    print(
        f"Learnt on the first half, frozen, evaluated on the second half ({len(second)} rows, "
        f"{int(second.sum())} clicks, uniform {pct(second.mean())})"
    )
    print(table(["policy", "SNIPS", "SNIPS ci", "diff vs uniform", "ESS"], rows_frozen))
    print()
    print("Per position")
    print(
        table(
            ["policy", "pos", "rows", "logged CTR", "IPS", "SNIPS", "SNIPS ci", "DR", "ESS"],
            rows_pos,
        )
    )
    print()
    if a.sim_steps:
        sim_rows = []
        for name in names:
            vals = [simulate(cands[name], a.sim_steps, s) for s in range(3)]
            got, uni, best = (float(np.mean([v[i] for v in vals])) for i in range(3))
            sim_rows.append(
                [name, pct(got), pct(uni), pct(best), f"{(got - uni) / (best - uni):.2f}"]
            )
            results[name]["sim_ctr"] = got
            results[name]["sim_share_of_oracle_gain"] = (got - uni) / (best - uni)
        print(
            f"Synthetic tie-break (known truth; {a.sim_steps} on-policy steps x 3 seeds; "
            "12 visitor types x 10 offers): mean click probability"
        )
        print(table(["policy", "CTR", "uniform", "oracle", "share of oracle gain"], sim_rows))
        print()
    print(f"Cost ({uptime()})")
    print(
        table(
            [
                "policy",
                "µs/decision",
                "µs/learn",
                "ms/version",
                "ms/restore",
                "snapshot B",
                "s learn+replay",
                "what",
            ],
            rows_cost,
        )
    )
    print()
    half = (u_snips.ci[1] - u_snips.ci[0]) / 2
    print(
        f"Reading: {int(r.sum())} clicks in {n} rows; the uniform CTR alone is known to ±{100 * half:.3f} points. "
        "A difference whose paired interval spans 0 is not told apart."
    )
    print(f"total {time.perf_counter() - t0:.1f}s")
    b = results[a.bandit]
    last_line(
        {
            "uniform": {"ips": u_ips.value, "snips": u_snips.value},
            "bandit": {
                "policy": a.bandit,
                "ips": b["ips"],
                "snips": b["snips"],
                "dr": b["dr"],
                "snips_ci": b["snips_ci"],
                "diff_ci": b["diff_ci"],
                "ess": b["ess"],
                "replay_mean": b["replay_mean"],
                "replay_rows": b["replay_rows"],
            },
            "candidates": {
                name: {
                    key: res[key]
                    for key in (
                        "snips",
                        "snips_ci",
                        "diff_ci",
                        "ess",
                        "replay_mean",
                        "frozen_snips",
                        "frozen_diff_ci",
                        "decide_us",
                        "learn_us",
                        "snapshot_bytes",
                    )
                }
                for name, res in results.items()
            },
            "load": uptime().rsplit("load average:", 1)[-1].strip(),
        }
    )


if __name__ == "__main__":
    main()
