"""Contextual campaigns offline: which model learns a campaign best, and what a decision costs.

    python bench/contextual_campaign.py [--steps 8000] [--seeds 3] [--calls 2000]

1. A campaign-shaped problem with a known truth, learnt on-policy (each decision drawn by the
   policy, its reward drawn from the truth, learnt at once): 4 variants; visitors with the
   features a contextual campaign reads (engine/logic/decisions/features.py: device, channel,
   page type, three top categories of 12, 0-3 segments of 6, purchase and exit propensity,
   returning); click probability sigmoid(-3.2 + variant effect + device x variant + first top
   category x variant + each segment x variant + purchase propensity x variant slope). For
   river's linear model (the campaigns' defaults, and a second setting), Vowpal Wabbit's
   `--cb_explore_adf` (SquareCB, epsilon-greedy 0.05) and the context-free Thompson sampler:
   the share of the oracle's gain over uniform that the policy reached (mean over seeds, the
   whole run and its last quarter), with the CPU microseconds per decision and per learn step.
2. CPU microseconds per `select()` of one campaign (engine/logic/decisions/select.py, what the
   API runs per zone, the features included; plain-text variants, so the policy's cost shows),
   on a profile view with 40 categories and 20 brands: fixed split, Thompson, contextual; one
   slot, and two slots; best of three rounds.

Process CPU time (not wall time): the machine is shared; the load is printed beside. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._learn import last_line, table, uptime  # noqa: E402
from models.bandit import BetaThompson, LinearContextual, VWContextual  # noqa: E402

VARIANTS = ["v0", "v1", "v2", "v3"]
DEVICES = ["mobile", "desktop", "tablet"]
CHANNELS = ["web", "app"]
PAGES = ["home", "category", "product", "cart"]
CATEGORIES = [f"cat{i}" for i in range(12)]
SEGMENTS = [f"seg{i}" for i in range(6)]


class Truth:
    """The known click probability of each variant for a visitor."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(1000 + seed)
        self.base = {v: rng.gauss(0, 0.3) for v in VARIANTS}
        self.dev = {(d, v): rng.gauss(0, 0.7) for d in DEVICES for v in VARIANTS}
        self.cat = {(c, v): rng.gauss(0, 0.7) for c in CATEGORIES for v in VARIANTS}
        self.seg = {(s, v): rng.gauss(0, 0.5) for s in SEGMENTS for v in VARIANTS}
        self.buy = {v: rng.gauss(0, 1.5) for v in VARIANTS}

    def ctr(self, x: dict[str, Any], v: str) -> float:
        z = -3.2 + self.base[v] + self.dev[x["device"], v] + self.cat[x["top_categories"][0], v]
        z += sum(self.seg[s, v] for s in x.get("segments", ()))
        z += self.buy[v] * x["purchase_probability"]
        return 1.0 / (1.0 + math.exp(-z))


def visitor(rng: random.Random) -> dict[str, Any]:
    x: dict[str, Any] = {
        "top_categories": rng.sample(CATEGORIES, 3),
        "device": rng.choice(DEVICES), "channel": rng.choice(CHANNELS),
        "page_type": rng.choice(PAGES),
        "purchase_probability": round(rng.betavariate(1, 6), 4),
        "exit_probability": round(rng.random(), 4),
        "returning": rng.random() < 0.5,
    }
    segs = rng.sample(SEGMENTS, rng.randrange(4))
    if segs:
        x["segments"] = sorted(segs)
    return x


POLICIES: dict[str, tuple[Callable[[int], Any], bool, str]] = {
    "linear": (lambda s: LinearContextual(seed=s), True,
               "river LR, crosses, softmax T=0.1, eps 0.02, step 0.1 (the campaigns' defaults)"),
    "linear_t03": (lambda s: LinearContextual(epsilon=0.05, temperature=0.3, seed=s), True,
                   "river LR, softmax T=0.3, eps 0.05"),
    "vw_squarecb": (lambda s: VWContextual(exploration="squarecb", seed=s), True,
                    "VW --cb_explore_adf --squarecb"),
    "vw_epsilon": (lambda s: VWContextual(exploration="epsilon", epsilon=0.05, seed=s), True,
                   "VW --cb_explore_adf --epsilon 0.05"),
    "thompson": (lambda s: BetaThompson(seed=s), False, "context-free Beta(1,1) (reference)"),
}


def simulate(name: str, steps: int, seed: int) -> dict[str, float]:
    make, contextual, _ = POLICIES[name]
    truth, rng, pol = Truth(seed), random.Random(seed), make(seed)
    got = uni = best = 0.0
    tail = [0.0, 0.0, 0.0]
    cpu_decide = cpu_learn = 0.0
    for t in range(steps):
        x = visitor(rng)
        c0 = time.process_time()
        if contextual:
            d = pol.decide(VARIANTS, f"s{t}", x)
            arm, prob = d.arm, d.probability
        else:
            arm, prob = pol.choose(VARIANTS, f"s{t}")[0], None
        c1 = time.process_time()
        p = truth.ctr(x, arm)
        r = 1.0 if rng.random() < p else 0.0
        c2 = time.process_time()
        if contextual:
            pol.update(arm, r, x, probability=prob, arm_ids=VARIANTS)
        else:
            pol.update(arm, r)
        c3 = time.process_time()
        cpu_decide += c1 - c0
        cpu_learn += c3 - c2
        ps = [truth.ctr(x, v) for v in VARIANTS]
        row = (p, sum(ps) / len(ps), max(ps))
        got, uni, best = got + row[0], uni + row[1], best + row[2]
        if t >= steps * 3 // 4:
            tail = [a + b for a, b in zip(tail, row, strict=True)]
    return {"share": (got - uni) / (best - uni), "share_tail": (tail[0] - tail[1]) /
            (tail[2] - tail[1]), "ctr": got / steps, "uniform": uni / steps,
            "oracle": best / steps, "decide_us": cpu_decide / steps * 1e6,
            "learn_us": cpu_learn / steps * 1e6}


