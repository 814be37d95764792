"""Paired differences of two recommenders measured on the same units (users, members / non-members).

Every function returns a :class:`Paired`: the difference ``b - a``, its 95% CI, the two-sided
p-value of "no difference", n (shared units) and the minimum detectable effect at that n
(:func:`mde`: 80% power, two-sided alpha 0.05, normal approximation with the measured standard
error). The method is chosen by the data, never by a metric's name:

- :func:`paired_binary`: both sides 0/1 per unit (hit or miss): Newcombe's hybrid score interval
  for a difference of paired proportions (Newcombe 1998, method 10: the two Wilson intervals
  combined with the phi correlation of the 2x2 table) and McNemar's exact test (statsmodels:
  the binomial test of the discordant units);
- :func:`paired_mean`: other per-unit values: the percentile bootstrap CI of the mean per-unit
  difference (scipy) and the one-sample t-test of the differences (scipy);
- :func:`paired_auroc`: a statistic of scores and 0/1 labels (AUROC, TPR at a fixed FPR): a paired
  bootstrap over units, members and non-members resampled separately (as the single-model
  intervals in :mod:`audit.memorisation.roc` do) and *the same draw* scored for both models; the
  p-value from the bootstrap standard error (normal approximation; a test checks it against
  DeLong's paired test);
- :func:`adjust_pvalues`: Holm and Benjamini-Hochberg adjusted p-values across a run's pairs
  (statsmodels ``multipletests``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from audit.stats import CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_ci, is_binary, wilson_ci

ALPHA = 0.05
POWER = 0.80

#: each :attr:`Paired.method` of this module in words; ``recaudit compare``'s and the dashboard's
#: rule texts (:data:`audit.compare.SIGNIFICANCE_RULE`) are built from these, so they name what runs
METHODS: dict[str, str] = {
    "newcombe-mcnemar": "McNemar's exact test with Newcombe's interval of the difference for 0/1 values "
                        "(hit or miss)",
    "paired-bootstrap-mean": "the percentile bootstrap CI of the mean per-user difference with the paired "
                             "t-test for other values",
    "paired-bootstrap-auroc": "a paired bootstrap of the AUROC difference (members and non-members resampled "
                              "separately)",
    "paired-bootstrap-tpr": "a paired bootstrap of the difference in TPR at a fixed FPR (members and "
                            "non-members resampled separately)",
}


@dataclass(frozen=True)
class Paired:
    """A paired difference ``b - a``: value, CI, p-value, n, method, MDE and the standard error behind it."""

    value: float
    ci: tuple[float, float]
    p_value: float | None
    n: int
    method: str
    mde: float | None
    se: float | None


def _z(q: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(q))


def mde(se: float | None, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable effect (same unit as the difference) at standard error ``se``: the true
    difference a two-sided test at ``alpha`` finds with probability ``power`` (normal approximation:
    (z_{1-alpha/2} + z_{power}) * se = 2.80 se at the defaults); None without a standard error."""
    if se is None or not math.isfinite(se):
        return None
    return (_z(1 - alpha / 2) + _z(power)) * float(se)


