"""Recipe variants on one replay: which blend setting moves HR@20, measured on shared candidates.

    python bench/reco_sweep.py PATH [--every N] [--recipe config/recipes/default.yaml]

The replay of `bench/reco_replay.py` (prequential, hit = the visitor's next distinct item), but
every scored event's candidates are computed once and each variant of the recipe is applied to
them: the variants differ only in the blend (weights, rank offset, bought items kept) or in
which list stands in for an ingredient (`history` by pure recency, the replay's item-kNN
baseline -- the page's item's neighbours, no popularity discount -- in place of `co_view`). So
the differences between rows are the blend's alone, without the noise of separate runs. A
diagnostic for tuning the default recipe; the figures to report stay reco_replay.py's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import reco_replay as rr  # noqa: E402

from engine.logic.candidates import own_items  # noqa: E402
from engine.logic.recipes import Recipe, apply  # noqa: E402
from models.affinity import Profile, apply_event  # noqa: E402
from models.reco import CO_VIEW_TYPES, CoOccurrence, RecoModels  # noqa: E402
from models.reco.base import Candidate, event_items  # noqa: E402
from models.reco.online import visitor_state as served_visitor  # noqa: E402
from streams.sources import load_events  # noqa: E402


def variants(base: Recipe) -> dict[str, tuple[Recipe, str]]:
    """name -> (recipe, which lists: "" as served, "recency" history, "knn" co_view, both)."""

    def v(lists: str = "", keep: bool = False, offset: float | None = None,
          **weights: float) -> tuple[Recipe, str]:
        ing = {**base.ingredients, **weights}
        r = dataclasses.replace(base, ingredients=ing,
                                rank_offset=base.rank_offset if offset is None else offset)
        if keep:
            r = dataclasses.replace(
                r, exclusions=dataclasses.replace(r.exclusions, purchased=False))
        return r, lists

    h, cv, sk = (base.ingredients.get(k, 0.0) for k in ("history", "co_view", "session_knn"))
    return {
        "as served": v(),
        "bought kept": v(keep=True),
        "history x1.5": v(history=1.5 * h),
        "history x2": v(history=2 * h),
        "history x3": v(history=3 * h),
        "history by recency": v("recency"),
        "history = replay's before (History, 50)": v("h50"),
        "history = served before (8 recent)": v("p8old"),
        "history = own items, no earlier sessions": v("p8"),
        "history = own items, 20 recent, no sessions": v("p20"),
        "history = own items, 30 recent, no sessions": v("p30"),
        "history = own items, 30 recent, sessions": v("s30"),
        "rank offset 5": v(offset=5.0),
        "rank offset 20": v(offset=20.0),
        "session_knn x0.5": v(session_knn=0.5 * sk),
        "session_knn x1.7": v(session_knn=1.7 * sk),
        "co_view x0.6": v(co_view=0.6 * cv),
        "co_view x1.5": v(co_view=1.5 * cv),
        "co_buy off": v(co_buy=0.0),
        "trending_in_category off": v(trending_in_category=0.0),
        "affinity off": v(affinity=0.0),
        "co_view = item-kNN": v("knn"),
        "co_view = item-kNN, history x2": v("knn", history=2 * h),
        "co_view = item-kNN, kept": v("knn", keep=True),
    }


def sweep(path: str, base: Recipe, every: int) -> dict[str, rr.Score]:
    events = load_events(path)
    targets = rr.next_distinct_targets(events)
    models = RecoModels(seed=0)
    learners = list(models.learners().values())
    knn = CoOccurrence(CO_VIEW_TYPES, popularity_exponent=0.0)
    # the served history's profiles (config/kairos.yaml), and with 20 / 30 recent items
    cfgs = {n: rr.profile_config(n) for n in (None, 20, 30)}
    profiles: dict[int | None, dict[str, Profile]] = {n: {} for n in cfgs}
    session_tables = rr.SessionTables()
    table = variants(base)
    scores = {name: rr.Score() for name in table}
    catalog: dict[str, dict[str, object]] = {}
    needed = base.needed()
    eligible = 0
    for idx, ev in enumerate(events):
        for item in event_items(ev):
            catalog.setdefault(str(item["id"]), {}).update(item)
        for learner in learners:
            learner.learn_one(ev)
        knn.learn_one(ev)
        for n, cfg in cfgs.items():
            apply_event(profiles[n].setdefault(ev["visitor_id"], Profile()), ev, cfg)
        session_tables.learn(ev, profiles[None][ev["visitor_id"]], ev["visitor_id"])
        target = targets[idx]
        if target is None:
            continue
        eligible += 1
        if (eligible - 1) % every:
            continue
        vid = ev["visitor_id"]
        item = event_items(ev)[0]
        cur = str(item["id"])
        cats = item.get("categories") or []
        context = {"item_id": cur, "category": cats[0] if cats else None, "now_ms": ev["ts"]}
        cands = models.candidates(needed, vid, context, k=rr.POOL)
        h50 = cands.get("history", [])
        own = {f"p{n or 8}": own_items(profiles[n][vid].recent,
                                       served_visitor(profiles[n][vid], ev["ts"], cfgs[n]), cur,
                                       catalog.get, rr.POOL) for n in cfgs}
        own["s30"] = rr.own_history(profiles[30][vid], vid, session_tables, cur, catalog.get,
                                    cfgs[30], ev["ts"], rr.POOL)
        if "history" in cands:  # as served
            cands["history"] = rr.own_history(profiles[None][vid], vid, session_tables, cur,
                                              catalog.get, cfgs[None], ev["ts"], rr.POOL)
        visitor = models.visitor_state(vid, now_ms=ev["ts"])
        recency = [Candidate(i, 1.0, i) for i, _ in models.history.recent(vid, rr.POOL)]
        neighbours = knn.neighbours(cur, rr.POOL)
        for name, (recipe, lists) in table.items():
            c = dict(cands)
            if "recency" in lists:
                c["history"] = recency
            if "knn" in lists:
                c["co_view"] = neighbours
            if "h50" in lists:
                c["history"] = h50
            if "p8old" in lists:
                c["history"] = [Candidate(i, 1.0 / (1 + k))
                                for k, i in enumerate(profiles[None][vid].recent)]
            if lists in own:
                c["history"] = own[lists]
            recs = apply(recipe, c, catalog.get, visitor, context, rr.K)
            scores[name].add([r.item_id for r in recs], target)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--recipe", default=str(ROOT / "config/recipes/default.yaml"))
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args(argv)
    base = rr.load_recipe(args.recipe)
    for path in args.paths:
        t0 = time.perf_counter()
        scores = sweep(path, base, args.every)
        ref = scores["as served"].hr
        print(f"\n{path}: {scores['as served'].n} scored events, "
              f"{time.perf_counter() - t0:.0f}s")
        for name, s in scores.items():
            print(f"{name:<32} HR@20 {s.hr:.4f} ({100 * (s.hr - ref):+.2f} points)  "
                  f"MRR@20 {s.mrr:.4f}")
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
