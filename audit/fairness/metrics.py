"""List similarity and sensitivity metrics of FaiRLLM / CFaiRLLM.

All functions take a counterfactual list ``x`` and a neutral list ``y`` (best
first, items as any hashable keys, e.g. normalised titles) and ``k``. Both lists
are cut to ``k`` and de-duplicated (first occurrence kept). Similarities lie in
[0, 1]; 1 means the same list.

The rank-aware measures use the paper's normalisers (K(K+1)/2 for SERP*,
K(K-1)/2 pairs for PRAG*) with K = the longer list's length after cutting (so
identical full lists give exactly 1, and identical short lists also give 1; a list
shorter than its partner counts its missing slots as items not in the partner).
Two empty lists have no similarity to measure: NaN, which callers drop and count.

**Notebook-compatible values** (``serpnb``, ``pragnb``). The FaiRLLM authors' evaluation
notebook (``process.ipynb``: ``calc_serp_ms``, ``calc_prag``) computes both differently from
the paper's formulas above, and its numbers are the ones in the published tables:

- its SERP* scores a match at 0-based rank i of x as len(x) - i + 1 (one more than the
  paper) and divides by 2 (len(y) + 1) len(y) (four times the paper's normaliser, about), so
  identical K = 10 lists score 13/44 = 0.2955, not 1 (at most (K + 3) / (4 (K + 1)));
- its PRAG* divides by the pairs of x alone (a short x is not penalised for its missing
  slots: x = [a, b] against a 5-item y that starts a, b scores 1, the paper's 0.7) and a
  one-item x scores 1 only if y is that same one item;
- neither removes duplicates (a repeated item scores once per occurrence in SERP*; PRAG* takes
  the last position of an item repeated in y), and an empty list scores 0, not NaN.

:func:`serp_star_notebook_at_k` and :func:`prag_star_notebook_at_k` reproduce the notebook
exactly on the same item keys (recaudit's parsing and title normalisation, not the notebook's
``clean``/``simplified_list``); use them only to set recaudit's figures beside published ones.
"""

from __future__ import annotations

import math
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

Items = Sequence[Hashable]


def top_k(items: Items, k: int) -> list[Hashable]:
    """The first ``k`` entries with later duplicates removed (cut first, then de-duplicated)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: list[Hashable] = []
    seen: set[Hashable] = set()
    for item in list(items)[:k]:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _effective_k(x: list[Hashable], y: list[Hashable]) -> int:
    return max(len(x), len(y))


def jaccard_at_k(x: Items, y: Items, k: int) -> float:
    """|x ∩ y| / |x ∪ y| of the top-``k`` sets, in [0, 1]; NaN when both are empty."""
    sx, sy = set(top_k(x, k)), set(top_k(y, k))
    union = sx | sy
    if not union:
        return math.nan
    return len(sx & sy) / len(union)


def serp_star_at_k(x: Items, y: Items, k: int) -> float:
    """SERP*@K = Σ_{v∈x} 1[v∈y] (K − r_v + 1) / (K(K+1)/2), r_v the 1-based rank of v in x.

    Items of ``x`` near the top that the neutral list ``y`` also holds count most.
    In [0, 1]; NaN when both lists are empty."""
    xs, ys = top_k(x, k), set(top_k(y, k))
    kk = _effective_k(xs, list(ys))
    if kk == 0:
        return math.nan
    points = sum(kk - r + 1 for r, v in enumerate(xs, start=1) if v in ys)
    return points / (kk * (kk + 1) / 2)


def prag_star_at_k(x: Items, y: Items, k: int) -> float:
    """PRAG*@K: over the K(K−1)/2 pairs i < j of ``x``, a pair scores 0 if x_i ∉ y;
    else 1 if x_j ∉ y; else 1 if pos_y(x_i) < pos_y(x_j). Score = points / pairs, in [0, 1].

    Missing slots of a short ``x`` count as items not in ``y``. NaN when both lists are
    empty; a single-item pair of lists (K = 1) scores 1 if the items agree, else 0."""
    xs, yl = top_k(x, k), top_k(y, k)
    kk = _effective_k(xs, yl)
    if kk == 0:
        return math.nan
    if kk == 1:
        return 1.0 if xs == yl else 0.0
    pos_y = {v: i for i, v in enumerate(yl)}
    padded: list[Hashable | None] = list(xs) + [None] * (kk - len(xs))
    points = 0
    for i in range(kk):
        xi = padded[i]
        if xi is None or xi not in pos_y:
            continue
        for j in range(i + 1, kk):
            xj = padded[j]
            if xj is None or xj not in pos_y or pos_y[xi] < pos_y[xj]:
                points += 1
    return points / (kk * (kk - 1) / 2)


def serp_star_notebook_at_k(x: Items, y: Items, k: int) -> float:
    """SERP*@K as the FaiRLLM notebook's ``calc_serp_ms`` computes it (see the module notes):
    lists cut to ``k``, not de-duplicated; every equal pair (x_i, y_j) adds len(x) - i + 1
    (i 0-based); the sum is divided by 2 (len(y) + 1) len(y); 0 when ``y`` is empty."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    xs, ys = list(x)[:k], list(y)[:k]
    if not ys:
        return 0.0
    points = sum(len(xs) - i + 1 for i, a in enumerate(xs) for b in ys if a == b)
    return points * 0.5 / ((len(ys) + 1) * len(ys))


