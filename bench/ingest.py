"""Ingest throughput: events/s accepted by POST /v1/events, batches of 20, API on 2 processes.

    python bench/ingest.py [--duration 15] [--connections 32] [--threads 1] [--api-workers 2]

Starts Valkey, Apache Kafka and `kairos api --workers 2` on 127.0.0.1 (no stream worker: this
measures the HTTP edge, validation and the produce to Kafka with acks=1). The load generator is
`wrk` (Debian: `apt-get install -y wrk`) with a Lua script that cycles through pre-generated JSON
bodies of 20 events each; every event has its own event_id and the visitor ids vary.

Scenarios, each `--duration` seconds after a short warm-up:
  bare    a bare ASGI app (reads the body, answers 200) under the same uvicorn settings: the
          ceiling of uvicorn + wrk on this machine, the baseline of the ratios
  single  every request carries 20 events of ONE visitor (a beacon / app flush): 1 Kafka record
  mixed   every request carries 20 events of 20 different visitors: 20 Kafka records

Prints events/s, requests/s, p50/p99 request latency, RSS of the API and the broker, and the
ratio against the baseline; cross-checks wrk's count with the API's own
kairos_events_accepted_total. Target: >= 20,000 events/s. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (  # noqa: E402
    BenchStack,
    busy_note,
    gate_cost_us,
    json_line,
    loadavg,
    mib,
    run_main,
    say,
)

from engine.embedded import free_port  # noqa: E402

TARGET = 20_000
BATCH = 20

WRK_LUA = r"""
local reqs = {}
local idx = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    reqs[n] = wrk.format("POST", args[2], {["Content-Type"] = "application/json",
                                           ["Authorization"] = os.getenv("BENCH_AUTH")}, line)
  end
  idx = ((tonumber(tid) or 1) * 7919) % n
end
function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

CATEGORIES = ["apparel/shoes/running", "apparel/shoes/trail", "apparel/jackets", "electronics/audio",
              "electronics/phones", "home/kitchen/coffee", "home/garden", "sports/cycling",
              "beauty/skincare", "books/fiction"]
BRANDS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"]
TYPES = ["item_view"] * 14 + ["page_view"] * 3 + ["add_to_cart"] * 2 + ["purchase"]


def _event(rng: random.Random, visitor: str, now_ms: int) -> dict[str, Any]:
    etype = rng.choice(TYPES)
    item = {"id": f"sku-{rng.randrange(50_000)}", "categories": [rng.choice(CATEGORIES)],
            "brand": rng.choice(BRANDS), "price": round(rng.uniform(3, 300), 2)}
    ev: dict[str, Any] = {"event_id": uuid.UUID(int=rng.getrandbits(128)).hex[:24], "type": etype,
                          "visitor_id": visitor, "ts": now_ms - rng.randrange(5000),
                          "channel": "web", "context": {"page": f"/p/{item['id']}"}}
    if etype == "page_view":
        return ev
    if etype in ("add_to_cart", "purchase"):
        ev["items"] = [{**item, "quantity": 1}]
    else:
        ev["item"] = item
    return ev


