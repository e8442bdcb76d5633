"""Drift detection with river's ADWIN, as plain data that survives a snapshot.

`Adwin` wraps `river.drift.ADWIN` (Bifet and Gavalda, 2007): it keeps an adaptive window of a
stream of numbers in [0, 1] and shrinks it when its older and newer parts differ in mean by
more than chance allows (confidence `delta`). After a detection the window holds only the
recent part, so `width` and `mean` describe the stream since the change: the reactions in
`models.bandit` and `models.propensity` use exactly that.

river's ADWIN state lives in a compiled helper whose pickle state is bytes; `state()` keeps
those bytes and the constructor arguments, so a snapshot is data, never code.
"""

from __future__ import annotations

from typing import Any

from river import drift


class Adwin:
    """ADWIN over values in [0, 1]; `update` says whether a change was detected."""

    def __init__(self, delta: float = 0.002, clock: int = 32, grace_period: int = 10) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError("delta must be in (0, 1)")
        self.delta = delta
        self.clock = clock
        self.grace_period = grace_period
        self._adwin = drift.ADWIN(  # type: ignore[no-untyped-call]
            delta=delta, clock=clock, grace_period=grace_period
        )
        self.detections = 0

    def update(self, x: float) -> bool:
        """Add one value; True when ADWIN dropped the older part of its window."""
        self._adwin.update(float(x))  # type: ignore[no-untyped-call]
        if self._adwin.drift_detected:
            self.detections += 1
            return True
        return False

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._adwin.width)

    @property
    def mean(self) -> float:
        """Mean of the current window (0 when empty)."""
        return float(self._adwin.estimation) if self._adwin.width else 0.0

    def state(self) -> dict[str, Any]:
        """Plain data: constructor arguments, detections and river's window bytes."""
        return {
            "delta": self.delta,
            "clock": self.clock,
            "grace_period": self.grace_period,
            "detections": self.detections,
            "window": self._adwin._helper.__getstate__(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Adwin:
        """Inverse of `state`."""
        obj = cls(state["delta"], state["clock"], state["grace_period"])
        obj._adwin._helper.__setstate__(bytes(state["window"]))
        obj.detections = int(state["detections"])
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Adwin) and self.state() == other.state()

    def __getstate__(self) -> dict[str, Any]:
        return self.state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(Adwin.from_state(state).__dict__)
