"""Memory: Redis bytes per visitor profile after replaying 100k visitors with ~20 events each.

    python bench/memory.py [--visitors 100000] [--events-per 20] [--procs 2] [--no-hooks]
                           [--baseline REV]

BYPASSES HTTP AND KAFKA: the events go straight into `streams.applier.Applier` (the code the
stream worker runs, with the worker's hooks from `streams.hooks.setup_hooks` unless
`--no-hooks`) against a real Valkey started for the run (AOF off: it does not change
used_memory). Each event is first encoded and decoded in the topic's wire form
(`engine.logic.events.encode_events` / `decode_events`) and carries the worker's redelivery mark
(partition, offset, record time), so the stored profiles are what the worker would store.

Data: sessions sampled from the public logs (read in place, never copied):
/work/shared/data/rees46/2019-Oct_head.csv (items with category paths, brands, prices) and
/work/shared/data/taobao/user_behavior.csv (items with category ids), remapped onto synthetic
anonymous visitor ids (their user_id and session context dropped). Each synthetic visitor takes
10-30 events (mean 20) from one source user of one file (half the visitors from each file),
continuing with further source users of the same file when one runs out; times are shifted so
every visitor's history ends within the last day, keeping the gaps between its events. The
events of many visitors are interleaved and applied in batches of up to 1,000, in records
(flushes) of up to 5 events, so a profile is read and rewritten several times as on the stream.

The sampled profiles are also written by another revision's `models/affinity.py` (`--baseline`,
default the last one writing blob schema 3) and stored the same way in database 1 of the same
Valkey, so the run measures the previous schema's STRLEN and MEMORY USAGE on the same profiles.

Figures: used_memory delta / visitors (everything the worker wrote, profiles and the other
keys, including TTL bookkeeping), mean STRLEN and MEMORY USAGE of the profile blobs, keys by
prefix, MEMORY USAGE per visitor of each key family (the profile, the activity timeline, the
CF vector; the shared tables: co-occurrence, catalog, sessions, trending, repurchase, ...),
apply rate. Target (issue 13): <= 400 bytes per visitor profile key (MEMORY USAGE of `kp:`).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, busy_note, json_line, loadavg, mib, run_main, say  # noqa: E402

TARGET = 400  # bytes of the profile key (MEMORY USAGE), issue 13
BASELINE = "bf7e4c6"  # the last revision writing profile blob schema 3
REES46 = Path("/work/shared/data/rees46/2019-Oct_head.csv")
TAOBAO = Path("/work/shared/data/taobao/user_behavior.csv")
PARTITIONS = 4
BATCH_MAX = 1000
FLUSH_MAX = 5
CHUNK_VISITORS = 250  # visitors interleaved at a time


def load_sources() -> list[list[list[dict[str, Any]]]]:
    """Per file: the source users' event lists (time order)."""
    from streams.sources import load_events

    out = []
    for path in (REES46, TAOBAO):
        users: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ev in load_events(path):
            users[ev["visitor_id"]].append(ev)
        out.append(list(users.values()))
    return out


