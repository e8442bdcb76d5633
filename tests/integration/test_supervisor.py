"""The supervisor of `kairos up`, seen from outside, in the process table.

First the supervisor alone, with small commands as children (seconds each): a crash is
restarted with a log line naming it; a crash loop is given up with exit code 1; SIGTERM stops a
child that ignores SIGTERM; a SIGKILLed supervisor leaves no child behind, not even one that
runs as another user (the parent-death signal must survive the credential change).

Then `kairos up` itself: a SIGKILLed worker, API and Valkey are restarted and events still
flow; SIGTERM stops everything within 30 s; a SIGKILLed `kairos up` takes every embedded
server, the worker and the API with it within a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.embedded import free_port
from tests.conftest import LIBS, ROOT
from tests.integration.test_up import _children_using

pytestmark = pytest.mark.integration

SUPERVISE = r"""
import json, sys
from engine.logic.restarts import RestartPolicy
from engine.supervisor import Command, GaveUp, Supervisor

spec = json.loads(sys.stdin.readline())
with Supervisor(stop_within_s=spec.get("stop_within_s", 25.0),
                process_grace_s=spec.get("grace_s", 12.0), poll_s=0.05) as sup:
    try:
        for c in spec["children"]:
            if c.get("valkey"):  # a real embedded server
                from engine.embedded import EmbeddedRedis
                child = EmbeddedRedis(c["valkey"]["dir"], c["valkey"]["port"])
            else:
                child = Command(c["name"], c["argv"], user=c.get("user"))
            sup.start(child, RestartPolicy(**c.get("policy", {})))
        print("started", flush=True)
        sup.watch()
    except KeyboardInterrupt:
        sys.exit(0)
    except GaveUp as exc:
        print(f"gave up: {exc}", flush=True)
        sys.exit(1)
