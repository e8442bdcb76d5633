"""When a supervised process exits: restart it after a backoff, or give up. Pure.

`kairos up` runs each child (a server, the worker, the API) under a `RestartPolicy`. A
`Restarts` tracker is the state machine of one child: `started(now)` when it runs,
`exited(now, returncode)` when it ends, which answers with a verdict:

- `Restart(delay_s, ...)`: start it again after `delay_s` (the backoff doubles with every
  crash in a row, from `backoff_s` up to `backoff_max_s`; a run of at least `stable_s` counts
  as healthy and starts the backoff again from `backoff_s`);
- `GiveUp(reason)`: it crashed more than `max_restarts` times within `window_s` seconds (or its
  policy is `never`): the supervisor stops everything and exits non-zero, naming it;
- `Done()`: it ended with code 0 under `on-failure`: nothing to do.

Time is passed in (seconds on a monotonic clock); nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["always", "on-failure", "never"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a child is restarted. `always`: whatever its exit code; `on-failure`: unless it
    exited with code 0; `never`: its exit ends the supervisor."""

    mode: Mode = "always"
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    backoff_factor: float = 2.0
    stable_s: float = 30.0

    def __post_init__(self) -> None:
        if self.mode not in ("always", "on-failure", "never"):
            raise ValueError(f"mode must be always, on-failure or never, not {self.mode!r}")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.window_s <= 0 or self.stable_s < 0:
            raise ValueError("window_s must be > 0 and stable_s >= 0")
        if not 0 <= self.backoff_s <= self.backoff_max_s:
            raise ValueError("backoff_s must be between 0 and backoff_max_s")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")


#: The worker, the API and the other Python processes: restart quickly, give up on a crash loop.
PROCESS = RestartPolicy()
#: The embedded servers: restarted on their port with their data; a few tries, longer apart.
SERVER = RestartPolicy(max_restarts=3, window_s=120.0, backoff_s=1.0, backoff_max_s=10.0)
#: A process whose end is the end of the run.
NEVER = RestartPolicy(mode="never")


@dataclass(frozen=True, slots=True)
class Restart:
    delay_s: float
    crashes: int  # exits within the window, this one included
    allowed: int  # restarts allowed within the window
    window_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    pass


Verdict = Restart | GiveUp | Done


@dataclass(slots=True)
class Restarts:
    """The restart state of one child."""

    policy: RestartPolicy
    crashes: list[float] = field(default_factory=list)  # times of exits within the window
    streak: int = 0  # exits in a row, each after a run shorter than `stable_s`
    started_at: float | None = None

    def started(self, now: float) -> None:
        self.started_at = now

    def failed_to_start(self, now: float, why: str) -> Verdict:
        """A start that raised (a port taken, a timeout): counted like a crash."""
        return self._count(now, f"could not start: {why}")

    def exited(self, now: float, returncode: int) -> Verdict:
        p = self.policy
        ran = None if self.started_at is None else now - self.started_at
        self.started_at = None
        if p.mode == "on-failure" and returncode == 0:
            return Done()
        how = describe_exit(returncode)
        if p.mode == "never":
            return GiveUp(f"exited ({how}) and is not restarted")
        if ran is not None and ran >= p.stable_s:
            self.streak = 0
        return self._count(now, f"exited ({how})")

    def _count(self, now: float, what: str) -> Verdict:
        p = self.policy
        self.crashes = [t for t in self.crashes if now - t < p.window_s] + [now]
        if p.mode == "never" or len(self.crashes) > p.max_restarts:
            return GiveUp(f"{what}: {len(self.crashes)} times within {p.window_s:g} s, "
                          f"more than the {p.max_restarts} restarts allowed")
        delay = min(p.backoff_max_s, p.backoff_s * p.backoff_factor ** self.streak)
        self.streak += 1
        return Restart(delay_s=delay, crashes=len(self.crashes), allowed=p.max_restarts,
                       window_s=p.window_s)

    def snapshot(self) -> tuple[tuple[float, ...], int, float | None]:
        return tuple(self.crashes), self.streak, self.started_at


def describe_exit(returncode: int) -> str:
    """`0` -> "code 0"; `-9` (what subprocess reports for a signal) -> "killed by SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"code {returncode}"
