"""Forward-decayed trending counts that many writers can share without a rescale race.

Forward decay (Cormode et al., ICDE 2009) adds `w·e^{λ(t−L)}` for a landmark `L`; the current
score is `stored·e^{−λ(now−L)}`. A single shared landmark would need a rescale of every stored
value once `λ(t−L)` grows large, and two workers rescaling at once would race. Instead time is
cut into fixed *epochs* of `period` = `period_half_lives` half-lives; each epoch has its own
landmark (its start) and its own keys, so the exponent stays below `λ·period` (≈ 11 for 16
half-lives) and nothing is ever rescaled. A reader merges the current and the previous epoch,
each scaled to `now`; anything older has decayed by at least 2^-16 and is dropped (its keys
expire).

Pure: the time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

#: The half-lives the stream keeps, by label (the dashboard and the recipes read them).
HALF_LIVES: Mapping[str, float] = {"1h": 3600.0, "1d": 86400.0}
#: The half-life label whose per-category item tables the recipes read.
RECO_HALF_LIFE = "1d"
DIMENSIONS = ("item", "category", "brand")


@dataclass(frozen=True)
class EpochDecay:
    """The epoch scheme of one half-life."""

    half_life_s: float
    period_half_lives: int = 16

    def __post_init__(self) -> None:
        if self.half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        if not 1 <= self.period_half_lives <= 40:
            raise ValueError("period_half_lives must be between 1 and 40")

    @cached_property
    def rate(self) -> float:
        """λ per millisecond."""
        return math.log(2) / (self.half_life_s * 1000.0)

    @cached_property
    def period_ms(self) -> int:
        return int(self.half_life_s * 1000.0 * self.period_half_lives)

    @cached_property
    def ttl_ms(self) -> int:
        """How long an epoch's keys must live: until the epoch after next has begun."""
        return 2 * self.period_ms + 60_000

    def epoch(self, ts_ms: int) -> int:
        return int(ts_ms) // self.period_ms

    def landmark_ms(self, epoch: int) -> int:
        return epoch * self.period_ms

    def increment(self, weight: float, ts_ms: int) -> tuple[int, float]:
        """(epoch, amount to add) for an event of `weight` at `ts_ms` (per event and
        half-life on the stream: the scheme's constants are computed once)."""
        period = self.period_ms
        e = int(ts_ms) // period
        return e, weight * math.exp(self.rate * (ts_ms - e * period))

    def read_factors(self, now_ms: int) -> list[tuple[int, float]]:
        """[(epoch, factor)] for the current and the previous epoch: current score =
        stored x factor."""
        e = self.epoch(now_ms)
        return [(x, math.exp(-self.rate * (now_ms - self.landmark_ms(x)))) for x in (e, e - 1)]


def merge(tables: Iterable[tuple[Sequence[tuple[str, float]], float]], k: int
          ) -> list[tuple[str, float]]:
    """Top `k` of the sum over epochs of stored x factor, best first (ties by key)."""
    total: dict[str, float] = {}
    for rows, factor in tables:
        for key, stored in rows:
            total[key] = total.get(key, 0.0) + float(stored) * factor
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def decay(label: str) -> EpochDecay:
    """The scheme of a half-life label (`1h`, `1d`); KeyError if unknown."""
    return EpochDecay(HALF_LIVES[label])
