"""Where a decision's time goes, measured in process: CPU per request of each layer, and a
cProfile of the whole app.

    python bench/decide_profile.py [--profiles 20000] [--requests 4000] [--top 30]

Starts Valkey, Apache Kafka and PostgreSQL as bench/decide.py does (the same campaigns and
profiles), then, in this process and without HTTP, calls with the bench's requests:

1. the floor (bench/floor_app.py as an ASGI app: parse the JSON, one Redis pipeline);
2. the decision flow alone (`Decider.decide`, the Redis read included);
3. the whole app (`engine.api.create_app` with its lifespan: the gate, the route, the flow);

16 requests at a time, in interleaved rounds, and prints the median CPU per request of each
(process time, so the load of other work on the machine moves it less than wall time), the
difference (the HTTP adapter and gate = 3 - 2), the flow's stages each run alone, then the
functions that take the most of (3) under cProfile.
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


async def stages(svc: Any, reqs: list[bytes]) -> dict[str, float]:
    """CPU per request of the flow's stages, each run alone on the same requests: the Redis
    read, then the pure part (profile view, caps, selection with rendering), then making the
    decision records and ids."""
    import orjson

    from engine.logic.decisions.select import select
    from engine.logic.decisions.state import cap_states, decision_id, decision_record, rule_view
    from engine.store import keys
    from models.affinity import Profile

    d = svc.decider
    config = svc.hub.decisions
    docs = [orjson.loads(b) for b in reqs]
    cands = list(dict.fromkeys(c.id for z in ZONES for c in config.by_zone.get(z, ())))
    snaps: list[Any] = []

    async def read(doc: dict[str, Any]) -> None:
        snaps.append(await d.read(doc["visitor_id"], None, cands))

    out = {"stage_read_us": round(1e6 * await run_many(read, docs), 1)}
    now = int(time.time() * 1000)
    t0 = time.process_time()
    chosen = []
    for snap, doc in zip(snaps, docs, strict=False):
        view = rule_view(snap.profile or Profile(), snap.pid, now, d.cfg)
        caps = cap_states(snap.state, snap.session, config, now)
        chosen.append((doc, select(config, view, doc["context"], now, caps, ZONES)))
    out["stage_select_us"] = round(1e6 * (time.process_time() - t0) / len(snaps), 1)
    t0 = time.process_time()
    for doc, ds in chosen:
        for dd in ds:
            base = decision_id(dd.campaign_id, dd.arm, d.token())
            rec = decision_record(dd, d.sign(base), doc["visitor_id"], None, now, "web")
            rec["event_id"] = base
            keys.visitor_pid(doc["visitor_id"])
    out["stage_records_us"] = round(1e6 * (time.process_time() - t0) / len(chosen), 1)
    # the decision log: what `Decider.decide` hands it per request, and its batched produce
    recs = [[decision_record(dd, d.sign(decision_id(dd.campaign_id, dd.arm, d.token())),
                             doc["visitor_id"], None, now, "web") for dd in ds] for doc, ds in chosen]
    await asyncio.sleep(0.1)
    t0 = time.process_time()
    for (doc, _), rs in zip(chosen, recs, strict=True):
        if rs:
            d.records.add(doc["visitor_id"].encode(), rs)
            await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    out["stage_log_us"] = round(1e6 * (time.process_time() - t0) / len(chosen), 1)
    return out


class gc_watch:  # noqa: N801 - used like a function
    """Time spent in the cyclic garbage collector from now until `stop()`."""

    def __init__(self) -> None:
        import gc

        self.total = 0.0
        self.collections = 0
        self._t = 0.0
        self._gc = gc
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.process_time()
        else:
            self.total += time.process_time() - self._t
            self.collections += 1

    def stop(self) -> float:
        self._gc.callbacks.remove(self._cb)
        return self.total


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


async def measure(s: Any, key: str, n_profiles: int, n: int, top: int, rounds: int
                  ) -> dict[str, Any]:
    """Interleaved rounds (floor, flow, whole app, each on `n` requests), so that a change of
    the machine's load touches all three alike; the medians over the rounds."""
    import statistics

    import floor_app
    import orjson

    from engine.api import create_app

    reqs = bodies(n_profiles, n)
    os.environ["FLOOR_REDIS_URL"] = s.redis_url
    app = create_app(s, s.redis_url, s.kafka_bootstrap)
    per: dict[str, list[float]] = {"floor_us": [], "flow_us": [], "app_us": [], "gc_us": [],
                                   "empty_us": []}
    # the same call naming no zone: the gate, the route, parsing and answering, no read
    empty = [orjson.dumps({**orjson.loads(b), "context": {"channel": "web"}}) for b in reqs]
    async with Lifespan(floor_app.app) as floor, Lifespan(app):
        svc = app.state.svc
        fscope = scope_for(b"", s.port, key)
        statuses: list[int] = []

        async def on_floor(b: bytes) -> None:
            await call(floor, fscope, b)

        async def whole(b: bytes) -> None:
            statuses.append(await call(app, scope_for(b, s.port, key), b))

        async def flow(b: bytes) -> None:
            doc = orjson.loads(b)
            await svc.decider.decide(doc["visitor_id"], None, doc["context"], ZONES, [],
                                     int(time.time() * 1000), time.perf_counter())

        for fn in (on_floor, flow, whole):  # warm up
            await run_many(fn, reqs[:300])
        for r in range(rounds):
            per["floor_us"].append(1e6 * await run_many(on_floor, reqs))
            per["flow_us"].append(1e6 * await run_many(flow, reqs))
            statuses.clear()
            gc_time = gc_watch()
            per["app_us"].append(1e6 * await run_many(whole, reqs))
            per["gc_us"].append(1e6 * gc_time.stop() / len(reqs))
            per["empty_us"].append(1e6 * await run_many(whole, empty))
            bad = [st for st in statuses if st != 200]
            if bad:
                raise SystemExit(f"{len(bad)} answers were not 200: {bad[:5]}")
            if svc.decider.failures:
                raise SystemExit(f"{svc.decider.failures} decisions were degraded")
            say(f"round {r + 1}: floor {per['floor_us'][-1]:.0f}, flow {per['flow_us'][-1]:.0f}, "
                f"app {per['app_us'][-1]:.0f}, app with no zone {per['empty_us'][-1]:.0f} µs CPU "
                f"per request (load {loadavg():.1f})")
        out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in per.items()}
        out["app_floor_ratios"] = [round(a / f, 2) for a, f in zip(per["app_us"], per["floor_us"],
                                                                   strict=True)]
        out.update(await stages(svc, reqs))
        say("stages of the flow: " + ", ".join(f"{k[6:-3]} {v} µs" for k, v in out.items()
                                              if k.startswith("stage_")))
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
    ap.add_argument("--requests", type=int, default=2000, help="requests per round")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if note := busy_note():
        say(note)
    with BenchStack("decide-profile") as st:
        cdir = st.dir / "config"
        make_config(cdir)
        redis_url = st.start_redis(appendonly=False)
        st.start_kafka(partitions=4)
        # a generous deadline: every request here is measured deciding, none answered empty
        # ... and the per-key limit off (1,000/s by default: in process this goes faster)
        s = st.configure(config_dir=cdir, decide_deadline_ms=5000, rate_per_key=1e9)
        st.ensure_topics()
        asyncio.run(load_profiles(redis_url, a.profiles, cdir, s.profile_ttl_ms))
        res = asyncio.run(measure(s, st.key, a.profiles, a.requests, a.top, a.rounds))
    print(res.pop("profile"))
    print(f"{'CPU per request (in process, no HTTP)':40}{'µs':>8}")
    for k, label in [("floor_us", "floor: parse + one pipeline"), ("flow_us", "decision flow (read + decide + log)"),
                     ("adapter_us", "gate + route + framework"), ("app_us", "whole app"),
                     ("empty_us", "whole app, no zone asked")]:
        print(f"{label:40}{res[k]:>8.1f}")
    print(f"app / floor = {res['app_us'] / res['floor_us']:.2f} (medians of {a.rounds} interleaved "
          f"rounds; per round {res['app_floor_ratios']}; load {loadavg():.1f})")
    json_line({"bench": "decide_profile", "profiles": a.profiles, "requests": a.requests, **res,
               "load": loadavg(), "busy": busy_note()})


if __name__ == "__main__":
    main()
