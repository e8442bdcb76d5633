"""Prequential replay of behaviour logs through the recommendation learners.

    python bench/reco_replay.py PATH [PATH ...] [--recipe config/recipes/default.yaml]
                                [--sessions] [--every N] [--limit N] [--cf-batch N]

PATH is a Taobao CSV, a REES46 CSV or JSON lines in the event spec (how other logs arrive).
Events are replayed in time order. After each event the models learn it, then each method is
asked for 20 items for that visitor on that item's page; it scores a hit when the visitor's next
distinct item (repeats of the current item skipped) is among them. Kairos (the recipe) is
compared in the same run with four simple baselines:

- popularity: the most interacted-with items so far;
- itemknn: the items met most often within 10 steps of the page's item in visitors' sequences;
- history: the visitor's own most recent distinct items;
- itemknn+history: both lists (50 each) blended by rank, `10/(10 + rank)`, equal weights.

Kairos's `history` ingredient is read as the route serves it: `models.reco.online`'s
`history_candidates` on a profile per visitor (`apply_event`, config/kairos.yaml's settings;
`--recent-items N` tries a longer recent list) and a twin of the stream's session item tables
(`SessionTables`); the `history` baseline stays the `History` learner's recent items.

`kairos:kept` is the same recipe with every bought item kept (no repurchase rule), to show what
the rule costs on a log where visitors look again at what they bought. Also printed per method:
`bought%`, the share of recommended items that the visitor had bought
before (the repurchase rule keeps it low where rebuying is rare), and the microseconds each
learner spends per event (`learn µs`). `--sessions` adds, per CSV, a derived session log:
clicks only (views; no carts, favourites or purchases), no categories, brands or prices, and
every session an anonymous visitor (REES46: its `user_session`; Taobao: cut by 30 minutes of
inactivity), written as JSON lines and replayed through the JSON-lines loader -- the
YooChoose-like case. The last line is one JSON object with every file's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.logic.candidates import own_items  # noqa: E402
from engine.logic.recipes import Recipe, apply, parse_recipe  # noqa: E402
from models.affinity import AffinityConfig, Profile, apply_event  # noqa: E402
from models.reco import CO_VIEW_TYPES, CoOccurrence, RecoModels, Trending  # noqa: E402
from models.reco.base import event_items  # noqa: E402
from models.reco.online import earlier_items, own_session_names  # noqa: E402
from models.reco.online import visitor_state as served_visitor  # noqa: E402
from models.session import shared_session_name, split_sessions  # noqa: E402
from streams.hooks.reco import MAX_ITEMS, SESSION_ITEMS, SESSION_PER_EVENT, SESSION_TTL_MS  # noqa: E402
from streams.sources import load_events  # noqa: E402

K = 20
POOL = 50  # candidates per list for the blends
BASELINES = ("popularity", "itemknn", "history", "itemknn+history")
#: "kairos:kept" is the same recipe with every bought item kept (exclusions.purchased off):
#: what the repurchase rule costs (or gains) on a log where visitors revisit what they bought.
METHODS = ("kairos", "kairos:kept", *BASELINES)


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file, validated by `engine.logic.recipes.parse_recipe`."""
    with open(path, encoding="utf-8") as fh:
        return parse_recipe(yaml.safe_load(fh), Path(path).stem)


def profile_config(recent_items: int | None = None) -> AffinityConfig:
    """The profile settings the stream uses (config/kairos.yaml's `affinity`), optionally with
    another `max_recent_items` (what a longer served history would give)."""
    with open(ROOT / "config/kairos.yaml", encoding="utf-8") as fh:
        cfg = AffinityConfig(**(yaml.safe_load(fh).get("affinity") or {}))
    return cfg if recent_items is None else dataclasses.replace(cfg, max_recent_items=recent_items)


