"""Freshness: time from the 2xx of POST /v1/events to the change readable in GET /v1/profiles,
at a steady 1,000 events/s.

    python bench/freshness.py [--rate 1000] [--seconds 60] [--api-workers 1] [--probes 10]

Starts the embedded default on 127.0.0.1 (Valkey with AOF, one Apache Kafka node, `kairos api`,
one `kairos worker`) and offers an open-loop load: every 20 ms a request of 20 events of 20
different visitors (sent on schedule whether or not earlier requests have answered, so a slow
server cannot slow the load down). On top, `--probes` times a second a probe posts one event for
a new visitor and, from the moment its 2xx arrives, polls GET /v1/profiles/{visitor} (every
~2 ms at first) until the profile answers 200 (backing off to 20 ms after 250 ms and to 100 ms after
1 s; at most 20 probes outstanding, further ones are skipped and counted): that interval is the freshness sample. The probes'
events count towards the rate.

Figures: freshness p50/p90/p99/max, POST latency p50/p99, the rate achieved, the worker's own
freshness (accept-to-applied, from `kx:workers:<group>`), RSS of the API, worker, Valkey and broker.
A warm-up (default 5 s) is not measured. Target: freshness p99 < 200 ms. Last line: JSON.

`bench/soak.py` runs the same load for minutes (it imports `Load` from here).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, busy_note, json_line, loadavg, mib, run_main, say, summary_ms  # noqa: E402
from ingest import _event  # noqa: E402

TARGET_P99_MS = 200.0
PROBE_TIMEOUT_S = 10.0


class MiniHTTP:
    """A small HTTP/1.1 keep-alive client for the load (httpx costs the load generator several
    times more CPU per request, which on a 2-core machine is taken from the stack under test).
    Enough for uvicorn's answers: a status line, headers, a Content-Length body."""

    def __init__(self, base: str, max_conns: int = 200, timeout: float = PROBE_TIMEOUT_S,
                 key: str = "") -> None:
        from urllib.parse import urlsplit

        self.auth = f"Authorization: Bearer {key}\r\n" if key else ""
        u = urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._sem = asyncio.Semaphore(max_conns)

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str | None = None) -> tuple[int, bytes]:
        async with self._sem:
            for attempt in (0, 1):
                conn = self._idle.pop() if self._idle and not attempt else None
                reused = conn is not None
                try:
                    return await self._exchange(conn, method, path, body, content_type)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # the server closed an idle keep-alive connection: once more on a new one
                    if not reused or attempt:
                        raise
            raise AssertionError("unreachable")

    async def _exchange(self, conn: Any, method: str, path: str, body: bytes,
                        content_type: str | None) -> tuple[int, bytes]:
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Length: {len(body)}\r\n{self.auth}")
            if content_type:
                head += f"Content-Type: {content_type}\r\n"
            writer.write(head.encode() + b"\r\n" + body)
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            lines = raw.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await asyncio.wait_for(reader.readexactly(length), self.timeout) if length else b""
            self._idle.append(conn)
            return status, data
        except BaseException:
            if conn is not None:
                conn[1].close()
            raise

    async def close(self) -> None:
        for _, w in self._idle:
            w.close()
        self._idle.clear()


