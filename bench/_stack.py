"""Shared helper of the benchmarks: start Valkey, Apache Kafka, the API and workers on
127.0.0.1 for one run, measure them from outside, and stop everything it started.

    with BenchStack("ingest") as st:
        st.start_redis(); st.start_kafka()
        st.start_api(workers=2)
        ...

Everything lives in a fresh temporary directory (removed at the end; `keep=True` or
KAIROS_BENCH_KEEP=1 keeps it with the child processes' logs). Every child runs in its own
process group, so Ctrl-C reaches only the benchmark, which then stops the children by
their ids (SIGTERM to each group, SIGKILL after a grace period) in `stop()`; SIGTERM and
SIGHUP to the benchmark do the same.

Also here: the bare ASGI app used as the ingest baseline (`python bench/_stack.py bare`),
RSS/CPU readings from /proc, the worker's self-reports from Redis, quantiles.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIBS = ROOT / "var" / "kafka" / "libs"
HOST = "127.0.0.1"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- figures ----------------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (0 for no values)."""
    if not values:
        return 0.0
    s = sorted(values)
    idx = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[idx]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of durations in seconds, as milliseconds."""
    return {
        "n": len(values_s),
        "p50_ms": round(quantile(values_s, 0.50) * 1000, 2),
        "p90_ms": round(quantile(values_s, 0.90) * 1000, 2),
        "p99_ms": round(quantile(values_s, 0.99) * 1000, 2),
        "max_ms": round(max(values_s) * 1000, 2) if values_s else 0.0,
    }


def json_line(doc: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object with its figures."""
    print(json.dumps(doc, separators=(",", ":"), sort_keys=False), flush=True)


def loadavg() -> float:
    with contextlib.suppress(OSError):
        return float(Path("/proc/loadavg").read_text().split()[0])
    return 0.0


def busy_note() -> str | None:
    """A warning when something else is using the machine (figures may be disturbed)."""
    la = loadavg()
    if la > 0.5:
        return f"load average {la:.2f} before the run: other work on this machine may disturb the figures"
    return None


# -- /proc readings ---------------------------------------------------------------------------
_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def rss_bytes(pid: int | None, *, descendants: bool = True) -> int:
    """Resident set size of a process (and its descendants), from /proc."""
    if not pid:
        return 0
    total = 0
    for p in tree(pid) if descendants else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def cpu_seconds(pid: int | None, *, descendants: bool = True) -> float:
    """User + system CPU time of a process (and its live descendants)."""
    if not pid:
        return 0.0
    total = 0
    for p in tree(pid) if descendants else [pid]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{p}/stat").read_text()
            f = stat[stat.rindex(")") + 2 :].split()
            total += int(f[11]) + int(f[12])
    return total / _CLK