def _pairs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values must be 1-d of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def newcombe_ci(a: np.ndarray, b: np.ndarray, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval of mean(b) - mean(a) for paired 0/1 outcomes."""
    n = int(a.size)
    both = float(np.sum((a == 1) & (b == 1)))
    only_b = float(np.sum((a == 0) & (b == 1)))
    only_a = float(np.sum((a == 1) & (b == 0)))
    neither = float(n - both - only_b - only_a)
    p1, p2 = float(b.mean()), float(a.mean())
    l1, u1 = wilson_ci(both + only_b, n, confidence=confidence)
    l2, u2 = wilson_ci(both + only_a, n, confidence=confidence)
    denom = (both + only_b) * (neither + only_a) * (both + only_a) * (neither + only_b)
    phi = 0.0 if denom == 0 else (both * neither - only_b * only_a) / math.sqrt(denom)
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    d = p1 - p2
    return (max(-1.0, d - delta), min(1.0, d + eps))


def paired_binary(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                  confidence: float = CONFIDENCE) -> Paired:
    """Paired difference of two shares of 0/1 outcomes on the same units (see the module docstring)."""
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = _pairs(a, b)
    if not (is_binary(x) and is_binary(y)):
        raise ValueError("paired_binary needs 0/1 values on both sides")
    n = int(x.size)
    if n < 2:
        return Paired(float("nan"), (float("nan"), float("nan")), None, n, "newcombe-mcnemar", None, None)
    only_a = int(np.sum((x == 1) & (y == 0)))
    only_b = int(np.sum((x == 0) & (y == 1)))
    table = [[int(np.sum((x == 1) & (y == 1))), only_a], [only_b, int(np.sum((x == 0) & (y == 0)))]]
    p = 1.0 if only_a + only_b == 0 else float(mcnemar(table, exact=True).pvalue)
    d = y - x
    se = float(d.std(ddof=1) / math.sqrt(n))
    return Paired(float(d.mean()), newcombe_ci(x, y, confidence=confidence), p, n, "newcombe-mcnemar",
                  mde(se), se)


def paired_mean(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, seed: int = 0,
                n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> Paired:
    """Mean per-unit difference ``b - a`` with its bootstrap CI and the paired t-test's p-value."""
    from scipy import stats

    x, y = _pairs(a, b)
    n = int(x.size)
    if n < 2:
        return Paired(float("nan"), (float("nan"), float("nan")), None, n, "paired-bootstrap-mean", None, None)
    d = y - x
    value = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:
        p = 1.0 if value == 0 else 0.0
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    ci = bootstrap_ci(d, seed=seed, n_resamples=n_resamples, confidence=confidence)
    se = sd / math.sqrt(n)
    return Paired(value, ci, p, n, "paired-bootstrap-mean", mde(se), se)


def paired_units(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, seed: int = 0,
                 n_resamples: int = DEFAULT_RESAMPLES) -> Paired:
    """:func:`paired_binary` when every value on both sides is 0 or 1, else :func:`paired_mean`."""
    x, y = _pairs(a, b)
    if is_binary(x) and is_binary(y):
        return paired_binary(x, y)
    return paired_mean(x, y, seed=seed, n_resamples=n_resamples)


#: a statistic of (members' scores (B, n1), non-members' scores (B, n0)) -> (B,)
RowStatistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def auroc_statistic() -> RowStatistic:
    """AUROC per row (Mann-Whitney U / (n1 n0), ties one half)."""
    from audit.memorisation.roc import auroc

    return auroc


def tpr_statistic(fpr: float) -> RowStatistic:
    """TPR at empirical FPR <= ``fpr`` per row (see :func:`audit.memorisation.roc.tpr_at_fpr`)."""
    from audit.memorisation.roc import tpr_at_fpr

    return lambda mem, non: tpr_at_fpr(mem, non, fpr)


def paired_auroc(scores_a: Sequence[float] | np.ndarray, scores_b: Sequence[float] | np.ndarray,
                 labels: Sequence[bool] | np.ndarray, *, statistic: RowStatistic | None = None,
                 method: str = "paired-bootstrap-auroc", seed: int = 0,
                 n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> Paired:
    """Difference ``stat(b) - stat(a)`` of a score statistic (default AUROC) on the same labelled units:
    members and non-members resampled separately, each draw scored for both models."""
    sa, sb = _pairs(scores_a, scores_b)
    y = np.asarray(labels, dtype=bool)
    if y.shape != np.asarray(scores_a).shape:
        raise ValueError("labels must have one entry per unit")
    keep = np.isfinite(np.asarray(scores_a, float)) & np.isfinite(np.asarray(scores_b, float))
    y = y[keep]
    stat = statistic or auroc_statistic()
    n1, n0 = int(y.sum()), int((~y).sum())
    n = n1 + n0
    if n1 < 2 or n0 < 2:
        return Paired(float("nan"), (float("nan"), float("nan")), None, n, method, None, None)
    ma, na, mb, nb = sa[y], sa[~y], sb[y], sb[~y]
    value = float(stat(mb[None, :], nb[None, :])[0] - stat(ma[None, :], na[None, :])[0])
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    step = 250  # rows per vectorised call: bounded memory at thousands of units
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        im = rng.integers(0, n1, size=(rows, n1))
        io = rng.integers(0, n0, size=(rows, n0))
        draws[start:start + rows] = stat(mb[im], nb[io]) - stat(ma[im], na[io])
    alpha = (1 - confidence) / 2
    ci = (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
    se = float(draws.std(ddof=1))
    if se == 0:
        p = 1.0 if value == 0 else 0.0
    else:
        p = float(2 * (1 - _phi(abs(value) / se)))
    return Paired(value, ci, p, n, method, mde(se), se)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def adjust_pvalues(pvalues: Sequence[float | None]) -> tuple[list[float | None], list[float | None]]:
    """(Holm, Benjamini-Hochberg) adjusted p-values of the given family; None entries stay None."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    holm: list[float | None] = [None] * len(pvalues)
    bh: list[float | None] = [None] * len(pvalues)
    if not idx:
        return holm, bh
    ps = np.array([float(pvalues[i]) for i in idx])  # type: ignore[arg-type]
    h = multipletests(ps, alpha=ALPHA, method="holm")[1]
    f = multipletests(ps, alpha=ALPHA, method="fdr_bh")[1]
    for j, i in enumerate(idx):
        holm[i], bh[i] = float(h[j]), float(f[j])
    return holm, bh


def better_side(direction: str | None, ci: tuple[float, float]) -> str | None:
    """``'b'`` or ``'a'`` when the CI of ``b - a`` excludes 0 and the metric declares a better direction."""
    lo, hi = ci
    if direction not in ("higher", "lower") or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo > 0:
        return "b" if direction == "higher" else "a"
    if hi < 0:
        return "a" if direction == "higher" else "b"
    return None
