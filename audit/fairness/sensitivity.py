"""Statistics over a users x conditions matrix of per-user figures: per-condition means,
SNSR / SNSV with paired-bootstrap CIs over users, within-user permutation p-values for both,
SNSR in excess of a placebo attribute's, the Holm correction over a run's p-values,
and group gaps between users of different real attribute values.

NaN cells (e.g. two empty lists) are ignored in every mean.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from audit.fairness.metrics import snsr, snsv
from audit.results import Metric
from audit.stats import mean_metric, paired_bootstrap


def _column_means(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, on purpose
        return np.nanmean(matrix, axis=0)


def mean_with_ci(values: np.ndarray, *, seed: int, n_resamples: int) -> Metric:
    """Mean over users of finite values: a bootstrap CI over users, or the Wilson interval when
    every value is 0 or 1 (a group's HR of 0 is not a zero-width [0, 0])."""
    return mean_metric(values, seed=seed, n_resamples=n_resamples)


@dataclass(frozen=True)
class Sensitivity:
    """SNSR and SNSV of one similarity over one attribute set's conditions."""

    snsr: Metric
    snsv: Metric
    #: share of within-user label permutations with an SNSR at least the observed one
    p_value: float
    permutations: int
    #: the same permutation test for SNSV (its own statistic, same permutations)
    p_value_snsv: float = float("nan")


def sensitivity(matrix: np.ndarray, *, seed: int, n_resamples: int, permutations: int) -> Sensitivity:
    """SNSR/SNSV of the column means of ``matrix`` (users x condition values).

    CIs: users are resampled with their whole rows (``paired_bootstrap``). The
    p-value tests "the lists do not depend on the attribute value": the values of
    each user's row are exchangeable under that null, so they are permuted within
    rows and SNSR recomputed (``permutations`` times, seeded); p = (1 + #{perm >= obs})
    / (1 + permutations). A recommender that ignores the attribute gets SNSR 0 and p = 1.

    SNSR and SNSV are spreads of means, so resampling users inflates them (each bootstrap
    draw adds its own noise to the per-value means): near zero, the percentile CI can sit
    just above the point estimate (e.g. 0.0000 [0.0001, 0.0052]). The CI bounds the size of
    the effect; whether there is any effect at all is what the p-value tests.
    """
    m = np.asarray(matrix, dtype=float)
    rows = m[np.isfinite(m).any(axis=1)]
    n = int(rows.shape[0])
    if n == 0 or m.shape[1] == 0:
        nan = Metric(value=float("nan"), n=0)
        return Sensitivity(nan, nan, float("nan"), 0)

    def stat_range(x: np.ndarray) -> float:
        return snsr(_column_means(x))

    def stat_std(x: np.ndarray) -> float:
        return snsv(_column_means(x))

    obs_range, obs_std = stat_range(rows), stat_std(rows)
    ci_range = paired_bootstrap(rows, stat_range, seed=seed, n_resamples=n_resamples)
    ci_std = paired_bootstrap(rows, stat_std, seed=seed, n_resamples=n_resamples)
    rng = np.random.default_rng([seed, 7919])
    exceed = exceed_std = 0
    for _ in range(permutations):
        perm = rng.permuted(rows, axis=1)
        if stat_range(perm) >= obs_range - 1e-12:
            exceed += 1
        if stat_std(perm) >= obs_std - 1e-12:
            exceed_std += 1
    p = (1 + exceed) / (1 + permutations) if permutations else float("nan")
    p_std = (1 + exceed_std) / (1 + permutations) if permutations else float("nan")
    return Sensitivity(Metric(obs_range, n, ci_range), Metric(obs_std, n, ci_std), float(p), permutations,
                       float(p_std))


def snsr_excess(matrix: np.ndarray, placebo: np.ndarray, *, seed: int, n_resamples: int) -> Metric:
    """SNSR of ``matrix`` minus SNSR of ``placebo`` (same users, same row order), with a paired
    bootstrap CI over users: how much sensitivity the attribute causes beyond what changing the
    prompt with a non-sensitive attribute causes. Rows with no finite cell in either are dropped."""
    a, b = np.asarray(matrix, dtype=float), np.asarray(placebo, dtype=float)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"matrix and placebo must have the same users, got {a.shape[0]} and {b.shape[0]} rows")
    keep = np.isfinite(a).any(axis=1) & np.isfinite(b).any(axis=1)
    rows = np.hstack([a[keep], b[keep]])
    if rows.shape[0] == 0:
        return Metric(value=float("nan"), n=0)
    cut = a.shape[1]

    def stat(x: np.ndarray) -> float:
        return snsr(_column_means(x[:, :cut])) - snsr(_column_means(x[:, cut:]))

    return Metric(stat(rows), int(rows.shape[0]), paired_bootstrap(rows, stat, seed=seed, n_resamples=n_resamples))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error rate), NaNs left out of the family."""
    items = sorted(((p, k) for k, p in p_values.items() if np.isfinite(p)))
    m = len(items)
    out: dict[str, float] = {}
    running = 0.0
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def group_gap(values: np.ndarray, groups: np.ndarray, *, seed: int, n_resamples: int,
              signed: bool = False) -> Metric:
    """Disparity of the group means of ``values`` (one row per user, its group label in ``groups``)
    with a bootstrap CI resampling users.

    Default: max − min over groups (>= 0; for two groups |mean A − mean B|). With ``signed=True``
    and exactly two groups: mean(first label) − mean(second label) in sorted label order, whose CI
    can straddle 0 when there is no disparity (the max − min form is biased upward by noise)."""
    v = np.asarray(values, dtype=float)
    labels, codes = np.unique(np.asarray(groups), return_inverse=True)
    keep = np.isfinite(v)
    v, codes = v[keep], codes[keep]
    if labels.size < 2 or v.size == 0 or (signed and labels.size != 2):
        return Metric(value=float("nan"), n=int(v.size))
    data = np.column_stack([v, codes])

    def gap(x: np.ndarray) -> float:
        c = x[:, 1].astype(int)
        sizes = np.bincount(c, minlength=labels.size)
        if (sizes == 0).any():
            return float("nan")  # a resample lost a group: no gap to measure in it
        means = np.bincount(c, weights=x[:, 0], minlength=labels.size) / sizes
        return float(means[0] - means[1]) if signed else float(means.max() - means.min())

    return Metric(value=gap(data), n=int(v.size),
                  ci=paired_bootstrap(data, gap, seed=seed, n_resamples=n_resamples))
