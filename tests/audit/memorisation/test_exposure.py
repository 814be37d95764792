"""Canary exposure from ranks and its skew-normal extrapolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from audit.memorisation.exposure import (SkewNormalFit, canary_placement, canary_rank, exposure, exposure_chance,
                                         exposure_from_rank, extrapolated_exposure, extrapolation_cap, fit_check,
                                         saturated)


def test_a_canary_that_out_ranks_every_reference_gets_log2_of_the_reference_count():
    refs = np.linspace(3.0, 6.0, 1000)
    assert exposure(2.5, refs) == pytest.approx(math.log2(1000))


def test_a_canary_at_the_median_gets_about_one_bit():
    refs = np.random.default_rng(0).normal(5.0, 1.0, size=2001)
    assert exposure(float(np.median(refs)), refs) == pytest.approx(1.0, abs=0.01)


def test_a_canary_worse_than_every_reference_gets_about_zero():
    refs = np.linspace(3.0, 6.0, 100)
    assert exposure(10.0, refs) == pytest.approx(-math.log2(1 + 1 / 100))
    assert exposure(float("nan"), refs) == pytest.approx(-math.log2(1 + 1 / 100))


def test_tied_references_are_placed_in_random_order():
    assert canary_placement(4.0, [4.0, 4.0, 5.0]) == (1, 2)
    assert canary_rank(4.0, [4.0, 4.0, 5.0]) == 2.0  # expected rank 1 + less + ties / 2
    # exposure = mean of log2 3 - log2 r over r = 1, 2, 3
    assert exposure(4.0, [4.0, 4.0, 5.0]) == pytest.approx(np.mean([math.log2(3) - math.log2(r) for r in (1, 2, 3)]))
    with pytest.raises(ValueError):
        exposure_from_rank(0, 10)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_a_model_that_cannot_tell_sequences_apart_exposes_exactly_the_chance_level(n):
    refs = np.full(n, 5.0)
    expected = float(np.mean([math.log2(n) - math.log2(r) for r in range(1, n + 2)]))
    assert exposure(5.0, refs) == pytest.approx(expected) == pytest.approx(exposure_chance(n))
    assert not saturated([5.0], refs)[0], "a canary tied with every reference is not saturated"
    assert exposure_chance(100_000) == pytest.approx(1 / math.log(2), abs=1e-3)


def test_skew_normal_extrapolation_recovers_the_tail_of_the_reference_distribution():
    a, loc, scale = 3.0, 4.0, 1.5
    refs = stats.skewnorm.rvs(a, loc=loc, scale=scale, size=4000, random_state=np.random.default_rng(1))
    canary = 3.8  # deep in the left tail: P[X <= 3.8] is about 0.2%
    true_bits = -stats.skewnorm.logcdf(canary, a, loc=loc, scale=scale) / math.log(2)
    fit = SkewNormalFit.fit(refs)
    assert fit.exposure(canary) == pytest.approx(true_bits, rel=0.15)
    # with only 64 references the rank tops out at 6 bits; the fit goes beyond
    few = refs[:64]
    assert exposure(2.0, few) == pytest.approx(6.0)
    assert extrapolated_exposure([2.0], few)[0] > 6.0


def test_skew_normal_fit_refuses_degenerate_references():
    with pytest.raises(ValueError):
        SkewNormalFit.fit([1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        SkewNormalFit.fit([1.0, 2.0])


def test_extrapolation_beyond_floating_point_range_gives_a_finite_lower_bound():
    refs = np.random.default_rng(2).normal(5.0, 0.1, size=500)
    fit = SkewNormalFit.fit(refs)
    far = fit.exposure(-1000.0)
    assert math.isfinite(far) and far > 1000
    assert far >= fit.exposure(3.0) > fit.exposure(4.5)


def test_the_fit_check_accepts_skew_normal_references_and_rejects_two_humps():
    """Issue 14: extrapolation needs a goodness-of-fit test; a bimodal reference distribution
    (no skew-normal) is rejected, a skew-normal sample is not."""
    rng = np.random.default_rng(0)
    good = stats.skewnorm.rvs(4.0, loc=5.0, scale=0.8, size=2000, random_state=rng)
    assert not fit_check(SkewNormalFit.fit(good), good).rejected
    humps = np.concatenate([rng.normal(3.0, 0.2, 1000), rng.normal(6.0, 0.2, 1000)])
    check = fit_check(SkewNormalFit.fit(humps), humps)
    assert check.rejected and check.p_value < 0.05 and check.to_json()["rejected"] is True


def test_the_extrapolation_cap_is_twice_the_rank_ceiling():
    assert extrapolation_cap(10_000) == pytest.approx(2 * math.log2(10_000))
    assert extrapolation_cap(100) == pytest.approx(2 * exposure_from_rank(1, 100))