def prag_star_notebook_at_k(x: Items, y: Items, k: int) -> float:
    """PRAG*@K as the FaiRLLM notebook's ``calc_prag`` computes it (see the module notes):
    lists cut to ``k``, not de-duplicated; over the len(x)(len(x) - 1)/2 pairs i < j of ``x``, a
    pair scores 0 if x_i is not in y, else 1 if x_j is not in y, else 1 if x_i's (last) position
    in y is before x_j's; 0 when either list is empty; a one-item x scores 1 iff x == y."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    xs, ys = list(x)[:k], list(y)[:k]
    if not xs or not ys:
        return 0.0
    if len(xs) == 1:
        return 1.0 if xs == ys else 0.0
    last = {v: j for j, v in enumerate(ys)}
    points = pairs = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            pairs += 1
            first, second = last.get(xs[i], -1), last.get(xs[j], -1)
            if first == -1:
                continue
            if second == -1 or first < second:
                points += 1
    return points / pairs


#: name used in metric names -> similarity function(x, y, k)
SIMILARITIES: dict[str, Callable[[Items, Items, int], float]] = {
    "jaccard": jaccard_at_k,
    "serp": serp_star_at_k,
    "prag": prag_star_at_k,
}


def snsr(similarity_by_value: Mapping[str, float] | Sequence[float]) -> float:
    """Sensitive-attribute range: max_a sim(a) − min_a sim(a) (0 = no sensitivity)."""
    v = _values(similarity_by_value)
    return float(v.max() - v.min()) if v.size else math.nan


def snsv(similarity_by_value: Mapping[str, float] | Sequence[float]) -> float:
    """Sensitive-attribute variance figure: population standard deviation (ddof=0) of sim(a)."""
    v = _values(similarity_by_value)
    return float(v.std(ddof=0)) if v.size else math.nan


def _values(sims: Mapping[str, float] | Sequence[float]) -> np.ndarray:
    vals = list(sims.values()) if isinstance(sims, Mapping) else list(sims)
    return np.asarray(vals, dtype=float)


#: the notebook-compatible values (``serpnb``, ``pragnb``): reported beside :data:`SIMILARITIES`
#: for comparison with published tables, never instead of them
NOTEBOOK_SIMILARITIES: dict[str, Callable[[Items, Items, int], float]] = {
    "serpnb": serp_star_notebook_at_k,
    "pragnb": prag_star_notebook_at_k,
}
