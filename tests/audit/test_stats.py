"""Intervals: Wilson for proportions (never zero-width at 0 or 1), bootstrap for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats import mean_metric, proportion_metric, ratio_ci, wilson_ci


@pytest.mark.parametrize("k, n, lo, hi", [
    # reference values of the Wilson score interval (z = 1.959964), e.g. Newcombe (1998) table I
    (7, 20, 0.1812, 0.5671), (0, 200, 0.0, 0.0188), (200, 200, 0.9812, 1.0), (1, 10, 0.0179, 0.4042),
])
def test_wilson_interval_matches_reference_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_ci(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def test_all_zero_rate_has_a_positive_width_interval() -> None:
    """The old bootstrap gave [0, 0] for 100 users without a hit."""
    m = mean_metric(np.zeros(100))
    assert m.value == 0.0 and m.ci[0] == 0.0 and m.ci[1] > 0.03
    m1 = mean_metric(np.ones(100))
    assert m1.ci[1] == 1.0 and m1.ci[0] < 0.97
    assert proportion_metric([0, 1, 1, 0]).ci == pytest.approx(wilson_ci(2, 4))


def test_pooled_ratio_at_zero_is_not_a_point() -> None:
    num, den = np.zeros(50), np.full(50, 10.0)
    lo, hi = ratio_ci(num, den)
    assert lo == 0.0 and hi == pytest.approx(wilson_ci(0, 50)[1])
    lo, hi = ratio_ci(np.array([1.0, 0, 2, 0, 3]), np.array([10.0, 10, 10, 10, 10]))
    assert lo < 0.12 < hi


def test_non_binary_means_still_bootstrap() -> None:
    m = mean_metric([0.2, 0.4, 0.6, 0.8])
    assert 0.2 <= m.ci[0] < 0.5 < m.ci[1] <= 0.8