"""

SLEEPER = "import time; time.sleep(600)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _py(code: str, marker: str, python: str = sys.executable) -> list[str]:
    return [python, "-c", code, marker]


def _wait(pred, timeout: float, what: str, poll: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(poll)


class Run:
    """A process whose output (stdout and stderr together) is read without blocking."""

    def __init__(self, argv: list[str], env: dict[str, str], stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.out = ""

    def read(self) -> str:
        assert self.proc.stdout is not None
        self.out += (self.proc.stdout.read() or b"").decode(errors="replace")
        return self.out

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            assert self.proc.poll() is None or re.search(pattern, self.read()), self.read()
            return re.search(pattern, self.read())

        return _wait(seen, timeout, f"{pattern!r} not seen:\n{self.out}", 0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def supervise(children: list[dict], **opts: float) -> Run:
    """The supervisor in a process of its own; its spec goes through stdin, so that only
    the children carry the marker."""
    run = Run([sys.executable, "-c", SUPERVISE], dict(os.environ), stdin=subprocess.PIPE)
    assert run.proc.stdin is not None
    run.proc.stdin.write(json.dumps({"children": children, **opts}).encode() + b"\n")
    run.proc.stdin.close()
    run.wait_for("started", 20)
    return run


def test_a_crashed_child_is_restarted_with_a_log_line_naming_it() -> None:
    marker = f"sup-{uuid.uuid4().hex}"
    run = supervise([{"name": "sleeper", "argv": _py(SLEEPER, marker),
                      "policy": {"backoff_s": 0.1}}])
    try:
        (first,) = _children_using(marker)
        os.kill(first, signal.SIGKILL)
        run.wait_for(rf"sleeper \(pid {first}\) exited \(killed by SIGKILL\); restarting it in "
                     r"0\.1 s \(restart 1 of at most 5 within 60 s\)", 5)
        again = run.wait_for(r"sleeper restarted \(pid (\d+)\)", 5)
        assert _children_using(marker) == [int(again.group(1))] != [first]
    finally:
        run.kill()


def test_a_crash_loop_is_given_up_with_exit_code_1_and_stops_the_others() -> None:
    marker = f"sup-{uuid.uuid4().hex}"
    crash = "import sys, time; time.sleep(0.2); sys.exit(3)"
    run = supervise([
        {"name": "sleeper", "argv": _py(SLEEPER, marker)},
        {"name": "crasher", "argv": _py(crash, marker),
         "policy": {"max_restarts": 2, "window_s": 60, "backoff_s": 0.05}},
    ])
    try:
        assert run.proc.wait(10) == 1, run.read()
        out = run.read()
        assert out.count("crasher (pid") == 3 and "exited (code 3); restarting it" in out
        assert ("gave up: crasher exited (code 3): 3 times within 60 s, more than the 2 restarts "
                "allowed; giving up") in out
        assert _wait(lambda: not _children_using(marker), 3, "the sleeper was stopped too")
    finally:
        run.kill()


def test_a_server_that_cannot_come_back_is_reported_by_name_with_exit_code_1(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "redis"
    run = supervise([{"name": "valkey", "valkey": {"dir": str(data), "port": port},
                      "policy": {"max_restarts": 1, "window_s": 60, "backoff_s": 1.0}}])
    try:
        (valkey,) = [pid for (pid, _), cmd in _tree(run.proc.pid).items() if "valkey" in cmd]
        manifest = data / "appendonlydir" / "appendonly.aof.manifest"
        assert _wait(manifest.exists, 10, "valkey wrote its AOF manifest")
        os.kill(valkey, signal.SIGKILL)
        # its data is unreadable now: every start refuses it and exits with code 1 (a port
        # squatter raced the restart and lost to sockets of the killed server, seen in CI)
        manifest.write_text("this is not an AOF manifest\n")
        assert run.proc.wait(30) == 1, run.read()
        out = run.read()
        assert f"valkey (pid {valkey}) exited (killed by SIGKILL); restarting it in 1 s on port {port}" in out
        assert re.search(r"gave up: valkey (could not start: RuntimeError: valkey )?exited "
                         r"(with code 1|\(code 1\)): 2 times within 60 s, more than the 1 "
                         r"restarts allowed; giving up", out), out
    finally:
        run.kill()


def test_sigterm_stops_a_child_that_ignores_sigterm_within_its_grace() -> None:
    marker = f"sup-{uuid.uuid4().hex}"
    run = supervise([{"name": "sleeper", "argv": _py(SLEEPER, marker)},
                     {"name": "stubborn", "argv": _py(STUBBORN, marker)}], grace_s=1.0)
    try:
        _wait(lambda: len(_children_using(marker)) == 2, 5, "both children run")
        time.sleep(0.3)  # the stubborn one has set its handler
        t0 = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(10) == 0, run.read()
        assert time.monotonic() - t0 < 5
        assert _children_using(marker) == []
    finally:
        run.kill()


def test_a_sigkilled_supervisor_leaves_no_child_not_even_one_running_as_another_user() -> None:
    import pwd

    marker = f"sup-{uuid.uuid4().hex}"
    children = [{"name": "sleeper", "argv": _py(SLEEPER, marker)},
                {"name": "stubborn", "argv": _py(STUBBORN, marker)}]
    if os.geteuid() == 0:  # what EmbeddedPostgres does: Popen(user="postgres")
        pwd.getpwnam("postgres")
        children.append({"name": "as-postgres", "argv": _py(SLEEPER, marker, "/usr/bin/python3"),
                         "user": "postgres"})
    run = supervise(children)
    try:
        pids = _wait(lambda: len(p := _children_using(marker)) == len(children) and p, 5,
                     "every child runs")
        if os.geteuid() == 0:
            assert any(os.stat(f"/proc/{p}").st_uid == pwd.getpwnam("postgres").pw_uid for p in pids)
        time.sleep(0.3)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(5)
        _wait(lambda: not _children_using(marker), 3,
              f"children outlived the supervisor: {_children_using(marker)}")
    finally:
        run.kill()
        for p in _children_using(marker):
            os.kill(p, signal.SIGKILL)


# -- kairos up ------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _tree(root: int) -> dict[tuple[int, int], str]:
    """Every live descendant of `root`: (pid, start time) -> command line. Valkey rewrites its
    command line and environment (its process title), so a stack's processes are found by
    descent, not by what they carry."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] != "Z":
            parents.setdefault(st[0], []).append(int(entry.name))
    out: dict[tuple[int, int], str] = {}
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if st is not None:
            out[(pid, st[2])] = cmd.strip()
            todo += parents.get(pid, [])
    return out


def _alive(procs: dict[tuple[int, int], str]) -> list[str]:
    """Those of `procs` still running (the same pid and start time, not a zombie)."""
    return [f"{pid} {cmd[:80]}" for (pid, start), cmd in procs.items()
            if (st := _stat(pid)) is not None and st[2] == start and st[1] != "Z"]


class Up(Run):
    def __init__(self, var: Path, **env: str) -> None:
        self.var = var
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "KAIROS_VAR_DIR": str(var), "KAIROS_PORT": str(self.port), **env}
        self.env.pop("KAIROS_SETTINGS_JSON", None)
        super().__init__([sys.executable, "-m", "engine.cli", "up"], self.env)
        self.wait_for("Ctrl-C stops everything", 120)
        made = subprocess.run([sys.executable, "-m", "engine.cli", "keys", "create", "secret",
                               "--scope", "events:write,profiles:read"], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        self.http = httpx.Client(base_url=self.base, timeout=10, headers={
            "Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"})

    def flows(self, visitor: str, count: int = 1, timeout: float = 45) -> dict:
        """Post an event for `visitor` (retrying while the API restarts) and wait until its
        profile shows `count` events."""
        event = {"event_id": uuid.uuid4().hex, "type": "item_view", "visitor_id": visitor,
                 "item": {"id": "i1", "brand": "acme"}}

        def posted() -> bool:
            try:
                return self.http.post("/v1/events", json=event).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(posted, timeout, "the event was never accepted", 0.2)

        def applied() -> dict | None:
            try:
                r = self.http.get(f"/v1/profiles/{visitor}")
            except httpx.HTTPError:
                return None
            return r.json() if r.status_code == 200 and r.json()["event_count"] >= count else None

        return _wait(applied, timeout, f"the event never reached {visitor}'s profile", 0.2)

    def children(self) -> dict[tuple[int, int], str]:
        return _tree(self.proc.pid)

    def pids(self, *words: str) -> list[int]:
        """The children whose command line holds every word."""
        return [pid for (pid, _), cmd in self.children().items() if all(w in cmd for w in words)]


@pytest.fixture(scope="module")
def up_var() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="kairos-sup-"))
    base.chmod(0o711)  # PostgreSQL runs as the postgres user: it must enter var/pg
    var = base / "var"
    (var / "kafka").mkdir(parents=True)
    (var / "kafka" / "libs").symlink_to(LIBS)
    yield var
    for p in _children_using(str(var)):  # a failed test must not leave a stack running
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def up(up_var: Path) -> Iterator[Up]:
    stack = Up(up_var, KAIROS_API_WORKERS="2")  # uvicorn's worker processes must die with it too
    yield stack
    stack.http.close()
    stack.kill()


