"""Membership scores of one sequence from its per-token log-probabilities.

Every score here follows one convention: **higher means "more likely a member"**
(the attack predicts "member" above a threshold). Log-probabilities are natural
logs, one per token of the scored text, each conditioned on the tokens before it.

- ``loss``: minus the mean negative log-likelihood (nats/token, range (-inf, 0]);
- ``zlib``: mean log-likelihood divided by the zlib-compressed size of the text in
  bytes (Carlini et al. 2021's perplexity/zlib ratio, sign flipped to "higher = member");
- ``mink``: Min-K% (Shi et al. 2023): mean of the lowest ``k`` share of token
  log-probabilities (``k`` in (0, 1], default 0.2; k = 1 gives ``loss``);
- ``minkpp``: Min-K%++ (Zhang et al. 2024): each token's log-probability standardised by
  the mean and standard deviation of log p under the model's own next-token
  distribution at that position, then Min-K% of those z-scores;
- ``ref``: reference-calibrated loss: the loss of a reference model trained on disjoint
  users minus the loss of the audited model (Carlini et al. 2022's calibration).
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np

from audit.token_stats import next_token_stats  # noqa: F401  (re-exported: the Min-K%++ statistics)

DEFAULT_K = 0.2


def _as_logprobs(logp: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(logp, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("cannot score an empty sequence (no token log-probabilities)")
    return x


def mean_nll(logp: Sequence[float] | np.ndarray) -> float:
    """Mean negative log-likelihood of the tokens (nats/token, >= 0 for probabilities)."""
    return float(-_as_logprobs(logp).mean())


def loss_score(logp: Sequence[float] | np.ndarray) -> float:
    """Minus the mean NLL (the loss attack's score; higher = member)."""
    return -mean_nll(logp)


def zlib_bytes(text: str) -> int:
    """Size in bytes of the zlib-compressed UTF-8 text (the zlib 'entropy')."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(logp: Sequence[float] | np.ndarray, text: str) -> float:
    """Mean log-likelihood per zlib byte of ``text`` (higher = member)."""
    return loss_score(logp) / max(1, zlib_bytes(text))


def lowest_share(values: np.ndarray, k: float) -> np.ndarray:
    """The ``ceil(k * n)`` smallest values (at least one), ``k`` in (0, 1]."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be a share in (0, 1], got {k!r}")
    n = values.size
    count = min(n, max(1, math.ceil(k * n - 1e-9)))
    return np.sort(values)[:count]


def min_k(logp: Sequence[float] | np.ndarray, k: float = DEFAULT_K) -> float:
    """Min-K%: mean of the lowest ``k`` share of token log-probabilities (higher = member)."""
    return float(lowest_share(_as_logprobs(logp), k).mean())


def min_k_plus_plus(logp: Sequence[float] | np.ndarray, mu: Sequence[float] | np.ndarray,
                    sigma: Sequence[float] | np.ndarray, k: float = DEFAULT_K) -> float:
    """Min-K%++: Min-K% of (log p(x_t) - mu_t) / sigma_t (higher = member).

    Positions where the model's distribution is degenerate (sigma_t = 0) get z = 0.
    """
    x = _as_logprobs(logp)
    m = np.asarray(mu, dtype=float).ravel()
    s = np.asarray(sigma, dtype=float).ravel()
    if not (x.size == m.size == s.size):
        raise ValueError(f"log-probs, mu and sigma differ in length: {x.size}, {m.size}, {s.size}")
    z = np.divide(x - m, s, out=np.zeros_like(x), where=s > 0)
    return float(lowest_share(z, k).mean())


def reference_calibrated(target_logp: Sequence[float] | np.ndarray,
                         reference_logp: Sequence[float] | np.ndarray) -> float:
    """Reference loss minus target loss, nats/token (higher = member).

    The target model fits its members better than a model that never saw them;
    subtracting the reference loss removes how easy the sequence is per se.
    """
    return mean_nll(reference_logp) - mean_nll(target_logp)
