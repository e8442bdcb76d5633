"""What a worker measures about itself: rate, duplicates, lag, freshness. Pure."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[idx]


@dataclass
class WorkerMeter:
    window_s: float = 10.0
    applied_total: int = 0
    duplicates_total: int = 0
    bad_records: int = 0  # records skipped: unreadable, or failing to apply on their own
    bad_events: int = 0  # events skipped inside readable records: they do not fit the spec
    unstored_total: int = 0  # counted in the traffic only (consent declined, erased profiles)
    dropped_ops_total: int = 0  # table changes past some event's op budget
    fenced_total: int = 0  # batches a fence refused (a newer owner, a Redis that rolled back)
    store_full: bool = False  # Redis refused the last attempt for lack of memory
    store_full_retries_total: int = 0
    chained_total: int = 0  # batches that went on with records fetched during their commit
    emits_lost_total: int = 0  # segment joins/leaves the producer could not send (streams/app.py)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _applied: deque[tuple[float, int]] = field(default_factory=deque)
    _fresh: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20_000))

    def record(self, applied: int, duplicates: int, ages_s: list[float], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.applied_total += applied
        self.duplicates_total += duplicates
        self._applied.append((now, applied))
        for a in ages_s:
            self._fresh.append((now, a))

    def snapshot(self, lag: int, now: float | None = None, wall: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        horizon = now - self.window_s
        while self._applied and self._applied[0][0] < horizon:
            self._applied.popleft()
        while self._fresh and self._fresh[0][0] < horizon:
            self._fresh.popleft()
        rate = sum(n for _, n in self._applied) / self.window_s
        ages = sorted(a for _, a in self._fresh)
        return {
            "ts": time.time() if wall is None else wall,
            "rate": round(rate, 2),
            "lag": lag,
            "applied_total": self.applied_total,
            "duplicates_total": self.duplicates_total,
            "bad_records": self.bad_records,
            "bad_events": self.bad_events,
            "unstored_total": self.unstored_total,
            "dropped_ops_total": self.dropped_ops_total,
            "fenced_total": self.fenced_total,
            "store_full": int(self.store_full),
            "store_full_retries_total": self.store_full_retries_total,
            "chained_total": self.chained_total,
            "emits_lost_total": self.emits_lost_total,
            "freshness_p50_ms": round(quantile(ages, 0.5) * 1000, 2),
            "freshness_p99_ms": round(quantile(ages, 0.99) * 1000, 2),
        }
