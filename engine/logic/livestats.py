"""Live aggregates for the dashboard: per-second counters and latency histograms. Pure.

Each API process counts into the current second in memory and flushes once a second (one
Redis pipeline, whatever the traffic); the stream adds what it applied by type and channel.
A second's counters live in one Redis hash `kx:s:<second>` with a TTL, so memory is bounded by
the window, never by the number of visitors. Latencies go into log-spaced buckets (about 9 %
wide), so p50/p99 over any window is a merge of bucket counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# bucket i covers [BASE·R^i, BASE·R^(i+1)) seconds; 0.02 ms .. ~100 s in 180 buckets
_BASE = 2e-5
_R = 1.09
_LOG_R = math.log(_R)
_NBUCKETS = 180


def bucket_of(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_NBUCKETS - 1, int(math.log(seconds / _BASE) / _LOG_R))


def bucket_value(i: int) -> float:
    """A bucket's representative value (its geometric middle), in seconds."""
    return _BASE * _R ** (i + 0.5)


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of a bucketed histogram, in seconds (None when empty)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen > rank:
            return bucket_value(i)
    return bucket_value(max(hist))


@dataclass
class SecondCounters:
    """Counters and histograms of the seconds not flushed yet, in one process."""

    counts: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, second: int, name: str, n: int = 1) -> None:
        c = self.counts.get(second)
        if c is None:
            c = self.counts[second] = Counter()
        c[name] += n

    def observe(self, second: int, hist: str, seconds: float) -> None:
        self.add(second, f"h:{hist}:{bucket_of(seconds)}")

    def take(self, before: int | None = None) -> dict[int, Counter[str]]:
        """Remove and return the seconds older than `before` (all when None)."""
        if before is None:
            out, self.counts = self.counts, {}
            return out
        out = {s: c for s, c in self.counts.items() if s < before}
        for s in out:
            del self.counts[s]
        return out


def merge(seconds: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in seconds:
        total.update(c)
    return total


def histogram(counts: Mapping[str, int], name: str) -> dict[int, int]:
    prefix = f"h:{name}:"
    return {int(k[len(prefix):]): int(v) for k, v in counts.items() if k.startswith(prefix)}


def by_prefix(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: int(v) for k, v in counts.items() if k.startswith(prefix)}


def human_rate(per_s: float) -> str:
    """1234 -> '1.2k/s' (what the dashboard shows)."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if per_s >= div:
            return f"{per_s / div:.1f}{unit}/s"
    return f"{per_s:.0f}/s" if per_s >= 10 or per_s == 0 else f"{per_s:.1f}/s"