def synth_visitor(rng: random.Random, sources: list[list[list[dict[str, Any]]]], i: int,
                  mean: int, now_ms: int) -> list[dict[str, Any]]:
    """One synthetic visitor's events, sampled from one file's users."""
    users = sources[i % 2]
    want = rng.randint(max(1, mean // 2), mean + mean // 2)
    picked: list[dict[str, Any]] = []
    while len(picked) < want:
        u = users[rng.randrange(len(users))]
        need = want - len(picked)
        if len(u) > need:
            start = rng.randrange(len(u) - need + 1)
            u = u[start : start + need]
        picked.extend(u)
    end = now_ms - rng.randrange(86_400_000)
    last = picked[-1]["ts"]
    vid = f"mv{i:07d}"
    out = []
    prev_ts = None
    for j, src in enumerate(picked):
        ts = end - max(0, last - src["ts"])
        if prev_ts is not None and ts < prev_ts:  # several source users: keep time moving on
            ts = prev_ts + rng.randrange(1000, 60_000)
        prev_ts = ts
        ev: dict[str, Any] = {"event_id": f"m{i:x}.{j:x}.{rng.getrandbits(32):08x}", "type": src["type"],
                              "visitor_id": vid, "ts": min(ts, now_ms), "channel": "web"}
        for k in ("item", "items"):
            if k in src:
                ev[k] = src[k]
        out.append(ev)
    return out


def apply_range(redis_url: str, settings_json: str, lo: int, hi: int, mean: int, hooks: bool,
                seed: int, proc: int = 0) -> dict[str, Any]:
    """Apply visitors lo..hi-1 (run in a child process when --procs > 1). Process `proc` owns
    partitions proc*PARTITIONS .. +PARTITIONS-1, as workers own disjoint partitions (two
    appliers on one partition fence each other out: "held by a newer owner")."""
    import msgspec

    from engine.logic.events import Event, check_event, decode_events, encode_events
    from engine.settings import Settings
    from engine.store.profiles import ProfileStore, new_client
    from streams.applier import Applier

    settings = Settings.from_json(settings_json)
    sources = load_sources()
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    offsets = [0] * (PARTITIONS * (proc + 1))
    stats: Counter[str] = Counter()

    async def run() -> None:
        client = new_client(redis_url, timeout=30)
        hook_getter = None
        if hooks:
            from streams.hooks import setup_hooks

            try:
                hook_getter = await setup_hooks(settings, client)
            except Exception as exc:
                say(f"could not set up the worker's hooks ({exc}); running without them")
        emitted = 0

        async def emit(items: list[Any]) -> None:
            nonlocal emitted
            emitted += len(items)

        ap = Applier(ProfileStore(client, settings.profile_ttl_ms), settings.affinity,
                     **({"hooks": hook_getter} if hook_getter else {}), emit=emit)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for c in range(lo, hi, CHUNK_VISITORS):
            records: list[list[dict[str, Any]]] = []
            for i in range(c, min(hi, c + CHUNK_VISITORS)):
                raw = synth_visitor(rng, sources, i, mean, now_ms)
                evs = []
                for r in raw:
                    ev = msgspec.convert(r, Event)
                    err = check_event(ev, now_ms)
                    if err is None:
                        evs.append(ev)
                    else:
                        stats["rejected"] += 1
                part = proc * PARTITIONS + zlib.crc32(raw[0]["visitor_id"].encode()) % PARTITIONS
                k = 0
                while k < len(evs):
                    n = rng.randint(1, FLUSH_MAX)
                    rec = decode_events(encode_events(evs[k : k + n]))
                    mark = {"_p": part, "_o": offsets[part], "_t": now_ms}
                    offsets[part] += 1
                    for e in rec:
                        e.update(mark)
                    records.append(rec)
                    k += n
            # interleave the chunk's records, keeping each visitor's own order
            queues = defaultdict(list)
            for rec in records:
                queues[rec[0]["visitor_id"]].append(rec)
            order: list[list[dict[str, Any]]] = []
            live = [list(reversed(q)) for q in queues.values()]
            while live:
                j = rng.randrange(len(live))
                order.append(live[j].pop())
                if not live[j]:
                    live[j] = live[-1]
                    live.pop()
            batch: list[dict[str, Any]] = []
            for rec in order:
                if len(batch) + len(rec) > BATCH_MAX:
                    res = await ap.apply(batch)
                    stats["applied"] += res.applied
                    stats["duplicates"] += res.duplicates
                    batch = []
                batch.extend(rec)
            if batch:
                res = await ap.apply(batch)
                stats["applied"] += res.applied
                stats["duplicates"] += res.duplicates
        stats["seconds"] = time.perf_counter() - t0  # type: ignore[assignment]
        stats["cpu_seconds"] = time.process_time() - cpu0  # type: ignore[assignment]
        stats["emits"] = emitted
        stats["hooks"] = int(hook_getter is not None)
        await client.aclose()

    asyncio.run(run())
    return dict(stats)


def _worker(args: tuple[Any, ...]) -> dict[str, Any]:
    return apply_range(*args)


#: What each key family holds (engine/store/keys.py), and whether it is one per visitor.
FAMILIES = {
    "kp": ("profile blob", True), "kr": ("activity timeline (30 min)", True),
    "kcf:u": ("online-CF vector", True), "ka": ("alias", True), "kt": ("tombstone", True),
    "kn": ("co-view / co-buy neighbours", False), "kci": ("catalog item", False),
    "ksi": ("item -> sessions index", False), "kss": ("session -> items", False),
    "ktc": ("trending in category", False), "ktr": ("trending", False),
    "kri": ("repurchase per item", False), "krl": ("repurchase per level", False),
    "knp": ("popularity", False), "kcf": ("online-CF item/model state", False),
    "km": ("partition marks", False), "ksg": ("segment sizes", False), "kx": ("live counters", False),
}


def _family(key: bytes) -> str:
    from engine.store import keys

    fam = keys.family(key)
    return "kcf:u" if fam == "kcf" and key.startswith(b"kcf:u:") else fam


def family_costs(r: Any, by_family: dict[str, list[bytes]], visitors: int,
                 sample: int = 2000) -> list[dict[str, Any]]:
    """MEMORY USAGE per key family (a sample of each, scaled to its key count), per visitor."""
    rng = random.Random(2)
    rows = []
    for fam, ks in by_family.items():
        picks = rng.sample(ks, min(sample, len(ks)))
        pipe = r.pipeline(transaction=False)
        for k in picks:
            pipe.memory_usage(k, samples=0)
        usage = [u or 0 for u in pipe.execute()]
        mean = sum(usage) / max(1, len(usage))
        what, per_visitor = FAMILIES.get(fam, ("other", False))
        rows.append({"family": fam, "what": what, "per_visitor_key": per_visitor, "keys": len(ks),
                     "mean_bytes": round(mean, 1),
                     "bytes_per_visitor": round(mean * len(ks) / max(1, visitors), 1)})
    rows.sort(key=lambda row: -row["bytes_per_visitor"])
    return rows


def _schema1_len(blob: bytes | None) -> int:
    """The size the same profile had in blob schema 1 (every string in place, 5-byte dedupe
    fingerprints), as a baseline measured on the same data: 4 revision bytes + the msgpack."""
    import msgpack

    from models.affinity import FINGERPRINT_BYTES, Profile

    if not blob:
        return 0
    p = Profile.restore(blob[4:])
    ring = len(p.seen) // FINGERPRINT_BYTES * b"12345"
    return 4 + len(msgpack.packb(
        [1, p.landmark, p.event_count, p.first_seen, p.last_seen, p.user_id, p.aff, p.recent,
         p.cart, p.purchased, p.types, p.traits, p.segments, p.channels, p.aliases, ring, p.marks,
         p.merged, p.session.pack() if p.session.seq else None, p.bought],
        use_bin_type=True, use_single_float=True))


def baseline_blobs(mod: Any, blobs: list[bytes | None]) -> list[bytes | None]:
    """The same profiles (4 revision bytes + blob) written by another revision's
    `models/affinity.py` (`mod`, e.g. blob schema 3): each profile read with the working tree's
    code and its fields handed to the other's `Profile`."""
    import dataclasses

    from models.affinity import Profile

    out: list[bytes | None] = []
    for blob in blobs:
        if not blob:
            out.append(None)
            continue
        p = Profile.restore(blob[4:])
        q = mod.Profile(**{f.name: getattr(p, f.name) for f in dataclasses.fields(mod.Profile)})
        out.append(blob[:4] + q.snapshot())
    return out


def baseline_usage(r: Any, picks: list[bytes], old: list[bytes | None]) -> float:
    """Mean MEMORY USAGE of the baseline blobs stored as the profiles are (the same key names
    and TTLs), in database 1 of the same Valkey, emptied afterwards."""
    import redis

    pttl = r.pipeline(transaction=False)
    for k in picks:
        pttl.pttl(k)
    ttls = pttl.execute()
    r1 = redis.Redis(connection_pool=redis.ConnectionPool(**{**r.connection_pool.connection_kwargs, "db": 1}))
    try:
        r1.flushdb()
        pipe = r1.pipeline(transaction=False)
        for k, blob, ttl in zip(picks, old, ttls, strict=True):
            if blob:
                pipe.set(k, blob, px=ttl if ttl and ttl > 0 else None)
        pipe.execute()
        pipe = r1.pipeline(transaction=False)
        kept = [k for k, blob in zip(picks, old, strict=True) if blob]
        for k in kept:
            pipe.memory_usage(k, samples=0)
        usage = [u or 0 for u in pipe.execute()]
        r1.flushdb()
    finally:
        r1.close()
    return sum(usage) / max(1, len(usage))


def key_breakdown(r: Any, visitors: int, baseline: Any, sample: int = 3000) -> dict[str, Any]:
    """Keys by prefix, the profile blobs' STRLEN and MEMORY USAGE, and what each key family
    costs per visitor."""
    from engine.store import keys

    prefixes: Counter[str] = Counter()
    profile_keys: list[bytes] = []
    by_family: dict[str, list[bytes]] = defaultdict(list)
    for k in r.scan_iter(count=10_000):
        prefixes[keys.family(k)] += 1
        by_family[_family(k)].append(k)
        if keys.is_profile(k):
            profile_keys.append(k)
    strlen_total = 0
    for i in range(0, len(profile_keys), 5000):
        pipe = r.pipeline(transaction=False)
        for k in profile_keys[i : i + 5000]:
            pipe.strlen(k)
        strlen_total += sum(pipe.execute())
    rng = random.Random(1)
    picks = rng.sample(profile_keys, min(sample, len(profile_keys)))
    pipe = r.pipeline(transaction=False)
    for k in picks:
        pipe.memory_usage(k, samples=0)
    usage = [u or 0 for u in pipe.execute()]
    blobs = r.mget(picks) if picks else []
    v1 = [_schema1_len(b) for b in blobs]
    old = baseline_blobs(baseline, blobs)
    v_old = [len(b) for b in old if b]
    return {
        "schema1_mean_strlen": round(sum(v1) / max(1, len(v1)), 1),
        "baseline_mean_strlen": round(sum(v_old) / max(1, len(v_old)), 1),
        "baseline_mean_memory_usage": round(baseline_usage(r, picks, old), 1),
        "sample_mean_strlen": round(sum(len(b) for b in blobs if b) / max(1, len(v_old)), 1),
        "keys_by_prefix": dict(prefixes.most_common()),
        "profiles": len(profile_keys),
        "mean_strlen": round(strlen_total / max(1, len(profile_keys)), 1),
        "mean_memory_usage": round(sum(usage) / max(1, len(usage)), 1),
        "families": family_costs(r, by_family, visitors),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=100_000)
    ap.add_argument("--events-per", type=int, default=20, help="mean events per visitor")
    ap.add_argument("--procs", type=int, default=2, help="applier processes (disjoint visitors)")
    ap.add_argument("--no-hooks", action="store_true", help="apply without the worker's hooks")
    ap.add_argument("--baseline", default=BASELINE,
                    help="git revision whose blob schema the same profiles are also measured in")
    a = ap.parse_args()
    from profile_codec import load_module

    baseline = load_module(a.baseline)
    for p in (REES46, TAOBAO):
        if not p.exists():
            print(f"missing data file {p}", file=sys.stderr)
            return 2
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    with BenchStack("memory") as st:
        st.start_redis(appendonly=False)
        settings = st.configure()
        r = st.redis_client()
        r.config_set("maxmemory-policy", "noeviction")
        base = int(r.info("memory")["used_memory"])
        say(f"Valkey used_memory at start: {base} B; applying {a.visitors} visitors × ~{a.events_per} events "
            f"through streams.applier.Applier in {a.procs} process(es) (no HTTP, no Kafka)…")
        t0 = time.perf_counter()
        step = -(-a.visitors // a.procs)
        jobs = [(st.redis.url, settings.to_json(), lo, min(a.visitors, lo + step), a.events_per,
                 not a.no_hooks, 1000 + lo, n) for n, lo in enumerate(range(0, a.visitors, step))]
        if a.procs > 1:
            with mp.get_context("spawn").Pool(a.procs) as pool:
                parts = pool.map(_worker, jobs)
        else:
            parts = [_worker(jobs[0])]
        wall = time.perf_counter() - t0
        stats: Counter[str] = Counter()
        for p in parts:
            stats.update({k: v for k, v in p.items() if k != "hooks"})
        mem = r.info("memory")
        used = int(mem["used_memory"])
        breakdown = key_breakdown(r, a.visitors, baseline)
        rss_redis = st.rss("redis")
        r.close()
    hooks_on = all(p.get("hooks") for p in parts)
    delta = used - base
    per_visitor = delta / max(1, breakdown["profiles"])
    print()
    print(f"memory: {a.visitors} visitors, {stats['applied']} events applied (mean "
          f"{stats['applied'] / max(1, a.visitors):.1f}/visitor, {stats['duplicates']} duplicates), "
          f"via streams.applier.Applier directly (no HTTP/Kafka), hooks {'on' if hooks_on else 'off'}")
    print(f"  apply rate {stats['applied'] / wall:.0f} events/s over {wall:.0f}s in {a.procs} process(es) "
          f"({stats['cpu_seconds'] * 1e6 / max(1, stats['applied']):.0f} µs CPU per event in the appliers)")
    print(f"  used_memory {base} -> {used} B: {delta} B for {breakdown['profiles']} profiles = "
          f"{per_visitor:.0f} B per visitor")
    print(f"  profile blob: mean STRLEN {breakdown['mean_strlen']} B, mean MEMORY USAGE "
          f"{breakdown['mean_memory_usage']} B (sampled); the same sampled profiles written by "
          f"{a.baseline}'s models/affinity.py: STRLEN {breakdown['baseline_mean_strlen']} B (this "
          f"run's: {breakdown['sample_mean_strlen']} B, ratio "
          f"{breakdown['sample_mean_strlen'] / max(1, breakdown['baseline_mean_strlen']):.2f}), MEMORY USAGE "
          f"{breakdown['baseline_mean_memory_usage']} B stored alike (same key names and TTLs, database 1); "
          f"in schema 1: {breakdown['schema1_mean_strlen']} B (ratio "
          f"{breakdown['mean_strlen'] / max(1, breakdown['schema1_mean_strlen']):.2f})")
    print(f"  keys by prefix: {breakdown['keys_by_prefix']}")
    fams = breakdown["families"]
    own = sum(f["bytes_per_visitor"] for f in fams if f["per_visitor_key"])
    shared = sum(f["bytes_per_visitor"] for f in fams if not f["per_visitor_key"])
    print(f"  MEMORY USAGE per visitor by key family (sampled, scaled to the key counts): "
          f"{own:.0f} B in per-visitor keys, {shared:.0f} B in shared tables")
    for f in fams:
        print(f"    {f['family']:6s} {f['what']:30s} {'visitor' if f['per_visitor_key'] else 'shared':7s} "
              f"{f['keys']:>8} keys × {f['mean_bytes']:>7.1f} B = {f['bytes_per_visitor']:>7.1f} B/visitor")
    print(f"  Valkey RSS {mib(rss_redis)} MiB, used_memory_dataset {mem.get('used_memory_dataset')} B")
    profile_key = breakdown["mean_memory_usage"]
    met = profile_key <= TARGET
    print(f"target <= {TARGET} B per visitor profile key (MEMORY USAGE): "
          f"{'met' if met else 'MISSED'} ({profile_key:.0f} B; blob {breakdown['mean_strlen']:.0f} B)")
    if note:
        print(f"note: {note}")
    json_line({"bench": "memory", "bypass": "streams.applier.Applier against real Valkey; no HTTP, no Kafka",
               "target_bytes": TARGET, "met": met, "visitors": a.visitors, "profiles": breakdown["profiles"],
               "events_applied": stats["applied"], "duplicates": stats["duplicates"], "hooks": hooks_on,
               "used_memory_before": base, "used_memory_after": used, "bytes_per_visitor": round(per_visitor, 1),
               "mean_strlen": breakdown["mean_strlen"], "mean_memory_usage": breakdown["mean_memory_usage"],
               "schema1_mean_strlen": breakdown["schema1_mean_strlen"],
               "baseline": a.baseline, "baseline_mean_strlen": breakdown["baseline_mean_strlen"],
               "baseline_mean_memory_usage": breakdown["baseline_mean_memory_usage"],
               "sample_mean_strlen": breakdown["sample_mean_strlen"],
               "keys_by_prefix": breakdown["keys_by_prefix"], "families": breakdown["families"],
               "per_visitor_keys_bytes": round(own, 1), "shared_tables_bytes_per_visitor": round(shared, 1),
               "rss_redis_mib": mib(rss_redis),
               "apply_events_per_s": round(stats["applied"] / wall, 1), "seconds": round(wall, 1),
               "cpu_us_per_event": round(stats["cpu_seconds"] * 1e6 / max(1, stats["applied"]), 1),
               "loadavg_before": load_before})
    return 0


if __name__ == "__main__":
    run_main(main)
