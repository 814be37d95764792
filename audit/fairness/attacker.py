"""The attribute attacker: a cross-validated classifier predicting a sensitive attribute
from per-user features (user embeddings, or a multi-hot bag of recommended items).

Scikit-learn pipeline: ``StandardScaler`` (without centring for sparse input) then
``LogisticRegression`` or, as a stronger non-linear probe, an ``MLPClassifier`` (adversarially
hidden attributes are often recoverable by a stronger attacker); repeated cross-fitting
(``repeats``) puts the attacker's training variance into the CI; stratified k-fold across users gives out-of-fold
probabilities, from which one AUC and one macro-F1 are computed with bootstrap CIs
over users (the fitted folds are kept; users are resampled).

- Binary attributes: AUC is oriented on the full sample, i.e. max(AUC, 1 − AUC):
  scores are negated when the raw AUC is below 0.5, and the CI is the bootstrap of
  the oriented scores, so a chance-level attacker's CI still straddles 0.5.
- More than two values: macro one-vs-one AUC (``roc_auc_score(multi_class="ovo")``).

0.5 AUC means nothing leaks. Values held by fewer than ``min_users`` users are left
out (their users dropped) and listed in the result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

from audit.results import Metric
from audit.stats import paired_bootstrap


@dataclass(frozen=True)
class AttackResult:
    """Out-of-fold attack figures for one attribute (set) and one feature source."""

    auc: Metric
    f1: Metric
    classes: list[str]
    class_counts: dict[str, int]
    folds: int
    dropped_values: dict[str, int] = field(default_factory=dict)
    oriented: bool = False  # binary only: scores were negated (raw AUC < 0.5)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"auc": self.auc.to_json(), "f1": self.f1.to_json(), "classes": self.classes,
                "class_counts": self.class_counts, "folds": self.folds,
                "dropped_values": self.dropped_values, "oriented": self.oriented, "note": self.note}


def bag_of_items(lists: Sequence[Sequence[str]]) -> sparse.csr_matrix:
    """Multi-hot users x distinct-items matrix (sparse, 0/1) of the given lists."""
    mlb = MultiLabelBinarizer(sparse_output=True)
    return sparse.csr_matrix(mlb.fit_transform([sorted(set(x)) for x in lists]), dtype=float)


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties share their mean rank), equal to
    ``sklearn.metrics.roc_auc_score``; NaN when a class is absent. Fast enough for bootstraps."""
    pos = np.asarray(positive, dtype=bool)
    n1 = int(pos.sum())
    n0 = pos.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ovo_macro_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-one AUC (Hand & Till), equal to ``roc_auc_score(y, proba, multi_class="ovo",
    average="macro")`` for labels 0..n_classes-1; NaN when a class is absent."""
    k = proba.shape[1]
    if np.unique(y).size < k:
        return float("nan")
    pairs = []
    for a in range(k):
        for b in range(a + 1, k):
            mask = (y == a) | (y == b)
            ya = y[mask] == a
            pairs.append((binary_auc(ya, proba[mask, a]) + binary_auc(~ya, proba[mask, b])) / 2)
    return float(np.mean(pairs))


def resample_weights(n: int, *, seed: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n) multiplicities of the users in each bootstrap resample, drawn exactly as
    :func:`audit.stats.paired_bootstrap` draws its resamples (same seed, same resamples)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(n_resamples)]
                    ).astype(float)


def weighted_binary_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of user ``weights`` (resample multiplicities), all rows at once:
    Σ_pos w_i (W_neg below s_i + ½ W_neg tied with s_i) / (W_pos · W_neg). Row weights all 1 give
    :func:`binary_auc`. NaN where a resample has no positive or no negative user."""
    pos = np.asarray(positive, dtype=bool)
    _, group = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    n_groups = int(group.max()) + 1 if group.size else 0
    onehot = np.zeros((pos.size, n_groups))
    onehot[np.arange(pos.size), group] = 1.0
    wp = (weights * pos) @ onehot            # (B, G): positive weight per tie group, ascending score
    wn = (weights * ~pos) @ onehot
    below = np.cumsum(wn, axis=1) - wn       # negative weight strictly below each group
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_auc_ci(y: np.ndarray, scores: np.ndarray, n_classes: int, *, seed: int, n_resamples: int,
                     confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the (binary, or macro one-vs-one) AUC over bootstrap resamples of users,
    the resamples of :func:`audit.stats.paired_bootstrap`; resamples that lose a class are dropped."""
    w = resample_weights(y.size, seed=seed, n_resamples=n_resamples)
    if n_classes == 2:
        draws = weighted_binary_auc(y == 1, scores[:, 0], w)
    else:
        pairs = []
        for a in range(n_classes):
            for b in range(a + 1, n_classes):
                mask = (y == a) | (y == b)
                ya = y[mask] == a
                pairs.append((weighted_binary_auc(ya, scores[mask, a], w[:, mask])
                              + weighted_binary_auc(~ya, scores[mask, b], w[:, mask])) / 2)
        draws = np.mean(pairs, axis=0)
        lost = np.stack([(w[:, y == c].sum(axis=1) == 0) for c in range(n_classes)]).any(axis=0)
        draws[lost] = np.nan
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    return (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes 0..n_classes-1 of F1 (0 for a class never true nor predicted),
    equal to ``f1_score(..., average="macro", zero_division=0)`` with those labels."""
    conf = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(conf).astype(float)
    denom = conf.sum(axis=0) + conf.sum(axis=1)
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)))


