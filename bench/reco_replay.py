"""Prequential replay of behaviour logs through the recommendation learners.

    python bench/reco_replay.py PATH [PATH ...] [--recipe config/recipes/default.yaml]

Events are replayed in time order. After each event the models learn it, then each method is
asked for 20 items for that visitor on that item's page; it scores a hit when the visitor's next
distinct item (repeats of the current item skipped) is among them. Kairos (the recipe) is
compared in the same run with global popularity, plain item-kNN by co-occurrence, and the
visitor's own most recent distinct items. The last line printed per file is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.logic.recipes import Recipe, apply, parse_recipe  # noqa: E402
from models.reco import CO_VIEW_TYPES, CoOccurrence, RecoModels, Trending  # noqa: E402
from models.reco.base import event_items  # noqa: E402
from streams.sources import load_events  # noqa: E402

K = 20
METHODS = ("kairos", "popularity", "itemknn", "history")


def next_distinct_targets(events: Sequence[dict[str, Any]]) -> list[str | None]:
    """For each event, the visitor's next item that differs from this event's item."""
    targets: list[str | None] = [None] * len(events)
    # per visitor: (item right after, target of the event right after)
    after: dict[str, tuple[str, str | None]] = {}
    for idx in range(len(events) - 1, -1, -1):
        ev = events[idx]
        items = event_items(ev)
        if not items:
            continue
        cur = str(items[0]["id"])
        vid = ev["visitor_id"]
        nxt = after.get(vid)
        if nxt is not None:
            targets[idx] = nxt[0] if nxt[0] != cur else nxt[1]
        after[vid] = (cur, targets[idx])
    return targets


class Score:
    """HR@K and MRR@K accumulators."""

    def __init__(self) -> None:
        self.n = 0
        self.hits = 0
        self.rr = 0.0

    def add(self, recs: Sequence[str], target: str) -> None:
        self.n += 1
        for rank, iid in enumerate(recs[:K], start=1):
            if iid == target:
                self.hits += 1
                self.rr += 1.0 / rank
                break

    @property
    def hr(self) -> float:
        return self.hits / self.n if self.n else 0.0

    @property
    def mrr(self) -> float:
        return self.rr / self.n if self.n else 0.0


def replay(path: str, recipe: Recipe, limit: int | None = None) -> dict[str, Any]:
    """Replay one file; returns the result object."""
    t0 = time.perf_counter()
    events = load_events(path)
    if limit:
        events = events[:limit]
    targets = next_distinct_targets(events)
    print(f"{path}: {len(events)} events loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    models = RecoModels(seed=0)
    popularity = Trending(half_life_s=None, weights={t: 1.0 for t in CO_VIEW_TYPES})
    itemknn = CoOccurrence(CO_VIEW_TYPES, popularity_exponent=0.0)
    catalog: dict[str, dict[str, Any]] = {}
    scores = {m: Score() for m in METHODS}
    learn_s = rec_s = 0.0
    n_recs = 0
    needed = recipe.needed()
    step = max(1, len(events) // 10)

    for idx, ev in enumerate(events):
        for item in event_items(ev):
            catalog.setdefault(str(item["id"]), {}).update(item)
        t = time.perf_counter()
        models.learn_one(ev)
        learn_s += time.perf_counter() - t
        popularity.learn_one(ev)
        itemknn.learn_one(ev)

        target = targets[idx]
        if target is not None:
            item = event_items(ev)[0]
            cur = str(item["id"])
            vid = ev["visitor_id"]
            cats = item.get("categories") or []
            context = {"item_id": cur, "category": cats[0] if cats else None, "now_ms": ev["ts"]}
            t = time.perf_counter()
            cands = models.candidates(needed, vid, context, k=50)
            recs = apply(recipe, cands, catalog.get, models.visitor_state(vid), context, K)
            rec_s += time.perf_counter() - t
            n_recs += 1
            scores["kairos"].add([r.item_id for r in recs], target)
            scores["popularity"].add(
                [c.item_id for c in popularity.recommend(K, exclude={cur})], target
            )
            scores["itemknn"].add([c.item_id for c in itemknn.neighbours(cur, K)], target)
            own = [iid for iid, _ in models.history.recent(vid, K + 1) if iid != cur]
            scores["history"].add(own, target)
        if (idx + 1) % step == 0:
            s = scores["kairos"]
            print(
                f"  {idx + 1:>7}/{len(events)} events  kairos HR@{K} {s.hr:.4f}  "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )

    return {
        "file": path,
        "events": len(events),
        "scored": scores["kairos"].n,
        "hr20": {m: round(scores[m].hr, 5) for m in METHODS},
        "mrr20": {m: round(scores[m].mrr, 5) for m in METHODS},
        "recs_per_s": round(n_recs / rec_s, 1) if rec_s else 0.0,
        "updates_per_s": round(len(events) / learn_s, 1) if learn_s else 0.0,
    }


def report(result: dict[str, Any]) -> None:
    """Print the table, the target ratios and the JSON line."""
    print(f"\n{'method':<12} {'HR@20':>8} {'MRR@20':>8}   ({result['scored']} scored events)")
    for m in METHODS:
        print(f"{m:<12} {result['hr20'][m]:>8.4f} {result['mrr20'][m]:>8.4f}")
    hr = result["hr20"]
    best_base = max(hr["itemknn"], hr["history"])
    pop_ratio = hr["kairos"] / hr["popularity"] if hr["popularity"] else float("inf")
    base_ratio = hr["kairos"] / best_base if best_base else float("inf")
    print(f"kairos / popularity            = {pop_ratio:.2f}  (target >= 2.0)")
    print(f"kairos / max(itemknn, history) = {base_ratio:.2f}  (target >= 1.1)")
    print(f"recommendations/s {result['recs_per_s']}, model updates/s {result['updates_per_s']}")
    out = {k: v for k, v in result.items() if k != "scored"}
    print(orjson.dumps(out).decode(), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="Taobao CSV, REES46 CSV or JSON-lines events")
    parser.add_argument("--recipe", default=str(ROOT / "config/recipes/default.yaml"))
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    args = parser.parse_args(argv)
    with open(args.recipe, encoding="utf-8") as fh:
        recipe = parse_recipe(yaml.safe_load(fh))
    for path in args.paths:
        report(replay(path, recipe, args.limit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
