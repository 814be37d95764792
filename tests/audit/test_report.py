"""The report directory: schema-valid report.json, outputs.jsonl keys, JUnit counts, Markdown summary."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

import runner_testkit as kit
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import history_id
from audit.report import OUTPUT_KEYS, read_outputs, validate_report, validate_report_data, write_report_dir
from audit.stats import wilson_ci
from audit.runner import RunOutcome, run_suite_file


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


@pytest.fixture()
def mixed_run(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> RunOutcome:
    """2 recommenders x 3 probes: 2 pass, 1 skip, 1 error (+2 build errors), and 3 gates (1 failing)."""
    suite = {
        "name": "mixed", "dataset": {"name": "tiny", "users": 6},
        "recommenders": {"echo": {"adapter": "test-echo"}, "down": {"adapter": "test-unreachable"}},
        "probes": {"test-hit": {"k": 3}, "test-needs-score": {}, "test-broken": {}},
        "gates": [{"probe": "test-hit", "metric": "hit", "recommender": "echo", "op": "<=", "threshold": 0.0},
                  {"probe": "test-hit", "metric": "list_length", "recommender": "echo", "op": ">=", "threshold": 4},
                  {"probe": "test-hit", "metric": "hit", "recommender": "echo", "op": "<", "threshold": 0.5,
                   "use": "ci_high"}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return run_suite_file(path, out=tmp_path / "out", dataset=tiny_dataset, junit=tmp_path / "extra-junit.xml")


def test_report_json_validates_and_has_the_contract_fields(mixed_run: RunOutcome) -> None:
    report = validate_report(mixed_run.out)
    assert report["schema_version"] == 2 and report["suite"] == "mixed"
    assert report["dataset"]["sampled_users"] == 6 and report["dataset"]["n_items"] == 30
    assert [r["name"] for r in report["recommenders"]] == ["echo", "down"]
    assert [(r["recommender"], r["probe"], r["status"]) for r in report["results"]] == [
        ("echo", "test-hit", "pass"), ("echo", "test-needs-score", "skip"), ("echo", "test-broken", "error"),
        ("down", "test-hit", "error"), ("down", "test-needs-score", "error"), ("down", "test-broken", "error")]
    hit = report["results"][0]
    assert hit["headline"] == "hit" and hit["metrics"]["hit"] == {"value": 0.0, "n": 6, "ci": [0.0, pytest.approx(wilson_ci(0, 6)[1])]}
    assert [g["passed"] for g in report["gates"]] == [True, False, True]
    assert report["gates_passed"] is False and report["exit_code"] == 1


@pytest.mark.parametrize("breakage, where", [
    (lambda r: r["results"][0].update(status="done"), "results/0/status"),
    (lambda r: r["results"][0]["metrics"]["hit"].pop("n"), "results/0/metrics/hit"),
    (lambda r: r.pop("gates"), "(top level)"),
    (lambda r: r["dataset"].update(n_users="many"), "dataset/n_users"),
])
def test_schema_rejects_broken_reports_naming_the_place(mixed_run: RunOutcome, breakage, where: str) -> None:
    report = copy.deepcopy(mixed_run.report)
    breakage(report)
    with pytest.raises(ConfigError, match=re.escape(f"at {where}")):
        validate_report_data(json.loads(json.dumps(report)))


def test_newer_schema_version_is_refused(mixed_run: RunOutcome) -> None:
    with pytest.raises(ConfigError, match="schema_version 99 is not supported"):
        validate_report_data({**mixed_run.report, "schema_version": 99})


def test_outputs_jsonl_has_one_line_per_model_call(mixed_run: RunOutcome) -> None:
    lines = [json.loads(line) for line in (mixed_run.out / "outputs.jsonl").read_text().splitlines()]
    assert len(lines) == 6, "test-hit made one call per audited user; skipped and errored jobs made none"
    for line in lines:
        assert set(OUTPUT_KEYS) <= set(line)
        assert (line["recommender"], line["probe"], line["condition"]) == ("echo", "test-hit", "neutral")
        assert json.loads(line["raw"]) == line["parsed"] and len(line["parsed"]) == 3


def test_each_history_is_written_once_and_every_call_reads_it_back(tmp_path: Path, tiny_dataset: Dataset,
                                                                   recaudit_home: Path) -> None:
    """A python recommender under utility (1 call per user) and fairness (5 conditions per user:
    neutral, 2 genders, 2 placebos):
    every call names its request's history by id, outputs.jsonl carries each history's titles on
    one line only, and read_outputs gives every call the titles it was sent."""
    spec = kit.utility_suite()
    spec["recommenders"].pop("reverse")
    spec["probes"]["fairness"] = {"attributes": [["gender"]], "k": 3}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    outcome = run_suite_file(path, out=tmp_path / "r")
    raw = [json.loads(line) for line in (outcome.out / "outputs.jsonl").read_text().splitlines()]
    calls = [r for r in raw if r["probe"] in ("utility", "fairness")]
    assert len(calls) == 12 * 6 and all(set(OUTPUT_KEYS) | {"history_id"} <= set(r) for r in calls)
    carried = [r["history_id"] for r in raw if "history" in r]
    assert len(carried) == len(set(carried)) == len({r["history_id"] for r in calls}) == 12, \
        "one copy per distinct history in the file (the user's test history, sent by both probes)"
    assert all("history" not in json.loads(r["prompt"]) for r in calls)
    titles = tiny_dataset.item_titles
    for rec in read_outputs(outcome.out / "outputs.jsonl"):
        sent = [titles[i] for i in tiny_dataset.sequences[rec["user"]].test_history]
        assert rec["history"] == sent and rec["history_id"] == history_id(sent)
    jobs = [json.loads(line) for job in sorted((outcome.out / "jobs").glob("*.outputs.jsonl"))
            for line in job.read_text().splitlines()]
    assert sum("history" in r for r in jobs) == 24, "each job's records keep their own copy (resume, cache)"


def test_junit_counts_results_and_gates(mixed_run: RunOutcome, tmp_path: Path) -> None:
    root = ET.parse(mixed_run.out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "9", "failures": "1", "errors": "4", "skipped": "1"}
    cases = root.findall(".//testcase")
    assert len(cases) == 9
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["echo:test-hit.list_length >= 4"]
    errored = {(c.get("classname"), c.get("name")) for c in cases if c.find("error") is not None}
    assert errored == {("mixed.echo", "test-broken"), ("mixed.down", "test-hit"),
                       ("mixed.down", "test-needs-score"), ("mixed.down", "test-broken")}
    assert (tmp_path / "extra-junit.xml").read_text() == (mixed_run.out / "junit.xml").read_text()


def test_summary_markdown_has_the_matrix_gates_and_reasons(mixed_run: RunOutcome) -> None:
    md = (mixed_run.out / "summary.md").read_text()
    assert "| recommender | test-hit | test-needs-score | test-broken |" in md
    assert "| echo | hit 0.000 [0.000, 0.390] n=6 | skip | error |" in md
    assert "95% bootstrap CI" not in md and "Wilson score intervals for shares" in md, \
        "0 of 6 gives [0, 0.390]: a Wilson interval, not a bootstrap one"
    assert "**Gates: 2/3 passed**" in md
    assert "| `echo:test-hit.list_length >= 4` | 3.000 | **FAIL** |" in md
    assert "- error: down x test-hit: building recommender 'down' failed: EndpointError" in md


def test_failed_validation_leaves_the_previous_report(mixed_run: RunOutcome) -> None:
    before = (mixed_run.out / "report.json").read_bytes()
    broken = {**mixed_run.report, "results": [{"status": "nope"}]}
    with pytest.raises(ConfigError):
        write_report_dir(mixed_run.out, broken, [], junit_xml="<x/>", summary_md="x")
    assert (mixed_run.out / "report.json").read_bytes() == before
    assert not [p for p in mixed_run.out.iterdir() if p.name.startswith(".")]


def test_missing_report_names_the_run_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no report at .*recaudit run"):
        validate_report(tmp_path)