def run_main(main: Any) -> None:
    """`sys.exit(main())`, with Ctrl-C reported as such (the stack stops its children itself)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)


def mib(n: float) -> float:
    return round(n / 1048576, 1)


# -- the stack --------------------------------------------------------------------------------
class BenchStack:
    """Valkey, Kafka, API and worker processes of one benchmark run."""

    def __init__(self, name: str, *, keep: bool | None = None) -> None:
        self.name = name
        self.keep = bool(os.environ.get("KAIROS_BENCH_KEEP")) if keep is None else keep
        self.dir = Path(tempfile.mkdtemp(prefix=f"kairos-bench-{name}-"))
        self.dir.chmod(0o711)  # PostgreSQL runs as the postgres user: it must enter the folder
        self.redis: Any = None
        self.kafka: Any = None
        self.postgres: Any = None
        self.key: str = ""  # a secret key with scope admin, for the load (set by configure)
        self.settings: Any = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._old_handlers: dict[int, Any] = {}
        self._stopped = False

    # context manager: stop on normal exit, error, Ctrl-C, SIGTERM, SIGHUP
    def __enter__(self) -> BenchStack:
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)

    # -- servers
    def start_redis(self, *, appendonly: bool = True) -> str:
        from engine.embedded import EmbeddedRedis

        say("starting Valkey…")
        self.redis = EmbeddedRedis(self.dir / "redis", appendonly=appendonly).start()
        return self.redis.url

    def start_kafka(self, *, partitions: int = 4) -> str:
        from engine.embedded import EmbeddedKafka

        if not any(LIBS.glob("kafka_2.13-*.jar")):
            raise SystemExit(f"no Kafka broker jars in {LIBS}: run `kairos setup` once")
        say("starting Apache Kafka (KRaft, one node)…")
        for attempt in range(3):
            try:
                self.kafka = EmbeddedKafka(self.dir / f"kafka{attempt}", LIBS, partitions=partitions).start()
                break
            except subprocess.CalledProcessError:
                # engine.embedded._kafka_cluster_id() can start with "-" (1 in 64), which the
                # StorageTool reads as an option: format again with another generated id
                if attempt == 2:
                    raise
                say("formatting the Kafka log dir failed (cluster id starting with '-'?); retrying")
        return self.kafka.bootstrap

    def start_postgres(self) -> str:
        from engine.db import migrate
        from engine.embedded import EmbeddedPostgres

        say("starting PostgreSQL (the control plane)…")
        self.postgres = EmbeddedPostgres(self.dir / "pg").start()
        migrate(self.postgres.url)
        return str(self.postgres.url)

    @property
    def headers(self) -> dict[str, str]:
        """What every request of the load sends: the run's secret key."""
        return {"Authorization": f"Bearer {self.key}"}

    def _make_key(self, url: str) -> str:
        import asyncio

        from engine.db import new_engine
        from engine.db.control import ControlPlane

        async def go() -> str:
            cp = ControlPlane(new_engine(url, pool_size=1))
            try:
                return (await cp.create_key("secret", scopes=["admin"], name=f"bench {self.name}"))[1]
            finally:
                await cp.close()

        return asyncio.run(go())

    def configure(self, **overrides: Any) -> Any:
        """Settings for the children: this run's servers, topic, group and var dir; the control
        plane (started here when the run has none yet) and a secret key for the load."""
        from engine.embedded import free_port
        from engine.settings import Settings

        if self.postgres is None and "database_url" not in overrides:
            self.start_postgres()
        run = uuid.uuid4().hex[:6]
        base: dict[str, Any] = dict(
            host=HOST,
            port=free_port(),
            redis_url=self.redis.url if self.redis else None,
            kafka_bootstrap=self.kafka.bootstrap if self.kafka else None,
            events_topic=f"events-{run}",
            decisions_topic=f"decisions-{run}",
            group_id=f"kairos-bench-{run}",
            var_dir=self.dir / "var",
            config_dir=ROOT / "config",
            database_url=self.postgres.url if self.postgres else None,
        )
        base.update(overrides)
        self.settings = Settings(**base)
        if self.settings.database_url and not self.key:
            self.key = self._make_key(self.settings.database_url)
        return self.settings

    def ensure_topics(self) -> None:
        import asyncio

        from engine.eventlog import ensure_topics

        s = self.settings
        asyncio.run(ensure_topics(s.kafka_bootstrap, {s.events_topic: s.partitions,
                                                      s.decisions_topic: s.partitions}))

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.settings.port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env or dict(os.environ), start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def _env(self) -> dict[str, str]:
        return {**os.environ, "KAIROS_SETTINGS_JSON": self.settings.to_json()}

    def start_api(self, workers: int = 1, name: str = "api") -> subprocess.Popen[bytes]:
        say(f"starting the API ({workers} process{'es' if workers > 1 else ''})…")
        proc = self.spawn(name, [sys.executable, "-m", "engine.cli", "api", "--workers", str(workers)],
                          self._env())
        self.wait_http(self.base_url + "/healthz", proc, name)
        if workers > 1:
            self._wait_workers(proc, workers)
        return proc

    def start_bare(self, workers: int, port: int, name: str = "bare") -> subprocess.Popen[bytes]:
        """The baseline: a bare ASGI app under the same uvicorn settings as `kairos api`."""
        say(f"starting the bare ASGI baseline ({workers} processes)…")
        proc = self.spawn(name, [sys.executable, str(BENCH / "_stack.py"), "bare", "--port", str(port),
                                 "--workers", str(workers)])
        self.wait_http(f"http://{HOST}:{port}/healthz", proc, name)
        if workers > 1:
            self._wait_workers(proc, workers)
        return proc

    def _wait_workers(self, proc: subprocess.Popen[bytes], n: int, timeout: float = 30) -> None:
        """uvicorn --workers N: wait until N worker processes are up (and a moment to settle)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(tree(proc.pid)) < n + 1:
            time.sleep(0.1)
        time.sleep(1.0)

    def start_worker(self, name: str = "worker", loglevel: str = "warning") -> subprocess.Popen[bytes]:
        say(f"starting a stream worker ({name})…")
        return self.spawn(name, [sys.executable, "-m", "engine.cli", "worker", "--loglevel", loglevel],
                          self._env())

    def wait_http(self, url: str, proc: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not answer within {timeout:.0f}s\n{self.log_tail(name)}")

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def check_alive(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode}:\n{self.log_tail(name)}")

    def pid(self, name: str) -> int | None:
        if name == "redis":
            return self.redis.proc.pid if self.redis and self.redis.proc else None
        if name == "kafka":
            return self.kafka.proc.pid if self.kafka and self.kafka.proc else None
        p = self.procs.get(name)
        return p.pid if p is not None else None

    def rss(self, name: str) -> int:
        return rss_bytes(self.pid(name))

    def cpu(self, name: str) -> float:
        return cpu_seconds(self.pid(name))

    # -- Redis views
    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis.url if self.redis else self.settings.redis_url,
                                    socket_timeout=10)

    def count_profiles(self, prefix: str) -> tuple[int, int]:
        """(profiles, sum of their event_count) of the visitors whose id starts with `prefix-`."""
        from engine.store import keys
        from engine.store.profiles import decode

        r = self.redis_client()
        try:
            found = list(r.scan_iter(match=keys.visitor_profiles(f"{prefix}-*"), count=10_000))
            total = 0
            mget = getattr(r, "mget_nonatomic", r.mget)  # a cluster client reads slot by slot
            for i in range(0, len(found), 2000):
                for blob in mget(found[i : i + 2000]):
                    stored = decode(blob)
                    if stored.profile is not None:
                        total += stored.profile.event_count
            return len(found), total
        finally:
            r.close()

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        """What each worker measured about itself (Redis hash kx:workers:<group>)."""
        from engine.store import keys

        r = self.redis_client()
        try:
            return {k.decode(): json.loads(v) for k, v in r.hgetall(keys.workers(self.settings.group_id)).items()}
        finally:
            r.close()

    # -- teardown
    def stop_proc(self, name: str, timeout: float = 15.0) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        _stop_group(p, timeout)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans
        try:
            procs = list(self.procs.items())
            self.procs.clear()
            for _, p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(p.pid, signal.SIGTERM)
            for _, p in procs:
                _stop_group(p, 15.0)
            for server in (self.kafka, self.redis, self.postgres):
                if server is not None:
                    try:
                        server.stop()
                    except Exception as exc:  # pragma: no cover - best effort
                        say(f"could not stop {server.name}: {exc}")
            if self.keep:
                say(f"kept {self.dir} (logs and data)")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)


def _stop_group(p: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after `timeout`."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    # uvicorn's worker processes share the group: make sure none outlives its parent
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)


# -- the baseline app -------------------------------------------------------------------------
_BARE_BODY = b'{"accepted":20,"rejected":[]}'


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers 200 with a small JSON: no validation, no Kafka."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _BARE_BODY})


def _run_bare(argv: Iterable[str]) -> None:
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["bare"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(list(argv))
    # the same uvicorn settings as engine.cli.cmd_api
    uvicorn.run("_stack:bare_app", app_dir=str(BENCH), host=HOST, port=a.port, workers=a.workers,
                log_level="warning", access_log=False, loop="uvloop", http="httptools",
                timeout_graceful_shutdown=5, lifespan="on")


if __name__ == "__main__":
    _run_bare(sys.argv[1:])


def gate_cost_us(database_url: str, key: str, n: int = 50_000) -> dict[str, float]:
    """CPU µs per request that checking a key costs in the API: the gate's own work (read the
    Authorization header, SHA-256 the key, find it in the in-process cache, check the route's
    policy, take a rate-limit token), timed in this process on the run's real key cache."""
    import asyncio

    from engine.db import new_engine
    from engine.db.control import ControlPlane
    from engine.flows.access import Access, Secrets
    from engine.logic import access as acl

    async def go() -> dict[str, float]:
        cp = ControlPlane(new_engine(database_url, pool_size=1))
        try:
            a = Access(cp, await Secrets.load(cp), key_rate=1e12, key_burst=1e12)
            await a.reload()
            policy = acl.needs(acl.Scope.EVENTS_WRITE, public=True, session=False)
            header = f"Bearer {key}"
            t0 = time.process_time()
            for _ in range(n):
                who = a.key(acl.bearer(header) or "")
                assert who is not None
                acl.authorize(policy, who)
                a.rate(who, None)
            return {"gate_us_per_request": round((time.process_time() - t0) * 1e6 / n, 2)}
        finally:
            await cp.close()

    return asyncio.run(go())
