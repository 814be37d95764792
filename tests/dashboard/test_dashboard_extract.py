"""Chart data pulled from metric names and details: the right rows, nothing invented."""

from __future__ import annotations

import dataclasses
import math

import pytest

from audit.results import Metric
from dashboard import charts, extract
from dashboard.compare import compare_recommenders
from dashboard.model import ResultRow, parse_report
from report_fixtures import RUN_NEW, report_data


def row(metrics: dict[str, Metric], details: dict | None = None, rec: str = "r", headline: str | None = None):
    return ResultRow(recommender=rec, probe="p", status="pass", metrics=metrics, details=details or {},
                     headline=headline)


@pytest.fixture(scope="module")
def report():
    return parse_report(report_data(RUN_NEW))


def test_fairness_rows_split_kind_measure_and_attributes(report) -> None:
    long = extract.metrics_frame(report.results_for_probe("fairness"))
    frame = extract.fairness_frame(long)
    assert set(frame["kind"]) == {"SNSR", "SNSV"}
    assert set(frame["measure"]) == {"jaccard"}
    assert set(frame["attributes"]) == {"gender", "age"}
    ref = frame[(frame["recommender"] == "reference") & (frame["kind"] == "SNSR")
                & (frame["attributes"] == "gender")].iloc[0]
    assert (ref["value"], ref["lo"], ref["hi"], ref["n"]) == (0.08, 0.05, 0.11, 300)


def test_fairness_pattern_ignores_pvalues_and_gaps() -> None:
    long = extract.metrics_frame([row({"pvalue_snsr_jaccard_gender": Metric(0.2, 10),
                                       "hr_gap_gender": Metric(0.1, 10, (0.0, 0.2)),
                                       "snsr_prag_gender_age": Metric(0.1, 10, (0.05, 0.15))})])
    frame = extract.fairness_frame(long)
    assert list(frame["metric"]) == ["snsr_prag_gender_age"]
    assert frame["attributes"].iloc[0] == "gender_age"


def test_per_value_rows_come_from_name_equals_value(report) -> None:
    long = extract.metrics_frame(report.results_for_probe("fairness"))
    frame = extract.per_value_frame(long)
    ref = frame[frame["recommender"] == "reference"]
    assert set(ref["stem"]) == {"sim_jaccard_gender", "sim_jaccard_age"}
    assert sorted(ref[ref["stem"] == "sim_jaccard_gender"]["level"]) == ["F", "M"]


def test_numbered_metrics_form_series_and_single_points_do_not() -> None:
    long = extract.metrics_frame([row({"exposure_rep1": Metric(1.0, 20, (0.5, 1.5)),
                                       "exposure_rep16": Metric(4.0, 20, (3.0, 5.0)),
                                       "popularity_mean_rank1": Metric(300.0, 20, (250.0, 350.0)),
                                       "hr@10": Metric(0.3, 20, (0.2, 0.4))})])
    frame = extract.series_frame(long)
    assert list(zip(frame["stem"], frame["x"])) == [("exposure_rep", 1.0), ("exposure_rep", 16.0)]


def test_rates_and_aucs(report) -> None:
    long = extract.metrics_frame(report.results)
    assert set(extract.rates_frame(long)["metric"]) == {
        "hallucination_rate", "compliance_rate", "duplicate_rate", "consumed_rate", "out_of_candidate_rate"}
    assert set(extract.auc_frame(long)["metric"]) == {"auc_list_gender", "mia_auroc_loss"}


def test_roc_points_per_attack_and_shape_errors_name_the_key(report) -> None:
    frame = extract.roc_frame(report.results_for_probe("memorisation"))
    assert set(frame["attack"]) == {"loss", "zlib"}
    assert set(frame["recommender"]) == {"reference", "reference+dp8", "reference+dp1"}
    assert len(frame[(frame["recommender"] == "reference") & (frame["attack"] == "loss")]) == 11
    with pytest.raises(extract.DetailShapeError, match=r"details\.roc\.loss has 3 fpr and 2 tpr"):
        extract.roc_frame([row({}, {"roc": {"loss": {"fpr": [0, 0.5, 1], "tpr": [0, 1]}}})])
    with pytest.raises(extract.DetailShapeError, match=r"details\.roc\.loss needs numeric"):
        extract.roc_frame([row({}, {"roc": {"loss": {"fpr": [0, "x"], "tpr": [0, 1]}}})])


