"""The supervisor of `kairos up`: it starts the children, restarts the ones that die, and
never lets one outlive it.

- **Restarts.** Each child runs under a `RestartPolicy` (engine/logic/restarts.py, pure): a
  child that exits is started again after a backoff, with a log line that names it, its pid,
  how it ended and when it comes back. An embedded server is restarted on its port with its
  data folder (its clients reconnect). After more than `max_restarts` exits within `window_s`
  the supervisor gives up: `poll()` raises `GaveUp` naming the child, and `kairos up` stops
  everything and exits non-zero.
- **Children never outlive it.** Every child is started in its own session (a Ctrl-C or a
  SIGTERM reaches the supervisor alone, which stops the children in order) and with a Linux
  parent-death signal (`prctl(PR_SET_PDEATHSIG)`, set in the child between fork and exec,
  after `Popen(user=...)` has changed its credentials, which would clear it): if the
  supervisor is killed with SIGKILL, the kernel signals every child at once. SIGTERM or
  Ctrl-C stops everything within `stop_within_s` (the processes first, all at once; then the
  servers, the last started first, each with its share of the time left; SIGKILL for what is
  still running when its time is up).

Adding a child to `kairos up` is one line:

    sup.start(Command("mailer", [*me, "mailer"], env), PROCESS)

Children are started from the main thread only: the kernel sends the parent-death signal
when the *thread* that forked the child ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from engine.logic.restarts import (
    Done,
    GiveUp,
    Restart,
    RestartPolicy,
    Restarts,
    Verdict,
    describe_exit,
)

_PR_SET_PDEATHSIG = 1


def parent_death(sig: int, parent: int | None = None) -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the child gets `sig` when this process (its parent) dies.

    Runs in the child after fork, after the credential change of `Popen(user=...)` and
    before exec, so the setting survives into the server. If the parent (`parent`, this
    process by default) died before the setting took, the child signals itself. None where
    there is no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid() if parent is None else parent

    def tie() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), int(sig))

    return tie


def die_with_parent(sig: int, parent: int) -> None:
    """This process gets `sig` when `parent` (its parent now) dies: for processes that a
    child starts itself, such as uvicorn's worker processes under `kairos api --workers N`."""
    tie = parent_death(sig, parent)
    if tie is not None:
        tie()


class Supervised(Protocol):
    """What the supervisor runs: a command (`Command`) or an embedded server
    (engine/embedded.py)."""

    name: str

    @property
    def proc(self) -> subprocess.Popen[bytes] | None: ...

    def tie_to_parent(self) -> None:
        """From now on, every process this starts dies with its parent."""

    def start(self) -> object:
        """Start (again), blocking until it is ready; raise when it cannot."""

    def stop(self, timeout: float) -> None:
        """Stop within `timeout` s (SIGKILL after that); a no-op when it is not running."""


class Command:
    """A child that is a command line: the worker, the API, and the like."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                 user: str | None = None, stop_signal: int = signal.SIGTERM,
                 death_signal: int = signal.SIGKILL) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.user = user  # run as this user (we are root)
        self.stop_signal = stop_signal
        # a process of ours holds nothing that a SIGKILL loses: at-least-once and the dedupe
        # marks cover a worker, an unanswered request is retried by its client
        self.death_signal = death_signal
        self._proc: subprocess.Popen[bytes] | None = None
        self._tied = False

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def tie_to_parent(self) -> None:
        self._tied = True

    def start(self) -> Command:
        self._proc = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, user=self.user,
            preexec_fn=parent_death(self.death_signal) if self._tied else None)
        return self

    def signal_stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(self.stop_signal)

    def wait_or_kill(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        if self._proc is None:
            return
        try:
            self._proc.wait(max(0.0, deadline - clock()))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)

    def stop(self, timeout: float) -> None:
        self.signal_stop()
        self.wait_or_kill(time.monotonic() + timeout)


class GaveUp(Exception):
    """A child died for good: it crashed too often, or it is not restarted."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}; giving up")
        self.name = name
        self.reason = reason


@dataclass
class _Entry:
    child: Supervised
    restarts: Restarts
    due: float | None = None  # a restart is due at this time
    done: bool = False  # ended for good (on-failure with code 0)
    pid: int | None = field(default=None)


T = TypeVar("T", bound=Supervised)


