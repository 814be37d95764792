"""audit.paired: paired differences of two recommenders on the same units, checked against
independent computations (DeLong's paired AUROC test, the Wald interval at large n, scipy's
t interval) and by coverage over seeded repeats of two identical models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from audit.paired import (adjust_pvalues, better_side, mde, newcombe_ci, paired_auroc, paired_binary, paired_mean,
                          paired_units, tpr_statistic)


# -- DeLong's paired test (Sun & Xu 2014 fast DeLong), an independent reference ------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong_paired(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(AUROC_b - AUROC_a, its DeLong standard error, two-sided p)."""
    y = labels.astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    aucs, v01, v10 = [], [], []
    for s in (scores_a, scores_b):
        pos, neg = s[y], s[~y]
        tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v01.append((tz[:m] - tx) / n)
        v10.append(1.0 - (tz[m:] - ty) / m)
    sx, sy = np.cov(np.vstack(v01)), np.cov(np.vstack(v10))
    cov = sx / m + sy / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    d = aucs[1] - aucs[0]
    se = math.sqrt(var)
    return d, se, float(2 * stats.norm.sf(abs(d) / se))


def planted_scores(seed: int, shift_a: float, shift_b: float, n: int = 150, rho: float = 0.6,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members (label 1) score higher by ``shift``; the two models' noise correlates by ``rho``."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n), np.zeros(n)].astype(bool)
    common, own_a, own_b = rng.normal(size=(3, 2 * n))
    a = shift_a * y + math.sqrt(rho) * common + math.sqrt(1 - rho) * own_a
    b = shift_b * y + math.sqrt(rho) * common + math.sqrt(1 - rho) * own_b
    return a, b, y


@pytest.mark.parametrize("seed, shift_a, shift_b", [(0, 0.5, 0.9), (1, 0.6, 0.6), (2, 0.2, 0.5)])
def test_paired_auroc_bootstrap_agrees_with_delong(seed: int, shift_a: float, shift_b: float) -> None:
    a, b, y = planted_scores(seed, shift_a, shift_b)
    got = paired_auroc(a, b, y, seed=seed, n_resamples=2000)
    d, se, p = delong_paired(a, b, y)
    assert got.value == pytest.approx(d, abs=1e-12), "same point estimate: both AUROCs on the same users"
    assert got.se == pytest.approx(se, rel=0.12), "bootstrap SE within 12% of DeLong's"
    assert abs(stats.norm.isf(got.p_value / 2) - stats.norm.isf(p / 2)) < 0.35, "z statistics agree"
    lo, hi = got.ci
    assert lo == pytest.approx(d - 1.96 * se, abs=0.3 * se) and hi == pytest.approx(d + 1.96 * se, abs=0.3 * se)
    assert got.n == len(y) and got.mde == pytest.approx(2.8016 * got.se, rel=1e-3)


def test_paired_auroc_finds_a_planted_gap_that_separate_intervals_miss() -> None:
    from audit.memorisation.roc import attack_summary

    a, b, y = planted_scores(3, 0.5, 0.8, n=120, rho=0.8)
    paired = paired_auroc(a, b, y, seed=0)
    sep_a, sep_b = attack_summary(a, y, seed=0).auroc.ci, attack_summary(b, y, seed=0).auroc.ci
    assert paired.ci[0] > 0, f"paired CI {paired.ci} excludes 0"
    assert sep_a[1] > sep_b[0], f"separate CIs {sep_a} and {sep_b} overlap"


def test_paired_tpr_statistic_of_identical_models_is_zero() -> None:
    a, _, y = planted_scores(4, 1.0, 1.0, n=600)
    got = paired_auroc(a, a.copy(), y, statistic=tpr_statistic(0.05), method="paired-bootstrap-tpr")
    assert got.value == 0 and got.ci == (0.0, 0.0) and got.p_value == 1.0


# -- paired shares of 0/1 outcomes ---------------------------------------------------------------
def test_newcombe_interval_matches_wald_at_large_n() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(4000) < 0.40).astype(float)
    b = a.copy()
    flip = rng.random(4000)
    b[(a == 0) & (flip < 0.10)] = 1
    b[(a == 1) & (flip < 0.05)] = 0
    d = b - a
    half = 1.96 * d.std(ddof=0) / math.sqrt(d.size)
    lo, hi = newcombe_ci(a, b)
    assert lo == pytest.approx(d.mean() - half, abs=0.002) and hi == pytest.approx(d.mean() + half, abs=0.002)


def test_newcombe_interval_stays_in_range_and_covers_a_one_sided_table() -> None:
    a = np.zeros(30)
    b = np.r_[np.ones(3), np.zeros(27)]
    lo, hi = newcombe_ci(a, b)
    assert -1 <= lo < 0.1 < hi <= 1 and lo > -0.1


