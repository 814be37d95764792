"""Empirical epsilon lower bounds: one-run (Steinke et al.) and Clopper-Pearson (Jagielski et al.)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from audit.memorisation.epsilon import (audit_epsilon, clopper_pearson_epsilon, clopper_pearson_upper, group_epsilon,
                                        one_run_counts, one_run_epsilon, one_run_guesses, one_run_p_value)


def test_one_run_p_value_with_zero_delta_is_the_binomial_tail():
    eps = 1.0
    q = math.exp(eps) / (1 + math.exp(eps))
    assert one_run_p_value(1000, 100, 80, eps) == pytest.approx(stats.binom.sf(79, 100, q))
    assert one_run_p_value(1000, 100, 0, eps) == 1.0


def test_one_run_delta_only_makes_the_p_value_larger():
    base = one_run_p_value(1000, 200, 150, 1.0, 0.0)
    assert one_run_p_value(1000, 200, 150, 1.0, 1e-5) > base


def test_one_run_epsilon_is_the_largest_eps_rejected_at_alpha():
    m, r, v = 1000, 100, 90
    eps = one_run_epsilon(m, r, v, alpha=0.05)
    assert eps > 1.0
    assert one_run_p_value(m, r, v, eps) < 0.05 <= one_run_p_value(m, r, v, eps + 1e-6)
    assert one_run_epsilon(m, r, 50, alpha=0.05) == 0.0  # coin-flip accuracy proves nothing


def test_perfect_guesses_reach_the_randomised_response_bound():
    # r right guesses out of r: p-value q^r; the bound solves q^r = alpha
    r = 40
    eps = one_run_epsilon(100, r, r, alpha=0.05)
    q = 0.05 ** (1 / r)
    assert eps == pytest.approx(math.log(q / (1 - q)), abs=1e-6)


def test_guesses_take_the_top_as_in_and_the_bottom_as_out():
    g = one_run_guesses(np.array([0.1, 0.9, 0.5, 0.2, 0.8]), k_pos=2, k_neg=1)
    assert g.tolist() == [-1, 1, 0, 0, 1]
    assert one_run_counts(np.array([0.1, 0.9, 0.5, 0.2, 0.8]), np.array([0, 1, 0, 0, 0], bool), 2, 1) == (3, 2)


def test_clopper_pearson_upper_matches_the_beta_quantile_and_binomial_test():
    ub = clopper_pearson_upper(3, 50, 0.025)
    assert ub == pytest.approx(stats.beta.ppf(0.975, 4, 47))
    # the exact binomial test at the bound has p-value alpha
    assert stats.binom.cdf(3, 50, ub) == pytest.approx(0.025, rel=1e-6)
    assert clopper_pearson_upper(50, 50, 0.025) == 1.0


def test_clopper_pearson_epsilon_is_the_better_of_both_dp_inequalities():
    # perfect separation of 100 + 100: FPR+ = FNR+ = 1 - 0.025^(1/100)
    ub = 1 - 0.025 ** (1 / 100)
    assert clopper_pearson_epsilon(tp=100, fn=0, fp=0, tn=100) == pytest.approx(math.log((1 - ub) / ub))
    # all members caught but half the non-members too: only TNR <= e^eps FNR is informative
    fpr_ub = clopper_pearson_upper(50, 100, 0.025)
    expected = math.log((1 - fpr_ub) / ub)
    assert clopper_pearson_epsilon(tp=100, fn=0, fp=50, tn=50) == pytest.approx(expected)
    # the mirror case (no false positive, half the members missed) uses TPR <= e^eps FPR
    assert clopper_pearson_epsilon(tp=50, fn=50, fp=0, tn=100) == pytest.approx(expected)
    assert clopper_pearson_epsilon(tp=50, fn=50, fp=50, tn=50) == 0.0


@pytest.mark.parametrize("selection", ["split", "bonferroni"])
def test_a_planted_leak_gives_a_positive_bound(selection):
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + 3.0 * included
    audit = audit_epsilon(scores, included, selection=selection, seed=0)
    assert audit.one_run > 0.5
    assert audit.clopper_pearson > 0.5


@pytest.mark.parametrize("selection", ["split", "bonferroni"])
def test_null_audit_bound_is_zero_in_at_least_95_percent_of_seeds(selection):
    seeds = 100
    zero_one_run = zero_cp = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        included = rng.random(200) < 0.5
        scores = rng.normal(size=200)  # the model ignores membership
        audit = audit_epsilon(scores, included, selection=selection, seed=seed)
        zero_one_run += audit.one_run == 0.0
        zero_cp += audit.clopper_pearson == 0.0
    assert zero_one_run / seeds >= 0.95
    assert zero_cp / seeds >= 0.95


def test_searching_thresholds_without_correction_would_inflate_the_bound():
    """The reason for split/Bonferroni: the best of many uncorrected thresholds on null data
    is positive more often than alpha (measured: 9 of 100 seeds)."""
    from audit.memorisation.epsilon import _best_clopper_pearson

    positive = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        included = rng.random(200) < 0.5
        eps, _ = _best_clopper_pearson(rng.normal(size=200), included, 0.0, 0.05)
        positive += eps > 0
    assert positive / 100 > 0.05


def test_single_class_canaries_bound_nothing():
    audit = audit_epsilon(np.arange(10.0), np.ones(10, bool))
    assert audit.one_run == 0.0 and audit.clopper_pearson == 0.0


def test_the_vectorised_threshold_search_equals_the_scalar_bound_at_every_threshold():
    from audit.memorisation.epsilon import _best_clopper_pearson, candidate_thresholds, confusion_at

    rng = np.random.default_rng(5)
    included = rng.random(120) < 0.5
    scores = rng.normal(size=120) + 1.5 * included
    best = max(clopper_pearson_epsilon(*confusion_at(scores, included, t), alpha=0.05)
               for t in candidate_thresholds(scores))
    eps, thr = _best_clopper_pearson(scores, included, 0.0, 0.05)
    assert eps == pytest.approx(best) and eps > 0
    assert clopper_pearson_epsilon(*confusion_at(scores, included, thr), alpha=0.05) == pytest.approx(eps)


def test_a_group_bound_is_divided_by_the_group_size_at_delta_zero():
    """Issue 14: a canary inserted k times audits a group of k records; per record, epsilon is
    the group's divided by k (group privacy), not the group's figure itself."""
    bound = lambda d: one_run_epsilon(200, 60, 55, delta=d)  # noqa: E731
    assert bound(0.0) > 1.0
    assert group_epsilon(bound, 1, 0.0) == bound(0.0)
    assert group_epsilon(bound, 4, 0.0) == pytest.approx(bound(0.0) / 4)


def test_with_delta_the_group_delta_grows_and_the_per_record_bound_is_smaller_still():
    k, delta = 4, 1e-4
    bound = lambda d: one_run_epsilon(200, 60, 55, delta=d)  # noqa: E731
    eps = group_epsilon(bound, k, delta)
    assert 0 < eps <= bound(delta) / k
    # the bound refutes the group's (k eps, k e^((k-1) eps) delta) that a per-record eps implies ...
    assert k * eps <= bound(k * math.exp((k - 1) * eps) * delta) + 1e-9
    # ... and not for noticeably larger eps
    bigger = eps * 1.01
    assert k * bigger > bound(k * math.exp((k - 1) * bigger) * delta)


def test_audit_epsilon_reports_per_record_bounds_for_grouped_canaries():
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    scores = included * 3.0 + rng.normal(size=400)
    single = audit_epsilon(scores, included, seed=1)
    grouped = audit_epsilon(scores, included, seed=1, group_size=4)
    assert single.one_run > 1.0 and single.clopper_pearson > 1.0
    assert grouped.one_run == pytest.approx(single.one_run / 4)
    assert grouped.clopper_pearson == pytest.approx(single.clopper_pearson / 4)
    assert grouped.details["group_size"] == 4
    both = audit_epsilon(scores, included, selection="bonferroni", group_size=2)
    assert both.one_run == pytest.approx(audit_epsilon(scores, included, selection="bonferroni").one_run / 2)
