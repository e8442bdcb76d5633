"""Stream CPU, in process: µs of worker CPU per event, layer by layer, with every hook on.

    python bench/stream_profile.py [--events 40000] [--per-record 1,20] [--source synthetic,real]
                                   [--cprofile 25] [--no-layers]

BYPASSES KAFKA: records are built exactly as the API writes them (validated `Event`s, one msgpack
array per visitor per record, keyed by visitor, partitioned by CRC-32 as the broker does) and
handed in batches of `batch_max` records to `streams.worker.Worker.apply_records` — what the
consumer calls after `getmany` — against a real Valkey (started here, AOF off), with the worker's
hooks (`streams.hooks.setup_hooks`, the shipped config/ with its segments and campaigns) and the
worker process's garbage-collector settings (streams/app.py), emits counted and dropped. So the figure is the worker's own CPU per event minus aiokafka's fetch
(~1-2 µs per record) and the once-a-second report.

Sources (`--source`): `synthetic` = the events `bench/stream.py` produces (ingest.py's `_event`:
50,000 SKUs, 10 events per visitor), `real` = sessions sampled from REES46 and Taobao as
bench/memory.py samples them (read in place under /work/shared/data). Record shapes
(`--per-record`): 1 (mixed-visitor requests) and 20 (flushes).

Each scenario runs twice on fresh visitors: once clean (total CPU per event, `time.process_time`),
once with the layers timed (`time.thread_time_ns` around each step and each hook call, the
clock's own cost, calibrated at start, taken off each figure; the run's total still includes it); `--cprofile N` adds a cProfile run and prints its top N
functions by own time.

The learner's cost per event (`--learner`, on by default; `--learner-only` skips the worker
runs and needs no Valkey): the same events, decoded as the learner decodes them, handed to
`engine.logic.decisions.learning.OfferLearner.event` in batches of 500 (then `advance()`, as
streams/learner.py does per fetch), with the purchase and exit propensity learners on
(`SessionPropensity`) and off, in interleaved rounds on fresh learners; µs of process CPU per
event, medians. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import random
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, busy_note, json_line, loadavg, run_main, say  # noqa: E402

PARTITIONS = 4
REES46 = Path("/work/shared/data/rees46/2019-Oct_head.csv")
TAOBAO = Path("/work/shared/data/taobao/user_behavior.csv")
TARGETS = {1: 150, 20: 100}  # µs CPU per event (issue 13)


class Record:
    """What the worker reads of an aiokafka ConsumerRecord."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "value", "key")

    def __init__(self, topic: str, partition: int, offset: int, timestamp: int, value: bytes,
                 key: bytes) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.timestamp, self.value, self.key = timestamp, value, key


def synthetic_events(n: int, visitors: int, seed: int, tag: str) -> dict[str, list[dict[str, Any]]]:
    from ingest import _event

    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(n):
        vid = f"{tag}-{rng.randrange(visitors)}"
        by[vid].append(_event(rng, vid, now_ms))
    return by


_SOURCES: list[Any] = []


def real_events(n: int, mean: int, seed: int, tag: str) -> dict[str, list[dict[str, Any]]]:
    from memory import load_sources, synth_visitor

    if not _SOURCES:
        _SOURCES.extend(load_sources())
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    by: dict[str, list[dict[str, Any]]] = {}
    i = 0
    while sum(map(len, by.values())) < n:
        evs = synth_visitor(rng, _SOURCES, i, mean, now_ms)
        vid = f"{tag}-{i}"
        for e in evs:
            e["visitor_id"] = vid
        by[vid] = evs
        i += 1
    return by


def build_records(by_visitor: dict[str, list[dict[str, Any]]], per_record: int, topic: str,
                  seed: int) -> list[Record]:
    """Records of up to `per_record` events of one visitor, visitors interleaved (each in its
    own order), partitioned by the key's CRC-32, offsets per partition."""
    import msgspec

    from engine.logic.events import Event, check_event, encode_events

    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    queues: list[list[bytes]] = []
    keys_of: list[bytes] = []
    for vid, evs in by_visitor.items():
        typed = []
        for e in evs:
            ev = msgspec.convert(e, Event)
            if check_event(ev, now_ms) is None:
                typed.append(ev)
        recs = [encode_events(typed[k:k + per_record]) for k in range(0, len(typed), per_record)]
        if recs:
            queues.append(list(reversed(recs)))
            keys_of.append(vid.encode())
    offsets = [0] * PARTITIONS
    out: list[Record] = []
    live = list(range(len(queues)))
    while live:
        j = rng.randrange(len(live))
        q = live[j]
        value = queues[q].pop()
        key = keys_of[q]
        part = zlib.crc32(key) % PARTITIONS
        out.append(Record(topic, part, offsets[part], now_ms, value, key))
        offsets[part] += 1
        if not queues[q]:
            live[j] = live[-1]
            live.pop()
    return out


