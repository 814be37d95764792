"""The runner: job cache, --no-cache, resume after interruption, build and probe errors, skips, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import runner_testkit as kit
from audit.data.dataset import Dataset
from audit.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_RUNTIME, ConfigError
from audit.report import OUTPUT_KEYS
from audit.runner import RunOutcome, run_suite_file


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


def suite_file(tmp_path: Path, **overrides: Any) -> Path:
    suite = {"name": "rt", "dataset": {"name": "tiny", "users": 8, "seed": 1},
             "recommenders": {"echo": {"adapter": "test-echo"}},
             "probes": {"test-hit": {"k": 3}}}
    suite.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def run(path: Path, out: Path, dataset: Dataset, **kw: Any) -> RunOutcome:
    return run_suite_file(path, out=out, dataset=dataset, **kw)


def statuses(outcome: RunOutcome) -> dict[tuple[str, str], str]:
    return {(j.recommender, j.probe): j.result.status for j in outcome.jobs}


def test_cached_job_runs_once_across_runs(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    path = suite_file(tmp_path)
    first = run(path, tmp_path / "out1", tiny_dataset)
    second = run(path, tmp_path / "out2", tiny_dataset)
    assert kit.HitProbe.calls == 1
    assert kit.EchoHistory.builds == 1, "a recommender whose jobs are all cached is not built"
    assert [j.cached for j in first.jobs] == [False] and [j.cached for j in second.jobs] == [True]
    assert first.report["results"][0]["metrics"] == second.report["results"][0]["metrics"]
    assert (tmp_path / "out1" / "outputs.jsonl").read_text() == (tmp_path / "out2" / "outputs.jsonl").read_text()
    assert second.report["recommenders"][0]["info"]["trained_on"] == tiny_dataset.fingerprint
    assert len(list((recaudit_home / "results").glob("*.json"))) == 1


def test_recommenders_are_built_one_at_a_time_and_closed_after_their_jobs(
        tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    path = suite_file(tmp_path, recommenders={name: {"adapter": "test-echo"} for name in ("a", "b", "c")},
                      probes={"test-hit": {"k": 3}, "hit5": {"probe": "test-hit", "k": 5}})
    outcome = run(path, tmp_path / "out", tiny_dataset)
    assert set(statuses(outcome).values()) == {"pass"} and len(outcome.jobs) == 6
    assert kit.EchoHistory.builds == 3 and kit.EchoHistory.most_alive == 1 and kit.EchoHistory.alive == 0
    assert [r["info"]["trained_on"] for r in outcome.report["recommenders"]] == [tiny_dataset.fingerprint] * 3


def test_no_cache_recomputes_and_overwrites(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    path = suite_file(tmp_path)
    run(path, tmp_path / "out", tiny_dataset)
    (record,) = (recaudit_home / "results").glob("*.json")
    record.write_text(record.read_text().replace('"status": "pass"', '"status": "fail"'))
    again = run(path, tmp_path / "out", tiny_dataset, no_cache=True)
    assert kit.HitProbe.calls == 2 and not again.jobs[0].cached
    assert json.loads(record.read_text())["result"]["status"] == "pass", "--no-cache overwrites the cache"
    run(path, tmp_path / "out3", tiny_dataset)
    assert kit.HitProbe.calls == 2


def test_changed_probe_options_or_users_miss_the_cache(tmp_path: Path, tiny_dataset: Dataset,
                                                       recaudit_home: Path) -> None:
    run(suite_file(tmp_path, probes={"test-hit": {"k": 3}}), tmp_path / "a", tiny_dataset)
    run(suite_file(tmp_path, probes={"test-hit": {"k": 2}}), tmp_path / "b", tiny_dataset)
    run(suite_file(tmp_path, probes={"test-hit": {"k": 2}}), tmp_path / "c", tiny_dataset, limit_users=3)
    assert kit.HitProbe.calls == 3


@pytest.mark.parametrize("shared_cache", [True, False], ids=["cache", "run-dir-only"])
def test_resume_after_interruption_skips_finished_jobs(tmp_path: Path, tiny_dataset: Dataset,
                                                       recaudit_home: Path, shared_cache: bool) -> None:
    path = suite_file(tmp_path, cache=shared_cache,
                      recommenders={"echo": {"adapter": "test-echo"},
                                    "plain": {"adapter": "test-echo", "reverse": False}},
                      probes={"hit3": {"probe": "test-hit", "k": 3}, "hit2": {"probe": "test-hit", "k": 2}})
    out = tmp_path / "out"
    kit.HitProbe.interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        run(path, out, tiny_dataset)
    assert sorted(p.name for p in (out / "jobs").glob("*.json")) == ["echo__hit2.json", "echo__hit3.json"]
    assert not (out / "report.json").exists(), "an interrupted run writes no report"
    assert (recaudit_home / "results").exists() is shared_cache

    kit.HitProbe.interrupt_at = None
    resumed = run(path, out, tiny_dataset)
    assert kit.HitProbe.calls == 5, "only the two unfinished jobs run again"
    assert [(j.recommender, j.probe, j.cached) for j in resumed.jobs] == [
        ("echo", "hit3", True), ("echo", "hit2", True), ("plain", "hit3", False), ("plain", "hit2", False)]
    assert set(statuses(resumed).values()) == {"pass"}


def test_interrupted_rerun_leaves_the_previous_report_intact(tmp_path: Path, tiny_dataset: Dataset,
                                                             recaudit_home: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out, tiny_dataset)
    before = {name: (out / name).read_bytes() for name in ("report.json", "outputs.jsonl", "summary.md", "junit.xml")}
    kit.HitProbe.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        run(path, out, tiny_dataset, no_cache=True)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging files left behind"


def test_build_error_gives_error_results_and_others_go_on(tmp_path: Path, tiny_dataset: Dataset,
                                                          recaudit_home: Path) -> None:
    path = suite_file(tmp_path, recommenders={"served": {"adapter": "test-unreachable"},
                                              "echo": {"adapter": "test-echo"}})
    outcome = run(path, tmp_path / "out", tiny_dataset)
    assert statuses(outcome) == {("served", "test-hit"): "error", ("echo", "test-hit"): "pass"}
    reason = outcome.jobs[0].result.reason
    assert reason.startswith("building recommender 'served' failed: EndpointError: cannot reach http://127.0.0.1:9/v1")
    assert outcome.exit_code == EXIT_RUNTIME and outcome.report["exit_code"] == EXIT_RUNTIME
    again = run(path, tmp_path / "out", tiny_dataset)
    assert [j.cached for j in again.jobs] == [False, True], "errors are retried, passes are reused"


def test_probe_exception_is_an_error_with_a_short_traceback(tmp_path: Path, tiny_dataset: Dataset,
                                                            recaudit_home: Path) -> None:
    path = suite_file(tmp_path, probes={"test-broken": {}, "test-hit": {}})
    outcome = run(path, tmp_path / "out", tiny_dataset)
    assert statuses(outcome) == {("echo", "test-broken"): "error", ("echo", "test-hit"): "pass"}
    broken = outcome.jobs[0].result
    assert broken.reason == "ValueError: planted failure inside the probe"
    assert "runner_testkit.py" in broken.details["traceback"] and "planted failure" in broken.details["traceback"]
    assert broken.details["traceback"].count("File ") <= 6


def test_missing_capability_is_a_skip_with_the_reason(tmp_path: Path, tiny_dataset: Dataset,
                                                      recaudit_home: Path) -> None:
    outcome = run(suite_file(tmp_path, probes={"test-needs-score": {}}), tmp_path / "out", tiny_dataset)
    (job,) = outcome.jobs
    assert job.result.status == "skip" and job.result.metrics == {}
    assert "lacks capability score needed by probe 'test-needs-score'" in job.result.reason
    assert outcome.exit_code == EXIT_OK


@pytest.mark.parametrize("op, threshold, code", [("<=", 0.0, EXIT_OK), (">=", 0.5, EXIT_GATE_FAILED)])
def test_gates_decide_the_exit_code(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                    op: str, threshold: float, code: int) -> None:
    # EchoHistory recommends the user's own history, so the held-out item is never hit: hit == 0
    gates = [{"probe": "test-hit", "metric": "hit", "recommender": "echo", "op": op, "threshold": threshold}]
    outcome = run(suite_file(tmp_path, gates=gates), tmp_path / "out", tiny_dataset)
    assert outcome.jobs[0].result.metrics["hit"].value == 0.0
    assert outcome.exit_code == code and outcome.gates[0].passed is (code == EXIT_OK)


def test_fail_on_adds_gates_and_is_checked_against_the_suite(tmp_path: Path, tiny_dataset: Dataset,
                                                             recaudit_home: Path) -> None:
    path = suite_file(tmp_path)
    outcome = run(path, tmp_path / "out", tiny_dataset, fail_on=["test-hit.list_length>=3"])
    assert outcome.gates[0].passed and outcome.gates[0].value == 3.0
    with pytest.raises(ConfigError, match="--fail-on"):
        run(path, tmp_path / "out", tiny_dataset, fail_on=["utility.hr@10>=0.1"])


def test_limit_users_caps_the_audited_users(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    outcome = run(suite_file(tmp_path), tmp_path / "out", tiny_dataset, limit_users=3)
    assert outcome.report["dataset"]["sampled_users"] == 3
    assert outcome.jobs[0].result.metrics["hit"].n == 3
    with pytest.raises(ConfigError, match="--limit-users"):
        run(suite_file(tmp_path), tmp_path / "out", tiny_dataset, limit_users=0)


def test_each_job_is_written_to_the_run_directory(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    out = tmp_path / "out"
    outcome = run(suite_file(tmp_path, recommenders={"echo+rev": {"adapter": "test-echo"}}), out, tiny_dataset)
    record = json.loads((out / "jobs" / "echo+rev__test-hit.json").read_text())
    assert record["key"] == outcome.jobs[0].key and record["result"]["status"] == "pass"
    lines = (out / "jobs" / "echo+rev__test-hit.outputs.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(set(OUTPUT_KEYS) <= set(json.loads(line)) for line in lines)


@pytest.mark.slow
def test_real_ml100k_suite_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ML-100k from the recaudit cache, 50 audited users, the real utility and hallucination probes
    on python-adapter recommenders; the shared result cache is off so nothing is written to it."""
    from audit.cli import main
    from audit.report import validate_report

    spec = {"name": "ml100k-smoke", "dataset": {"name": "ml-100k", "users": 50, "seed": 0}, "cache": False,
            "recommenders": {"oracle": {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:oracle"},
                             "reverse": {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:reverse"}},
            "probes": {"utility": {"k": [10], "negatives": 99}, "hallucination": {"k": 10}},
            "gates": [{"probe": "utility", "metric": "ndcg@10", "recommender": "oracle", "op": ">=", "threshold": 0.99}]}
    path = kit.write_suite(tmp_path, spec)
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "-q"]) == 0
    report = validate_report(tmp_path / "r")
    assert (report["dataset"]["n_users"], report["dataset"]["n_items"]) == (943, 1682)
    assert report["dataset"]["sampled_users"] == 50
    results = {(r["recommender"], r["probe"]): r for r in report["results"]}
    assert results[("oracle", "utility")]["metrics"]["hr@10"]["value"] == 1.0
    assert results[("reverse", "utility")]["metrics"]["hr@10"]["value"] == 0.0
    # open generation: both echo the user's history, which is all catalog titles but all consumed
    assert results[("oracle", "hallucination")]["metrics"]["hallucination_rate"]["value"] == 0.0
    assert results[("oracle", "hallucination")]["metrics"]["consumed_rate"]["value"] == 1.0


def test_the_headline_is_the_preferred_metric_then_its_prefix_then_the_first() -> None:
    from audit.runner import pick_headline

    metrics = ["hr_neutral", "snsr_jaccard_gender", "snsr_jaccard_age"]
    assert pick_headline(metrics, "hr_neutral") == "hr_neutral"
    assert pick_headline(metrics, "snsr_jaccard_") == "snsr_jaccard_gender"
    assert pick_headline(metrics, "missing") == "hr_neutral"
    assert pick_headline(metrics, None) == "hr_neutral"
    assert pick_headline([], "x") is None
