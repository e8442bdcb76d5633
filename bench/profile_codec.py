"""Profile blob, in process: bytes per part and the CPU of `snapshot()` / `restore()`, against
the blob schema of another revision measured in the same run.

    python bench/profile_codec.py [--visitors 2000] [--baseline main] [--rounds 5]

NO SERVERS: profiles are built from sessions sampled from the public logs exactly as
bench/memory.py samples them (REES46 and Taobao, read in place under /work/shared/data), each
visitor's events applied with `models.affinity.apply_event` in records of 1-5 events, each
record with its redelivery mark (`advance`), and the profile written and read back
(`snapshot()` then `restore()`) after every record, as the stream worker stores it. The
baseline is `models/affinity.py` of the revision `--baseline` (read with `git show`, loaded
beside the working tree's), fed the same events, so both hold the same profiles. The profiles
have no segments (the worker's segment hook adds their names; bench/memory.py measures that).

Timed, per profile, what the worker pays once per profile per batch: `restore()` of the stored
blob, then (untimed) the visitor's last record applied, then `snapshot()`. Rounds alternate
(baseline, current, baseline, current, ...), the garbage collector paused during each as the
worker pauses it during a batch (streams/worker.py); process CPU (`time.process_time`) over all the
profiles of a round, per profile; min and median of the rounds, the load average beside each.
Bytes: the mean size of each part of the blob (each element of its msgpack array) in both
schemas, and the blob with its 4-byte revision as Valkey stores it. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ROOT, busy_note, json_line, loadavg, run_main, say  # noqa: E402

PARTS = {
    3: ["version", "landmark", "event count", "last seen", "first seen", "user id",
        "decimal ids", "other strings (front-coded)", "affinity records", "recent", "cart",
        "purchased", "types", "traits", "segments", "channels", "aliases", "dedupe ring",
        "partition marks", "merges", "session", "purchase times"],
    4: ["version", "landmark", "event count", "last seen", "first seen", "user id",
        "decimal ids", "other strings (front-coded)", "affinity counts", "affinity records",
        "recent", "cart", "purchased", "types", "traits", "segments", "channels", "aliases",
        "dedupe ring", "partition marks", "merges", "session", "purchase times"],
}
ARRAY_HEADER = "msgpack array header"


def load_module(rev: str) -> Any:
    """`models/affinity.py` as it was at `rev`, as a module of its own."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:models/affinity.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="kairos-codec-")) / "affinity_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("affinity_baseline", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def visitors(n: int, seed: int) -> list[list[list[dict[str, Any]]]]:
    """n visitors, each a list of records (lists of events with their marks)."""
    from memory import FLUSH_MAX, load_sources, synth_visitor

    sources = load_sources()
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    out = []
    offset = 0
    for i in range(n):
        evs = synth_visitor(rng, sources, i, 20, now_ms)
        recs = []
        k = 0
        while k < len(evs):
            m = rng.randint(1, FLUSH_MAX)
            offset += 1
            recs.append([{**e, "_p": i % 4, "_o": offset, "_t": now_ms} for e in evs[k : k + m]])
            k += m
        out.append(recs)
    return out


def build(mod: Any, recs: list[list[dict[str, Any]]]) -> bytes:
    """The blob stored before the visitor's last record."""
    cfg = mod.AffinityConfig()
    p = mod.Profile()
    for rec in recs[:-1]:
        for e in rec:
            mod.apply_event(p, e, cfg)
        p.advance(rec[0]["_p"], rec[0]["_o"], rec[0]["_t"])
        p = mod.Profile.restore(p.snapshot())
    return bytes(p.snapshot())


def one_round(mod: Any, blobs: list[bytes], lasts: list[list[dict[str, Any]]]) -> tuple[float, float, int]:
    """µs of CPU per profile for restore, for snapshot; how many snapshots reused the table."""
    cfg = mod.AffinityConfig()
    restore, apply_event = mod.Profile.restore, mod.apply_event
    gc.collect()
    gc.disable()  # as the worker applies a batch (streams/worker.py)
    c0 = time.process_time()
    profiles = [restore(b) for b in blobs]
    c1 = time.process_time()
    tables = [getattr(p, "_table", None) for p in profiles]
    for p, rec in zip(profiles, lasts, strict=True):
        for e in rec:
            apply_event(p, e, cfg)
        p.advance(rec[0]["_p"], rec[0]["_o"], rec[0]["_t"])
    c2 = time.process_time()
    for p in profiles:
        p.snapshot()
    c3 = time.process_time()
    gc.enable()
    reused = sum(1 for p, t in zip(profiles, tables, strict=True) if t is not None and p._table is t)
    n = len(blobs)
    return (c1 - c0) * 1e6 / n, (c3 - c2) * 1e6 / n, reused


def part_sizes(blobs: list[bytes]) -> tuple[int, dict[str, float]]:
    import msgpack

    sums: dict[str, float] = {}
    version = 0
    for b in blobs:
        data = msgpack.unpackb(b, raw=False, strict_map_key=False)
        version = data[0]
        names = PARTS[version]
        inner = 0
        for name, part in zip(names, data, strict=True):
            size = len(msgpack.packb(part, use_bin_type=True, use_single_float=True))
            sums[name] = sums.get(name, 0) + size
            inner += size
        sums[ARRAY_HEADER] = sums.get(ARRAY_HEADER, 0) + len(b) - inner
    return version, {k: v / len(blobs) for k, v in sums.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=2000)
    ap.add_argument("--baseline", default="main", help="git revision of the baseline schema")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each (alternating)")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    note = busy_note()
    if note:
        say(note)
    import models.affinity as cur

    base = load_module(a.baseline)
    say(f"building {a.visitors} profiles from the replay data with {a.baseline}'s and the working "
        "tree's models/affinity.py…")
    vis = visitors(a.visitors, a.seed)
    lasts = [recs[-1] for recs in vis]
    blobs = {"baseline": [build(base, recs) for recs in vis], "current": [build(cur, recs) for recs in vis]}
    mods = {"baseline": base, "current": cur}
    # the same profiles: the current code reads the baseline's blobs (an older schema) alike
    same = sum(1 for b, c in zip(blobs["baseline"], blobs["current"], strict=True)
               if cur.Profile.restore(b).snapshot() == c)
    say(f"{same}/{a.visitors} baseline blobs read by the current code give the current blob")
    runs: dict[str, list[tuple[float, float, int, float]]] = {"baseline": [], "current": []}
    for r in range(a.rounds):
        for name in ("baseline", "current"):
            la = loadavg()
            rest, snap, reused = one_round(mods[name], blobs[name], lasts)
            runs[name].append((rest, snap, reused, la))
            say(f"round {r + 1} {name:8s}: restore {rest:5.1f} µs, snapshot {snap:5.1f} µs per "
                f"profile (table reused by {reused}), load {la:.1f}")
    out: dict[str, Any] = {"bench": "profile_codec", "visitors": a.visitors, "baseline": a.baseline,
                           "same_profiles": same, "loadavg_before": loadavg()}
    print()
    print(f"profile_codec: {a.visitors} profiles from REES46/Taobao sessions, in process, no servers; "
          f"baseline = models/affinity.py at {a.baseline}")
    sizes = {}
    for name in ("baseline", "current"):
        version, parts = part_sizes(blobs[name])
        sizes[name] = (version, parts)
        mean = sum(map(len, blobs[name])) / len(blobs[name])
        rest = [x[0] for x in runs[name]]
        snap = [x[1] for x in runs[name]]
        loads = [x[3] for x in runs[name]]
        print(f"  {name:8s} schema {version}: blob {mean:.1f} B (+4 revision bytes in Valkey); "
              f"restore min {min(rest):.1f} / median {statistics.median(rest):.1f} µs, snapshot min "
              f"{min(snap):.1f} / median {statistics.median(snap):.1f} µs per profile "
              f"(loads {min(loads):.1f}-{max(loads):.1f}); table reused by "
              f"{runs[name][-1][2]}/{a.visitors} snapshots")
        out[name] = {"schema": version, "mean_blob": round(mean, 1),
                     "restore_us_min": round(min(rest), 2), "restore_us_median": round(statistics.median(rest), 2),
                     "snapshot_us_min": round(min(snap), 2), "snapshot_us_median": round(statistics.median(snap), 2),
                     "parts": {k: round(v, 2) for k, v in parts.items()}}
    print("  mean bytes per part (baseline -> current):")
    bparts, cparts = sizes["baseline"][1], sizes["current"][1]
    for name in dict.fromkeys([*bparts, *cparts]):
        b, c = bparts.get(name), cparts.get(name)
        print(f"    {name:30s} {'-' if b is None else f'{b:6.1f}':>6} -> {'-' if c is None else f'{c:6.1f}':>6}")
    json_line(out)
    return 0


if __name__ == "__main__":
    run_main(main)
