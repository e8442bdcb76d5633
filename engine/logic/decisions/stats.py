"""Campaign statistics from per-arm counters, safe to look at any time.

Lift intervals are asymptotic confidence sequences (Waudby-Smith, Arbour, Sinha, Kennedy,
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", 2021: the
normal-mixture boundary) on the difference in conversion rate (conversions / assigned visitors,
intent to treat). They hold simultaneously over all sample sizes, so checking the dashboard
every minute does not inflate false positives. A sample-ratio-mismatch check compares assigned
visitors with the configured weights (chi-square goodness of fit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from engine.logic.decisions.assign import CONTROL

ALPHA = 0.05
SRM_THRESHOLD = 0.001
TUNE_N = 2000  # total visitors (variant + baseline) where the interval is tightest
MIN_ASSIGNED = 100  # per arm, before any verdict
MIN_CONVERSIONS = 10  # in the pair, before any verdict


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Counters the stream keeps per (campaign, arm)."""

    assigned: int
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0


@dataclass(frozen=True, slots=True)
class Comparison:
    """One arm against the baseline: difference and relative lift with their intervals."""

    diff: float
    diff_low: float
    diff_high: float
    lift: float | None
    lift_low: float | None
    lift_high: float | None
    p_value: float  # anytime-valid
    enough_data: bool


@dataclass(frozen=True, slots=True)
class ArmReport:
    arm: str
    counts: ArmCounts
    ctr: float | None
    conversion_rate: float | None
    comparison: Comparison | None
    verdict: str


@dataclass(frozen=True, slots=True)
class CampaignReport:
    baseline: str
    arms: tuple[ArmReport, ...]
    srm_p_value: float
    srm_ok: bool
    verdict: str


# --- chi-square -------------------------------------------------------------------------------


