"""Latency of GET /v1/recommendations at moderate load, after a replay of the REES46 sample.

Starts Valkey, Apache Kafka, one worker and the API (bench/_stack.py), loads the demo catalog
(POST /v1/catalog/items), replays the sample through POST /v1/events (timestamps shifted to
end now), waits for the stream to catch up, then sends `--rate` requests/s for `--seconds`
(open loop: each request is due on schedule, whatever the previous ones do, and its latency
counts from when it was due) for visitors of
the log, half of them on an item page. Prints p50/p90/p99, the API process's and Valkey's CPU
µs per request (the figures to compare on a shared machine), the load average (figures on a busy
machine are worse) and, last, one JSON line. `--compare` runs the same load a second time on
`bench_plain`: the default recipe without `session_knn` and with bought items plainly excluded
(`exclusions.repurchase: exclude`), so the cost of those two reads shows within one run.

    python bench/reco_latency.py [--rate 200] [--seconds 20] [--events 0 (all)] [--compare]
                                 [--rounds 1]

`--rounds N` (with `--compare`) alternates the two recipes N times in the same run, so a change
of the machine's load during the run weighs on both.

Where the API's time goes under this load: `pip install py-spy` in the venv, then, once the log
says "recipe default", `py-spy record -p <API pid> -d 20 -r 200 -f raw -o spy.txt` (bench/README.md).

Target: p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import BenchStack, cpu_seconds, json_line, say, summary_ms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "rees46" / "2019-Oct_head.csv"


def replay(base: str, path: Path, limit: int, headers: dict[str, str]) -> list[dict]:
    import httpx

    from engine.flows.catalog import rees46_records
    from streams.sources import iter_rees46

    records = rees46_records(path)
    events = list(iter_rees46(path))
    if limit:
        events = events[:limit]
    shift = int(time.time() * 1000) - max(e["ts"] for e in events) - 1000
    for e in events:
        e["ts"] += shift
    with httpx.Client(base_url=base, timeout=30, headers=headers) as http:
        for k in range(0, len(records), 1000):
            r = http.post("/v1/catalog/items", json=records[k:k + 1000])
            r.raise_for_status()
        for k in range(0, len(events), 500):
            r = http.post("/v1/events", json=events[k:k + 500])
            r.raise_for_status()
    say(f"loaded {len(records)} catalog items, posted {len(events)} events")
    return events


def wait_caught_up(base: str, events: list[dict], headers: dict[str, str],
                   timeout: float = 120) -> None:
    import httpx

    counts: dict[str, int] = {}
    for e in events:
        counts[e["visitor_id"]] = counts.get(e["visitor_id"], 0) + 1
    # the last 20 distinct visitors of the log (spread over the partitions)
    pending = list(dict.fromkeys(e["visitor_id"] for e in reversed(events)))[:20]
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=5, headers=headers) as http:
        while time.monotonic() < deadline:
            pending = [v for v in pending
                       if (r := http.get(f"/v1/profiles/{v}")).status_code != 200
                       or r.json()["event_count"] < counts[v]]
            if not pending:
                return
            time.sleep(0.5)
    raise SystemExit("the stream did not catch up with the replay")


class Conn:
    """One keep-alive HTTP/1.1 connection (a tiny client: httpx's own cost per request would
    dominate the measurement on a small machine)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str = "127.0.0.1", key: str = "") -> None:
        self.reader, self.writer = reader, writer
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.head = f"Host: {host}\r\n{auth}\r\n"

    async def get(self, target: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\n{self.head}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)