class Layers:
    """CPU per layer (ns), by name."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.undo: list[Callable[[], None]] = []
        self.overhead_ns = self._calibrate()

    @staticmethod
    def _calibrate() -> float:
        """What one timed call of nothing adds to its label (the clock's own cost)."""
        clock = time.thread_time_ns
        acc = 0
        for _ in range(20_000):
            t = clock()
            acc += clock() - t
        return acc / 20_000

    def us_per_event(self, events: int) -> dict[str, float]:
        return {k: round(max(0.0, v - self.calls[k] * self.overhead_ns) / 1000 / max(1, events), 1)
                for k, v in sorted(self.ns.items())}

    def patch(self, owner: Any, name: str, label: str) -> None:
        orig = getattr(owner, name)
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns
        if asyncio.iscoroutinefunction(orig):
            async def timed_async(*a: Any, **k: Any) -> Any:
                # CPU of this task's own steps: the thread's CPU while awaiting includes the
                # event loop's other work, which in this one-task run is nothing but the I/O
                t = clock()
                try:
                    return await orig(*a, **k)
                finally:
                    ns[label] += clock() - t
                    calls[label] += 1
            setattr(owner, name, timed_async)
        else:
            def timed(*a: Any, **k: Any) -> Any:
                t = clock()
                try:
                    return orig(*a, **k)
                finally:
                    ns[label] += clock() - t
                    calls[label] += 1
            setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, orig))

    def wrap_hook(self, hook: Any, label: str) -> Any:
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns
        lh, lf = f"hook {label}", f"finish {label}"

        class Timed:
            def __call__(self, *a: Any) -> None:
                t = clock()
                hook(*a)
                ns[lh] += clock() - t
                calls[lh] += 1

        timed = Timed()
        if hasattr(hook, "finish"):
            fin = hook.finish

            def finish(*a: Any) -> None:
                t = clock()
                fin(*a)
                ns[lf] += clock() - t
                calls[lf] += 1
            timed.finish = finish  # type: ignore[attr-defined]
        for attr in ("reads", "unstored"):
            if hasattr(hook, attr):
                setattr(timed, attr, getattr(hook, attr))
        return timed

    def restore(self) -> None:
        for u in reversed(self.undo):
            u()
        self.undo.clear()


def hook_label(h: Any) -> str:
    name = getattr(h, "__name__", None) or type(h).__name__
    return {"count_traffic": "traffic", "Traffic": "traffic", "record_activity": "activity",
            "DecisionHook": "decisions", "record_reco": "reco", "OnlineCF": "cf"}.get(name, name)


