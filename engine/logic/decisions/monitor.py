"""What the dashboard shows of the learning loop, from plain data. Pure.

* `traffic_over_time(rows, arms)`: each variant's share of a learning campaign's logged
  decisions per time bucket (the rows of its learning log, by decision time), so the
  dashboard can draw how a bandit moves its traffic;
* `describe_drift(event, policies)`: one drift event of the learner (`{at, model,
  detections}`, see lua/learner_commit.lua) with what was watched and the documented reaction
  (docs/learning.md "Drift").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: bucket widths tried in order (ms): the first that cuts the span into at most `buckets`
WIDTHS_MS = (1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000,
             10_800_000, 21_600_000, 43_200_000, 86_400_000, 604_800_000)

REACTIONS = {
    "thompson": "the arm's posterior restarted from the prior plus ADWIN's recent window",
    "epsilon_greedy": "the arm's mean restarted from ADWIN's recent window",
    "propensity": "learning rate doubled for 300 events, calibration restarted",
}


def bucket_width(lo_ms: int, hi_ms: int, buckets: int) -> int:
    """The smallest width of `WIDTHS_MS` whose aligned buckets cover [lo_ms, hi_ms] with at
    most `buckets` of them (the widest when none does)."""
    for w in WIDTHS_MS:
        if hi_ms // w - lo_ms // w + 1 <= buckets:
            return w
    return WIDTHS_MS[-1]


def traffic_over_time(rows: Sequence[Mapping[str, Any]], arms: Sequence[str],
                      buckets: int = 24) -> dict[str, Any]:
    """`{"width_ms", "points": [{"t", "n", "share": {arm: fraction}}]}` over the rows' decision
    times (`ts`, epoch ms), buckets aligned to multiples of the width, empty ones left out.
    Rows of other arms (or without a time) are not counted."""
    known = set(arms)
    got = [(int(r["ts"]), str(r["arm"])) for r in rows
           if r.get("arm") in known and isinstance(r.get("ts"), int | float)]
    if not got:
        return {"width_ms": None, "points": []}
    lo = min(t for t, _ in got)
    hi = max(t for t, _ in got)
    width = bucket_width(lo, hi, max(1, buckets))
    counts: dict[int, dict[str, int]] = {}
    for t, arm in got:
        b = counts.setdefault(t - t % width, dict.fromkeys(arms, 0))
        b[arm] += 1
    points = []
    for t in sorted(counts):
        n = sum(counts[t].values())
        points.append({"t": t, "n": n, "share": {a: counts[t][a] / n for a in arms}})
    return {"width_ms": width, "points": points}


def describe_drift(event: Mapping[str, Any], policies: Mapping[str, str]) -> dict[str, Any]:
    """A drift event for people: `model` "<campaign>:<arm>" or "propensity:<purchase|exit>",
    split into what was watched, with the reaction the model took. `policies` maps a campaign
    id to its policy kind (an unknown campaign's reaction is left out)."""
    model = str(event.get("model", ""))
    head, _, tail = model.partition(":")
    out: dict[str, Any] = {"at": event.get("at"), "model": model,
                           "detections": event.get("detections")}
    if head == "propensity":
        out.update(kind="propensity", target=tail, reaction=REACTIONS["propensity"])
    else:
        out.update(kind="arm", campaign=head, arm=tail,
                   reaction=REACTIONS.get(policies.get(head, "")))
    return out
