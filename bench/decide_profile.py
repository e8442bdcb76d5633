"""Where a decision's time goes, measured in process: CPU per request of each layer, and a
cProfile of the whole app.

    python bench/decide_profile.py [--profiles 20000] [--requests 4000] [--top 30]

Starts Valkey, Apache Kafka and PostgreSQL as bench/decide.py does (the same campaigns and
profiles), then, in this process and without HTTP, calls with the bench's requests:

1. the floor (bench/floor_app.py as an ASGI app: parse the JSON, one Redis pipeline);
2. the decision flow alone (`Decider.decide`, the Redis read included);
3. the whole app (`engine.api.create_app` with its lifespan: the gate, the route, the flow);

16 requests at a time, and prints the CPU per request of each (process time, so the load of
other work on the machine moves it much less than wall time), the differences (the HTTP
adapter and gate = 3 - 2), then the functions that take the most of (3) under cProfile.
uvicorn's own parsing and writing are not in these figures; they are the same for the
floor and the app (bench/decide.py measures the whole). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _stack import HOST, BenchStack, busy_note, json_line, loadavg, say  # noqa: E402
from decide import ZONES, load_profiles, make_config  # noqa: E402

CONCURRENCY = 16


def bodies(n_profiles: int, n: int, seed: int = 7) -> list[bytes]:
    import orjson

    rng = random.Random(seed)
    return [orjson.dumps({"visitor_id": f"b{rng.randrange(n_profiles)}",
                          "context": {"channel": "web", "page_type": "home",
                                      "url": "https://shop.example/", "zones": ZONES}})
            for _ in range(n)]


def scope_for(body: bytes, port: int, key: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/decide", "raw_path": b"/v1/decide", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 40000), "server": (HOST, port),
        "headers": [(b"host", f"{HOST}:{port}".encode()), (b"content-type", b"application/json"),
                    (b"authorization", f"Bearer {key}".encode()),
                    (b"content-length", str(len(body)).encode())],
    }


async def call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    sent = False
    status = [0]

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(dict(scope), receive, send)
    return status[0]


async def run_many(fn: Any, items: list[Any]) -> float:
    """CPU seconds per item, `CONCURRENCY` at a time (background tasks included)."""
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await fn(queue.pop())

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await asyncio.sleep(0.05)  # let the decision log's flush run inside the measured time
    return (time.process_time() - t0) / len(items)


class Lifespan:
    """Run an ASGI app's lifespan around a block."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()

    async def __aenter__(self) -> Any:
        async def receive() -> dict[str, Any]:
            return await self.queue.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup"):
                if message["type"].endswith("failed"):
                    raise RuntimeError(message.get("message"))
                self.started.set()
            elif message["type"].startswith("lifespan.shutdown"):
                self.stopped.set()

        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"},
                                                  "state": {}}, receive, send))
        await self.queue.put({"type": "lifespan.startup"})
        await asyncio.wait_for(self.started.wait(), 60)
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.stopped.wait(), 30)
        await self.task


async def measure(s: Any, key: str, n_profiles: int, n: int, top: int) -> dict[str, Any]:
    import orjson

    import floor_app
    from engine.api import create_app

    reqs = bodies(n_profiles, n)
    out: dict[str, Any] = {}
    # 1. the floor
    os.environ["FLOOR_REDIS_URL"] = s.redis_url
    async with Lifespan(floor_app.app) as floor:
        scope = scope_for(b"", s.port, key)
        await run_many(lambda b: call(floor, scope, b), reqs[:500])
        out["floor_us"] = round(1e6 * await run_many(lambda b: call(floor, scope, b), reqs), 1)
    say(f"floor: {out['floor_us']} µs CPU per request (load {loadavg():.1f})")

    app = create_app(s, s.redis_url, s.kafka_bootstrap)
    async with Lifespan(app):
        svc = app.state.svc
        statuses: list[int] = []

        async def whole(b: bytes) -> None:
            statuses.append(await call(app, scope_for(b, s.port, key), b))

        async def flow(b: bytes) -> None:
            doc = orjson.loads(b)
            await svc.decider.decide(doc["visitor_id"], None, doc["context"], ZONES, [],
                                     int(time.time() * 1000), time.perf_counter())

        await run_many(whole, reqs[:500])
        await run_many(flow, reqs[:500])
        out["flow_us"] = round(1e6 * await run_many(flow, reqs), 1)
        say(f"decision flow alone: {out['flow_us']} µs CPU per request (load {loadavg():.1f})")
        statuses.clear()
        out["app_us"] = round(1e6 * await run_many(whole, reqs), 1)
        bad = [st for st in statuses if st != 200]
        if bad:
            raise SystemExit(f"{len(bad)} answers were not 200: {bad[:5]}")
        say(f"whole app: {out['app_us']} µs CPU per request (load {loadavg():.1f})")
        prof = cProfile.Profile()
        prof.enable()
        await run_many(whole, reqs)
        prof.disable()
    out["adapter_us"] = round(out["app_us"] - out["flow_us"], 1)
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    out["profile"] = buf.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    if note := busy_note():
        say(note)
    with BenchStack("decide-profile") as st:
        cdir = st.dir / "config"
        make_config(cdir)
        redis_url = st.start_redis(appendonly=False)
        st.start_kafka(partitions=4)
        s = st.configure(config_dir=cdir)
        st.ensure_topics()
        asyncio.run(load_profiles(redis_url, a.profiles, cdir, s.profile_ttl_ms))
        res = asyncio.run(measure(s, st.key, a.profiles, a.requests, a.top))
    print(res.pop("profile"))
    print(f"{'CPU per request (in process, no HTTP)':40}{'µs':>8}")
    for k, label in [("floor_us", "floor: parse + one pipeline"), ("flow_us", "decision flow (read + decide + log)"),
                     ("adapter_us", "gate + route + framework"), ("app_us", "whole app")]:
        print(f"{label:40}{res[k]:>8.1f}")
    print(f"app / floor = {res['app_us'] / res['floor_us']:.2f} (load {loadavg():.1f})")
    json_line({"bench": "decide_profile", "profiles": a.profiles, "requests": a.requests, **res,
               "load": loadavg(), "busy": busy_note()})


if __name__ == "__main__":
    main()
