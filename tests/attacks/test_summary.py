"""A suite run through the real runner: the poisoning probe's per-user records pair an attacked
recommender with its clean twin in :mod:`attacks.summary`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from poisoning_testkit import register

from attacks.summary import main, summarize
from audit.errors import ConfigError
from audit.runner import run_suite_file

TARGETS = {"n": 3, "seed": 2}


@pytest.fixture()
def report_dir(tmp_path: Path, longtail, recaudit_home: Path) -> Path:
    register()
    suite = {"name": "poison-summary", "dataset": {"name": "longtail", "seed": 0, "users": 80},
             "recommenders": {"clean": {"adapter": "test-popularity"},
                              "boosted": {"adapter": "test-popularity", "boost_targets": True},
                              "boosted+text": {"adapter": "test-popularity", "boost_targets": True,
                                               "variant": {"item-text": {"targets": TARGETS, "search_users": 5}}}},
             "probes": {"poisoning": {"targets": TARGETS, "k": [5, 10], "utility_negatives": 20}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    out = tmp_path / "report"
    outcome = run_suite_file(path, out=out, dataset=longtail)
    assert [j.result.status for j in outcome.jobs] == ["pass"] * 3, [j.result.reason for j in outcome.jobs]
    return out


def test_summary_pairs_users_and_finds_the_planted_gain(report_dir: Path):
    rows = {r.recommender: r for r in summarize(report_dir, "clean", k=5)}
    assert set(rows) == {"clean", "boosted", "boosted+text"}
    boosted = rows["boosted"].metrics
    assert boosted["target_hr@5"].value == 1.0 and boosted["clean_target_hr@5"].value == 0.0
    assert boosted["exposure_gain@5"].ci[0] > 0.9 and boosted["score_shift"].value > 1e5
    assert rows["clean"].metrics["target_hr@5"].value == rows["clean"].metrics["clean_target_hr@5"].value
    assert "hr@10" in boosted and "edit_cost" in rows["boosted+text"].metrics


def test_cli_prints_a_table_and_names_a_missing_twin(report_dir: Path, capsys, tmp_path: Path):
    assert main([str(report_dir), "--clean", "clean", "--k", "5", "--json", str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "| boosted | clean |" in table and (tmp_path / "s.json").is_file()
    assert main([str(report_dir), "--clean", "nobody"]) == ConfigError.exit_code
    assert "nobody" in capsys.readouterr().err


def test_the_reports_paired_differences_of_target_exposure_are_printed_under_the_table(
        tmp_path: Path, longtail, recaudit_home: Path, capsys) -> None:
    """Issue 27: the poisoning probe keeps per-user target exposure, so the runner pairs the boosted
    recommender (declared against clean) and the item-text variant (derived from boosted) on the same
    users; the summary command prints those differences with their CIs and verdicts."""
    register()
    suite = {"name": "poison-pairs", "dataset": {"name": "longtail", "seed": 0, "users": 80},
             "recommenders": {"clean": {"adapter": "test-popularity"},
                              "boosted": {"adapter": "test-popularity", "boost_targets": True},
                              "boosted+text": {"adapter": "test-popularity", "boost_targets": True,
                                               "variant": {"item-text": {"targets": TARGETS, "search_users": 5}}}},
             "probes": {"poisoning": {"targets": TARGETS, "k": [5], "utility_negatives": 20}},
             "compare": [{"a": "clean", "b": "boosted"}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    out = tmp_path / "report"
    run_suite_file(path, out=out, dataset=longtail)
    report = json.loads((out / "report.json").read_text())
    gain = next(e for e in report["pairs"] if (e["a"], e["b"], e["metric"]) == ("clean", "boosted", "target_hr@5"))
    assert gain["origin"] == "declared" and gain["value"] == pytest.approx(1.0) and gain["better"] == "a"
    assert any((e["a"], e["b"], e["origin"]) == ("boosted", "boosted+text", "variant") for e in report["pairs"])
    assert main([str(out), "--clean", "clean", "--k", "5"]) == 0
    table, _, paired = capsys.readouterr().out.partition("Paired differences of `poisoning`")
    assert "| boosted | clean |" in table
    rows = [line for line in paired.splitlines() if line.startswith("| boosted vs clean | poisoning | target_hr@5 |")]
    cell = f"{gain['value']:+.3f} [{gain['ci'][0]:.3f}, {gain['ci'][1]:.3f}] n={gain['n']}"
    assert len(rows) == 1 and cell in rows[0] and "worse than clean" in rows[0]
    assert "| boosted+text vs boosted | poisoning |" in paired