def _upper_gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # power series for P(a, x)
        term = total = 1.0 / a
        k = a
        for _ in range(10_000):
            k += 1
            term *= x / k
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # continued fraction for Q(a, x), modified Lentz
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution."""
    if df <= 0:
        raise ValueError("df must be positive")
    return _upper_gamma_q(df / 2.0, x / 2.0)


def srm_p_value(assigned: Mapping[str, int], expected: Mapping[str, float]) -> float:
    """Chi-square goodness-of-fit p-value of assigned counts against configured probabilities."""
    arms = [a for a in expected if expected[a] > 0]
    total = sum(assigned.get(a, 0) for a in arms)
    if len(arms) < 2 or total == 0:
        return 1.0
    weight = sum(expected[a] for a in arms)
    stat = 0.0
    for a in arms:
        e = total * expected[a] / weight
        stat += (assigned.get(a, 0) - e) ** 2 / e
    return chi2_sf(stat, len(arms) - 1)


# --- confidence sequence ------------------------------------------------------------------------


def mixture_rho2(alpha: float = ALPHA, tune_n: int = TUNE_N) -> float:
    """Mixing variance that makes the boundary tightest at ``tune_n`` observations."""
    la = -2 * math.log(alpha)
    return (la + math.log(la + 1)) / tune_n


def cs_radius(n: int, sigma: float, alpha: float = ALPHA, rho2: float | None = None) -> float:
    """Half-width of the normal-mixture confidence sequence for a mean after ``n`` samples."""
    if n <= 0:
        return math.inf
    r2 = mixture_rho2(alpha) if rho2 is None else rho2
    v = n * r2 + 1
    return sigma * math.sqrt(2 * v / (n * n * r2) * math.log(math.sqrt(v) / alpha))


def anytime_p_value(n: int, estimate: float, sigma: float, rho2: float) -> float:
    """Smallest alpha whose confidence sequence (same ``rho2``) excludes zero."""
    if n <= 0 or sigma <= 0:
        return 1.0
    v = n * rho2 + 1
    exponent = estimate**2 * n * n * rho2 / (2 * sigma**2 * v)
    return min(1.0, math.sqrt(v) * math.exp(-min(exponent, 700.0)))


def compare(
    arm: ArmCounts,
    base: ArmCounts,
    alpha: float = ALPHA,
    tune_n: int = TUNE_N,
) -> Comparison:
    """Difference in conversion rate (arm - base) with an anytime-valid interval."""
    n_a, n_b = arm.assigned, base.assigned
    p_a = arm.conversions / n_a if n_a else 0.0
    p_b = base.conversions / n_b if n_b else 0.0
    diff = p_a - p_b
    enough = min(n_a, n_b) >= MIN_ASSIGNED and arm.conversions + base.conversions >= MIN_CONVERSIONS
    if not (n_a and n_b):
        return Comparison(diff, -1.0, 1.0, None, None, None, 1.0, False)
    n = n_a + n_b
    # Laplace-smoothed rates keep the variance positive with few conversions.
    s_a = (arm.conversions + 1) / (n_a + 2)
    s_b = (base.conversions + 1) / (n_b + 2)
    sigma = math.sqrt(n * (s_a * (1 - s_a) / n_a + s_b * (1 - s_b) / n_b))
    rho2 = mixture_rho2(ALPHA, tune_n)  # fixed tuning, so p <= alpha iff 0 is outside the CS
    radius = cs_radius(n, sigma, alpha, rho2)
    low, high = max(-1.0, diff - radius), min(1.0, diff + radius)
    p_value = anytime_p_value(n, diff, sigma, rho2)
    lift = lift_low = lift_high = None
    if p_b > 0:
        lift, lift_low, lift_high = diff / p_b, low / p_b, high / p_b
    return Comparison(diff, low, high, lift, lift_low, lift_high, p_value, enough)


# --- report -------------------------------------------------------------------------------------


def _pct(x: float, signed: bool = False) -> str:
    text = f"{x * 100:+.0f}" if signed else f"{x * 100:.0f}"
    return text.replace("-", "\u2212") + " %"


def _sure(p_value: float) -> str:
    sure = min(99.9, math.floor((1 - p_value) * 1000) / 10)
    return f"{sure:g} %"


def _arm_verdict(name: str, cmp: Comparison, alpha: float) -> str:
    arm = name if name == CONTROL else f"variant {name}"
    if not cmp.enough_data:
        return f"{arm}: not enough data yet"
    change = f"{cmp.diff * 100:+.2f} points" if cmp.lift is None else _pct(cmp.lift, signed=True)
    if cmp.p_value <= alpha:
        better = "better" if cmp.diff > 0 else "worse"
        return f"{arm}: {change} conversion, {_sure(cmp.p_value)} sure it is {better}"
    return f"{arm}: {change} conversion so far, no clear difference yet"


def report(
    counts: Mapping[str, ArmCounts],
    probabilities: Mapping[str, float],
    alpha: float = ALPHA,
    tune_n: int = TUNE_N,
    srm_threshold: float = SRM_THRESHOLD,
) -> CampaignReport:
    """Per-arm rates, lift against the baseline (control, else the first arm) and a verdict.

    ``probabilities`` is ``Campaign.arm_probabilities()``; arm order follows it.
    """
    arms = list(probabilities)
    baseline = CONTROL if CONTROL in probabilities else arms[0]
    zero = ArmCounts(0)
    base = counts.get(baseline, zero)
    srm_p = srm_p_value({a: counts.get(a, zero).assigned for a in arms}, probabilities)
    srm_ok = srm_p >= srm_threshold
    out: list[ArmReport] = []
    for name in [baseline] + [a for a in arms if a != baseline]:
        c = counts.get(name, zero)
        ctr = c.clicks / c.impressions if c.impressions else None
        rate = c.conversions / c.assigned if c.assigned else None
        if name == baseline:
            out.append(ArmReport(name, c, ctr, rate, None, f"{name}: baseline"))
            continue
        cmp = compare(c, base, alpha, tune_n)
        out.append(ArmReport(name, c, ctr, rate, cmp, _arm_verdict(name, cmp, alpha)))
    verdict = _campaign_verdict(out, srm_ok, srm_p, alpha)
    return CampaignReport(baseline, tuple(out), srm_p, srm_ok, verdict)


def _campaign_verdict(arms: list[ArmReport], srm_ok: bool, srm_p: float, alpha: float) -> str:
    if not srm_ok:
        return (
            f"sample ratio mismatch (p = {srm_p:.2g}): visitors are not split as configured, "
            "so these results cannot be trusted"
        )
    compared = [a for a in arms if a.comparison is not None]
    if not compared:
        return "no experiment: a single arm"
    if not any(a.comparison.enough_data for a in compared if a.comparison):
        return "not enough data yet"
    winners = [
        a for a in compared if a.comparison and a.comparison.enough_data
        and a.comparison.p_value <= alpha and a.comparison.diff > 0
    ]  # fmt: skip
    if winners:
        best = max(winners, key=lambda a: a.comparison.diff if a.comparison else 0.0)
        return best.verdict
    return "; ".join(a.verdict for a in compared)