CAMPAIGN = """\
id: hero
status: active
zones: [hero]
control_percent: 10
{policy}
variants:
  - id: v0
    template: {{title: "A"}}
  - id: v1
    template: {{title: "B"}}
  - id: v2
    template: {{title: "C"}}
  - id: v3
    template: {{title: "D"}}
"""


def select_costs(calls: int) -> dict[str, float]:
    """CPU microseconds per select() of one campaign, per policy and slot count."""
    import tempfile

    from engine.logic.decisions.config import load_config
    from engine.logic.decisions.policy import new_model
    from engine.logic.decisions.select import select

    rng = random.Random(5)
    view: dict[str, Any] = {
        "profile_id": "v:bench", "event_count": 40, "segments": ["seg1", "seg4"],
        "affinities": {"category": {f"cat{i}": rng.random() * 10 for i in range(40)},
                       "brand": {f"brand{i}": rng.random() * 10 for i in range(20)},
                       "tag": {}, "item": {}},
        "propensity": {"purchase": 0.12, "exit": 0.4},
    }
    ctx = {"device": "mobile", "channel": "web", "page_type": "home"}
    out: dict[str, float] = {}
    for name, policy in (("fixed", ""), ("thompson", "policy: thompson"),
                         ("contextual", "policy: contextual"),
                         ("thompson_2_slots", "policy: thompson\nslots: 2"),
                         ("contextual_2_slots", "policy: contextual\nslots: 2")):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "campaigns").mkdir()
            Path(d, "campaigns", "hero.yaml").write_text(CAMPAIGN.format(policy=policy))
            config = load_config(Path(d))
        models = {}
        c = config.campaigns["hero"]
        if c.learns:
            m = new_model(c.policy)
            for i in range(300):  # a model that learnt something (weights, posteriors)
                x = visitor(rng)
                m.update(VARIANTS[i % 4], float(rng.random() < 0.05), x)
            models["hero"] = m
        for _ in range(50):  # warm caches (Thompson's probabilities per version)
            select(config, view, ctx, 0, zones=["hero"], models=models, token=lambda: "warm")
        best = math.inf
        for _ in range(3):
            tokens = [f"t{i:09d}" for i in range(calls)]
            t = time.process_time()
            for tok in tokens:
                select(config, view, ctx, 0, zones=["hero"], models=models,
                       token=lambda tok=tok: tok)
            best = min(best, (time.process_time() - t) / calls * 1e6)
        out[name] = best
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8000, help="on-policy steps per seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000, help="select() calls per policy")
    args = ap.parse_args(argv)
    print(f"contextual campaigns, offline; {uptime()}")
    print(f"\n1. on-policy, {len(VARIANTS)} variants, {args.steps} steps x {args.seeds} seeds; "
          "share = (policy - uniform) / (oracle - uniform) of the click rate")
    results: dict[str, dict[str, float]] = {}
    shares: dict[str, list[float]] = {}
    rows = []
    for name, (_, _, note) in POLICIES.items():
        runs = [simulate(name, args.steps, s) for s in range(args.seeds)]
        mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        results[name] = {k: round(v, 4) for k, v in mean.items()}
        results[name]["share_min"] = round(min(r["share"] for r in runs), 4)
        shares[name] = [r["share"] for r in runs]
        rows.append([name, f"{mean['share']:.3f}", f"{results[name]['share_min']:.3f}",
                     f"{mean['share_tail']:.3f}", f"{100 * mean['ctr']:.2f}%",
                     f"{mean['decide_us']:.0f}", f"{mean['learn_us']:.0f}", note])
    first = results["linear"]
    print(f"uniform {100 * first['uniform']:.2f}%, oracle {100 * first['oracle']:.2f}%")
    print(table(["policy", "share", "worst seed", "last quarter", "CTR", "µs CPU/decide",
                 "µs CPU/learn", "what"], rows))
    print("\npaired by seed (same visitors, same truth), share minus linear's:")
    diffs = []
    for name, xs in shares.items():
        if name == "linear":
            continue
        d = [x - y for x, y in zip(xs, shares["linear"], strict=True)]
        mean = sum(d) / len(d)
        sd = (sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)) ** 0.5
        results[name]["diff_vs_linear"] = round(mean, 4)
        diffs.append([name, f"{mean:+.3f}", f"{sd:.3f}", f"{min(d):+.3f}", f"{max(d):+.3f}",
                      sum(x > 0 for x in d)])
    print(table(["policy", "mean", "sd", "min", "max", "seeds ahead"], diffs))
    print(f"\n2. CPU per select() of one 4-variant campaign ({args.calls} calls); "
          f"{uptime()}")
    costs = select_costs(args.calls)
    print(table(["policy", "µs CPU/select"], [[k, f"{v:.0f}"] for k, v in costs.items()]))
    print(f"\n{uptime()}")
    last_line({"learners": results, "select_us": {k: round(v, 1) for k, v in costs.items()},
               "load": round(__import__("os").getloadavg()[0], 2)})


if __name__ == "__main__":
    main()