def test_mcnemar_exact_p_is_the_binomial_test_of_discordant_units() -> None:
    a = np.r_[np.ones(50), np.zeros(150)]
    b = a.copy()
    b[50:62] = 1  # 12 users gained a hit
    b[0:2] = 0  # 2 lost it
    got = paired_binary(a, b)
    assert got.value == pytest.approx(10 / 200)
    assert got.p_value == pytest.approx(stats.binomtest(2, 14, 0.5).pvalue)
    assert got.method == "newcombe-mcnemar" and got.n == 200


def test_hr_gain_of_005_is_found_paired_while_the_separate_intervals_overlap() -> None:
    from audit.stats import wilson_ci

    n = 200
    a = np.r_[np.ones(100), np.zeros(100)]
    b = a.copy()
    b[100:110] = 1  # the variant finds the held-out item for 10 more users of 200: +0.05
    got = paired_units(a, b)
    assert got.value == pytest.approx(0.05) and got.ci[0] > 0
    sep_a, sep_b = wilson_ci(a.sum(), n), wilson_ci(b.sum(), n)
    assert sep_a[1] > sep_b[0], "the two separate Wilson intervals overlap"


# -- means of non-binary per-unit values --------------------------------------------------------------
def test_paired_mean_matches_the_t_interval_and_ttest() -> None:
    rng = np.random.default_rng(5)
    a = rng.random(200)
    b = a + 0.03 + rng.normal(0, 0.1, 200)
    got = paired_mean(a, b, seed=0, n_resamples=2000)
    d = b - a
    t = stats.ttest_rel(b, a)
    lo, hi = t.confidence_interval()
    assert got.p_value == pytest.approx(t.pvalue)
    assert got.ci[0] == pytest.approx(lo, abs=0.004) and got.ci[1] == pytest.approx(hi, abs=0.004)
    assert got.mde == pytest.approx(2.8016 * d.std(ddof=1) / math.sqrt(200), rel=1e-3)


def test_units_missing_on_one_side_are_left_out() -> None:
    a = np.array([0.1, 0.2, np.nan, 0.4])
    b = np.array([0.2, np.nan, 0.5, 0.6])
    assert paired_mean(a, b).n == 2


def test_mde_is_2_8_standard_errors() -> None:
    assert mde(0.01) == pytest.approx(0.028016, rel=1e-4) and mde(None) is None


# -- multiple testing and direction ---------------------------------------------------------------------
def test_holm_and_bh_adjustments_by_hand() -> None:
    holm, bh = adjust_pvalues([0.01, None, 0.04, 0.03])
    assert holm[1] is None and bh[1] is None
    assert holm[0] == pytest.approx(0.03) and holm[3] == pytest.approx(0.06) and holm[2] == pytest.approx(0.06)
    assert bh[0] == pytest.approx(0.03) and bh[3] == pytest.approx(0.04) and bh[2] == pytest.approx(0.04)


@pytest.mark.parametrize("direction, ci, side", [
    ("higher", (0.01, 0.05), "b"), ("higher", (-0.05, -0.01), "a"), ("lower", (0.01, 0.05), "a"),
    ("lower", (-0.05, -0.01), "b"), ("higher", (-0.01, 0.05), None), (None, (0.01, 0.05), None)])
def test_better_side_follows_the_declared_direction_only_when_the_ci_excludes_zero(
        direction: str | None, ci: tuple[float, float], side: str | None) -> None:
    assert better_side(direction, ci) == side


# -- coverage of two identical (stochastic) models -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binary", "mean", "auroc"])
def test_paired_ci_of_two_identical_models_covers_zero_95_percent(kind: str) -> None:
    repeats, covered = 400, 0
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        if kind == "binary":  # each user's hit probability is the same for both models
            p = rng.uniform(0.2, 0.8, 200)
            a, b = (rng.random(200) < p).astype(float), (rng.random(200) < p).astype(float)
            ci = paired_binary(a, b).ci
        elif kind == "mean":
            base = rng.random(200)
            a, b = base + rng.normal(0, 0.1, 200), base + rng.normal(0, 0.1, 200)
            ci = paired_mean(a, b, seed=r, n_resamples=500).ci
        else:
            a, b, y = planted_scores(r, 0.7, 0.7, n=80)
            ci = paired_auroc(a, b, y, seed=r, n_resamples=500).ci
        covered += ci[0] <= 0 <= ci[1]
    share = covered / repeats
    assert 0.92 <= share <= 0.98, f"coverage {share:.3f} over {repeats} seeded repeats"