@dataclass
class Load:
    """Open-loop ingest load plus freshness probes against one API."""

    base: str
    rate: float = 1000.0  # events/s in total, probes included
    key: str = ""  # the run's secret key (BenchStack.key)
    probes_per_s: float = 10.0
    batch: int = 20
    visitors: int = 50_000
    prefix: str = field(default_factory=lambda: "f" + uuid.uuid4().hex[:6])
    # samples: (monotonic time, value)
    fresh: list[tuple[float, float]] = field(default_factory=list)
    posts: list[tuple[float, float]] = field(default_factory=list)
    sent_events: int = 0  # events in requests sent
    accepted: int = 0  # events the API acknowledged (2xx)
    accepted_measured: int = 0  # of those, sent during the measured period
    failed_requests: int = 0
    probe_timeouts: int = 0
    probes_skipped: int = 0  # not started: too many still waiting (the stack is far behind)
    max_outstanding_probes: int = 20
    poll_s: float = 0.002  # a probe's first polls, this far apart (the resolution of the figure)
    polls: int = 0  # GET /v1/profiles sent by the probes (the observer's own load on the API)
    _outstanding: int = 0
    fail_reasons: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _post(self, client: Any, events: list[dict[str, Any]], record: bool) -> bool:
        import orjson

        self.sent_events += len(events)
        t0 = time.monotonic()
        try:
            status, data = await client.request("POST", "/v1/events", orjson.dumps(events),
                                                "application/json")
            ok = status == 200
            if not ok:
                self.fail_reasons[f"HTTP {status}"] += 1
            if ok:
                n = int(orjson.loads(data)["accepted"])
                self.accepted += n
                if record:
                    self.accepted_measured += n
        except Exception as exc:
            ok = False
            self.fail_reasons[type(exc).__name__] += 1
        t1 = time.monotonic()
        if record:
            self.posts.append((t1, t1 - t0))
        if not ok:
            self.failed_requests += 1
        return ok

    async def _background(self, client: Any, record: bool) -> None:
        now_ms = int(time.time() * 1000)
        evs = [_event(self._rng, f"{self.prefix}-{self._rng.randrange(self.visitors)}", now_ms)
               for _ in range(self.batch)]
        for ev in evs:
            ev["event_id"] = uuid.uuid4().hex
        await self._post(client, evs, record)

    async def _probe(self, client: Any, n: int, record: bool) -> None:
        if self._outstanding >= self.max_outstanding_probes:
            if record:
                self.probes_skipped += 1
            return
        self._outstanding += 1
        try:
            await self._probe_one(client, n, record)
        finally:
            self._outstanding -= 1

    async def _probe_one(self, client: Any, n: int, record: bool) -> None:
        vid = f"{self.prefix}-probe-{n}"
        ev = _event(self._rng, vid, int(time.time() * 1000))
        ev["event_id"] = uuid.uuid4().hex
        if not await self._post(client, [ev], record):
            return
        t0 = time.monotonic()
        while True:
            try:
                self.polls += 1
                status, _ = await client.request("GET", f"/v1/profiles/{vid}")
                if status == 200:
                    t1 = time.monotonic()
                    if record:
                        self.fresh.append((t1, t1 - t0))
                    return
            except Exception:
                pass
            if time.monotonic() - t0 > PROBE_TIMEOUT_S:
                self.probe_timeouts += 1
                if record:
                    self.fresh.append((time.monotonic(), PROBE_TIMEOUT_S))
                return
            # poll every `poll_s` (~2 ms) while a fast answer is likely, back off after that so
            # a slow stack is not buried under polls (which would make it slower still)
            waited = time.monotonic() - t0
            await asyncio.sleep(self.poll_s if waited < 0.25 else max(self.poll_s, 0.02)
                                if waited < 1 else 0.1)

    async def run(self, seconds: float, warmup: float = 0.0,
                  every: tuple[float, Callable[[], None]] | None = None) -> None:
        """Offer the load for warmup + seconds; `every=(s, fn)` calls fn every s seconds."""
        client = MiniHTTP(self.base, key=self.key)
        try:
            bg_rate = max(0.0, self.rate - self.probes_per_s) / self.batch  # requests/s
            bg_iv = 1.0 / bg_rate if bg_rate else float("inf")
            pr_iv = 1.0 / self.probes_per_s if self.probes_per_s else float("inf")
            start = time.monotonic()
            measure_from = start + warmup
            end = measure_from + seconds
            next_bg, next_pr = start, start + pr_iv / 2
            next_cb = measure_from + every[0] if every else float("inf")
            n = 0
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                record = now >= measure_from
                if now >= next_bg:
                    self._spawn(self._background(client, record))
                    next_bg += bg_iv
                if now >= next_pr:
                    n += 1
                    self._spawn(self._probe(client, n, record))
                    next_pr += pr_iv
                if every and now >= next_cb:
                    every[1]()
                    next_cb += every[0]
                await asyncio.sleep(max(0.0, min(next_bg, next_pr, next_cb, end) - time.monotonic()))
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=PROBE_TIMEOUT_S + 5)
            if every and time.monotonic() >= next_cb - 0.5:
                every[1]()
        finally:
            await client.close()

    def window(self, since: float, until: float) -> dict[str, Any]:
        fresh = [v for t, v in self.fresh if since <= t < until]
        posts = [v for t, v in self.posts if since <= t < until]
        f = summary_ms(fresh)
        p = summary_ms(posts)
        return {"freshness": f, "post": {k: p[k] for k in ("n", "p50_ms", "p99_ms", "max_ms")}}


def start_default_stack(st: BenchStack, api_workers: int, **settings: Any) -> None:
    """The embedded default: Valkey (AOF), one Kafka node, the API, one worker (`settings`:
    overrides of engine/settings.py, for an A/B)."""
    st.start_redis()
    st.start_kafka()
    st.configure(api_workers=api_workers, **settings)
    st.ensure_topics()
    st.start_api(api_workers)
    st.start_worker()


