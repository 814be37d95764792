"""Membership scores of one sequence from its per-token log-probabilities.

Every score here follows one convention: **higher means "more likely a member"**
(the attack predicts "member" above a threshold). Log-probabilities are natural
logs, one per token of the scored text, each conditioned on the tokens before it.

- ``loss``: minus the mean negative log-likelihood (nats/token, range (-inf, 0]);
- ``zlib``: mean log-likelihood divided by the zlib-compressed size of the text in
  bytes (Carlini et al. 2021's perplexity/zlib ratio, sign flipped to "higher = member");
- ``mink``: Min-K% (Shi et al. 2023): mean of the lowest ``k`` share of token
  log-probabilities (``k`` in (0, 1], default 0.2; k = 1 gives ``loss``). How many tokens the
  share keeps (``count``): ``ceil`` (recaudit's default) keeps ceil(k * n) and at least one, so
  every sequence has a score; ``floor`` keeps int(k * n) as the authors' code does
  (``k_length = int(len(token_log_probs) * ratio)`` in both the Min-K% and Min-K%++
  reference implementations, zjysteven/mink-plus-plus ``run.py``), which keeps one token fewer
  whenever k * n is not a whole number and none (score NaN, as their ``np.mean`` of an empty
  slice) for a sequence shorter than 1 / k tokens;
- ``minkpp``: Min-K%++ (Zhang et al. 2024): each token's log-probability standardised by
  the mean and standard deviation of log p under the model's own next-token
  distribution at that position, then Min-K% of those z-scores;
- ``ref``: reference-calibrated loss: the loss of a reference model trained on disjoint
  users minus the loss of the audited model (Carlini et al. 2022's calibration).
"""

from __future__ import annotations

import math
import zlib
from typing import Literal, Sequence

import numpy as np

from audit.token_stats import next_token_stats  # noqa: F401  (re-exported: the Min-K%++ statistics)

DEFAULT_K = 0.2
#: how Min-K% rounds the kept-token count: ``ceil`` (at least one) or ``floor`` (the authors' int(k * n))
KeptCount = Literal["ceil", "floor"]


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


def kept_count(n: int, k: float, count: KeptCount = "ceil") -> int:
    """How many of ``n`` tokens a Min-K% share ``k`` keeps: ``ceil``: ceil(k * n), at least one;
    ``floor``: int(k * n), the authors' rule (may be 0)."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be a share in (0, 1], got {k!r}")
    if count == "floor":
        return int(k * n)
    if count != "ceil":
        raise ValueError(f"count must be 'ceil' or 'floor', got {count!r}")
    return min(n, max(1, math.ceil(k * n - 1e-9)))


def lowest_share(values: np.ndarray, k: float, count: KeptCount = "ceil") -> np.ndarray:
    """The :func:`kept_count` smallest values, ``k`` in (0, 1]."""
    return np.sort(values)[:kept_count(values.size, k, count)]


def _mean_or_nan(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def min_k(logp: Sequence[float] | np.ndarray, k: float = DEFAULT_K, count: KeptCount = "ceil") -> float:
    """Min-K%: mean of the lowest ``k`` share of token log-probabilities (higher = member; NaN
    when ``count='floor'`` keeps no token)."""
    return _mean_or_nan(lowest_share(_as_logprobs(logp), k, count))


def min_k_plus_plus(logp: Sequence[float] | np.ndarray, mu: Sequence[float] | np.ndarray,
                    sigma: Sequence[float] | np.ndarray, k: float = DEFAULT_K, count: KeptCount = "ceil") -> float:
    """Min-K%++: Min-K% of (log p(x_t) - mu_t) / sigma_t (higher = member).

    Positions where the model's distribution is degenerate (sigma_t = 0) get z = 0.
    """
    x = _as_logprobs(logp)
    m = np.asarray(mu, dtype=float).ravel()
    s = np.asarray(sigma, dtype=float).ravel()
    if not (x.size == m.size == s.size):
        raise ValueError(f"log-probs, mu and sigma differ in length: {x.size}, {m.size}, {s.size}")
    z = np.divide(x - m, s, out=np.zeros_like(x), where=s > 0)
    return _mean_or_nan(lowest_share(z, k, count))


def reference_calibrated(target_logp: Sequence[float] | np.ndarray,
                         reference_logp: Sequence[float] | np.ndarray) -> float:
    """Reference loss minus target loss, nats/token (higher = member).

    The target model fits its members better than a model that never saw them;
    subtracting the reference loss removes how easy the sequence is per se.
    """
    return mean_nll(reference_logp) - mean_nll(target_logp)