def test_prebinned_histogram_shares_sum_to_one_per_recommender() -> None:
    details = {"grounding_distance_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [3, 1]}}
    frame = extract.histogram_frame([row({}, details, rec="a"), row({}, details, rec="b")])
    assert list(frame[frame["recommender"] == "a"]["share"]) == [0.75, 0.25]
    with pytest.raises(extract.DetailShapeError, match="one more edge than counts"):
        extract.histogram_frame([row({}, {"x_histogram": {"edges": [0, 1], "counts": [1, 2]}})])


def test_raw_distance_lists(report) -> None:
    frame = extract.distance_frame(report.results_for_probe("hallucination"))
    assert len(frame) == 4 * 40 and (frame["distance"] >= 0).all()


def test_budget_series_from_records_and_from_columns(report) -> None:
    frame = extract.budget_frame(report.results_for_probe("poisoning"))
    ref = frame[frame["recommender"] == "reference"]
    assert list(ref["budget"]) == [1, 4, 16, 64] and ref["value"].is_monotonic_increasing
    cols = extract.budget_frame([row({}, {"budget_series": {"budget": [1, 2], "value": [0.1, 0.2],
                                                            "ci_low": [0.0, 0.1], "ci_high": [0.2, 0.3]}})])
    assert list(cols["hi"]) == [0.2, 0.3]
    with pytest.raises(extract.DetailShapeError, match="budget_series"):
        extract.budget_frame([row({}, {"budget_series": [{"value": 0.1}]})])


def test_epsilon_axis_from_recommender_info_with_nan_for_the_undefended(report) -> None:
    long = extract.metrics_frame(report.results_for_probe("utility"))
    frame = extract.axis_frame(report, long, "epsilon")
    hr = frame[frame["metric"] == "hr@10"].set_index("recommender")["x"]
    assert hr["reference+dp8"] == 8.0 and hr["reference+dp1"] == 1.0
    assert math.isnan(hr["reference"]) and math.isnan(hr["reference+constrained"])
    assert extract.axis_frame(report, long, "budget").empty


def test_headline_prefers_the_runner_headline_then_known_patterns() -> None:
    metrics = {"mrr": Metric(0.1, 5), "hr@10": Metric(0.3, 5), "hallucination_rate": Metric(0.2, 5)}
    assert extract.headline_metric(row(metrics, headline="mrr")) == "mrr"
    assert extract.headline_metric(row(metrics)) == "hallucination_rate"
    assert extract.headline_metric(row({"seconds": Metric(1.0, 5)})) == "seconds"
    assert extract.headline_metric(row({})) is None


def test_generic_detail_tables_for_records_and_scalar_mappings() -> None:
    details = {"position_series": [{"position": 0, "hr@1": 0.3}, {"position": 9, "hr@1": 0.2}],
               "slot_kinds": {"exact": 40, "fuzzy": 3, "none": 7},
               "sets": {"gender": {"nested": {"x": 1}}}}
    tables = extract.detail_tables([row({}, details, rec="a"), row({}, details, rec="b")])
    assert set(tables) == {"position_series", "slot_kinds"}
    assert len(tables["position_series"]) == 4
    assert list(tables["slot_kinds"].columns) == ["key", "a", "b"]
    assert list(tables["slot_kinds"]["a"]) == [40, 3, 7]


def test_every_chart_builder_produces_a_valid_vega_lite_spec(report) -> None:
    long = extract.metrics_frame(report.results)
    specs = [
        charts.ci_dots(long),
        charts.bars_with_ci(extract.rates_frame(long), category="metric", domain=(0, 1)),
        charts.bars_with_ci(extract.per_value_frame(long), category="level", facet="stem"),
        charts.series_lines(extract.series_frame(long), facet="stem"),
        charts.roc_curves(extract.roc_frame(report.results)),
        charts.distance_boxes(extract.distance_frame(report.results)),
        charts.against_axis(extract.axis_frame(report, long, "epsilon"), x_title="epsilon"),
        charts.binned_steps(extract.histogram_frame(
            [row({}, {"d_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [3, 1]}})])),
        charts.series_lines(extract.budget_frame(report.results), x="budget", facet="metric"),
        charts.comparison_chart(compare_recommenders(report, "reference", "reference+dp8")["utility"],
                                "A: reference", "B: reference+dp8"),
    ]
    for chart in specs:
        chart.to_dict(validate=True)  # raises on an invalid spec


def _privacy_row(rec: str, adjacency: str) -> ResultRow:
    covers = "epsilon covers only the 377 users of stage 'finetune'. Users of stages trained without DP are NOT covered"
    return ResultRow(recommender=rec, probe="privacy", status="pass", metrics={"epsilon": Metric(4.0, 377)},
                     details={"covers": covers, "adjacency": adjacency, "privacy_unit": "user",
                              "randomness": "the sampling and noise were seeded: the guarantee assumes that seed stays secret"})


def test_statements_show_what_epsilon_covers_its_adjacency_and_assumption_not_short_labels() -> None:
    """Issue 14: the dashboard says which users epsilon covers and its adjacency (not only the raw JSON)."""
    table = extract.statements([_privacy_row("dp4", "add/remove")])
    assert list(table["key"]) == ["covers", "adjacency", "randomness"]
    assert "NOT covered" in table.set_index("key").loc["covers", "text"]
    assert extract.statements([row({}, {"path": "tokens"})]).empty


def test_epsilon_axis_names_each_recommenders_adjacency(report) -> None:
    results = [_privacy_row("dp4", "add/remove"), _privacy_row("dp8", "add/remove"),
               _privacy_row("fed-dp", "replace-one")]
    assert extract.epsilon_adjacency(results) == {"dp4": "add/remove", "dp8": "add/remove", "fed-dp": "replace-one"}
    title = extract.epsilon_axis_title(dataclasses.replace(report, results=tuple(results)))
    assert title == "privacy budget ε (add/remove: dp4, dp8; replace-one: fed-dp)"
    # the fixture report's privacy results carry no adjacency: the title says so rather than imply one scale
    assert extract.epsilon_axis_title(report) == "privacy budget ε (adjacency not recorded)"
