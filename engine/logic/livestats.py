"""Live aggregates for the dashboard: per-second counters and latency histograms. Pure.

Each API process counts into the current second in memory and flushes once a second (one
Redis pipeline, whatever the traffic); the stream adds what it applied by type and channel.
A second's counters live in one Redis hash `kx:s:<second>` with a TTL (`SECOND_TTL_MS`), so
memory is bounded by the window, never by the number of visitors (engine/store/live.py).
Latencies go into log-spaced buckets (about 9 % wide), so p50/p99 over any window is a merge
of bucket counts.

`LiveWindow` is the last `WINDOW_S` seconds of merged counters one process keeps in memory and
the snapshot the traffic endpoint and the dashboard serve; `SegmentRates` and `ArmHistory`
are the dashboard's segment join/leave rates and campaign conversion curves. Time is passed in.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 900  # seconds of merged counters each API process keeps
SECOND_TTL_MS = 3_600_000  # how long a second's counters live in Redis
# Types and channels are named by clients: each second keeps its `KEEP_PER_SECOND` biggest per
# dimension (the rest summed as "other"), and a snapshot names the window's `TOP_N` biggest in
# its rates and `TOP_SERIES` in its series, so neither memory nor a snapshot grows with the
# names sent (the dashboard draws 7 and "other").
NAMED = ("t:", "c:")
OTHER = "other"
KEEP_PER_SECOND = 32
TOP_N = 16
TOP_SERIES = 8

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
    return float(_BASE * _R ** (i + 0.5))


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


def fold(counts: Mapping[str, int], prefix: str, keep: int | set[str]) -> dict[str, int]:
    """The `prefix` counters of `counts` (names without the prefix), only the `keep` biggest
    (or the names in the set `keep`) by name, the rest summed as "other"."""
    named = by_prefix(counts, prefix)
    if isinstance(keep, int):
        if len(named) <= keep:
            return named
        top = sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))
        kept, rest = dict(top[:keep]), top[keep:]
    else:
        kept = {k: v for k, v in named.items() if k in keep}
        rest = [(k, v) for k, v in named.items() if k not in keep]
    if rest:
        kept[OTHER] = kept.get(OTHER, 0) + sum(v for _, v in rest)
    return kept


def bounded(counts: Mapping[str, int], keep: int = KEEP_PER_SECOND) -> Counter[str]:
    """One second's counters with at most `keep` names (+ "other") per client-named dimension."""
    out: Counter[str] = Counter({k: v for k, v in counts.items() if not k.startswith(NAMED)})
    for prefix in NAMED:
        out.update({prefix + k: v for k, v in fold(counts, prefix, keep).items()})
    return out