class Supervisor:
    """Starts children, watches them with `poll()` (or `watch()`), stops them with `stop()`.
    As a context manager it does `catch_signals()` on the way in and `shutdown()` on the way
    out."""

    def __init__(self, say: Callable[[str], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic, stop_within_s: float = 25.0,
                 process_grace_s: float = 12.0, poll_s: float = 0.2) -> None:
        self.say = say or (lambda msg: print(f"kairos: {msg}", file=sys.stderr, flush=True))
        self.clock = clock
        self.stop_within_s = stop_within_s
        self.process_grace_s = process_grace_s
        self.poll_s = poll_s
        self._entries: list[_Entry] = []

    # -- starting --------------------------------------------------------------------------
    def start(self, child: T, policy: RestartPolicy) -> T:
        """Start `child` now (blocking until it is ready) and watch it from now on. A child
        that cannot start the first time raises: that is a setup problem, not a crash."""
        child.tie_to_parent()
        entry = _Entry(child, Restarts(policy))
        self._entries.append(entry)
        child.start()
        entry.restarts.started(self.clock())
        entry.pid = _pid(child)
        return child

    def names(self) -> list[str]:
        return [e.child.name for e in self._entries]

    # -- watching --------------------------------------------------------------------------
    def poll(self) -> None:
        """Notice the children that exited and restart the ones that are due; raise GaveUp
        when one is given up."""
        for e in self._entries:
            if e.done:
                continue
            if e.due is None:
                proc = e.child.proc
                if proc is not None and proc.poll() is not None:
                    verdict = e.restarts.exited(self.clock(), proc.returncode)
                    self._follow(e, verdict, f"{e.child.name} (pid {proc.pid}) exited "
                                             f"({describe_exit(proc.returncode)})")
            elif self.clock() >= e.due:
                self._restart(e)

    def watch(self, until: Callable[[], bool] = lambda: False) -> None:
        """`poll()` until `until()` is true (or forever: a signal or GaveUp ends it)."""
        while not until():
            self.poll()
            time.sleep(self.poll_s)

    def _follow(self, e: _Entry, verdict: Verdict, what: str) -> None:
        if isinstance(verdict, GiveUp):
            e.done = True
            self.say(what)
            raise GaveUp(e.child.name, verdict.reason)
        if isinstance(verdict, Done):
            e.done = True
            self.say(f"{what}; it is done")
            return
        assert isinstance(verdict, Restart)
        e.due = self.clock() + verdict.delay_s
        where = getattr(e.child, "where", "")
        self.say(f"{what}; restarting it in {verdict.delay_s:g} s{' ' + where if where else ''}"
                 f" (restart {verdict.crashes} of at most {verdict.allowed} within "
                 f"{verdict.window_s:g} s)")

    def _restart(self, e: _Entry) -> None:
        e.due = None
        try:
            e.child.start()
        except Exception as exc:  # a server that does not come back: counted like a crash
            with contextlib.suppress(Exception):
                e.child.stop(5.0)
            why = _one_line(exc)
            verdict = e.restarts.failed_to_start(self.clock(), why)
            self._follow(e, verdict, f"{e.child.name} could not start again ({why})")
            return
        e.restarts.started(self.clock())
        e.pid = _pid(e.child)
        self.say(f"{e.child.name} restarted (pid {e.pid})")

    # -- stopping --------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything within `stop_within_s`: the commands at once (SIGTERM, SIGKILL
        after `process_grace_s`), then the servers, the last started first."""
        deadline = self.clock() + self.stop_within_s
        commands = [e.child for e in reversed(self._entries) if isinstance(e.child, Command)]
        servers = [e.child for e in reversed(self._entries) if not isinstance(e.child, Command)]
        for c in commands:
            c.signal_stop()
        for c in commands:
            c.wait_or_kill(min(deadline, self.clock() + self.process_grace_s), self.clock)
        for i, server in enumerate(servers):
            share = (deadline - self.clock()) / (len(servers) - i)
            try:
                server.stop(max(0.5, share))
            except Exception as exc:  # best effort: the others must still stop
                self.say(f"could not stop {server.name}: {_one_line(exc)}")
        self._entries.clear()

    def catch_signals(self) -> None:
        """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does, wherever the main
        thread is (starting a server, waiting, watching): the caller's `finally` then calls
        `shutdown()`."""
        self._old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def shutdown(self) -> None:
        """`stop()`, saying so; a SIGTERM or Ctrl-C meanwhile is noted, not obeyed (the stop is
        bounded anyway)."""
        def noted(signum: int, _frame: object) -> None:
            self.say(f"{signal.Signals(signum).name} while stopping: stopping already "
                     f"(within {self.stop_within_s:g} s)")

        old_int = signal.signal(signal.SIGINT, noted)
        old_term = signal.signal(signal.SIGTERM, noted)
        try:
            self.say("stopping…")
            self.stop()
            self.say("stopped")
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, getattr(self, "_old_term", old_term))

    def __enter__(self) -> Supervisor:
        self.catch_signals()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _pid(child: Supervised) -> int | None:
    return child.proc.pid if child.proc is not None else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