ATTACKERS: tuple[str, ...] = ("logistic", "mlp")


def _classifier(model: str, c: float, seed: int, is_sparse: bool) -> Any:
    """The attacker's scikit-learn pipeline: ``logistic`` (L2 logistic regression) or ``mlp``
    (a stronger, non-linear probe: one hidden layer of 64 ReLU units, L2 ``1 / c``)."""
    scale = StandardScaler(with_mean=not is_sparse)
    if model == "logistic":
        return make_pipeline(scale, LogisticRegression(C=c, max_iter=2000, random_state=seed))
    if model == "mlp":
        from sklearn.neural_network import MLPClassifier

        return make_pipeline(scale, MLPClassifier(hidden_layer_sizes=(64,), alpha=1.0 / c, max_iter=300,
                                                  random_state=seed))
    raise ValueError(f"unknown attacker model {model!r}; choose from {', '.join(ATTACKERS)}")


def attack(features: np.ndarray | sparse.spmatrix, labels: Sequence[str], *, seed: int, folds: int = 5,
           min_users: int = 10, c: float = 1.0, n_resamples: int = 1000, model: str = "logistic",
           repeats: int = 1) -> AttackResult:
    """Cross-validate the attacker on ``features`` (one row per user) against ``labels``.

    ``repeats`` > 1 repeats the cross-fitting with new fold splits and model seeds: the AUC and
    F1 are the means over repeats and their CI is the envelope (lowest low, highest high) of the
    repeats' bootstrap CIs, so it includes the attacker's training variance, not only the
    resampling of one set of out-of-fold predictions.
    Returns NaN figures with a note when fewer than two values keep ``min_users`` users."""
    if repeats > 1:
        runs = [attack(features, labels, seed=seed + 1000 * r, folds=folds, min_users=min_users, c=c,
                       n_resamples=n_resamples, model=model) for r in range(repeats)]
        first = runs[0]
        if not np.isfinite(first.auc.value):
            return first

        def pooled(ms: list[Metric]) -> Metric:
            cis = [m.ci for m in ms if m.ci is not None]
            ci = (min(c_[0] for c_ in cis), max(c_[1] for c_ in cis)) if cis else None
            return Metric(float(np.mean([m.value for m in ms])), ms[0].n, ci)

        note = (first.note + "; " if first.note else "") + (
            f"{repeats} repeated cross-fittings: mean figure, CI = envelope of the repeats' CIs "
            f"(AUC per repeat {', '.join(f'{r.auc.value:.3f}' for r in runs)})")
        return AttackResult(pooled([r.auc for r in runs]), pooled([r.f1 for r in runs]), first.classes,
                            first.class_counts, first.folds, first.dropped_values,
                            any(r.oriented for r in runs), note)
    y_all = np.asarray([str(v) for v in labels], dtype=object)
    values, counts = np.unique(y_all, return_counts=True)
    count_map = {str(v): int(n) for v, n in zip(values, counts)}
    kept = [str(v) for v, n in zip(values, counts) if n >= min_users]
    dropped = {v: n for v, n in count_map.items() if v not in kept}
    mask = np.isin(y_all, kept)
    n = int(mask.sum())
    if len(kept) < 2:
        nan = Metric(float("nan"), n)
        return AttackResult(nan, nan, kept, {v: count_map[v] for v in kept}, 0, dropped,
                            note=f"fewer than two values with at least {min_users} users: nothing to attack")
    x = features[np.flatnonzero(mask)] if sparse.issparse(features) else np.asarray(features, float)[mask]
    y = np.searchsorted(np.asarray(kept, dtype=object), y_all[mask])
    n_folds = int(min(folds, min(count_map[v] for v in kept)))
    clf = _classifier(model, c, seed, sparse.issparse(x))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        proba = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")
    k = len(kept)
    pred = proba.argmax(axis=1)
    oriented = False
    if k == 2:
        scores = proba[:, 1:2].copy()
        if roc_auc_score(y, scores[:, 0]) < 0.5:
            scores, oriented = -scores, True
    else:
        scores = proba
    rows = np.column_stack([y, pred])

    def f1_stat(r: np.ndarray) -> float:
        return macro_f1(r[:, 0].astype(int), r[:, 1].astype(int), k)

    # point estimates straight from scikit-learn; the bootstraps use equal rank-based forms
    point_auc = (roc_auc_score(y, scores[:, 0]) if k == 2
                 else roc_auc_score(y, scores, multi_class="ovo", average="macro", labels=np.arange(k)))
    point_f1 = f1_score(y, pred, average="macro", labels=np.arange(k), zero_division=0)
    auc = Metric(float(point_auc), n, bootstrap_auc_ci(y, scores, k, seed=seed, n_resamples=n_resamples))
    f1 = Metric(float(point_f1), n, paired_bootstrap(rows, f1_stat, seed=seed, n_resamples=n_resamples))
    note = ""
    if dropped:
        note = (f"values with fewer than {min_users} users left out: "
                + ", ".join(f"{v} ({m})" for v, m in sorted(dropped.items())))
    return AttackResult(auc, f1, kept, {v: count_map[v] for v in kept}, n_folds, dropped, oriented, note)