class SessionTables:
    """The offline twin of the stream's session item tables (`keys.session_items`, written by
    streams/hooks/reco.py): per session (its shared name) the items by the time it last met
    each, trimmed to the newest `SESSION_ITEMS` once past the cap by an eighth (the commit's
    rule), gone `SESSION_TTL_MS` after the last change. The served `history` ingredient reads
    the visitor's latest sessions from them (`own_session_names`, `earlier_items`)."""

    def __init__(self) -> None:
        self.t: dict[str, tuple[dict[str, float], int]] = {}

    def learn(self, event: dict[str, Any], profile: Profile, pid: str) -> None:
        """What the hook writes for one applied event (`profile` already updated)."""
        if event.get("type") not in CO_VIEW_TYPES or not profile.session.seq:
            return
        ids = [str(it["id"]) for it in event_items(event)[:MAX_ITEMS]]
        if not ids:
            return
        name = shared_session_name(pid, profile.session)
        ts = int(event["ts"])
        items = self.t[name][0] if name in self.t else {}
        for k, iid in enumerate(ids[:SESSION_PER_EVENT]):
            score = ts + k / 1000.0
            if score > items.get(iid, float("-inf")):
                items[iid] = score
        if len(items) > SESSION_ITEMS + SESSION_ITEMS // 8 + 1:
            items = dict(sorted(items.items(), key=lambda kv: kv[1])[-SESSION_ITEMS:])
        self.t[name] = (items, ts)

    def read(self, names: Sequence[str], now_ms: int) -> dict[str, list[str]]:
        """Each live session's items, oldest first (as `RecoReader.sessions`)."""
        out = {}
        for name in names:
            row = self.t.get(name)
            if row is not None and now_ms - row[1] <= SESSION_TTL_MS:
                out[name] = [i for i, _ in sorted(row[0].items(), key=lambda kv: (kv[1], kv[0]))]
        return out


def own_history(profile: Profile, pid: str, tables: SessionTables, item_id: str,
                catalog: Any, cfg: AffinityConfig, now_ms: int, k: int) -> list[Any]:
    """The `history` ingredient as the route serves it (engine/flows/recommend.py)."""
    visitor = served_visitor(profile, now_ms, cfg)
    names = own_session_names(pid, profile)
    if names:
        visitor["earlier"] = earlier_items(names, tables.read(names, now_ms))
    return own_items(profile.recent, visitor, item_id, catalog, k)


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


def blend(lists: Sequence[Sequence[str]], weights: Sequence[float], n: int,
          exclude: set[str], offset: float = 10.0) -> list[str]:
    """Rank blend: each list's item at rank r adds `w * offset / (offset + r)`."""
    scores: dict[str, float] = {}
    for lst, w in zip(lists, weights, strict=True):
        for r, iid in enumerate(lst):
            scores[iid] = scores.get(iid, 0.0) + w * offset / (offset + r)
    ranked = sorted(((i, s) for i, s in scores.items() if i not in exclude),
                    key=lambda kv: (-kv[1], kv[0]))
    return [i for i, _ in ranked[:n]]


class Score:
    """HR@K and MRR@K accumulators, and how many recommended items were bought before."""

    def __init__(self) -> None:
        self.n = 0
        self.hits = 0
        self.rr = 0.0
        self.shown = 0
        self.bought = 0

    def add(self, recs: Sequence[str], target: str, bought: set[str] | None = None) -> None:
        self.n += 1
        recs = list(recs[:K])
        self.shown += len(recs)
        if bought:
            self.bought += sum(1 for i in recs if i in bought)
        for rank, iid in enumerate(recs, start=1):
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

    @property
    def bought_share(self) -> float:
        return self.bought / self.shown if self.shown else 0.0


