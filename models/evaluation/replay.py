"""The replay method (Li, Chu, Langford and Wang, WSDM 2011).

Walk a log collected by a *uniformly random* logging policy in order; at each row let the
candidate policy choose among the same actions; when its choice equals the logged action, the
row counts (its reward is the policy's reward) and the policy learns from it; otherwise the row
is skipped as if it never happened. The mean reward over matched rows is an unbiased estimate
of the policy's value as it would have learnt online; about 1/K of the rows match (K actions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Mean reward over matched rows, how many matched, of how many."""

    value: float
    matched: int
    rows: int
    reward: float


def replay(
    rows: Iterable[Row],
    choose: Callable[[int, Row], Any],
    logged: Callable[[Row], Any],
    reward: Callable[[Row], float],
    learn: Callable[[Row], None],
) -> ReplayResult:
    """Replay `rows`: `choose(i, row)` is the policy's action, `logged(row)` the logged one.

    On a match the row's `reward(row)` counts and `learn(row)` updates the policy.
    """
    matched = 0
    total = 0.0
    n = 0
    for i, row in enumerate(rows):
        n += 1
        if choose(i, row) == logged(row):
            matched += 1
            total += float(reward(row))
            learn(row)
    return ReplayResult(total / matched if matched else 0.0, matched, n, total)
