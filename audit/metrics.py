"""Ranking metrics per user: rank of the held-out item among candidates -> HR, NDCG, reciprocal rank.

**One tie rule for every scorer** (models and baselines alike): candidates with the same score
as the held-out item are placed in a uniformly random order, and each metric is its
*expectation* over that order. With ``first`` = 1 + the candidates scored strictly above the
held-out item and ``tied`` = the other candidates with exactly its score, the item takes each
position ``first .. first + tied`` with probability 1 / (tied + 1), so

- expected rank = first + tied / 2 (= 1 + greater + ties / 2);
- HR@k = P(position <= k) = clip(k - first + 1, 0, tied + 1) / (tied + 1);
- NDCG@k = mean over those positions p of [p <= k] / log2(p + 1);
- reciprocal rank = mean over those positions of 1 / p.

A model that gives every candidate the same score therefore gets exactly the chance level of a
random ranking (HR@k = k / n among n candidates: :func:`chance_hit`), never 0 and never a lucky
1. Without ties (``tied = 0``) the metrics are the usual exact ones. A NaN score for the held-out
item ranks it last (position n); NaN scores of other candidates rank them below it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TargetRank(NamedTuple):
    """Where the held-out item lands: positions ``first .. first + tied`` (1-based), each equally likely."""

    first: int
    tied: int = 0

    @property
    def expected(self) -> float:
        """The expected 1-based rank, first + tied / 2."""
        return self.first + self.tied / 2


def target_rank(scores: np.ndarray, target_index: int = 0) -> TargetRank:
    """The held-out item ``scores[target_index]``'s placement among all scores (ties: module docstring)."""
    s = np.asarray(scores, dtype=float)
    t = s[target_index]
    if not np.isfinite(t):
        return TargetRank(int(s.size), 0)
    others = np.delete(s, target_index)
    return TargetRank(int(1 + np.sum(others > t)), int(np.sum(others == t)))


def rank_of_target(scores: np.ndarray, target_index: int = 0) -> float:
    """Expected 1-based rank of ``scores[target_index]`` under random tie order (1 + greater + ties/2)."""
    return target_rank(scores, target_index).expected


def _first_tied(rank: int | np.ndarray, tied: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rank, dtype=float)
    t = np.broadcast_to(np.asarray(tied, dtype=float), r.shape)
    return r, t


def hit_at_k(rank: int | np.ndarray, k: int, tied: int | np.ndarray = 0) -> np.ndarray:
    """Expected hit: P(the held-out item is within the top ``k``), 0..1; with ``tied = 0`` the
    indicator rank <= k (``rank`` = first position, see :class:`TargetRank`)."""
    r, t = _first_tied(rank, tied)
    return np.clip(k - r + 1.0, 0.0, t + 1.0) / (t + 1.0)


def _discount_sum(r: np.ndarray, last: np.ndarray) -> np.ndarray:
    """sum of 1/log2(p + 1) for p = r .. last (0 where last < r), element-wise; ``last`` is at most k."""
    top = int(max(np.max(last, initial=0.0), 0.0))
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, top + 2, dtype=float)))])
    lo = np.clip(np.nan_to_num(r, nan=top + 1.0, posinf=top + 1.0), 1, top + 1).astype(int)
    hi = np.clip(last, 0, top).astype(int)
    return np.where(hi >= lo, cum[hi] - cum[lo - 1], 0.0)


def ndcg_at_k(rank: int | np.ndarray, k: int, tied: int | np.ndarray = 0) -> np.ndarray:
    """Expected NDCG@k with one relevant item (0..1): mean over the tied positions p of
    [p <= k] / log2(p + 1); with ``tied = 0`` it is 1/log2(rank + 1) when rank <= k, else 0."""
    r, t = _first_tied(rank, tied)
    last = np.minimum(np.nan_to_num(r + t, nan=0.0, posinf=0.0), k)
    return _discount_sum(r, last) / (t + 1.0)


def reciprocal_rank(rank: int | np.ndarray, tied: int | np.ndarray = 0) -> np.ndarray:
    """Expected reciprocal rank (0..1]: mean of 1/p over the tied positions; 1/rank without ties."""
    r, t = _first_tied(rank, tied)
    from scipy.special import digamma  # sum_{p=a}^{b} 1/p = digamma(b + 1) - digamma(a)

    return (digamma(r + t + 1.0) - digamma(r)) / (t + 1.0)


def chance_hit(k: int, n_candidates: int) -> float:
    """HR@k of a random ranking of one held-out item among ``n_candidates``: min(k, n) / n."""
    return min(k, n_candidates) / n_candidates


def chance_ndcg(k: int, n_candidates: int) -> float:
    """NDCG@k of a random ranking among ``n_candidates`` (= a constant scorer's, by the tie rule)."""
    return float(ndcg_at_k(1, k, n_candidates - 1))


def chance_reciprocal_rank(n_candidates: int) -> float:
    """Mean reciprocal rank of a random ranking among ``n_candidates``: H(n) / n."""
    return float(reciprocal_rank(1, n_candidates - 1))


def rank_in_list(items: list[str], target: str, n_candidates: int) -> int:
    """1-based position of ``target`` in a returned list; ``n_candidates`` when it is absent."""
    try:
        return items.index(target) + 1
    except ValueError:
        return n_candidates
