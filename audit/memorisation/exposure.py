"""Canary exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a random sequence inserted into training; its references are sequences drawn
from the same random process and never inserted. With |R| references ranked by
perplexity (log-perplexity = mean NLL per token, lower = more likely under the model):

    exposure = log2 |R| - log2 rank,     rank = 1 + #references with log-perplexity <= the canary's

so a canary that beats every reference has exposure log2 |R| (bits), one at the median
about 1 bit, one worse than every reference about 0 (exactly -log2(1 + 1/|R|)).
Ties count against the canary, so exposure is never overstated.

With few references the rank cannot show more than log2 |R| bits. The extrapolation
fits a skew-normal distribution to the references' log-perplexities
(``scipy.stats.skewnorm.fit``) and reads exposure = -log2 P[X <= canary's log-perplexity].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def canary_rank(canary_ppl: float, reference_ppl: Sequence[float] | np.ndarray) -> int:
    """1-based rank of the canary among itself and the references (1 = lowest perplexity)."""
    refs = np.asarray(reference_ppl, dtype=float)
    if refs.size == 0:
        raise ValueError("exposure needs at least one reference sequence")
    if not math.isfinite(canary_ppl):
        return int(refs.size) + 1
    return int(1 + np.sum(refs <= canary_ppl))


def exposure_from_rank(rank: int, n_references: int) -> float:
    """log2(n_references) - log2(rank) in bits; rank in 1..n_references + 1."""
    if n_references < 1:
        raise ValueError(f"n_references must be >= 1, got {n_references}")
    if not 1 <= rank <= n_references + 1:
        raise ValueError(f"rank must be in 1..{n_references + 1}, got {rank}")
    return math.log2(n_references) - math.log2(rank)


def exposure(canary_ppl: float, reference_ppl: Sequence[float] | np.ndarray) -> float:
    """Rank-based exposure (bits, range about [0, log2 |R|]) of one canary."""
    refs = np.asarray(reference_ppl, dtype=float)
    return exposure_from_rank(canary_rank(canary_ppl, refs), int(refs.size))


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
