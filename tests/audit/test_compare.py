"""compare: deltas per metric, the beyond-the-CI rule, metric directions, and regressions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runner_testkit as kit
from audit.cli import main
from audit.compare import beyond_uncertainty, compare_reports, declared_direction, paired_test
from audit.data.dataset import Dataset
from audit.report import write_report_dir
from audit.runner import run_suite_file


def make_report(metrics: dict[str, dict[str, Any]], status: str = "pass") -> dict[str, Any]:
    return {
        "schema_version": 1, "suite": "cmp", "created": "2026-01-01T00:00:00+00:00",
        "dataset": {"name": "tiny", "fingerprint": "f", "n_users": 40, "n_items": 30, "source": "s",
                    "sampled_users": 100},
        "recommenders": [{"name": "m", "variant": None, "config": {"adapter": "python"}}],
        "results": [{"recommender": "m", "probe": "p", "status": status, "metrics": metrics,
                     "details": {}, "reason": "" if status == "pass" else "endpoint down"}],
        "gates": [],
    }


def write(tmp_path: Path, name: str, metrics: dict[str, dict[str, Any]], status: str = "pass") -> Path:
    out = tmp_path / name
    write_report_dir(out, make_report(metrics, status), [], junit_xml="<testsuites/>", summary_md="")
    return out


DIRECTIONS = {"ndcg@10": "higher", "mrr": "higher", "hallucination_rate": "lower", "something": None,
              "mia_auroc_loss": "lower", "hr@10": "higher"}


def m(value: float, lo: float | None = None, hi: float | None = None, n: int = 100,
      direction: str | None | bool = False, **extra: Any) -> dict[str, Any]:
    """A metric record; ``direction`` False = undeclared, else its declared better direction."""
    out = {"value": value, "ci": None if lo is None else [lo, hi], "n": n, **extra}
    if direction is not False:
        out["spec"] = {"direction": direction, "range": [0, 1], "chance": None, "unit": "share",
                       "sampled": lo is not None}
    return out


def d(name: str, value: float, lo: float | None = None, hi: float | None = None, **extra: Any) -> dict[str, Any]:
    """A metric declared with the direction of :data:`DIRECTIONS`."""
    return m(value, lo, hi, direction=DIRECTIONS[name], **extra)


def test_direction_comes_from_the_declaration_not_the_name() -> None:
    assert declared_direction(m(0.5, direction="lower")) == "lower"
    assert declared_direction(None, m(0.5, direction="higher")) == "higher"
    assert declared_direction(m(0.5)) is None, "an undeclared hr@10 is not guessed from its name"
    assert declared_direction(m(0.5, direction=None)) is None


@pytest.mark.parametrize("a, b, beyond", [
    (m(0.30, 0.25, 0.35), m(0.20, 0.15, 0.24), True),     # CIs apart
    (m(0.30, 0.25, 0.35), m(0.22, 0.15, 0.26), False),    # CIs overlap
    (m(8.0), m(8.0), False), (m(8.0), m(4.0), True),      # unsampled numbers: any change counts
    (m(0.30, 0.25, 0.35), m(0.40), True),                 # one CI: the other value outside it
    (m(0.30, 0.25, 0.35), m(0.33), False),
    ({"value": None, "ci": None, "n": 0}, m(0.3), None),
])
def test_beyond_uncertainty_rule(a: dict, b: dict, beyond: bool | None) -> None:
    assert beyond_uncertainty(a, b) is beyond


def test_regression_only_beyond_the_ci_and_in_the_worse_direction(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"ndcg@10": d("ndcg@10", 0.30, 0.25, 0.35),
                              "hallucination_rate": d("hallucination_rate", 0.10, 0.08, 0.12),
                              "mrr": d("mrr", 0.30, 0.25, 0.35), "something": d("something", 1.0, 0.9, 1.1)})
    b = write(tmp_path, "b", {"ndcg@10": d("ndcg@10", 0.20, 0.15, 0.24),
                              "hallucination_rate": d("hallucination_rate", 0.05, 0.03, 0.07),
                              "mrr": d("mrr", 0.27, 0.22, 0.31), "something": d("something", 3.0, 2.9, 3.1)})
    cmp = compare_reports(a, b)
    by_metric = {d.metric: d for d in cmp.deltas}
    assert by_metric["ndcg@10"].delta == pytest.approx(-0.10) and by_metric["ndcg@10"].change == "worse"
    assert by_metric["hallucination_rate"].change == "better"
    assert by_metric["mrr"].change == "same", "within overlapping CIs"
    assert by_metric["something"].change == "changed" and not by_metric["something"].regression
    assert [d.metric for d in cmp.regressions] == ["ndcg@10"]


def test_metric_lost_to_an_error_is_a_regression(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"ndcg@10": d("ndcg@10", 0.30, 0.25, 0.35)})
    b = write(tmp_path, "b", {}, status="error")
    cmp = compare_reports(a, b)
    assert [(d.metric, d.change) for d in cmp.regressions] == [("ndcg@10", "missing")]
    assert any("status pass -> error (endpoint down)" in n for n in cmp.notes)


def test_compare_cli_end_to_end_on_real_runs(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Baseline: a recommender that ranks the held-out item first; candidate: the same name ranking
    it last. HR@5 drops from 1 to 0 with tight CIs: a regression the CLI must flag (and only with
    --fail-on-regression change the exit code); the baseline against itself has none."""
    kit.register()
    runs = {}
    for label, target in (("good", "oracle"), ("bad", "reverse")):
        suite = kit.utility_suite(name=label)
        suite["recommenders"] = {"model": {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:{target}"}}
        path = kit.write_suite(tmp_path / label, suite, dataset=tiny_dataset)
        runs[label] = run_suite_file(path, out=tmp_path / label / "report").out
    capsys.readouterr()

    assert main(["compare", str(runs["good"]), str(runs["bad"])]) == 0
    text = capsys.readouterr().out
    assert "hr@5" in text and "1.000 [0.758, 1.000]" in text and "worse (REGRESSION)" in text
    assert main(["compare", str(runs["good"]), str(runs["bad"]), "--fail-on-regression"]) == 1
    assert main(["compare", str(runs["good"]), str(runs["good"]), "--fail-on-regression"]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    assert main(["compare", str(runs["good"]), str(runs["bad"]), "--format", "markdown"]) == 0
    assert "| model | utility | hr@5 |" in capsys.readouterr().out


def test_compare_refuses_a_directory_without_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a", {"ndcg@10": m(0.3)})
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("recaudit: error: no report at")


def test_fail_on_regression_sees_a_worse_mia_auroc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the membership-inference AUROC got worse (declared 'lower is better'): exit 1. The
    old name patterns matched no mia_auroc_* metric, so this regression was invisible."""
    same = {"hr@10": d("hr@10", 0.60, 0.57, 0.63)}
    a = write(tmp_path, "a", {**same, "mia_auroc_loss": d("mia_auroc_loss", 0.52, 0.48, 0.56)})
    b = write(tmp_path, "b", {**same, "mia_auroc_loss": d("mia_auroc_loss", 0.81, 0.77, 0.85)})
    assert [x.metric for x in compare_reports(a, b).regressions] == ["mia_auroc_loss"]
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    assert main(["compare", str(b), str(a), "--fail-on-regression"]) == 0, "an improvement is no regression"


def test_undeclared_metrics_are_never_gated(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"hr@10": m(0.60, 0.57, 0.63)})
    b = write(tmp_path, "b", {"hr@10": m(0.20, 0.17, 0.23)})
    cmp = compare_reports(a, b)
    assert cmp.regressions == [] and cmp.deltas[0].change == "changed"
    assert any("without a declared meaning" in n and "p.hr@10" in n for n in cmp.notes)


def test_paired_test_finds_a_regression_that_overlapping_cis_hide(tmp_path: Path) -> None:
    """200 users: B loses the hit of 16 users that A had and gains none. The means (0.50 vs 0.42)
    have overlapping 95% CIs, but the paired sign test on per-user hits is decisive (p < 1e-4)."""
    users = [f"u{i}" for i in range(200)]
    hits_a = {u: float(i % 2 == 0) for i, u in enumerate(users)}
    hits_b = dict(hits_a)
    for u in users[0:32:2]:
        hits_b[u] = 0.0
    ma = d("hr@10", 0.50, 0.43, 0.57, per_unit=hits_a)
    mb = d("hr@10", 0.42, 0.35, 0.49, per_unit=hits_b)
    assert beyond_uncertainty({k: v for k, v in ma.items() if k != "per_unit"},
                              {k: v for k, v in mb.items() if k != "per_unit"}) is False
    mean, p, n = paired_test(ma, mb)
    assert n == 200 and mean == pytest.approx(-0.08) and p < 1e-4
    cmp = compare_reports(write(tmp_path, "a", {"hr@10": ma}), write(tmp_path, "b", {"hr@10": mb}))
    assert [(x.metric, x.change) for x in cmp.regressions] == [("hr@10", "worse")]


def test_paired_test_without_differences_is_no_change() -> None:
    vals = {f"u{i}": float(i % 3 == 0) for i in range(50)}
    assert paired_test({"per_unit": vals}, {"per_unit": vals})[1] == 1.0
