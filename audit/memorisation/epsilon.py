"""Empirical lower bounds on the epsilon of (epsilon, delta)-DP from canary guesses.

Two auditors, both at significance ``alpha`` (default 0.05):

- **one run** (Steinke, Nasr and Jagielski 2023, "Privacy Auditing with One (1) Training
  Run", Theorem 3.1 / Proposition 5.7): m canaries, each included in training
  independently with probability 1/2. The auditor guesses "in" for the ``k_pos``
  highest scores and "out" for the ``k_neg`` lowest, abstaining elsewhere; with r guesses
  of which v are right, an (eps, delta)-DP algorithm gives
  P[>= v right] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta alpha_v, and the
  bound is the largest eps whose p-value is below ``alpha`` (found by bisection);
- **Clopper-Pearson** (Jagielski, Ullman and Oprea 2020): at one threshold, with one-sided
  Clopper-Pearson upper bounds FPR+ and FNR+ (each at alpha / 2),
  eps >= max(log((1 - delta - FPR+) / FNR+), log((1 - delta - FNR+) / FPR+)).

A canary inserted ``group_size`` times (the canaries variant's ``audit_repetitions``) is a
group of records: the audit then bounds the group's epsilon, and :func:`group_epsilon` turns
it into a per-record bound by group privacy ((eps, delta)-DP per record implies
(k eps, k e^((k-1) eps) delta)-DP for k records): the group bound divided by k at delta 0,
a little less at delta > 0.

Choosing ``k_pos``/``k_neg`` or the threshold on the very scores the bound is computed
from inflates it. :func:`audit_epsilon` therefore either chooses them on a seeded half of
the canaries and bounds on the other half (``selection="split"``, the default) or searches
every option on all canaries with a Bonferroni-corrected ``alpha`` (``"bonferroni"``).
Scores follow "higher = more likely included".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
from scipy import stats
from scipy.special import expit

from audit.memorisation.roc import checked_scores

DEFAULT_ALPHA = 0.05
#: shares of the canaries guessed "in" (top scores) by the one-run auditor's search
GUESS_SHARES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
_BISECTION_STEPS = 40
_EPS_CAP = 50.0

Selection = Literal["split", "bonferroni"]


# -- one run (Steinke, Nasr, Jagielski 2023) ----------------------------------------------
def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """P-value of >= ``v`` right guesses out of ``r`` (``m`` canaries) under (eps, delta)-DP."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got eps={eps}, delta={delta}")
    if v == 0:
        return 1.0
    q = float(expit(eps))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0:
        return min(1.0, beta)
    i = np.arange(1, v + 1)
    # P[v - i <= Binomial(r, q) < v] / i, maximised over i (the delta term of Prop. 5.7)
    cumulative = stats.binom.sf(v - i - 1, r, q) - beta
    alpha_v = float(np.max(cumulative / i, initial=0.0))
    return min(1.0, beta + alpha_v * delta * 2 * m)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float = 0.0, alpha: float = DEFAULT_ALPHA) -> float:
    """Largest eps (>= 0) whose one-run p-value is below ``alpha``; 0 when eps = 0 is not rejected."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        lo, hi = hi, 2 * hi
        if hi > _EPS_CAP:
            return _EPS_CAP
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_guesses(scores: np.ndarray, k_pos: int, k_neg: int) -> np.ndarray:
    """+1 for the ``k_pos`` highest scores, -1 for the ``k_neg`` lowest, 0 (abstain) elsewhere.

    Ties are broken by position (stable sort), which does not look at the labels."""
    s = np.asarray(scores, dtype=float)
    if k_pos + k_neg > s.size:
        raise ValueError(f"k_pos + k_neg = {k_pos + k_neg} exceeds the {s.size} canaries")
    order = np.argsort(-s, kind="stable")
    guesses = np.zeros(s.size, dtype=int)
    guesses[order[:k_pos]] = 1
    if k_neg:
        guesses[order[s.size - k_neg:]] = -1
    return guesses


def one_run_counts(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int) -> tuple[int, int]:
    """(r guesses, v right guesses) of the top/bottom rule."""
    g = one_run_guesses(scores, k_pos, k_neg)
    truth = np.where(np.asarray(included, dtype=bool), 1, -1)
    return int(np.sum(g != 0)), int(np.sum(g == truth))


# -- Clopper-Pearson (Jagielski, Ullman, Oprea 2020) --------------------------------------
def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound of a proportion k / n."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, k + 1, n - k))


def clopper_pearson_epsilon(tp: int, fn: int, fp: int, tn: int, *, delta: float = 0.0,
                            alpha: float = DEFAULT_ALPHA) -> float:
    """Epsilon lower bound (>= 0) from one threshold's confusion counts, both directions."""
    fpr_ub = clopper_pearson_upper(fp, fp + tn, alpha / 2)
    fnr_ub = clopper_pearson_upper(fn, fn + tp, alpha / 2)
    best = 0.0
    for num, den in ((1 - delta - fpr_ub, fnr_ub), (1 - delta - fnr_ub, fpr_ub)):
        if num > 0 and den > 0:
            best = max(best, math.log(num / den))
        elif num > 0 and den == 0:  # cannot happen with Clopper-Pearson bounds; kept for safety
            best = max(best, _EPS_CAP)
    return min(best, _EPS_CAP)


