"""List similarities and sensitivity figures reproduce the issue's worked examples."""

from __future__ import annotations

import math

import pytest

from audit.fairness.metrics import (NOTEBOOK_SIMILARITIES, SIMILARITIES, jaccard_at_k, prag_star_at_k,
                                    prag_star_notebook_at_k, serp_star_at_k, serp_star_notebook_at_k, snsr, snsv,
                                    top_k)

NEUTRAL = ["A", "B", "C", "D"]
COUNTERFACTUAL = ["B", "A", "E", "C"]


def test_worked_example_gives_jaccard_serp_prag_of_the_issue() -> None:
    assert jaccard_at_k(COUNTERFACTUAL, NEUTRAL, 4) == pytest.approx(0.6)
    assert serp_star_at_k(COUNTERFACTUAL, NEUTRAL, 4) == pytest.approx(0.8)
    assert prag_star_at_k(COUNTERFACTUAL, NEUTRAL, 4) == pytest.approx(0.6667, abs=5e-5)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_identical_lists_score_one_and_disjoint_lists_zero(name: str) -> None:
    fn = SIMILARITIES[name]
    assert fn(NEUTRAL, NEUTRAL, 4) == 1.0
    assert fn(["W", "X", "Y", "Z"], NEUTRAL, 4) == 0.0


def test_prag_of_a_swapped_pair_is_zero() -> None:
    assert prag_star_at_k(["A", "B"], ["B", "A"], 2) == 0.0


def test_rank_aware_measures_penalise_a_reordering_that_jaccard_ignores() -> None:
    reversed_list = list(reversed(NEUTRAL))
    assert jaccard_at_k(reversed_list, NEUTRAL, 4) == 1.0
    assert prag_star_at_k(reversed_list, NEUTRAL, 4) == 0.0
    assert serp_star_at_k(reversed_list, NEUTRAL, 4) == 1.0  # SERP* weighs membership by x's rank only


def test_lists_are_cut_to_k_before_comparing() -> None:
    assert jaccard_at_k(["A", "B", "X"], ["A", "B", "Y"], 2) == 1.0
    assert top_k(["A", "A", "B", "C"], 3) == ["A", "B"]


def test_two_empty_lists_have_no_similarity_and_one_empty_list_scores_zero() -> None:
    for fn in SIMILARITIES.values():
        assert math.isnan(fn([], [], 10))
        assert fn([], NEUTRAL, 10) == 0.0
        assert fn(NEUTRAL, [], 10) == 0.0


def test_snsr_and_snsv_of_the_issue_example() -> None:
    sims = {"F": 0.8, "M": 0.6, "X": 0.7}
    assert snsr(sims) == pytest.approx(0.2)
    assert snsv(sims) == pytest.approx(0.08165, abs=5e-6)


def test_equal_similarities_have_zero_sensitivity() -> None:
    assert snsr([0.5, 0.5]) == 0.0
    assert snsv([0.5, 0.5]) == 0.0


def test_k_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="k must be"):
        jaccard_at_k(NEUTRAL, NEUTRAL, 0)


# -- the FaiRLLM authors' notebook (process.ipynb: calc_serp_ms, calc_prag), values worked by hand ----
TEN = list("ABCDEFGHIJ")


def test_notebook_serp_scores_identical_ten_item_lists_13_over_44() -> None:
    """Issue 14: the notebook's SERP* gives identical K = 10 lists 0.2955, the paper's formula 1."""
    assert serp_star_notebook_at_k(TEN, TEN, 10) == pytest.approx(13 / 44) == pytest.approx(0.2955, abs=5e-5)
    assert serp_star_at_k(TEN, TEN, 10) == 1.0
    # at most (K + 3) / (4 (K + 1)) for lists without repeats; 0.5 at K = 1
    assert serp_star_notebook_at_k(["A"], ["A"], 1) == 0.5


def test_notebook_values_on_the_worked_example() -> None:
    # matches B (i=1: 4-1+1 = 4), A (i=0: 5), C (i=3: 2) -> 11 * 0.5 / (5 * 4)
    assert serp_star_notebook_at_k(COUNTERFACTUAL, NEUTRAL, 4) == pytest.approx(11 * 0.5 / 20)
    # pairs (B,A) 0, (B,E) 1, (B,C) 1, (A,E) 1, (A,C) 1, (E,C) 0 -> 4 / 6
    assert prag_star_notebook_at_k(COUNTERFACTUAL, NEUTRAL, 4) == pytest.approx(4 / 6)


def test_notebook_prag_does_not_count_the_missing_slots_of_a_short_list() -> None:
    short, full = ["A", "B"], ["A", "B", "C", "D", "E"]
    assert prag_star_notebook_at_k(short, full, 5) == 1.0  # one pair, in order
    assert prag_star_at_k(short, full, 5) == pytest.approx(0.7)  # 7 of the 10 pairs of K = 5 slots
    assert serp_star_notebook_at_k(short, full, 5) == pytest.approx((3 + 2) * 0.5 / (6 * 5))
    # a one-item list scores 1 only against exactly that one-item list
    assert prag_star_notebook_at_k(["A"], ["A"], 5) == 1.0
    assert prag_star_notebook_at_k(["A"], ["A", "B"], 5) == 0.0


def test_notebook_values_keep_repeats_and_score_empty_lists_zero() -> None:
    x, y = ["A", "A", "B"], ["A", "B", "C"]
    assert serp_star_notebook_at_k(x, y, 3) == pytest.approx((4 + 3 + 2) * 0.5 / (4 * 3))
    assert prag_star_notebook_at_k(x, y, 3) == pytest.approx(2 / 3)  # (A, A) scores 0
    assert prag_star_at_k(x, y, 3) == 1.0  # the paper's measure de-duplicates first
    for fn in NOTEBOOK_SIMILARITIES.values():
        assert fn([], [], 10) == 0.0 and fn(["A"], [], 10) == 0.0
    assert math.isnan(serp_star_at_k([], [], 10))


def test_notebook_values_cut_to_k_first() -> None:
    assert serp_star_notebook_at_k(TEN, TEN, 3) == pytest.approx((4 + 3 + 2) * 0.5 / (4 * 3))
    assert prag_star_notebook_at_k(TEN[::-1], TEN, 10) == 0.0
