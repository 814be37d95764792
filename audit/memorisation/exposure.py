"""Canary exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a random sequence inserted into training; its references are sequences drawn
from the same random process and never inserted. With |R| references ranked by
perplexity (log-perplexity = mean NLL per token, lower = more likely under the model):

    exposure = log2 |R| - log2 rank,     rank = 1 + #references with log-perplexity < the canary's

so a canary that beats every reference has exposure log2 |R| (bits), one at the median
about 1 bit, one worse than every reference about 0 (exactly -log2(1 + 1/|R|)).
Ties follow the one rule of :mod:`audit.metrics`: references with exactly the canary's
log-perplexity are placed in a uniformly random order and the exposure is its expectation over
that order (the mean of log2 |R| - log2 r over the tied ranks r). A model that gives every
sequence the same perplexity therefore exposes exactly the chance level of a random canary,
:func:`exposure_chance` (about 1/ln 2 = 1.44 bits), neither 0 nor log2 |R|.

With few references the rank cannot show more than log2 |R| bits: a canary that beats every
reference is *saturated* and its exposure is only a lower bound (">= 13.3 bits, saturated"
at 10,000 references). Two figures keep resolving past saturation:

- the **standardised margin** (:func:`standard_margin`): how many reference standard
  deviations the canary's log-perplexity lies below the references' mean (0 = a typical
  random sequence; no distributional assumption, unbounded);
- the **extrapolation**: a skew-normal fitted to the references' log-perplexities
  (``scipy.stats.skewnorm.fit``), exposure = -log2 P[X <= canary's log-perplexity]. Its fit is
  checked (:func:`fit_check`: Kolmogorov-Smirnov test of the references against the fitted
  distribution; with estimated parameters the test is conservative, so a rejection is
  real) and its values are capped at :func:`extrapolation_cap` = 2 log2 |R| bits -- a tail
  probability of 1/|R|^2, one "decade of data" beyond what the references resolve; more is
  not supported by |R| points and is reported as ">= cap".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def canary_placement(canary_ppl: float, reference_ppl: Sequence[float] | np.ndarray) -> tuple[int, int]:
    """(first, tied): the canary takes ranks first .. first + tied among itself and the references
    (1 = lowest perplexity), each equally likely; an unscorable canary ranks last."""
    refs = np.asarray(reference_ppl, dtype=float)
    if refs.size == 0:
        raise ValueError("exposure needs at least one reference sequence")
    if not math.isfinite(canary_ppl):
        return int(refs.size) + 1, 0
    return int(1 + np.sum(refs < canary_ppl)), int(np.sum(refs == canary_ppl))


def canary_rank(canary_ppl: float, reference_ppl: Sequence[float] | np.ndarray) -> float:
    """Expected 1-based rank of the canary among itself and the references under random tie order."""
    first, tied = canary_placement(canary_ppl, reference_ppl)
    return first + tied / 2


def exposure_from_rank(rank: int, n_references: int, tied: int = 0) -> float:
    """Mean of log2(n_references) - log2(r) over r = rank .. rank + tied, in bits; ranks in
    1..n_references + 1 (``tied = 0``: the exposure of one rank)."""
    if n_references < 1:
        raise ValueError(f"n_references must be >= 1, got {n_references}")
    if not (1 <= rank and rank + tied <= n_references + 1 and tied >= 0):
        raise ValueError(f"ranks must lie in 1..{n_references + 1}, got {rank}..{rank + tied}")
    # sum of log r over r = rank .. rank + tied = lgamma(rank + tied + 1) - lgamma(rank)
    mean_log = (math.lgamma(rank + tied + 1) - math.lgamma(rank)) / (tied + 1) / math.log(2.0)
    return math.log2(n_references) - mean_log


def exposure_chance(n_references: int) -> float:
    """Expected exposure (bits) of a canary ranked uniformly at random among itself and
    ``n_references`` references: what a model that cannot tell them apart gets (tends to 1/ln 2)."""
    return exposure_from_rank(1, n_references, n_references)


def exposure(canary_ppl: float, reference_ppl: Sequence[float] | np.ndarray) -> float:
    """Rank-based exposure (bits, range about [0, log2 |R|]) of one canary (ties: module docstring)."""
    refs = np.asarray(reference_ppl, dtype=float)
    first, tied = canary_placement(canary_ppl, refs)
    return exposure_from_rank(first, int(refs.size), tied)


@dataclass(frozen=True)
class SkewNormalFit:
    """A skew-normal fitted to reference log-perplexities (scipy's a, loc, scale)."""

    a: float
    loc: float
    scale: float
    n: int

    @classmethod
    def fit(cls, reference_ppl: Sequence[float] | np.ndarray) -> "SkewNormalFit":
        refs = np.asarray(reference_ppl, dtype=float)
        refs = refs[np.isfinite(refs)]
        if refs.size < 3:
            raise ValueError(f"the skew-normal fit needs at least 3 finite references, got {refs.size}")
        if np.ptp(refs) == 0:
            raise ValueError("the skew-normal fit needs references that are not all equal")
        a, loc, scale = stats.skewnorm.fit(refs)
        return cls(float(a), float(loc), float(scale), int(refs.size))

    def exposure(self, canary_ppl: float) -> float:
        """-log2 P[X <= canary_ppl] under the fitted distribution (bits, >= 0); see :meth:`exposures`."""
        return float(self.exposures([canary_ppl])[0])

    def exposures(self, canary_ppl: Sequence[float] | np.ndarray) -> np.ndarray:
        """-log2 P[X <= x] (bits, >= 0) for each x, vectorised.

        Where the tail probability underflows (log CDF = -inf), the exposure at the nearest
        log-perplexity with a finite log CDF is returned: a lower bound, never infinity.
        An unscorable canary (NaN) exposes nothing (0 bits), as with the rank-based exposure."""
        x = np.asarray(canary_ppl, dtype=float).ravel()
        out = np.zeros(x.size)
        ok = ~np.isnan(x)
        log_cdf = np.full(x.size, 0.0)
        log_cdf[ok] = self._log_cdf(x[ok])
        far = ok & ~np.isfinite(log_cdf)
        if far.any():  # bisect towards the distribution's location until the log CDF is finite
            lo, hi = x[far], np.full(int(far.sum()), self.loc)
            for _ in range(60):
                mid = (lo + hi) / 2
                finite = np.isfinite(self._log_cdf(mid))
                hi = np.where(finite, mid, hi)
                lo = np.where(finite, lo, mid)
            log_cdf[far] = self._log_cdf(hi)
        out[ok] = np.maximum(0.0, -log_cdf[ok] / math.log(2.0))
        return out

    def _log_cdf(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(stats.skewnorm.logcdf(x, self.a, loc=self.loc, scale=self.scale), dtype=float)

    def to_json(self) -> dict[str, float | int]:
        return {"a": self.a, "loc": self.loc, "scale": self.scale, "n": self.n}


def extrapolated_exposure(canary_ppl: Sequence[float] | np.ndarray,
                          reference_ppl: Sequence[float] | np.ndarray) -> np.ndarray:
    """Skew-normal exposure (bits) of each canary against one fit of the references."""
    return SkewNormalFit.fit(reference_ppl).exposures(canary_ppl)


def saturated(canary_ppl: Sequence[float] | np.ndarray, reference_ppl: Sequence[float] | np.ndarray) -> np.ndarray:
    """True for each canary that outranks every reference (rank 1: exposure at its ceiling log2 |R|)."""
    refs = np.asarray(reference_ppl, dtype=float)
    return np.array([canary_placement(float(p), refs) == (1, 0) for p in np.asarray(canary_ppl, dtype=float).ravel()])


def standard_margin(canary_ppl: Sequence[float] | np.ndarray, reference_ppl: Sequence[float] | np.ndarray) -> np.ndarray:
    """(mean reference log-perplexity - canary log-perplexity) / reference standard deviation,
    per canary: the canary's likelihood margin over random sequences in standard units (NaN for
    an unscorable canary). Unlike the rank it keeps growing once every reference is beaten."""
    refs = np.asarray(reference_ppl, dtype=float)
    refs = refs[np.isfinite(refs)]
    if refs.size < 2:
        raise ValueError(f"the standardised margin needs at least 2 finite references, got {refs.size}")
    sd = float(np.std(refs, ddof=1))
    if sd == 0:
        raise ValueError("the standardised margin needs references that are not all equal")
    x = np.asarray(canary_ppl, dtype=float).ravel()
    return (float(np.mean(refs)) - x) / sd


@dataclass(frozen=True)
class FitCheck:
    """Kolmogorov-Smirnov test of the references against the fitted skew-normal."""

    statistic: float
    p_value: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha

    def to_json(self) -> dict[str, float | bool]:
        return {"test": "Kolmogorov-Smirnov (parameters estimated from the same references: conservative)",
                "statistic": self.statistic, "p_value": self.p_value, "alpha": self.alpha,
                "rejected": self.rejected}


def fit_check(fit: SkewNormalFit, reference_ppl: Sequence[float] | np.ndarray, alpha: float = 0.05) -> FitCheck:
    """KS goodness-of-fit of ``fit`` on the (finite) references."""
    refs = np.asarray(reference_ppl, dtype=float)
    refs = refs[np.isfinite(refs)]
    res = stats.kstest(refs, "skewnorm", args=(fit.a, fit.loc, fit.scale))
    return FitCheck(float(res.statistic), float(res.pvalue), alpha)


def extrapolation_cap(n_references: int) -> float:
    """The most exposure (bits) an extrapolation from ``n_references`` supports: 2 log2 |R|."""
    return 2.0 * math.log2(n_references)