def human_rate(per_s: float) -> str:
    """1234 -> '1.2k/s' (what the dashboard shows)."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if per_s >= div:
            return f"{per_s / div:.1f}{unit}/s"
    return f"{per_s:.0f}/s" if per_s >= 10 or per_s == 0 else f"{per_s:.1f}/s"


class LiveWindow:
    """The last `keep_s` seconds of merged counters (every API process and the stream) and the
    workers' own reports, as one process last read them; and the snapshot served from them."""

    def __init__(self, keep_s: int = WINDOW_S) -> None:
        self.keep_s = keep_s
        self.seconds: deque[tuple[int, Counter[str]]] = deque(maxlen=keep_s)
        self.workers: dict[str, Any] = {}

    def to_read(self, now: float) -> list[int]:
        """The seconds to (re)read: the last few (late writers), or the whole window at first."""
        current = int(now) - 1
        start = current - 4 if self.seconds else current - self.keep_s + 1
        return list(range(start, current + 1))

    def update(self, read: Sequence[int], counters: Sequence[Counter[str]],
               workers: Mapping[str, Any]) -> None:
        """Replace the seconds `read` (consecutive, as `to_read` gave them) with what was read."""
        fresh = dict(zip(read, (bounded(c) for c in counters), strict=True))
        kept = [(s, c) for s, c in self.seconds if s < read[0]]
        merged = kept + sorted(fresh.items())
        self.seconds = deque(merged[-self.keep_s:], maxlen=self.keep_s)
        self.workers = dict(workers)

    def snapshot(self, window: int, now: float) -> dict[str, Any]:
        """Series, rates, latencies and workers over the last `window` finished seconds."""
        last = int(now) - 1
        series = [(s, c) for s, c in self.seconds if last - window < s <= last]
        total = merge(c for _, c in series)
        per_s = max(1, len(series)) if series else 1
        top = {p: set(fold(total, p, TOP_N)) - {OTHER} for p in NAMED}
        shown = {p: set(fold(total, p, TOP_SERIES)) - {OTHER} for p in NAMED}
        decide = histogram(total, "route:/v1/decide")
        ingest = histogram(total, "route:/v1/events")
        live = {w: s for w, s in self.workers.items() if now - float(s.get("ts", 0)) < 15}
        return {
            "window_s": window,
            "now": int(now * 1000),
            "series": [{"t": s * 1000, "applied": c.get("applied", 0), "accepted": c.get("accepted", 0),
                        "rejected": c.get("rejected", 0), "by_type": fold(c, "t:", shown["t:"]),
                        "by_channel": fold(c, "c:", shown["c:"])} for s, c in series],
            "rates": {
                "applied_per_s": total.get("applied", 0) / per_s,
                "accepted_per_s": total.get("accepted", 0) / per_s,
                "rejected_per_s": total.get("rejected", 0) / per_s,
                "by_type": {k: v / per_s for k, v in fold(total, "t:", top["t:"]).items()},
                "by_channel": {k: v / per_s for k, v in fold(total, "c:", top["c:"]).items()},
            },
            "latency_ms": {
                "decide": {"p50": _ms(quantile(decide, 0.5)), "p99": _ms(quantile(decide, 0.99))},
                "ingest": {"p50": _ms(quantile(ingest, 0.5)), "p99": _ms(quantile(ingest, 0.99))},
            },
            "workers": {
                "live": len(live),
                "lag": sum(int(s.get("lag", 0)) for s in live.values()),
                "freshness_p50_ms": max((float(s.get("freshness_p50_ms", 0)) for s in live.values()), default=None),
                "freshness_p99_ms": max((float(s.get("freshness_p99_ms", 0)) for s in live.values()), default=None),
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class SegmentRates:
    """Each segment's live size over time, and how fast members join and leave. Pure.

    `observe(now, sizes)` once a second with the sizes the stream keeps; `report(now)` gives
    per segment the size and, over the last `window_s`, members joined and left per minute.
    Joins and leaves come from second-to-second size changes, so a join and a leave within
    the same second cancel out: they are lower bounds, the net change is exact. Until the
    process has watched a whole window, the rates count what it saw (never extrapolated).
    """

    def __init__(self, window_s: int = 60, keep_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=keep_s)

    def observe(self, now: float, sizes: Mapping[str, int]) -> None:
        self.samples.append((now, dict(sizes)))

    def report(self, now: float) -> dict[str, dict[str, float | int | None]]:
        recent = [(t, s) for t, s in self.samples if now - t <= self.window_s + 0.5]
        latest = self.samples[-1][1] if self.samples else {}
        ids = sorted({k for _, s in recent for k in s} | set(latest))
        span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
        out: dict[str, dict[str, float | int | None]] = {}
        for sid in ids:
            joined = left = 0
            for (_, a), (_, b) in zip(recent, recent[1:], strict=False):
                d = b.get(sid, 0) - a.get(sid, 0)
                if d > 0:
                    joined += d
                else:
                    left -= d
            # over the window, or over what this process has seen when that is shorter
            per_min = 60.0 / max(span, self.window_s) if span > 0 else None
            out[sid] = {
                "size": latest.get(sid, 0),
                "joined_per_min": None if per_min is None else round(joined * per_min, 3),
                "left_per_min": None if per_min is None else round(left * per_min, 3),
                "net_per_min": None if per_min is None else round((joined - left) * per_min, 3),
            }
        return out


class ArmHistory:
    """Campaign arms' cumulative conversion rate sampled every `every_s`, last `keep` samples. Pure.

    The stats endpoint gives totals only; this keeps the curve since the process started, so
    the dashboard can draw conversion over time per variant with bounded memory.
    """

    def __init__(self, every_s: float = 10.0, keep: int = 360) -> None:
        self.every_s = every_s
        self.keep = keep
        self.points: dict[str, deque[dict[str, Any]]] = {}

    def observe(self, now: float, campaign: str, arms: Sequence[Mapping[str, Any]]) -> bool:
        """Record a sample when the last one is `every_s` old; True when one was recorded."""
        pts = self.points.setdefault(campaign, deque(maxlen=self.keep))
        if pts and now - pts[-1]["t"] / 1000 < self.every_s:
            return False
        pts.append({"t": int(now * 1000),
                    "arms": {str(a["arm"]): {"conversion_rate": a.get("conversion_rate"),
                                             "conversions": int(a.get("conversions") or 0),
                                             "impressions": int(a.get("impressions") or 0)}
                             for a in arms}})
        return True

    def series(self, campaign: str, last: int | None = None) -> list[dict[str, Any]]:
        pts = list(self.points.get(campaign, ()))
        return pts[-last:] if last else pts

    def forget_except(self, campaigns: set[str]) -> None:
        for cid in [c for c in self.points if c not in campaigns]:
            del self.points[cid]