async def valkey_cpu(r: Any) -> float:
    """Valkey's own CPU so far (s, user + system, all its threads: INFO cpu)."""
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run_once(settings: Any, records: list[Record], mode: str, layers: Layers | None,
                   prof: cProfile.Profile | None) -> dict[str, Any]:
    from streams.plan import DECISIONS_MARK_BASE
    from streams.worker import Worker

    emitted = 0

    async def emit(items: Any) -> None:
        nonlocal emitted
        emitted += len(items)

    w = Worker(settings, settings.redis_url, f"profile-{mode}", emit)
    ap = await w.applier()
    gc.freeze()  # as streams/app.py does once the worker is made
    await w.assigned(set(range(PARTITIONS)))
    if layers is not None:
        import engine.store.profiles as sp
        import streams.applier as sa
        import streams.plan as pl
        import streams.worker as sw
        from engine.store.client import Script
        from engine.store.writes import Tables, coalesce  # noqa: F401
        from models.affinity import Profile

        getter = ap.hooks
        ap.hooks = lambda: [layers.wrap_hook(h, hook_label(h)) for h in getter()]  # type: ignore[method-assign]
        layers.patch(sw, "decode_batch", "decode records (msgspec, bounds)")
        layers.patch(sp.ProfileStore, "aliases", "read aliases (MGET)")
        layers.patch(sp, "decode", "  of which: profile restore")
        layers.patch(sp.ProfileStore, "load", "read profiles (script) + restore")
        layers.patch(sa, "needed_pids", "needed pids + side reads")
        layers.patch(sa, "side_reads", "needed pids + side reads")
        layers.patch(sa, "plan", "plan (total)")
        layers.patch(pl, "apply_event", "  plan: apply_event (profile)")
        layers.patch(sp.ProfileStore, "commit", "commit (total)")
        # a batch of several parts commits each but the last overlapped with the next part's
        # planning (streams/applier.py): built and sent by `start_commit`, through
        # `Script.start` (until this was timed, those parts' commit building showed up in
        # "other": ~20 µs of the 40 on 20-event records)
        layers.patch(sp.ProfileStore, "start_commit", "commit (total)")
        layers.patch(Script, "start", "  commit+read: redis call (hiredis pack, I/O, reply)")
        layers.patch(Profile, "snapshot", "  commit: profile snapshot")
        # the plan ahead carries on with the profiles the commit it overlaps writes (in
        # "other": it is neither the read nor the plan)
        layers.patch(Profile, "settle", "  of which: plan ahead, written profiles settled")
        layers.patch(sp, "coalesce", "  commit: coalesce ops")
        layers.patch(Tables, "rows", "  commit: table rows")
        layers.patch(sp._Call, "args", "  commit: msgpack pack")
        layers.patch(Script, "_packed", "  commit+read: redis call (hiredis pack, I/O, reply)")
    gc_ns = [0, 0, 0]
    gc_n = [0, 0, 0]
    gc_t = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_t[0] = time.thread_time_ns()
        else:
            gc_ns[info["generation"]] += time.thread_time_ns() - gc_t[0]
            gc_n[info["generation"]] += 1

    gc.callbacks.append(on_gc)
    await w.redis.config_resetstat()
    v0 = await valkey_cpu(w.redis)
    events = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    base = {settings.events_topic: 0, settings.decisions_topic: DECISIONS_MARK_BASE}
    n = settings.batch_max
    if prof is not None:
        prof.enable()
    try:
        for i in range(0, len(records), n):
            res = await w.apply_records(records[i:i + n], base)
            events += res.applied
    finally:
        if prof is not None:
            prof.disable()
        if layers is not None:
            layers.restore()
    cpu = time.process_time() - c0
    wall = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    valkey_s = await valkey_cpu(w.redis) - v0
    stats = await w.redis.info("commandstats")
    await w.redis.aclose()
    per = max(1, events)
    calls = {k.removeprefix("cmdstat_"): round(v["calls"] / per, 2) for k, v in stats.items()
             if k.startswith("cmdstat_") and v["calls"] / per >= 0.05}
    return {"applied": events, "cpu_s": cpu, "wall_s": wall, "emits": emitted,
            "us_per_event": round(cpu * 1e6 / max(1, events), 1),
            "valkey_us_per_event": round(valkey_s * 1e6 / per, 1),
            "valkey_calls_per_event": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
            "gc_us_per_event": [round(x / 1000 / max(1, events), 1) for x in gc_ns],
            "gc_collections": gc_n}