def confusion_at(scores: np.ndarray, included: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(tp, fn, fp, tn) of the rule "included when score >= threshold"."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(included, dtype=bool)
    pred = s >= threshold
    return (int(np.sum(pred & y)), int(np.sum(~pred & y)), int(np.sum(pred & ~y)), int(np.sum(~pred & ~y)))


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every distinct score plus +inf (the rule that guesses nothing)."""
    return np.concatenate([np.unique(np.asarray(scores, dtype=float)), [np.inf]])


# -- groups of records (a canary inserted several times) ------------------------------------
def group_epsilon(group_bound: Callable[[float], float], group_size: int, delta: float) -> float:
    """Per-record epsilon lower bound from an audit whose unit is a group of ``group_size`` records.

    ``group_bound(d)``: the largest group epsilon the audit refutes at group delta ``d``
    (non-increasing in ``d``). A per-record (eps, delta) implies the group's
    (k eps, min(1, k e^((k-1) eps) delta)), so eps is refuted when k eps is at most
    ``group_bound`` at that group delta; the largest such eps is found by bisection
    (exactly ``group_bound(0) / k`` at delta 0)."""
    k = int(group_size)
    if k < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if k == 1:
        return group_bound(delta)
    if delta == 0:
        return group_bound(0.0) / k

    def refuted(eps: float) -> bool:
        return k * eps <= group_bound(min(1.0, k * math.exp(min((k - 1) * eps, 700.0)) * delta))

    hi = group_bound(min(1.0, k * delta)) / k  # the group delta only grows with eps
    if hi <= 0 or refuted(hi):
        return max(hi, 0.0)
    lo = 0.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if refuted(mid) else (lo, mid)
    return lo


# -- the audit with an honest choice of thresholds ----------------------------------------
@dataclass(frozen=True)
class EpsilonAudit:
    """Both lower bounds and how their guess rules were chosen."""

    one_run: float
    clopper_pearson: float
    m: int
    details: dict[str, Any] = field(default_factory=dict)


def _guess_options(m: int, shares: Sequence[float]) -> list[tuple[int, int]]:
    opts = set()
    for share in shares:
        k = max(1, int(round(share * m)))
        opts.add((min(k, m), 0))
        if 2 * k <= m:
            opts.add((k, k))
    return sorted(opts)


def _best_one_run(scores: np.ndarray, included: np.ndarray, shares: Sequence[float], delta: float,
                  alpha: float) -> tuple[float, tuple[float, float], tuple[int, int]]:
    """Best one-run bound over the share grid at level ``alpha``: (eps, (pos share, neg share), (r, v))."""
    m = scores.size
    best = (0.0, (shares[0], 0.0), (0, 0))
    for k_pos, k_neg in _guess_options(m, shares):
        r, v = one_run_counts(scores, included, k_pos, k_neg)
        eps = one_run_epsilon(m, r, v, delta=delta, alpha=alpha)
        if eps > best[0] or best[2] == (0, 0):
            best = (eps, (k_pos / m, k_neg / m), (r, v))
    return best


def _best_clopper_pearson(scores: np.ndarray, included: np.ndarray, delta: float,
                          alpha: float) -> tuple[float, float]:
    """Best Clopper-Pearson bound over every threshold at level ``alpha``: (eps, threshold).

    Vectorised form of :func:`clopper_pearson_epsilon` over :func:`candidate_thresholds`."""
    thresholds = candidate_thresholds(scores)
    pos = np.sort(scores[included])
    neg = np.sort(scores[~included])
    n1, n0 = pos.size, neg.size
    tp = n1 - np.searchsorted(pos, thresholds, side="left")
    fp = n0 - np.searchsorted(neg, thresholds, side="left")
    fn = n1 - tp

    def upper(k: np.ndarray, n: int) -> np.ndarray:
        if n == 0:
            return np.ones_like(k, dtype=float)
        safe = np.minimum(k, n - 1)
        return np.where(k < n, stats.beta.ppf(1 - alpha / 2, safe + 1, n - safe), 1.0)

    fpr_ub, fnr_ub = upper(fp, n0), upper(fn, n1)
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.where(1 - delta - fpr_ub > 0, np.log((1 - delta - fpr_ub) / fnr_ub), 0.0)
        two = np.where(1 - delta - fnr_ub > 0, np.log((1 - delta - fnr_ub) / fpr_ub), 0.0)
    eps = np.clip(np.nan_to_num(np.maximum(one, two), nan=0.0, posinf=_EPS_CAP), 0.0, _EPS_CAP)
    best = int(np.argmax(eps))
    if eps[best] <= 0:
        return (0.0, float("inf"))
    return (float(eps[best]), float(thresholds[best]))


def audit_epsilon(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *,
                  delta: float = 0.0, alpha: float = DEFAULT_ALPHA, selection: Selection = "split",
                  seed: int = 0, shares: Sequence[float] = GUESS_SHARES, group_size: int = 1) -> EpsilonAudit:
    """One-run and Clopper-Pearson epsilon lower bounds from canary scores (higher = included).

    ``included[i]`` says whether canary i was inserted into training (each with probability
    1/2 for the one-run bound to hold). ``selection``: ``"split"`` chooses the guess shares
    and the threshold on a seeded half and bounds on the other half; ``"bonferroni"``
    searches all options on all canaries at ``alpha`` divided by the number of options.
    ``group_size``: records per canary (copies inserted); both bounds are then per record
    (:func:`group_epsilon`).
    """
    s, y = checked_scores(scores, included, "canary")
    m = int(s.size)
    if m < 2 or y.all() or not y.any():
        return EpsilonAudit(0.0, 0.0, m, {"reason": "needs at least one included and one excluded canary"})
    if selection == "bonferroni":
        options = _guess_options(m, shares)
        thresholds = candidate_thresholds(s)
        eps1, share1, (r, v) = _best_one_run(s, y, shares, delta, alpha / len(options))
        eps_cp, thr = _best_clopper_pearson(s, y, delta, alpha / len(thresholds))
        if group_size > 1:
            eps1 = group_epsilon(lambda d: _best_one_run(s, y, shares, d, alpha / len(options))[0],
                                 group_size, delta)
            eps_cp = group_epsilon(lambda d: _best_clopper_pearson(s, y, d, alpha / len(thresholds))[0],
                                   group_size, delta)
        return EpsilonAudit(eps1, eps_cp, m, {
            "selection": "bonferroni", "alpha": alpha, "group_size": group_size, "one_run_options": len(options),
            "threshold_options": int(len(thresholds)), "guess_shares": list(share1),
            "guesses": r, "correct": v, "threshold": thr})
    if selection != "split":
        raise ValueError(f"selection must be 'split' or 'bonferroni', got {selection!r}")
    perm = np.random.default_rng(seed).permutation(m)
    pick, held = perm[: m // 2], perm[m // 2:]
    if y[held].all() or not y[held].any():
        return EpsilonAudit(0.0, 0.0, int(held.size),
                            {"selection": "split", "reason": "the bound half has a single class"})
    _, (pos_share, neg_share), _ = _best_one_run(s[pick], y[pick], shares, delta, alpha)
    _, thr = _best_clopper_pearson(s[pick], y[pick], delta, alpha)
    sh, yh = s[held], y[held]
    mh = int(held.size)
    k_pos = min(mh, max(1, int(round(pos_share * mh))))
    k_neg = min(mh - k_pos, int(round(neg_share * mh)))
    r, v = one_run_counts(sh, yh, k_pos, k_neg)
    tp, fn, fp, tn = confusion_at(sh, yh, thr)
    eps1 = group_epsilon(lambda d: one_run_epsilon(mh, r, v, delta=d, alpha=alpha), group_size, delta)
    eps_cp = group_epsilon(lambda d: clopper_pearson_epsilon(tp, fn, fp, tn, delta=d, alpha=alpha), group_size, delta)
    return EpsilonAudit(eps1, eps_cp, mh, {
        "selection": "split", "alpha": alpha, "delta": delta, "group_size": group_size, "chosen_on": int(pick.size),
        "bounded_on": mh, "guess_shares": [pos_share, neg_share], "guesses": r, "correct": v,
        "threshold": thr, "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn}})