def test_up_restarts_a_sigkilled_worker_and_events_still_flow(up: Up) -> None:
    up.flows("sup-w")
    (worker,) = up.pids("-m engine.cli worker")
    os.kill(worker, signal.SIGKILL)
    up.wait_for(rf"worker \(pid {worker}\) exited \(killed by SIGKILL\); restarting it in", 5)
    up.wait_for(r"worker restarted \(pid \d+\)", 10)
    assert up.flows("sup-w", 2)["event_count"] == 2


def test_up_restarts_a_sigkilled_api(up: Up) -> None:
    (api,) = up.pids("-m engine.cli api")
    workers = {k: cmd for k, cmd in up.children().items() if "multiprocessing" in cmd}
    assert len(workers) >= 2, "uvicorn's two worker processes"
    os.kill(api, signal.SIGKILL)
    up.wait_for(rf"api \(pid {api}\) exited \(killed by SIGKILL\); restarting it in", 5)
    # its worker processes do not hold the port: they died with it, and the new API serves
    _wait(lambda: not _alive(workers), 5, f"uvicorn workers outlived the API: {_alive(workers)}")
    _wait(lambda: up.pids("-m engine.cli api") not in ([], [api]), 10, "a new API")
    assert up.flows("sup-a")["event_count"] == 1


def test_up_restarts_a_sigkilled_valkey_on_its_port_with_its_data(up: Up) -> None:
    before = up.flows("sup-v")
    time.sleep(1.5)  # appendfsync everysec: the profile is on disk
    port = json.loads((up.var / "run" / "stack.json").read_text())["redis_url"].split(":")[-1]
    (valkey,) = up.pids("valkey-server", f"127.0.0.1:{port.split('/')[0]}")
    os.kill(valkey, signal.SIGKILL)
    line = up.wait_for(rf"valkey \(pid {valkey}\) exited \(killed by SIGKILL\); restarting it "
                       rf"in [\d.]+ s on port (\d+) with its data in {re.escape(str(up.var))}/redis",
                       5)
    up.wait_for(r"valkey restarted \(pid \d+\)", 20)
    assert line.group(1) == port.split("/")[0], "the same port: clients reconnect"
    # the profile written before the crash came back from the AOF, and the stream goes on
    assert up.flows("sup-v", before["event_count"] + 1)["event_count"] == before["event_count"] + 1


def test_up_stops_everything_on_sigterm_within_30s(up: Up) -> None:
    children = up.children()
    assert len(children) >= 5
    t0 = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)  # to `kairos up` alone, as `kill PID` or a runtime does
    assert up.proc.wait(30) == 0, up.read()
    took = time.monotonic() - t0
    assert _alive(children) == [], "every child process stopped"
    assert _children_using(str(up.var)) == []
    assert "kairos: stopped" in up.read()
    print(f"kairos up stopped on SIGTERM in {took:.1f} s")


def test_a_sigkilled_up_takes_every_child_with_it_within_seconds(up_var: Path) -> None:
    stack = Up(up_var)  # the second start on this folder: its data is kept
    try:
        children = stack.children()
        names = {"valkey": "valkey-server", "kafka": "kafka.Kafka", "postgres": "postgres -D",
                 "worker": "-m engine.cli worker", "api": "-m engine.cli api"}
        for name, word in names.items():
            assert stack.pids(word), f"{name} runs"
        os.kill(stack.proc.pid, signal.SIGKILL)
        stack.proc.wait(5)
        t0 = time.monotonic()
        _wait(lambda: not _alive(children), 10,
              f"children outlived kairos up: {_alive(children)}", 0.1)
        print(f"every child ({len(children)} processes) exited "
              f"{time.monotonic() - t0:.1f} s after kairos up was SIGKILLed")
        assert _wait(lambda: not _children_using(str(up_var)), 5, "nothing left")
    finally:
        stack.http.close()
        stack.kill()