def scenario(st: BenchStack, source: str, per_record: int, n: int, visitors: int, seed: int,
             layered: bool, top: int) -> dict[str, Any]:
    out: dict[str, Any] = {"source": source, "per_record": per_record}
    modes = ["clean"] + (["layers"] if layered else []) + (["cprofile"] if top else [])
    for k, mode in enumerate(modes):
        settings = st.configure(database_url=None, kafka_bootstrap=None)
        # fresh visitors per mode ("clean" and "cprofile" both start with a "c")
        tag = f"{source[0]}{per_record}{mode[:2]}{seed}"
        if source == "synthetic":
            by = synthetic_events(n, visitors, seed + k, tag)
        else:
            by = real_events(n, 10, seed + k, tag)
        records = build_records(by, per_record, settings.events_topic, seed + k)
        layers = Layers() if mode == "layers" else None
        prof = cProfile.Profile() if mode == "cprofile" else None
        got = asyncio.run(run_once(settings, records, mode, layers, prof))
        say(f"{source} per-record {per_record} {mode}: {got['applied']} events, "
            f"{got['us_per_event']:.0f} µs CPU/event ({got['applied'] / got['wall_s']:.0f} ev/s "
            f"wall, load {loadavg():.2f}); garbage collector {got['gc_us_per_event']} µs/event "
            f"in {got['gc_collections']} passes (generations 0, 1, 2); Valkey "
            f"{got['valkey_us_per_event']:.0f} µs CPU/event, commands per event "
            f"{got['valkey_calls_per_event']}")
        out[mode] = got
        if layers is not None:
            out["layers_us"] = layers.us_per_event(got["applied"])
        if prof is not None:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
            out["cprofile_top"] = s.getvalue()
    return out


def learner_cost(by_visitor: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, Any]:
    """µs CPU per event of the learner with the propensity learners on and off (see the module
    docstring): the events in time order (each visitor's in its own order), the learner's clock
    at the newest event seen, so sessions close by the 30-minute gap as they would live."""
    import statistics
    from datetime import UTC, datetime, timedelta

    import msgspec

    from engine.logic.decisions.learning import OfferLearner
    from engine.logic.events import decode_events
    from models.propensity.online import SessionPropensity

    enc = msgspec.msgpack.Encoder()
    flat = sorted((e for evs in by_visitor.values() for e in evs), key=lambda e: e["ts"])
    blobs = [enc.encode([e]) for e in flat]  # one event per record, as most records hold
    per: dict[str, list[float]] = {"on": [], "off": []}
    scored = 0
    for _ in range(rounds):
        for mode in ("on", "off"):
            now = [flat[0]["ts"]]
            learner = OfferLearner(
                lambda now=now: datetime.fromtimestamp(now[0] / 1000, UTC),
                timedelta(minutes=30),
                propensity=SessionPropensity() if mode == "on" else None)
            gc.collect()
            t0 = time.process_time()
            for i, b in enumerate(blobs):
                for rec in decode_events(b):
                    learner.event(rec)
                    now[0] = max(now[0], int(rec["ts"]))
                if i % 500 == 499:
                    learner.advance()
                    if mode == "on":
                        scored += len(learner.take_scores())
            learner.advance()
            per[mode].append(1e6 * (time.process_time() - t0) / len(blobs))
    on, off = statistics.median(per["on"]), statistics.median(per["off"])
    return {"events": len(blobs), "rounds": rounds, "us_per_event_propensity_on": round(on, 1),
            "us_per_event_propensity_off": round(off, 1),
            "us_per_event_propensity": round(on - off, 1),
            "per_round": {k: [round(x, 1) for x in v] for k, v in per.items()},
            "load": loadavg()}


