"""Stats: chi-square / SRM against scipy, confidence sequences valid under repeated peeking."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from engine.logic.decisions.stats import (
    ArmCounts,
    chi2_sf,
    compare,
    cs_radius,
    mixture_rho2,
    report,
    srm_p_value,
)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 30])
@pytest.mark.parametrize("x", [0.0, 0.01, 0.5, 1.0, 3.84, 7.0, 20.0, 60.0, 150.0])
def test_chi2_sf_matches_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(sps.chi2.sf(x, df), rel=1e-9, abs=1e-300)


def test_srm_matches_scipy_chisquare():
    observed = {"control": 1040, "a": 4420, "b": 4540}
    probs = {"a": 0.45, "b": 0.45, "control": 0.1}
    expected = [sum(observed.values()) * probs[k] for k in ("a", "b", "control")]
    ref = sps.chisquare([observed[k] for k in ("a", "b", "control")], expected).pvalue
    assert srm_p_value(observed, probs) == pytest.approx(ref, rel=1e-9)
    assert srm_p_value({}, probs) == 1.0


def test_cs_is_wider_than_fixed_sample_ci_and_shrinks():
    z = sps.norm.ppf(0.975)
    rho2 = mixture_rho2(0.05, 2000)
    widths = [cs_radius(n, 1.0, 0.05, rho2) for n in (100, 1000, 2000, 10_000, 100_000)]
    for n, w in zip((100, 1000, 2000, 10_000, 100_000), widths, strict=True):
        fixed = z / math.sqrt(n)
        assert fixed < w < 4 * fixed
    assert widths == sorted(widths, reverse=True)
    # at the tuning point the price of peeking is modest
    assert cs_radius(2000, 1.0, 0.05, rho2) / (z / math.sqrt(2000)) < 1.8


def test_known_comparison():
    base = ArmCounts(assigned=10_000, impressions=0, conversions=500)
    arm = ArmCounts(assigned=10_000, impressions=9_000, clicks=450, conversions=650)
    cmp = compare(arm, base)
    assert cmp.diff == pytest.approx(0.015)
    assert cmp.lift == pytest.approx(0.3)
    # scipy's fixed-sample z-test is far more confident; the anytime-valid one pays for peeking
    fixed_p = 2 * sps.norm.sf(0.015 / math.sqrt(0.05 * 0.95 / 1e4 + 0.065 * 0.935 / 1e4))
    assert fixed_p < 1e-5 < cmp.p_value < 0.05
    assert (
        cmp.diff_low > 0 and cmp.lift_low > 0 and cmp.lift_low == pytest.approx(cmp.diff_low / 0.05)
    )
    # interval and p-value agree: the CS excludes zero exactly when p <= alpha
    assert compare(arm, base, alpha=cmp.p_value * 1.001).diff_low > 0
    assert compare(arm, base, alpha=cmp.p_value * 0.999).diff_low < 0


def test_report_verdicts():
    probs = {"a": 0.45, "b": 0.45, "control": 0.1}
    counts = {
        "control": ArmCounts(2_000, 0, 0, 100),
        "a": ArmCounts(9_000, 8_000, 400, 455),
        "b": ArmCounts(9_000, 8_000, 560, 720),
    }
    rep = report(counts, probs)
    assert rep.srm_ok and rep.baseline == "control"
    assert [a.arm for a in rep.arms] == ["control", "a", "b"]
    b = rep.arms[2]
    assert b.ctr == pytest.approx(0.07) and b.conversion_rate == pytest.approx(0.08)
    assert rep.verdict.startswith("variant b: +60 % conversion,")
    assert rep.verdict.endswith("sure it is better")
    assert "no clear difference yet" in rep.arms[1].verdict

    few = {k: ArmCounts(30, 20, 1, 1) for k in ("control", "a", "b")}
    few["control"] = ArmCounts(7, 0, 0, 0)
    assert report(few, probs).verdict == "not enough data yet"

    skewed = dict(counts, control=ArmCounts(4_000, 0, 0, 200))
    rep = report(skewed, probs)
    assert not rep.srm_ok and rep.verdict.startswith("sample ratio mismatch")

    worse = {"control": ArmCounts(5_000, 0, 0, 500), "a": ArmCounts(5_000, 5_000, 100, 350)}
    rep = report(worse, {"a": 0.5, "control": 0.5})
    assert "sure it is worse" in rep.arms[1].verdict and "\u221230 %" in rep.arms[1].verdict
    assert report({"a": ArmCounts(10)}, {"a": 1.0}).verdict == "no experiment: a single arm"


def _simulate(rng, n, p_t, p_c, share=0.5):
    treat = rng.random(n) < share
    conv = np.where(treat, rng.random(n) < p_t, rng.random(n) < p_c)
    return (
        np.cumsum(treat), np.cumsum(~treat), np.cumsum(conv & treat), np.cumsum(conv & ~treat),
    )  # fmt: skip


def test_peeking_does_not_inflate_false_positives():
    rng = np.random.default_rng(20250305)
    sims, n, step = 300, 20_000, 250
    fp_cs = fp_fixed = 0
    z = sps.norm.ppf(0.975)
    for _ in range(sims):
        nt, nc, xt, xc = _simulate(rng, n, 0.05, 0.05)
        hit_cs = hit_fixed = False
        for k in range(step - 1, n, step):
            a, b = int(nt[k]), int(nc[k])
            cmp = compare(
                ArmCounts(a, conversions=int(xt[k])), ArmCounts(b, conversions=int(xc[k]))
            )
            hit_cs |= cmp.enough_data and cmp.p_value <= 0.05
            pooled = (xt[k] + xc[k]) / (k + 1)
            se = math.sqrt(pooled * (1 - pooled) * (1 / a + 1 / b)) if 0 < pooled < 1 else 0
            hit_fixed |= bool(se) and abs(xt[k] / a - xc[k] / b) > z * se
        fp_cs += hit_cs
        fp_fixed += hit_fixed
    assert fp_cs / sims <= 0.06
    assert fp_fixed / sims >= 0.15  # the naive test peeked 80 times is badly inflated


def test_coverage_and_power_under_a_real_effect():
    rng = np.random.default_rng(7)
    sims, n, step = 100, 20_000, 500
    covered = detected = 0
    for _ in range(sims):
        nt, nc, xt, xc = _simulate(rng, n, 0.08, 0.05)
        ok = True
        for k in range(step - 1, n, step):
            cmp = compare(
                ArmCounts(int(nt[k]), conversions=int(xt[k])),
                ArmCounts(int(nc[k]), conversions=int(xc[k])),
            )
            ok &= cmp.diff_low <= 0.03 <= cmp.diff_high
        covered += ok
        detected += cmp.p_value <= 0.05
    assert covered / sims >= 0.93
    assert detected / sims >= 0.9