def replay(path: str, recipe: Recipe, limit: int | None = None, every: int = 1,
           label: str | None = None, recent_items: int | None = None,
           cf_batch: int = 1) -> dict[str, Any]:
    """Replay one file; returns the result object."""
    t0 = time.perf_counter()
    events = load_events(path)
    if limit:
        events = events[:limit]
    targets = next_distinct_targets(events)
    name = label or path
    print(f"{name}: {len(events)} events loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    models = RecoModels(seed=0)
    learners = models.learners()
    # the served `history` ingredient reads the stream's profile (models/affinity.py: its
    # recent items and item affinities), so its twin here keeps the same profiles
    cfg = profile_config(recent_items)
    profiles: dict[str, Profile] = {}
    session_tables = SessionTables()
    popularity = Trending(half_life_s=None, weights={t: 1.0 for t in CO_VIEW_TYPES})
    itemknn = CoOccurrence(CO_VIEW_TYPES, popularity_exponent=0.0)
    catalog: dict[str, dict[str, Any]] = {}
    bought: dict[str, set[str]] = {}
    scores = {m: Score() for m in METHODS}
    learn_s = dict.fromkeys(learners, 0.0)
    rec_s = 0.0
    n_recs = 0
    needed = recipe.needed()
    kept = dataclasses.replace(
        recipe, exclusions=dataclasses.replace(recipe.exclusions, purchased=False))
    step = max(1, len(events) // 10)
    eligible = 0
    seen: dict[str, set[str]] = {}
    revisits = reach = 0

    cf_queue: list[tuple[dict[str, Any], str]] = []
    for idx, ev in enumerate(events):
        for item in event_items(ev):
            catalog.setdefault(str(item["id"]), {}).update(item)
        for lname, learner in learners.items():
            t = time.perf_counter()
            if lname == "cf" and cf_batch > 1:  # as the stream's hook: a batch at a time
                cf_queue.append((ev, ev["visitor_id"]))
                if len(cf_queue) >= cf_batch:
                    learner.learn_many(cf_queue)
                    cf_queue.clear()
            else:
                learner.learn_one(ev)
            learn_s[lname] += time.perf_counter() - t
        popularity.learn_one(ev)
        itemknn.learn_one(ev)
        vid = ev["visitor_id"]
        t = time.perf_counter()
        profile = profiles.setdefault(vid, Profile())
        apply_event(profile, ev, cfg)
        session_tables.learn(ev, profile, vid)
        learn_s["profile"] = learn_s.get("profile", 0.0) + time.perf_counter() - t
        if ev.get("type") == "purchase":
            bought.setdefault(vid, set()).update(str(it["id"]) for it in event_items(ev))
        seen.setdefault(vid, set()).update(str(it["id"]) for it in event_items(ev))

        target = targets[idx]
        if target is not None:
            eligible += 1
        if target is not None and (eligible - 1) % every == 0:
            item = event_items(ev)[0]
            cur = str(item["id"])
            cats = item.get("categories") or []
            context = {"item_id": cur, "category": cats[0] if cats else None, "now_ms": ev["ts"]}
            mine = bought.get(vid)
            t = time.perf_counter()
            cands = models.candidates(needed, vid, context, k=POOL)
            if "history" in cands:  # as served (engine/flows/recommend.py)
                cands["history"] = own_history(profile, vid, session_tables, cur, catalog.get,
                                               cfg, ev["ts"], POOL)
            visitor = models.visitor_state(vid, now_ms=ev["ts"])
            recs = apply(recipe, cands, catalog.get, visitor, context, K)
            rec_s += time.perf_counter() - t
            n_recs += 1
            revisits += target in seen[vid]
            reach += any(c.item_id == target for lst in cands.values() for c in lst)
            scores["kairos"].add([r.item_id for r in recs], target, mine)
            if recipe.exclusions.purchased:
                recs = apply(kept, cands, catalog.get, visitor, context, K)
            scores["kairos:kept"].add([r.item_id for r in recs], target, mine)
            scores["popularity"].add(
                [c.item_id for c in popularity.recommend(K, exclude={cur})], target, mine)
            knn = [c.item_id for c in itemknn.neighbours(cur, POOL)]
            scores["itemknn"].add(knn[:K], target, mine)
            own = [iid for iid, _ in models.history.recent(vid, POOL + 1) if iid != cur]
            scores["history"].add(own[:K], target, mine)
            scores["itemknn+history"].add(blend([own, knn], [1.0, 1.0], K, {cur}), target, mine)
        if (idx + 1) % step == 0:
            s = scores["kairos"]
            print(
                f"  {idx + 1:>7}/{len(events)} events  kairos HR@{K} {s.hr:.4f}  "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )

    n_ev = max(1, len(events))
    return {
        "file": name,
        "events": len(events),
        "scored": scores["kairos"].n,
        "hr20": {m: round(scores[m].hr, 5) for m in METHODS},
        "mrr20": {m: round(scores[m].mrr, 5) for m in METHODS},
        "bought_share": {m: round(scores[m].bought_share, 5) for m in METHODS},
        "revisit_share": round(revisits / n_recs, 5) if n_recs else 0.0,
        "pool_reach": round(reach / n_recs, 5) if n_recs else 0.0,
        "learn_us": {k: round(v / n_ev * 1e6, 2) for k, v in learn_s.items()},
        "recs_per_s": round(n_recs / rec_s, 1) if rec_s else 0.0,
    }


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Print the table and the target ratios; returns the summary row."""
    print(f"\n{'method':<16} {'HR@20':>8} {'MRR@20':>8} {'bought%':>8}   "
          f"({result['scored']} scored events)")
    for m in METHODS:
        print(f"{m:<16} {result['hr20'][m]:>8.4f} {result['mrr20'][m]:>8.4f} "
              f"{100 * result['bought_share'][m]:>7.2f}%")
    hr = result["hr20"]
    best = max(BASELINES, key=lambda m: hr[m])
    ratio = hr["kairos"] / hr[best] if hr[best] else float("inf")
    pop_ratio = hr["kairos"] / hr["popularity"] if hr["popularity"] else float("inf")
    print(f"kairos / popularity = {pop_ratio:.2f}")
    print(f"kairos / best simple baseline ({best}) = {ratio:.3f}  (target >= 1.1)")
    print(f"targets the visitor had met before {100 * result['revisit_share']:.1f}%; "
          f"targets anywhere in Kairos's candidate pool ({POOL} per ingredient) "
          f"{100 * result['pool_reach']:.1f}% (no blend can score above that)")
    learn = result["learn_us"]
    print("learn µs per event: " + ", ".join(f"{k} {v:.1f}" for k, v in learn.items())
          + f"; all {sum(learn.values()):.1f}")
    print(f"recommendations/s {result['recs_per_s']}", flush=True)
    return {**result, "best_baseline": best, "ratio": round(ratio, 4)}


def derive_session_log(path: str, out_dir: str) -> str:
    """The YooChoose-like twin of a log: views only, item ids only, each session a visitor."""
    events = load_events(path)
    out = Path(out_dir) / (Path(path).stem + ".sessions.jsonl")
    n = 0
    with open(out, "wb") as fh:
        for ev, (vid, seq) in zip(events, split_sessions(events), strict=True):
            items = event_items(ev)
            if ev.get("type") != "item_view" or not items:
                continue
            fh.write(orjson.dumps({"event_id": f"s{n}", "type": "item_view",
                                   "visitor_id": f"{vid}#{seq}", "ts": ev["ts"],
                                   "item": {"id": str(items[0]["id"])}}) + b"\n")
            n += 1
    return str(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="Taobao CSV, REES46 CSV or JSON-lines events")
    parser.add_argument("--recipe", default=str(ROOT / "config/recipes/default.yaml"))
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    parser.add_argument("--every", type=int, default=1,
                        help="score every Nth eligible event (all learn every event)")
    parser.add_argument("--recent-items", type=int, default=None,
                        help="profiles keep this many recent items (default: config/kairos.yaml)")
    parser.add_argument("--cf-batch", type=int, default=1,
                        help="the CF learner learns N events at a time (OnlineMF.learn_many, "
                             "as the stream's hook does per batch); 1: one at a time")
    parser.add_argument("--sessions", action="store_true",
                        help="also replay each CSV's derived session log (clicks only)")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe)
    print(f"recipe {args.recipe}: {dict(recipe.ingredients)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kairos-sessions-") as tmp:
        for path in args.paths:
            rows.append(report(replay(path, recipe, args.limit, args.every,
                                      recent_items=args.recent_items, cf_batch=args.cf_batch)))
            if args.sessions and not path.endswith((".jsonl", ".ndjson", ".json")):
                derived = derive_session_log(path, tmp)
                label = f"{path} (derived session log: views only, no categories)"
                rows.append(report(replay(derived, recipe, args.limit, args.every, label,
                                          args.recent_items, args.cf_batch)))
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(orjson.dumps({"bench": "reco_replay", "recipe": recipe.name, "cf_batch": args.cf_batch,
                        "files": rows}).decode(),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
