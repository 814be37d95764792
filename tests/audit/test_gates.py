"""Gates: parsing ``--fail-on``, comparing values and CI bounds, and failing when nothing was measured."""

from __future__ import annotations

import pytest

from audit.errors import ConfigError
from audit.gates import GateSpec, evaluate_gates, parse_fail_on
from audit.results import Metric, ProbeResult

RESULTS = {
    ("a", "utility"): ProbeResult("pass", {"ndcg@10": Metric(0.30, 100, (0.25, 0.35)), "eps": Metric(8.0, 1)}),
    ("b", "utility"): ProbeResult("pass", {"ndcg@10": Metric(0.10, 100, (0.05, 0.15))}),
    ("c", "utility"): ProbeResult.skipped("lacks capability score"),
}


def gate(**kw: object) -> GateSpec:
    return GateSpec(**{"probe": "utility", "metric": "ndcg@10", "op": ">=", "threshold": 0.2, **kw})


def test_parse_fail_on_forms() -> None:
    assert parse_fail_on("utility.ndcg@10>=0.05") == gate(threshold=0.05)
    assert parse_fail_on("a:fairness.snsr_jaccard_gender <= 0.1") == GateSpec(
        probe="fairness", metric="snsr_jaccard_gender", recommender="a", op="<=", threshold=0.1)
    assert parse_fail_on("fairness.snsr_jaccard_gender.ci_high<0.1").use == "ci_high"
    assert parse_fail_on("utility.mrr==1").op == "=="


@pytest.mark.parametrize("text", ["utility>=0.1", "utility.ndcg@10 => 0.1", "utility.ndcg@10>=high", ""])
def test_parse_fail_on_rejects_malformed_gates(text: str) -> None:
    with pytest.raises(ConfigError, match="--fail-on"):
        parse_fail_on(text)


@pytest.mark.parametrize("op, threshold, passed", [
    (">=", 0.30, True), (">", 0.30, False), ("<=", 0.30, True), ("<", 0.30, False),
    ("==", 0.1 + 0.2, True), ("==", 0.31, False), (">=", 0.31, False),
])
def test_operators_compare_the_value(op: str, threshold: float, passed: bool) -> None:
    (outcome,) = evaluate_gates([gate(op=op, threshold=threshold, recommender="a")], RESULTS, ["a"])
    assert outcome.passed is passed and outcome.value == pytest.approx(0.30)


def test_ci_bounds_can_be_gated() -> None:
    # value 0.30 < 0.34 but the CI's upper bound 0.35 is not: "the whole CI must lie below 0.34" fails
    by_value, by_high = evaluate_gates([gate(op="<", threshold=0.34, recommender="a"),
                                        gate(op="<", threshold=0.34, recommender="a", use="ci_high")],
                                       RESULTS, ["a"])
    assert by_value.passed and not by_high.passed and by_high.value == 0.35
    (low,) = evaluate_gates([gate(op=">", threshold=0.2, recommender="a", use="ci_low")], RESULTS, ["a"])
    assert low.passed and low.value == 0.25


def test_gate_without_recommender_applies_to_each() -> None:
    outcomes = evaluate_gates([gate()], RESULTS, ["a", "b"])
    assert [(o.recommender, o.passed) for o in outcomes] == [("a", True), ("b", False)]


def test_unmeasured_gates_fail_with_a_reason() -> None:
    skipped, missing, no_ci, no_job = evaluate_gates(
        [gate(recommender="c"), gate(recommender="a", metric="hr@10"),
         gate(recommender="a", metric="eps", use="ci_high", op="<=", threshold=10),
         gate(recommender="zzz")], RESULTS, ["a", "b", "c"])
    assert not skipped.passed and "skip" in skipped.reason and "lacks capability" in skipped.reason
    assert not missing.passed and "'hr@10' not reported; available: eps, ndcg@10" in missing.reason
    assert not no_ci.passed and "no confidence interval" in no_ci.reason
    assert not no_job.passed and no_job.value is None


def test_gate_json_and_description() -> None:
    (o,) = evaluate_gates([gate(recommender="b", use="ci_low")], RESULTS, ["b"])
    assert o.to_json() == {"probe": "utility", "metric": "ndcg@10", "recommender": "b", "op": ">=",
                           "threshold": 0.2, "use": "ci_low", "value": 0.05, "passed": False, "reason": ""}
    assert o.describe() == "b:utility.ndcg@10.ci_low >= 0.2 (got 0.05)"


def test_gates_read_the_declared_direction_and_range() -> None:
    from audit.gates import GateSpec, evaluate_gates
    from audit.results import Metric, MetricSpec, ProbeResult

    spec = MetricSpec("lower", range=(0.0, 1.0), unit="share")
    results = {("m", "p"): ProbeResult("pass", {"rate": Metric(0.2, n=10, ci=(0.1, 0.3)).declare(spec)})}
    wrong_way = GateSpec(probe="p", metric="rate", recommender="m", op=">=", threshold=1.5)
    right = GateSpec(probe="p", metric="rate", recommender="m", op="<=", threshold=0.5)
    bad, good = evaluate_gates([wrong_way, right], results, ["m"])
    assert not bad.passed and "lower is better" in bad.reason and "outside the declared range" in bad.reason
    assert good.passed and good.reason == ""