def make_bodies(path: Path, n: int, kind: str, seed: int) -> int:
    """n request bodies (one JSON per line) of 20 events; returns the mean body size."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    total = 0
    with path.open("w") as fh:
        for i in range(n):
            if kind == "single":
                vid = f"bv-{seed}-{i}"
                events = [_event(rng, vid, now_ms) for _ in range(BATCH)]
            else:
                events = [_event(rng, f"bv-{rng.randrange(200_000)}", now_ms) for _ in range(BATCH)]
            line = json.dumps(events, separators=(",", ":"))
            total += len(line)
            fh.write(line + "\n")
    return total // n


def run_wrk(url: str, lua: Path, bodies: Path, path: str, duration: float, threads: int,
            connections: int) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(duration)))}s", "--timeout", "10s",
           "-s", str(lua), url, "--", str(bodies), path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    res = json.loads(m.group(1))
    secs = res["duration_us"] / 1e6
    ok = res["requests"] - res["status_errors"]
    res["rps"] = round(ok / secs, 1)
    res["events_per_s"] = round(ok * BATCH / secs, 1)
    res["p50_ms"] = round(res["p50_us"] / 1000, 2)
    res["p99_ms"] = round(res["p99_us"] / 1000, 2)
    res["errors"] = res["status_errors"] + res["connect_errors"] + res["read_errors"] + \
        res["write_errors"] + res["timeouts"]
    return res


def accepted_total(base: str) -> float:
    import httpx

    text = httpx.get(base + "/metrics", timeout=10).text
    m = re.search(r"^kairos_events_accepted_total ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per scenario (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (the machine has 2 cores)")
    ap.add_argument("--api-workers", type=int, default=2)
    ap.add_argument("--bodies", type=int, default=2000, help="distinct pre-generated bodies per scenario")
    ap.add_argument("--scenarios", default="bare,single,mixed")
    a = ap.parse_args()

    if not shutil.which("wrk"):
        print("wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk",
              file=sys.stderr)
        return 2
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    results: dict[str, Any] = {}
    gate: dict[str, float] | None = None
    with BenchStack("ingest") as st:
        lua = st.dir / "post.lua"
        lua.write_text(WRK_LUA)
        if "bare" in scenarios:
            port = free_port()
            st.start_bare(a.api_workers, port)
            bodies = st.dir / "bare.jsonl"
            size = make_bodies(bodies, a.bodies, "mixed", 1)
            url = f"http://127.0.0.1:{port}"
            run_wrk(url, lua, bodies, "/v1/events", a.warmup, a.threads, a.connections)
            r = run_wrk(url, lua, bodies, "/v1/events", a.duration, a.threads, a.connections)
            r["body_bytes"] = size
            r["rss_api_mib"] = mib(st.rss("bare"))
            results["bare"] = r
            st.stop_proc("bare")
            say(f"bare: {r['rps']:.0f} req/s ({r['events_per_s']:.0f} 'events'/s), "
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        todo = [s for s in scenarios if s in ("single", "mixed")]
        if todo:
            st.start_redis()
            st.start_kafka()
            st.configure(api_workers=a.api_workers)
            os.environ["BENCH_AUTH"] = st.headers["Authorization"]  # every request sends the key
            st.ensure_topics()
            st.start_api(a.api_workers)
            url = st.base_url
            for i, kind in enumerate(todo):
                bodies = st.dir / f"{kind}.jsonl"
                size = make_bodies(bodies, a.bodies, kind, 100 + i)
                run_wrk(url, lua, bodies, "/v1/events", a.warmup, a.threads, a.connections)
                before = accepted_total(url)
                cpu0 = {n: st.cpu(n) for n in ("api", "kafka")}
                r = run_wrk(url, lua, bodies, "/v1/events", a.duration, a.threads, a.connections)
                cpu1 = {n: st.cpu(n) for n in ("api", "kafka")}
                r["accepted_by_api"] = int(accepted_total(url) - before)
                r["body_bytes"] = size
                r["rss_api_mib"] = mib(st.rss("api"))
                r["rss_kafka_mib"] = mib(st.rss("kafka"))
                secs = r["duration_us"] / 1e6
                r["cpu_cores_api"] = round((cpu1["api"] - cpu0["api"]) / secs, 2)
                r["cpu_cores_kafka"] = round((cpu1["kafka"] - cpu0["kafka"]) / secs, 2)
                ok_events = (r["requests"] - r["status_errors"]) * BATCH
                r["api_cpu_us_per_event"] = round((cpu1["api"] - cpu0["api"]) * 1e6 / max(1, ok_events), 1)
                r["api_cpu_us_per_request"] = round(r["api_cpu_us_per_event"] * BATCH, 1)
                results[kind] = r
                st.check_alive("api")
                if gate is None and st.settings.database_url:
                    gate = gate_cost_us(st.settings.database_url, st.key)
                say(f"{kind}: {r['events_per_s']:.0f} events/s ({r['rps']:.0f} req/s), p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, errors {r['errors']}, API counted {r['accepted_by_api']} events")

    print()
    print(f"ingest, batches of {BATCH} events, API on {a.api_workers} processes, wrk -t{a.threads} "
          f"-c{a.connections} {a.duration:.0f}s per scenario")
    print(f"{'scenario':<8} {'events/s':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'API RSS':>9} {'vs bare':>8}")
    bare = results.get("bare", {}).get("rps")
    for kind, r in results.items():
        ratio = f"{r['rps'] / bare:.2f}" if bare else "-"
        r["ratio_vs_bare"] = round(r["rps"] / bare, 3) if bare else None
        print(f"{kind:<8} {r['events_per_s']:>10.0f} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7} {r['rss_api_mib']:>7.1f}Mi {ratio:>8}")
    for kind in ("single", "mixed"):
        if kind in results:
            r = results[kind]
            met = "met" if r["events_per_s"] >= TARGET and r["errors"] == 0 else "MISSED"
            print(f"target >= {TARGET} events/s, {kind}: {met} ({r['events_per_s']:.0f}); "
                  f"CPU cores used: API {r['cpu_cores_api']} ({r['api_cpu_us_per_event']} µs per event), "
                  f"Kafka {r['cpu_cores_kafka']}; "
                  f"RSS Kafka {r['rss_kafka_mib']} MiB")
    if gate is not None:
        for kind in ("single", "mixed"):
            if kind in results:
                per_req = results[kind]["api_cpu_us_per_request"]
                share = gate["gate_us_per_request"] / per_req if per_req else 0.0
                results[kind]["key_check_share"] = round(share, 4)
                print(f"key check ({kind}): {gate['gate_us_per_request']} µs of {per_req} µs API CPU "
                      f"per request = {share:.1%} of throughput (target < 5 %)")
    if note:
        print(f"note: {note}")
    keep = ("events_per_s", "rps", "p50_ms", "p99_ms", "errors", "accepted_by_api", "body_bytes",
            "rss_api_mib", "rss_kafka_mib", "cpu_cores_api", "cpu_cores_kafka", "api_cpu_us_per_event",
            "ratio_vs_bare", "api_cpu_us_per_request", "key_check_share")
    json_line({"bench": "ingest", "target_events_per_s": TARGET, "api_workers": a.api_workers,
               "batch": BATCH, "connections": a.connections, "duration_s": a.duration,
               "loadavg_before": load_before, "key_check": gate,
               **{k: {f: v.get(f) for f in keep if f in v} for k, v in results.items()}})
    return 0


if __name__ == "__main__":
    run_main(main)
