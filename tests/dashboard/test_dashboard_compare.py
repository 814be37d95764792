"""Comparison logic: deltas, CI disjointness, default pairs, run over run."""

from __future__ import annotations

import math

import pytest

from audit.results import Metric
from dashboard.compare import (significant_change, common_recommenders, compare_recommenders, compare_runs,
                               default_pairs, metric_deltas)
from dashboard.model import parse_report
from report_fixtures import RUN_NEW, RUN_OLD, report_data


@pytest.fixture(scope="module")
def new_report():
    return parse_report(report_data(RUN_NEW))


@pytest.fixture(scope="module")
def old_report():
    return parse_report(report_data(RUN_OLD))


@pytest.mark.parametrize("a, b, expected", [
    ((0.37, 0.47), (0.26, 0.36), True),     # B entirely below A
    ((0.10, 0.20), (0.21, 0.30), True),     # B entirely above A
    ((0.21, 0.29), (0.18, 0.26), False),    # overlap
    ((0.10, 0.20), (0.20, 0.30), False),    # touching intervals overlap
    ((0.10, 0.20), (0.12, 0.15), False),    # nested
])
def test_with_both_cis_a_change_is_significant_when_they_are_disjoint(a, b, expected) -> None:
    assert significant_change(Metric(0.0, 10, a), Metric(0.0, 10, b)) is expected


def test_with_one_or_no_ci_the_rule_is_recaudit_compares() -> None:
    assert significant_change(Metric(8.0, 1, None), Metric(1.0, 1, None)) is True    # no CIs: any change
    assert significant_change(Metric(8.0, 1, None), Metric(8.0, 1, None)) is False
    assert significant_change(Metric(0.4, 10, (0.3, 0.5)), Metric(0.1, 1, None)) is True   # outside A's CI
    assert significant_change(Metric(0.4, 10, (0.3, 0.5)), Metric(0.45, 1, None)) is False  # inside it
    # a non-finite CI counts as none: 0.4 lies outside B's CI
    assert significant_change(Metric(0.4, 10, (math.nan, math.nan)), Metric(0.1, 10, (0.0, 0.2))) is True
    assert significant_change(Metric(math.nan, 10, None), Metric(0.1, 10, (0.0, 0.2))) is None


def test_the_dashboard_and_recaudit_compare_agree() -> None:
    from audit.compare import beyond_uncertainty

    cases = [(Metric(0.4, 10, (0.3, 0.5)), Metric(0.1, 1, None)), (Metric(1.0, 1, None), Metric(1.0, 1, None)),
             (Metric(0.2, 10, (0.1, 0.3)), Metric(0.5, 10, (0.4, 0.6)))]
    for a, b in cases:
        assert significant_change(a, b) == beyond_uncertainty({"value": a.value, "ci": a.ci},
                                                              {"value": b.value, "ci": b.ci})


def test_metric_deltas_values_and_significance_on_the_planted_dp_effect(new_report) -> None:
    table = compare_recommenders(new_report, "reference", "reference+dp8")["utility"].set_index("metric")
    assert table.loc["hr@10", "delta"] == pytest.approx(0.31 - 0.42)
    assert table.loc["hr@10", "significant"] is True          # [0.37, 0.47] vs [0.26, 0.36]
    assert table.loc["ndcg@10", "delta"] == pytest.approx(0.22 - 0.25)
    assert table.loc["ndcg@10", "significant"] is False       # [0.21, 0.29] vs [0.18, 0.26]
    assert (table.loc["hr@10", "a_lo"], table.loc["hr@10", "b_hi"]) == (0.37, 0.36)
    assert table.loc["hr@10", "a_n"] == 300


def test_a_recommender_against_itself_has_no_significant_delta(new_report) -> None:
    tables = compare_recommenders(new_report, "reference", "reference")
    assert tables  # every probe with metrics is compared
    for table in tables.values():
        assert (table["delta"] == 0).all()
        assert not table["significant"].map(lambda v: v is True).any()


def test_metrics_on_one_side_only_are_left_out() -> None:
    table = metric_deltas({"x": Metric(1.0, 5, (0.5, 1.5)), "only_a": Metric(1.0, 5)},
                          {"x": Metric(2.0, 5, (1.6, 2.4)), "only_b": Metric(1.0, 5)})
    assert list(table["metric"]) == ["x"]
    assert table["delta"].iloc[0] == pytest.approx(1.0) and table["significant"].iloc[0] is True


def test_probes_without_results_on_both_sides_are_left_out(new_report) -> None:
    tables = compare_recommenders(new_report, "reference", "reference+dp8")
    assert "privacy" not in tables  # reference skipped it: no metrics to compare
    assert "memorisation" in tables
    tables = compare_recommenders(new_report, "reference", "reference+constrained")
    assert "memorisation" not in tables  # errored on the compared side


def test_default_pairs_put_the_undefended_twin_against_each_defended_one(new_report) -> None:
    assert default_pairs(new_report) == [("reference", "reference+dp8"), ("reference", "reference+dp1"),
                                         ("reference", "reference+constrained")]


def test_two_runs_compared_over_time(old_report, new_report) -> None:
    assert common_recommenders(old_report, new_report) == ["reference", "reference+dp8", "reference+dp1",
                                                           "reference+constrained"]
    tables = compare_runs(old_report, new_report, "reference")
    hallu = tables["hallucination"].set_index("metric").loc["hallucination_rate"]
    assert hallu["a"] == 0.30 and hallu["b"] == 0.12
    assert hallu["delta"] == pytest.approx(-0.18) and hallu["significant"] is True
    hr = tables["utility"].set_index("metric").loc["hr@10"]
    assert hr["delta"] == pytest.approx(0.02) and hr["significant"] is False