def wait_worker_ready(st: BenchStack, timeout: float = 90.0) -> float:
    """Post one event and wait until its profile is readable (the worker has joined)."""
    import httpx

    vid = "warm-" + uuid.uuid4().hex[:8]
    ev = {"event_id": uuid.uuid4().hex, "type": "page_view", "visitor_id": vid}
    t0 = time.monotonic()
    with httpx.Client(base_url=st.base_url, timeout=10, headers=st.headers) as c:
        c.post("/v1/events", json=[ev]).raise_for_status()
        while time.monotonic() - t0 < timeout:
            st.check_alive()
            if c.get(f"/v1/profiles/{vid}").status_code == 200:
                return time.monotonic() - t0
            time.sleep(0.1)
    raise TimeoutError(f"the worker did not apply an event within {timeout:.0f}s\n{st.log_tail('worker')}")


def worker_view(st: BenchStack) -> dict[str, Any]:
    reps = st.worker_reports()
    if not reps:
        return {}
    rep = max(reps.values(), key=lambda r: r.get("ts", 0))
    return {k: rep.get(k) for k in ("rate", "lag", "applied_total", "duplicates_total",
                                    "freshness_p50_ms", "freshness_p99_ms")}


def rss_all(st: BenchStack) -> dict[str, float]:
    return {f"rss_{n}_mib": mib(st.rss(n)) for n in ("api", "worker", "redis", "kafka")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s offered (default 1000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--probes", type=float, default=10.0, help="freshness probes per second")
    ap.add_argument("--api-workers", type=int, default=1, help="API processes (embedded default: 1)")
    a = ap.parse_args()
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    with BenchStack("freshness") as st:
        start_default_stack(st, a.api_workers)
        took = wait_worker_ready(st)
        say(f"the worker applied a first event {took:.1f}s after start; offering {a.rate:.0f} events/s "
            f"for {a.warmup:.0f}+{a.seconds:.0f}s…")
        load = Load(st.base_url, rate=a.rate, probes_per_s=a.probes, key=st.key)
        cpu0 = {n: st.cpu(n) for n in ("api", "worker", "redis", "kafka")}
        cpu0["loadgen"] = time.process_time()
        t0 = time.monotonic()
        asyncio.run(load.run(a.seconds, a.warmup))
        wall = time.monotonic() - t0
        cpu1 = {n: st.cpu(n) for n in ("api", "worker", "redis", "kafka")}
        cpu1["loadgen"] = time.process_time()
        time.sleep(1.2)  # one more worker report
        w = worker_view(st)
        rss = rss_all(st)
        st.check_alive()
    win = load.window(0, float("inf"))
    f, p = win["freshness"], win["post"]
    rate = load.accepted_measured / a.seconds
    cores = {f"cpu_cores_{n}": round((cpu1[n] - cpu0[n]) / wall, 2) for n in cpu0}
    print()
    print(f"freshness at {a.rate:.0f} events/s offered ({rate:.0f} accepted/s over the {a.seconds:.0f}s measured), "
          f"API on {a.api_workers} process(es), one worker")
    print(f"  freshness (2xx -> GET 200)  p50 {f['p50_ms']} ms  p90 {f['p90_ms']} ms  p99 {f['p99_ms']} ms  "
          f"max {f['max_ms']} ms  ({f['n']} probes, {load.probe_timeouts} timed out, "
          f"{load.probes_skipped} skipped while 20 were outstanding)")
    print(f"  POST /v1/events latency     p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms  "
          f"({p['n']} requests, {load.failed_requests} failed"
          f"{': ' + str(dict(load.fail_reasons)) if load.fail_reasons else ''})")
    if w:
        print(f"  worker's own freshness      p50 {w['freshness_p50_ms']} ms  p99 {w['freshness_p99_ms']} ms "
              f"(record timestamp -> applied, last 10 s); lag {w['lag']}")
    print("  RSS  " + "  ".join(f"{k[4:-4]} {v} MiB" for k, v in rss.items()))
    print("  CPU cores  " + "  ".join(f"{k[10:]} {v}" for k, v in cores.items()))
    met = f["p99_ms"] < TARGET_P99_MS and load.probe_timeouts == 0 and load.probes_skipped == 0
    print(f"target freshness p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'MISSED'} ({f['p99_ms']} ms)")
    if note:
        print(f"note: {note}")
    json_line({"bench": "freshness", "target_p99_ms": TARGET_P99_MS, "met": met, "rate_offered": a.rate,
               "rate_accepted": round(rate, 1), "api_workers": a.api_workers, "loadavg_before": load_before,
               "freshness": f, "post": p, "probe_timeouts": load.probe_timeouts, "probes_skipped": load.probes_skipped,
               "failed_requests": load.failed_requests, "fail_reasons": dict(load.fail_reasons), "worker": w, **rss, **cores})
    return 0


if __name__ == "__main__":
    run_main(main)
