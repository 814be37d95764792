"""SNSR/SNSV over users x values matrices: paired-bootstrap CIs, the permutation p-value and group gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.fairness.sensitivity import group_gap, mean_with_ci, sensitivity
from audit.stats import wilson_ci


def test_constant_rows_give_zero_sensitivity_and_p_one() -> None:
    m = np.tile(np.linspace(0.2, 0.9, 30)[:, None], (1, 3))
    res = sensitivity(m, seed=0, n_resamples=200, permutations=200)
    assert res.snsr.value == 0.0 and res.snsr.ci == (0.0, 0.0) and res.p_value == 1.0


def test_a_consistent_value_effect_is_significant() -> None:
    rng = np.random.default_rng(0)
    m = np.column_stack([rng.uniform(0.7, 1.0, 40), rng.uniform(0.3, 0.6, 40)])
    res = sensitivity(m, seed=0, n_resamples=300, permutations=300)
    assert res.snsr.ci[0] > 0.2 and res.p_value < 0.01
    assert res.snsv.value == pytest.approx(res.snsr.value / 2)


def test_exchangeable_noise_is_not_significant() -> None:
    m = np.random.default_rng(5).uniform(size=(60, 4))
    assert sensitivity(m, seed=0, n_resamples=200, permutations=500).p_value > 0.05


def test_nan_cells_are_ignored_and_empty_rows_not_counted() -> None:
    m = np.array([[1.0, 0.5], [np.nan, np.nan], [1.0, np.nan], [1.0, 0.5]])
    res = sensitivity(m, seed=0, n_resamples=100, permutations=0)
    assert res.snsr.value == pytest.approx(0.5) and res.snsr.n == 3 and math.isnan(res.p_value)


def test_group_gap_and_signed_difference() -> None:
    v = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    g = np.array(["F", "F", "M", "M", "F", "M"])
    assert group_gap(v, g, seed=0, n_resamples=100).value == 1.0
    assert group_gap(v, g, seed=0, n_resamples=100, signed=True).value == 1.0
    assert group_gap(1 - v, g, seed=0, n_resamples=100, signed=True).value == -1.0
    assert math.isnan(group_gap(v, np.array(["F"] * 6), seed=0, n_resamples=100).value)


def test_mean_with_ci_drops_nan() -> None:
    m = mean_with_ci(np.array([1.0, 0.0, np.nan, 1.0]), seed=0, n_resamples=200)
    assert m.value == pytest.approx(2 / 3) and m.n == 3 and m.ci[0] <= m.value <= m.ci[1]


def test_a_group_hit_rate_of_zero_gets_the_wilson_interval_not_a_zero_width_one() -> None:
    """hr_group_S=V / hr_C are shares of 0/1 hits: 0 of 107 users is [0, 0.035], never [0, 0]."""
    zero = mean_with_ci(np.zeros(107), seed=0, n_resamples=1000)
    assert zero.value == 0.0 and zero.ci[0] == 0.0 and zero.ci[1] == pytest.approx(wilson_ci(0, 107)[1])
    assert zero.ci[1] > 0.03
    some = mean_with_ci(np.array([1.0] * 3 + [0.0] * 297), seed=0, n_resamples=1000)
    assert some.ci == pytest.approx(wilson_ci(3, 300)) and some.ci[0] > 0.0
    graded = mean_with_ci(np.linspace(0.0, 1.0, 50), seed=0, n_resamples=1000)  # not 0/1: the bootstrap
    assert graded.ci != pytest.approx(wilson_ci(25, 50))