async def load(base: str, events: list[dict], rate: float, seconds: float, seed: int,
               connections: int = 32, key: str = "", recipe: str = "default",
               api_pid: int | None = None, redis_pid: int | None = None
               ) -> tuple[list[float], int, list[int], float, float]:
    """Open loop: request i is due at start + i/rate; its latency counts from when it was due
    (waiting for a free connection included), so a slow server cannot hide its queue."""
    import json
    from urllib.parse import urlencode, urlsplit

    rng = random.Random(seed)
    pairs = [(e["visitor_id"], e["item"]["id"]) for e in events]
    url = urlsplit(base)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Conn(*await asyncio.open_connection(url.hostname, url.port),
                             host=url.netloc, key=key))
    lat: list[float] = []
    sizes: list[int] = []
    errors = 0

    async def one(target: str, due: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status, body = await conn.get(target)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        pool.put_nowait(conn)
        lat.append(time.perf_counter() - due)
        if status != 200:
            errors += 1
        else:
            sizes.append(len(json.loads(body)["items"]))

    def target() -> str:
        vid, iid = rng.choice(pairs)
        params = {"visitor_id": vid, "n": "10", "recipe": recipe}
        if rng.random() < 0.5:
            params["item_id"] = iid
        return "/v1/recommendations?" + urlencode(params)

    await asyncio.gather(*(one(target(), time.perf_counter()) for _ in range(100)))  # warm up
    lat.clear()
    sizes.clear()
    tasks = []
    cpu0, vk0 = cpu_seconds(api_pid), cpu_seconds(redis_pid)
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(target(), due)))
    await asyncio.gather(*tasks)
    cpu_us = (cpu_seconds(api_pid) - cpu0) / max(1, len(tasks)) * 1e6
    valkey_us = (cpu_seconds(redis_pid) - vk0) / max(1, len(tasks)) * 1e6
    while not pool.empty():
        pool.get_nowait().writer.close()
    return lat, errors, sizes, cpu_us, valkey_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--events", type=int, default=0, help="replay only the first N events")
    ap.add_argument("--file", type=Path, default=SAMPLE)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--compare", action="store_true",
                    help="also run the load on bench_plain (no session_knn, plain exclusion)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --compare: alternate the two recipes this many times")
    args = ap.parse_args()
    runs = ["default", "bench_plain"] * max(1, args.rounds) if args.compare else ["default"]
    results = []
    with BenchStack("reco-latency") as st:
        config = st.dir / "config"
        shutil.copytree(ROOT / "config", config)
        recipe = yaml.safe_load((config / "recipes" / "default.yaml").read_text())
        recipe["name"] = "bench_plain"
        recipe["ingredients"]["session_knn"] = 0.0
        recipe["exclusions"]["repurchase"] = "exclude"
        (config / "recipes" / "bench_plain.yaml").write_text(yaml.safe_dump(recipe))
        st.start_redis()
        st.start_kafka()
        st.configure(config_dir=config)
        st.ensure_topics()
        st.start_worker()
        st.start_api(workers=1)
        base = st.base_url
        events = replay(base, args.file, args.events, st.headers)
        wait_caught_up(base, events, st.headers)
        for name in runs:
            say(f"replay applied; recipe {name}: {args.rate:.0f} req/s for {args.seconds:.0f} s")
            lat, errors, sizes, cpu_us, valkey_us = asyncio.run(load(
                base, events, args.rate, args.seconds, args.seed, key=st.key, recipe=name,
                api_pid=st.pid("api"), redis_pid=st.pid("redis")))
            results.append((name, lat, errors, sizes, cpu_us, valkey_us,
                            round(os.getloadavg()[0], 2)))
        st.check_alive()
    for name, lat, errors, sizes, cpu_us, valkey_us, load_avg in results:
        fig = summary_ms(lat)
        mean_items = round(sum(sizes) / len(sizes), 2) if sizes else 0.0
        print(f"GET /v1/recommendations ({name}) at {args.rate:.0f} req/s for {args.seconds:.0f} "
              f"s: p50 {fig['p50_ms']} ms, p90 {fig['p90_ms']} ms, p99 {fig['p99_ms']} ms, "
              f"max {fig['max_ms']} ms; API CPU {cpu_us:.0f} µs/request, Valkey CPU "
              f"{valkey_us:.0f} µs/request; {errors} errors; "
              f"{mean_items} items per answer "
              f"(target p99 < 10 ms: {'met' if fig['p99_ms'] < 10 else 'NOT met'}); "
              f"load average {load_avg} on {os.cpu_count()} CPUs")
    for name, lat, errors, sizes, cpu_us, valkey_us, load_avg in results:
        fig = summary_ms(lat)
        mean_items = round(sum(sizes) / len(sizes), 2) if sizes else 0.0
        json_line({"bench": "reco_latency", "recipe": name, "events": len(events),
                   "rate": args.rate, "seconds": args.seconds, **fig, "errors": errors,
                   "items_mean": mean_items, "cpu_us_per_request": round(cpu_us, 1),
                   "valkey_cpu_us_per_request": round(valkey_us, 1),
                   "target_p99_ms": 10, "met": fig["p99_ms"] < 10, "loadavg": load_avg,
                   "cpus": os.cpu_count()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
