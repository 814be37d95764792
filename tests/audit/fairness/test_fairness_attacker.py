"""The cross-validated attribute attacker: separable features give AUC near 1, noise gives a CI
around 0.5, fast bootstrap statistics equal scikit-learn's, rare values are dropped with a note."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from audit.fairness.attacker import attack, bag_of_items, binary_auc, macro_f1, ovo_macro_auc


def labels(n: int, values: tuple[str, ...] = ("F", "M")) -> np.ndarray:
    return np.array([values[i % len(values)] for i in range(n)], dtype=object)


def test_separable_features_are_attacked_with_auc_near_one() -> None:
    y = labels(60)
    rng = np.random.default_rng(0)
    x = np.column_stack([(y == "F").astype(float) + rng.normal(0, 0.1, 60), rng.normal(size=(60, 3))])
    res = attack(x, y, seed=0, n_resamples=200)
    assert res.auc.value > 0.95 and res.auc.ci[0] > 0.9
    assert res.f1.value > 0.9 and res.auc.n == 60 and res.folds == 5
    assert res.classes == ["F", "M"]


def test_noise_features_have_an_auc_ci_containing_one_half() -> None:
    x = np.random.default_rng(1).normal(size=(80, 6))
    res = attack(x, labels(80), seed=0, n_resamples=300)
    assert res.auc.value >= 0.5  # binary AUC is oriented: max(AUC, 1 - AUC)
    assert res.auc.ci[0] <= 0.5 <= res.auc.ci[1]


def test_fast_statistics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y2 = rng.integers(0, 2, 50)
    s = np.round(rng.random(50), 1)  # ties on purpose
    assert binary_auc(y2 == 1, s) == pytest.approx(roc_auc_score(y2, s))
    y4 = np.arange(60) % 4
    proba = rng.dirichlet(np.ones(4), size=60)
    assert ovo_macro_auc(y4, proba) == pytest.approx(roc_auc_score(y4, proba, multi_class="ovo", average="macro"))
    pred = rng.integers(0, 4, 60)
    pred[pred == 3] = 2  # a class never predicted
    assert macro_f1(y4, pred, 4) == pytest.approx(f1_score(y4, pred, average="macro", zero_division=0))
    assert math.isnan(binary_auc(np.ones(5, bool), s[:5]))


def test_rare_values_are_left_out_and_named() -> None:
    y = np.array(["a"] * 30 + ["b"] * 30 + ["c"] * 3, dtype=object)
    x = np.random.default_rng(3).normal(size=(63, 4))
    res = attack(x, y, seed=0, min_users=10, n_resamples=100)
    assert res.classes == ["a", "b"] and res.dropped_values == {"c": 3}
    assert res.auc.n == 60 and "c (3)" in res.note


def test_a_single_usable_value_gives_no_numbers_and_says_why() -> None:
    res = attack(np.zeros((12, 2)), ["a"] * 10 + ["b"] * 2, seed=0, min_users=5)
    assert math.isnan(res.auc.value) and "fewer than two values" in res.note


def test_bag_of_items_is_multi_hot_over_distinct_titles() -> None:
    bag = bag_of_items([["x", "y"], ["y", "y", "z"], []])
    assert bag.shape == (3, 3)
    assert bag.toarray().tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_sparse_bags_that_reveal_the_label_are_attacked() -> None:
    y = labels(40)
    lists = [["f1", "f2", f"u{i}"] if lab == "F" else ["m1", "m2", f"u{i}"] for i, lab in enumerate(y)]
    res = attack(bag_of_items(lists), y, seed=0, n_resamples=100)
    assert res.auc.value == 1.0


def test_vectorised_bootstrap_auc_equals_resampling_users_one_by_one() -> None:
    from audit.fairness.attacker import bootstrap_auc_ci, resample_weights, weighted_binary_auc
    from audit.stats import paired_bootstrap

    rng = np.random.default_rng(6)
    y = np.arange(45) % 3
    proba = rng.dirichlet(np.ones(3), size=45).round(2)  # ties on purpose
    w = resample_weights(45, seed=3, n_resamples=5)
    idx_rng = np.random.default_rng(3)
    for row in w:
        idx = idx_rng.integers(0, 45, size=45)
        explicit = binary_auc(y[idx] == 1, proba[idx, 1])
        assert weighted_binary_auc(y == 1, proba[:, 1], row[None, :])[0] == pytest.approx(explicit)
    rows = np.column_stack([y, proba])
    expected = paired_bootstrap(rows, lambda r: ovo_macro_auc(r[:, 0].astype(int), r[:, 1:]), seed=3,
                                n_resamples=200)
    assert bootstrap_auc_ci(y, proba, 3, seed=3, n_resamples=200) == pytest.approx(expected)
    y2 = (np.arange(45) % 2)
    expected2 = paired_bootstrap(np.column_stack([y2, proba[:, 0]]),
                                 lambda r: binary_auc(r[:, 0] == 1, r[:, 1]), seed=1, n_resamples=200)
    assert bootstrap_auc_ci(y2, proba[:, :1], 2, seed=1, n_resamples=200) == pytest.approx(expected2)


def test_a_stronger_attacker_recovers_what_logistic_regression_cannot() -> None:
    """Issue 14: an attribute hidden from a linear probe (XOR of two features) is recovered by the MLP."""
    rng = np.random.default_rng(3)
    a, b = rng.choice([-1.0, 1.0], size=(2, 200))
    y = np.where(a * b > 0, "F", "M").astype(object)
    x = np.column_stack([a + rng.normal(0, 0.2, 200), b + rng.normal(0, 0.2, 200)])
    linear = attack(x, y, seed=0, n_resamples=200, model="logistic")
    strong = attack(x, y, seed=0, n_resamples=200, model="mlp")
    assert linear.auc.ci[0] <= 0.5 + 0.1
    assert strong.auc.ci[0] > 0.85


def test_repeated_cross_fitting_widens_the_ci_by_the_attackers_training_variance() -> None:
    x = np.random.default_rng(4).normal(size=(80, 6))
    once = attack(x, labels(80), seed=0, n_resamples=300)
    repeated = attack(x, labels(80), seed=0, n_resamples=300, repeats=4)
    assert repeated.auc.ci[0] <= once.auc.ci[0] and repeated.auc.ci[1] >= once.auc.ci[1]
    assert "4 repeated cross-fittings" in repeated.note
