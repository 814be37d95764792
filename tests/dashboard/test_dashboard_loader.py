"""Reading report directories: discovery, validation of malformed reports, confinement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from audit.errors import ConfigError
from dashboard.loader import ReportAccessError, ReportsRoot, read_outputs
from dashboard.model import ReportFormatError, parse_report, variant_names
from report_fixtures import RUN_NEW, RUN_OLD, report_data, write_malformed


def test_discover_lists_both_runs_with_suite_and_gate_counts(reports_dir: Path) -> None:
    runs, warnings = ReportsRoot(reports_dir).discover()
    assert [r.run_id for r in runs] == [RUN_OLD, RUN_NEW]
    assert warnings == []
    new = runs[1].report
    assert new is not None and new.suite == "quick" and new.created.startswith("2024-05-08")
    assert (new.gates_passed, new.gates_failed) == (2, 1)
    assert (runs[0].report.gates_passed, runs[0].report.gates_failed) == (1, 2)


def test_discover_finds_runs_one_level_down_and_skips_job_folders(reports_dir: Path) -> None:
    nested = reports_dir / "nightly"
    nested.mkdir()
    os.rename(reports_dir / RUN_OLD, nested / RUN_OLD)
    (reports_dir / RUN_NEW / "jobs").mkdir()
    (reports_dir / RUN_NEW / "jobs" / "report.json").write_text("{}")
    runs, _ = ReportsRoot(reports_dir).discover()
    assert sorted(r.run_id for r in runs) == [f"nightly/{RUN_OLD}", RUN_NEW]
    assert all(r.ok for r in runs)


@pytest.mark.parametrize("kind, expected", [
    ("bad-json", "not valid JSON"),
    ("empty", "the file is empty"),
    ("wrong-version", "schema_version 99 is not supported"),
    ("missing-keys", "required property"),
    ("bad-metric", "'n' is a required property"),
])
def test_malformed_report_becomes_an_entry_naming_file_and_problem(reports_dir: Path, kind: str,
                                                                    expected: str) -> None:
    broken = write_malformed(reports_dir, kind)
    runs, _ = ReportsRoot(reports_dir).discover()
    entry = next(r for r in runs if r.run_id == broken.name)
    assert entry.report is None
    assert str(broken / "report.json") in entry.error
    assert expected in entry.error
    assert sum(r.ok for r in runs) == 2  # the good runs still load


def test_parse_report_rejects_what_the_dashboard_relies_on_even_without_the_schema() -> None:
    data = report_data(RUN_NEW)
    data["results"][0]["status"] = "maybe"
    with pytest.raises(ReportFormatError, match=r"results\.0\.status"):
        parse_report(data)
    with pytest.raises(ReportFormatError, match="schema_version 3 is not supported"):
        parse_report({**report_data(RUN_NEW), "schema_version": 3})


def test_report_rewritten_in_place_is_read_again(reports_dir: Path) -> None:
    root = ReportsRoot(reports_dir)
    assert root.load(RUN_NEW).suite == "quick"
    path = reports_dir / RUN_NEW / "report.json"
    path.write_text(json.dumps({**report_data(RUN_NEW), "suite": "renamed-suite"}))
    assert root.load(RUN_NEW).suite == "renamed-suite"


def test_variant_names_normalise_every_written_form() -> None:
    assert variant_names(None) == ()
    assert variant_names("") == ()
    assert variant_names("dp+grounding") == ("dp", "grounding")
    assert variant_names({"dp": {"epsilon": 8}}) == ("dp",)
    assert variant_names(["constrained-decoding", {"dp": {}}]) == ("constrained-decoding", "dp")


def test_missing_reports_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist.*--reports DIR or set RECAUDIT_REPORTS"):
        ReportsRoot(tmp_path / "nowhere")


@pytest.mark.parametrize("run_id", ["..", "../outside", "/etc", f"{RUN_NEW}/../..", "a\\..\\b", ""])
def test_run_ids_that_leave_the_root_are_refused(reports_dir: Path, run_id: str) -> None:
    (reports_dir.parent / "outside").mkdir()
    with pytest.raises(ReportAccessError):
        ReportsRoot(reports_dir).run_dir(run_id)


def test_only_report_files_can_be_opened_from_a_run(reports_dir: Path) -> None:
    root = ReportsRoot(reports_dir)
    assert root.run_file(RUN_NEW, "outputs.jsonl").name == "outputs.jsonl"
    for name in ("../../secret.txt", "/etc/passwd", "other.json"):
        with pytest.raises(ReportAccessError, match="refusing to open"):
            root.run_file(RUN_NEW, name)


def test_symlinked_run_pointing_outside_is_not_listed_and_cannot_be_opened(reports_dir: Path,
                                                                           tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "report.json").write_text(json.dumps(report_data(RUN_NEW)))
    (outside / "secret.txt").write_text("do not show")
    (reports_dir / "sneaky").symlink_to(outside, target_is_directory=True)
    root = ReportsRoot(reports_dir)
    runs, warnings = root.discover()
    assert "sneaky" not in [r.run_id for r in runs]
    assert any("sneaky" in w and "outside the reports directory" in w for w in warnings)
    with pytest.raises(ReportAccessError, match="outside the reports directory"):
        root.run_dir("sneaky")


def test_symlinked_report_files_pointing_outside_are_refused(reports_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"recommender": "x", "probe": "y", "user": "1", "prompt": "secret"}) + "\n")
    run = reports_dir / RUN_NEW
    (run / "outputs.jsonl").unlink()
    (run / "outputs.jsonl").symlink_to(secret)
    linked = reports_dir / "linked-report"
    linked.mkdir()
    (linked / "report.json").symlink_to(secret)
    root = ReportsRoot(reports_dir)
    with pytest.raises(ReportAccessError):
        root.outputs(RUN_NEW)
    runs, warnings = root.discover()
    assert "linked-report" not in [r.run_id for r in runs]
    assert any("linked-report" in w for w in warnings)


def test_symlink_inside_the_root_is_followed(reports_dir: Path) -> None:
    (reports_dir / "latest").symlink_to(reports_dir / RUN_NEW, target_is_directory=True)
    runs, warnings = ReportsRoot(reports_dir).discover()
    assert "latest" in [r.run_id for r in runs] and warnings == []


def test_half_written_outputs_keep_the_readable_lines_and_count_the_rest(reports_dir: Path) -> None:
    path = reports_dir / RUN_NEW / "outputs.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + '\n{"recommender": "reference", "probe": "fair')
    records, bad = read_outputs(path, recommender="reference", probe="fairness", user="42")
    assert bad == 1
    assert [r["condition"] for r in records] == ["neutral", "gender=F", "gender=M"]
    index, bad_in_index = ReportsRoot(reports_dir).outputs_index(RUN_NEW)
    assert bad_in_index == 1
    assert index[("reference", "fairness")] == ["17", "42", "105"]
    assert index[("reference+dp8", "hallucination")] == ["17", "42", "105"]


def test_run_without_outputs_file_has_no_outputs(reports_dir: Path) -> None:
    (reports_dir / RUN_OLD / "outputs.jsonl").unlink()
    root = ReportsRoot(reports_dir)
    assert root.outputs(RUN_OLD) == ([], 0)
    assert root.outputs_index(RUN_OLD) == ({}, 0)


def test_read_outputs_fills_each_history_from_its_first_line_and_counts_bad_lines(tmp_path: Path) -> None:
    """outputs.jsonl stores a history once (on the first line with its id): a record filtered for
    later in the file still gets the titles; unreadable lines are counted, not fatal."""

    lines = [{"recommender": "a", "probe": "utility", "user": "1", "history_id": "h1", "history": ["X", "Y"]},
             "not json", [1, 2],
             {"recommender": "b", "probe": "fairness", "user": "1", "history_id": "h1"},
             {"recommender": "b", "probe": "fairness", "user": "2", "history_id": "h2"}]
    path = tmp_path / "outputs.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    records, bad = read_outputs(path, recommender="b")
    assert bad == 2
    assert [r.get("history") for r in records] == [["X", "Y"], None]