def print_layers(res: dict[str, Any]) -> None:
    lay = res.get("layers_us")
    if not lay:
        return
    total = res["layers"]["us_per_event"]
    print(f"  layers (µs CPU per event; this run's total {total:.0f}):")
    order = ["decode records (msgspec, bounds)", "read aliases (MGET)",
             "read profiles (script) + restore", "  of which: profile restore",
             "needed pids + side reads", "plan (total)", "  plan: apply_event (profile)"]
    hooks = sorted(k for k in lay if k.startswith(("hook ", "finish ")))
    order += [f"  plan: {k}" for k in hooks]
    order += ["commit (total)", "  commit: profile snapshot", "  commit: coalesce ops",
              "  commit: table rows", "  commit: msgpack pack",
              "  commit+read: redis call (hiredis pack, I/O, reply)"]
    if "plan (total)" in lay:
        inner = sum(v for k, v in lay.items() if k.startswith(("hook ", "finish ", "  plan:")))
        lay = {**lay, "  plan: the planner itself": round(lay["plan (total)"] - inner, 1)}
        order.insert(order.index("commit (total)"), "  plan: the planner itself")
    shown = 0.0
    for name in order:
        key = name.replace("  plan: ", "") if name.startswith("  plan: ") and \
            name[8:].startswith(("hook ", "finish ")) else name
        if key in lay:
            print(f"    {name:<55} {lay[key]:>7.1f}")
            if not name.startswith(" "):
                shown += lay[key]
    print(f"    {'other (apply_records, chunks, claim, emit, loop)':<55} {total - shown:>7.1f}")
    settled = "  of which: plan ahead, written profiles settled"
    if settled in lay:
        print(f"    {settled:<55} {lay[settled]:>7.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000, help="events per run")
    ap.add_argument("--visitors", type=int, default=4_000, help="synthetic visitors per run")
    ap.add_argument("--per-record", default="1,20")
    ap.add_argument("--source", default="synthetic,real")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N",
                    help="also run under cProfile and print its top N functions")
    ap.add_argument("--no-layers", action="store_true", help="only the clean runs")
    ap.add_argument("--learner", type=int, default=3, metavar="ROUNDS",
                    help="rounds of the learner's cost per event, propensity on vs off (0: none)")
    ap.add_argument("--learner-only", action="store_true",
                    help="only the learner's cost (no Valkey, no worker runs)")
    a = ap.parse_args()
    from streams.app import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)  # the worker process's collector settings
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    results = []
    learner: list[dict[str, Any]] = []
    for src in a.source.split(",") if a.learner else ():
        if src == "real" and not (REES46.exists() and TAOBAO.exists()):
            continue
        evs = (synthetic_events(a.events, a.visitors, 7, "ls") if src == "synthetic"
               else real_events(a.events, 10, 7, "lr"))
        say(f"learner, {src} events: propensity on vs off, {a.learner} rounds…")
        learner.append({"source": src, **learner_cost(evs, a.learner)})
        say(f"learner, {src}: {learner[-1]['us_per_event_propensity_on']} µs CPU/event with the "
            f"propensity learners, {learner[-1]['us_per_event_propensity_off']} without "
            f"(load {loadavg():.1f})")
    with BenchStack("stream-profile") as st:
        if not a.learner_only:
            st.start_redis(appendonly=False)
        for src in a.source.split(",") if not a.learner_only else ():
            if src == "real" and not (REES46.exists() and TAOBAO.exists()):
                say("the REES46/Taobao files are missing: skipping the real source")
                continue
            for i, pr in enumerate(int(x) for x in a.per_record.split(",")):
                results.append(scenario(st, src, pr, a.events, a.visitors, 100 + i,
                                        not a.no_layers, a.cprofile))
    print()
    print(f"stream_profile: {a.events} events per run through streams.worker.Worker.apply_records "
          f"(no Kafka), every hook on; load before {load_before:.2f}, after {loadavg():.2f}")
    print(f"{'source':>10} {'per-record':>10} {'µs CPU/ev':>9} {'target':>7} {'ev/s wall':>9} "
          f"{'of which gc':>11} {'Valkey µs/ev':>12}")
    for r in results:
        c = r["clean"]
        print(f"{r['source']:>10} {r['per_record']:>10} {c['us_per_event']:>9.0f} "
              f"{TARGETS.get(r['per_record'], 0):>7} {c['applied'] / c['wall_s']:>9.0f} "
              f"{sum(c['gc_us_per_event']):>11.1f} {c['valkey_us_per_event']:>12.1f}")
    if learner:
        print(f"\nlearner (OfferLearner.event in process, 1-event records, batches of 500): "
              f"µs CPU per event, medians of {a.learner} interleaved rounds")
        print(f"{'source':>10} {'events':>7} {'propensity on':>13} {'off':>6} {'difference':>10} {'load':>5}")
        for x in learner:
            print(f"{x['source']:>10} {x['events']:>7} {x['us_per_event_propensity_on']:>13.0f} "
                  f"{x['us_per_event_propensity_off']:>6.1f} {x['us_per_event_propensity']:>10.0f} "
                  f"{x['load']:>5.1f}")
    for r in results:
        print(f"\n{r['source']}, {r['per_record']}-event records:")
        print_layers(r)
        if "cprofile_top" in r:
            print(r["cprofile_top"])
    if note:
        print(f"note: {note}")
    json_line({"bench": "stream_profile", "loadavg_before": load_before, "loadavg_after": loadavg(),
               "targets_us": TARGETS, "learner": learner,
               "scenarios": [{k: v for k, v in r.items() if k != "cprofile_top"} for r in results]})
    return 0


if __name__ == "__main__":
    run_main(main)
