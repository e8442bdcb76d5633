"""What open dashboards cost the hot paths: ingest throughput and decide p99, with and without
50 dashboards listening to GET /v1/stats/stream (Server-Sent Events, a snapshot a second).

    python bench/dashboard.py [--dashboards 50] [--rate 2000] [--decide-rate 50] [--seconds 20]

Starts Valkey, Apache Kafka, the API (1 process) and a stream worker. Offers ingest at a fixed
`--rate` events/s (batches of 20 on a fixed schedule, open loop) and decisions at a fixed
`--decide-rate` req/s, in phases of `--seconds` each: without dashboards, with
`--dashboards` SSE clients (in a separate process, so they do not slow the load generator),
alternating `--rounds` times, so drift in the machine cancels out in the means. Latencies
are measured from each request's scheduled send time (no coordinated omission). First, with
no load, the API's CPU with and without the dashboards: the feed's own cost.

Targets (issue 6): added cost < 5 % on ingest throughput and on decide p99. The last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _stack import BenchStack, busy_note, json_line, quantile, say  # noqa: E402

JSON_CT = {"content-type": "application/json"}
BATCH = 20
VISITORS = 5000
TYPES = ["item_view"] * 6 + ["page_view"] * 3 + ["add_to_cart"]
CATEGORIES = ["shoes", "bags", "jackets", "watches", "books", "toys", "garden", "kitchen"]


def make_batch(rng: random.Random, n: int, seq: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        cat = rng.choice(CATEGORIES)
        out.append(
            {
                "event_id": f"b{seq}-{i}",
                "type": rng.choice(TYPES),
                "visitor_id": f"bv{rng.randrange(VISITORS)}",
                "ts": now,
                "channel": rng.choice(("web", "web", "app")),
                "item": {
                    "id": f"{cat}-{rng.randrange(200)}",
                    "categories": [cat],
                    "brand": f"brand{rng.randrange(30)}",
                },
            }
        )
    return out


async def paced(rate: float, seconds: float, fire: Any) -> None:
    """Call `fire(scheduled_time)` as a task `rate` times a second, on a fixed schedule."""
    start = time.perf_counter()
    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(at)))
    await asyncio.gather(*tasks)


async def phase(
    base: str, rate: float, decide_rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    ingest_lat: list[float] = []
    decide_lat: list[float] = []
    accepted = failed = decide_failed = 0
    statuses: Counter[str] = Counter()
    bodies = [
        orjson.dumps(make_batch(rng, BATCH, seed * 10_000_000 + i))
        for i in range(int(rate / BATCH * seconds) + 1)
    ]  # built before the clock starts
    seq = [0]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits, headers=HEADERS) as http:

        async def ingest(at: float) -> None:
            nonlocal accepted, failed
            body = bodies[seq[0]]
            seq[0] += 1
            try:
                r = await http.post("/v1/events", content=body, headers=JSON_CT)
                ok = r.status_code in (200, 202)
            except httpx.HTTPError:
                ok = False
            ingest_lat.append(time.perf_counter() - at)
            if ok:
                accepted += BATCH
            else:
                failed += 1

        async def decide(at: float) -> None:
            nonlocal decide_failed
            body = orjson.dumps(
                {
                    "visitor_id": f"bv{rng.randrange(VISITORS)}",
                    "context": {"channel": "web", "page_type": "home", "zones": ["home_hero"]},
                }
            )
            try:
                r = await http.post("/v1/decide", content=body, headers=JSON_CT)
                ok = r.status_code == 200
                statuses[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                ok = False
                statuses[type(exc).__name__] += 1
            decide_lat.append(time.perf_counter() - at)
            if not ok:
                decide_failed += 1

        t0 = time.perf_counter()
        await asyncio.gather(
            paced(rate / BATCH, seconds, ingest), paced(decide_rate, seconds, decide)
        )
        took = time.perf_counter() - t0
    return {
        "seconds": round(took, 2),
        "ingest_events_per_s": round(accepted / took, 1),
        "ingest_failed_requests": failed,
        "ingest_p50_ms": round(quantile(ingest_lat, 0.5) * 1000, 2),
        "ingest_p99_ms": round(quantile(ingest_lat, 0.99) * 1000, 2),
        "decide_p50_ms": round(quantile(decide_lat, 0.5) * 1000, 2),
        "decide_p99_ms": round(quantile(decide_lat, 0.99) * 1000, 2),
        "decide_failed": decide_failed,
        "decide_statuses": dict(statuses),
    }


# -- the dashboards: a separate process of SSE clients ------------------------------------------
async def listen(base: str, n: int, seconds: float) -> dict[str, Any]:
    import httpx

    stats = {"messages": 0, "bytes": 0, "errors": 0}

    async def one(http: httpx.AsyncClient) -> None:
        try:
            async with http.stream("GET", "/v1/stats/stream") as r:
                async for chunk in r.aiter_bytes():
                    stats["bytes"] += len(chunk)
                    stats["messages"] += chunk.count(b"event: snapshot")
        except httpx.HTTPError:
            stats["errors"] += 1

    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(
        base_url=base, timeout=httpx.Timeout(10, read=30), limits=limits, headers=HEADERS
    ) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(n)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"clients": n, **stats}


def pct_change(new: float, old: float) -> float:
    return round(100.0 * (new - old) / old, 2) if old else 0.0


HEADERS: dict[str, str] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboards", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2000.0, help="ingest, events/s")
    ap.add_argument("--decide-rate", type=float, default=50.0, help="decisions/s")
    ap.add_argument("--seconds", type=float, default=15.0, help="per loaded phase")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of phases without / with")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--listen", metavar="URL", help=argparse.SUPPRESS)  # the SSE client process
    args = ap.parse_args()

    if args.listen:
        print(
            json.dumps(asyncio.run(listen(args.listen, args.dashboards, args.seconds))), flush=True
        )
        return

    note = busy_note()
    if note:
        say(note)
    with BenchStack("dashboard") as st:
        st.start_redis()
        st.start_kafka()
        st.configure()
        HEADERS.update(st.headers)  # every request of the load sends the run's key
        st.ensure_topics()
        api = st.start_api(workers=1)
        st.start_worker()
        base = st.base_url
        say("warming up (worker joins, first profiles)…")
        asyncio.run(phase(base, args.rate, args.decide_rate, 8, seed=0))

        def dashboards(seconds: float) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--listen",
                    base,
                    "--dashboards",
                    str(args.dashboards),
                    "--seconds",
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            time.sleep(3)  # all connected, first full snapshots sent
            return proc

        def finish(proc: subprocess.Popen[bytes], seconds: float) -> dict[str, Any]:
            try:
                out, _ = proc.communicate(timeout=seconds + 30)
                return json.loads(out.decode().strip().splitlines()[-1])
            finally:
                if proc.poll() is None:
                    proc.kill()

        def api_cpu(seconds: float) -> float:
            cpu0 = st.cpu("api")
            time.sleep(seconds)
            return round(100 * (st.cpu("api") - cpu0) / seconds, 2)

        # 1. the feed's own cost, no load: API CPU with and without dashboards
        say("idle API, no dashboards")
        idle_off = api_cpu(args.idle_seconds)
        say(f"idle API, {args.dashboards} dashboards")
        proc = dashboards(args.idle_seconds + 4)
        idle_on = api_cpu(args.idle_seconds)
        sse_idle = finish(proc, args.idle_seconds)

        # 2. under load, alternating without / with so that drift in the machine cancels out
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        sse: list[dict[str, Any]] = []
        for k, mode in enumerate(["off", "on"] * args.rounds):
            say(
                f"phase {k + 1}/{2 * args.rounds}: {args.rate:.0f} events/s + {args.decide_rate:.0f} "
                f"decisions/s, {'with ' + str(args.dashboards) if mode == 'on' else 'no'} dashboards"
            )
            proc = dashboards(args.seconds + 8) if mode == "on" else None
            cpu0 = st.cpu("api")
            got = asyncio.run(phase(base, args.rate, args.decide_rate, args.seconds, seed=k + 1))
            got["api_cpu_percent"] = round(100 * (st.cpu("api") - cpu0) / got["seconds"], 1)
            runs[mode].append(got)
            if proc is not None:
                sse.append(finish(proc, args.seconds + 8))
        st.check_alive("api")
        assert api.poll() is None

    def mean(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {
            k: sum(r[k] for r in rows) / len(rows)
            for k in rows[0]
            if isinstance(rows[0][k], (int, float))
        }

    without, with_dash = mean(runs["off"]), mean(runs["on"])
    thr = pct_change(with_dash["ingest_events_per_s"], without["ingest_events_per_s"])
    p99 = pct_change(with_dash["decide_p99_ms"], without["decide_p99_ms"])
    thr_cost = round(max(0.0, -thr), 2)
    p99_cost = round(max(0.0, p99), 2)
    feed_core = round(max(0.0, idle_on - idle_off), 2)
    print(
        f"idle API CPU: {idle_off:.2f} % of a core without dashboards, {idle_on:.2f} % with "
        f"{args.dashboards} ({sse_idle['messages']} snapshots, "
        f"{sse_idle['bytes'] / max(1, sse_idle['messages']) / 1024:.1f} KiB each on average)"
    )
    # an API process at its maximum ingest rate uses one core; the feed takes feed_core % of it
    print(
        f"feed cost: {feed_core:.2f} % of a core, so at most {feed_core:.2f} % of one API "
        f"process's maximum ingest throughput"
    )
    rows = [("under load (mean)", "without", f"with {args.dashboards}", "change")]
    for key in (
        "ingest_events_per_s",
        "ingest_p50_ms",
        "ingest_p99_ms",
        "decide_p50_ms",
        "decide_p99_ms",
        "api_cpu_percent",
    ):
        rows.append(
            (
                key,
                f"{without[key]:.2f}",
                f"{with_dash[key]:.2f}",
                f"{pct_change(with_dash[key], without[key]):+.1f} %",
            )
        )
    for r in rows:
        print(f"{r[0]:<22}{r[1]:>12}{r[2]:>14}{r[3]:>12}")
    for mode in ("off", "on"):
        print(
            f"  per phase ({mode}): ingest/s "
            + ", ".join(f"{r['ingest_events_per_s']:.0f}" for r in runs[mode])
            + "; decide p99 ms "
            + ", ".join(f"{r['decide_p99_ms']:.1f}" for r in runs[mode])
        )
    ok = thr_cost < 5 and p99_cost < 5
    print(
        f"added cost: ingest throughput {thr_cost:.2f} %, decide p99 {p99_cost:.2f} % "
        f"(target < 5 % each): {'OK' if ok else 'OVER'}" + (f"  [{note}]" if note else "")
    )
    json_line(
        {
            "bench": "dashboard",
            "dashboards": args.dashboards,
            "offered_events_per_s": args.rate,
            "decide_rate": args.decide_rate,
            "seconds_per_phase": args.seconds,
            "rounds": args.rounds,
            "idle_api_cpu_percent": {"without": idle_off, "with": idle_on},
            "sse_idle": sse_idle,
            "feed_cpu_percent_of_core": feed_core,
            "without": without,
            "with": with_dash,
            "phases": runs,
            "sse": sse,
            "ingest_throughput_cost_pct": thr_cost,
            "decide_p99_cost_pct": p99_cost,
            "target_pct": 5,
            "ok": ok,
            "busy": note,
        }
    )


if __name__ == "__main__":
    main()
