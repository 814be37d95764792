"""Confidence intervals: Wilson score intervals for proportions, bootstrap over users otherwise.

- :func:`wilson_ci` / :func:`proportion_metric`: a share of independent 0/1 outcomes. The
  Wilson score interval never collapses at 0 or 1 (0 of 200 gives [0, 0.019], not [0, 0]);
  :func:`mean_metric` uses it automatically when every value is 0 or 1 (hit rates, compliance).
- :func:`bootstrap_ci`: a mean of non-binary per-user values (scipy.stats.bootstrap, percentile).
- :func:`paired_bootstrap`: a statistic over rows resampled together (ratios, differences).
- :func:`ratio_ci`: a pooled ratio sum(num)/sum(den) over users: the user bootstrap, except at 0
  or 1 where that collapses to a point; there the Wilson interval over the users (each user one
  trial, conservative for clustered slots) is used.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from audit.results import Metric

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., float] = np.mean,
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic`` over the given per-unit values.

    Constant data gives a zero-width interval; fewer than two values give (nan, nan).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float("nan"), float("nan"))
    if np.all(x == x[0]):
        v = float(statistic(x))
        return (v, v)
    from scipy import stats  # here, not at the top: scipy.stats takes seconds to import

    res = stats.bootstrap((x,), statistic, vectorized=statistic is np.mean,
                          n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def wilson_ci(successes: float, n: int, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (nan, nan) when n is 0."""
    if n <= 0:
        return (float("nan"), float("nan"))
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = float(successes) / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def is_binary(x: np.ndarray) -> bool:
    """True when every value is 0 or 1."""
    return bool(x.size) and bool(np.all((x == 0) | (x == 1)))


def proportion_metric(values: Sequence[float] | np.ndarray, *, unit: str = "users") -> Metric:
    """Share of 0/1 outcomes with its Wilson interval and n (NaN values dropped)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Metric(value=float("nan"), n=0, ci=None, unit=unit)
    if not is_binary(x):
        raise ValueError("proportion_metric needs 0/1 values")
    return Metric(value=float(x.mean()), n=int(x.size), ci=wilson_ci(float(x.sum()), int(x.size)), unit=unit)


def mean_metric(values: Sequence[float] | np.ndarray, *, seed: int = 0, unit: str = "users",
                n_resamples: int = DEFAULT_RESAMPLES) -> Metric:
    """Mean of per-unit values with its CI and n (NaN values are dropped): Wilson when every
    value is 0 or 1, else the percentile bootstrap (``n_resamples`` resamples)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Metric(value=float("nan"), n=0, ci=None, unit=unit)
    if is_binary(x):
        return proportion_metric(x, unit=unit)
    return Metric(value=float(x.mean()), n=int(x.size), ci=bootstrap_ci(x, seed=seed, n_resamples=n_resamples),
                  unit=unit)


def ratio_ci(num: np.ndarray, den: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """CI of sum(num)/sum(den) over users (rows with den > 0): see the module docstring."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    keep = den > 0
    rows = np.stack([num[keep], den[keep]], axis=1)
    n = int(rows.shape[0])
    if n == 0:
        return (float("nan"), float("nan"))
    total, whole = float(rows[:, 0].sum()), float(rows[:, 1].sum())
    if total == 0 or total == whole:
        return wilson_ci(total / whole * n, n)
    return paired_bootstrap(rows, lambda r: float(r[:, 0].sum() / r[:, 1].sum()), seed=seed)


def paired_bootstrap(
    per_unit: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(rows)`` where whole rows (users) are resampled together.

    ``per_unit`` has one row per user; ``statistic`` maps a (n, ...) array to a float.
    Use this for figures computed across columns of the same users (SNSR, differences).
    """
    data = np.asarray(per_unit)
    n = data.shape[0]
    if n < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        draws[b] = statistic(data[rng.integers(0, n, size=n)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    return (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
