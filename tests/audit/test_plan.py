"""recaudit plan: the users a probe needs for a target CI half-width, predicted from a pilot report,
is what a run at that n then reaches (within 20%); bad input exits 2 with one message."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit.cli import main
from audit.data.dataset import Dataset
from audit.plan import parse_targets, plan_rows
from audit.report import load_report
from audit.runner import run_suite
from audit.suite import load_suite

#: base finds the held-out item for about 30% of the users, the variant for those and about 30% more
PLANTED = textwrap.dedent('''
    import zlib

    def _ranked(requests, k, share):
        return [list(r.candidates)[:k] if zlib.crc32(r.user.encode()) % 1000 < share * 1000
                else list(reversed(r.candidates))[:k] for r in requests]

    def base(requests, k):
        return _ranked(requests, k, 0.3)

    def better(requests, k):
        return _ranked(requests, k, 0.6)
''')


def _suite(directory: Path, users: int, name: str = "planplanted") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "planted_plan.py").write_text(PLANTED)
    path = directory / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "dataset": {"name": "ml-100k", "users": users, "seed": 0},
        "recommenders": {"base": {"adapter": "python", "generate": "planted_plan:base"},
                         "better": {"adapter": "python", "generate": "planted_plan:better"}},
        "probes": {"utility": {"k": [10], "negatives": 99}},
        "compare": [{"a": "base", "b": "better"}], "cache": False}))
    return path


def _hr_pair(report: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in report["pairs"] if e["metric"] == "hr@10")


def test_plan_predicts_the_ci_halfwidth_a_run_at_the_planned_n_reaches(tmp_path: Path, recaudit_home: Path,
                                                                        ml100k: Dataset,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pilot = run_suite(load_suite(_suite(tmp_path / "pilot", 150)), out=tmp_path / "pilot-report", dataset=ml100k)
    target = 0.05
    (row,) = [r for r in plan_rows(pilot.report, halfwidth=target) if r.metric == "hr@10"]
    assert row.what == "better vs base" and 150 < row.n_needed < 943 and row.seconds is not None
    full = run_suite(load_suite(_suite(tmp_path / "full", row.n_needed)), out=tmp_path / "full-report",
                     dataset=ml100k)
    lo, hi = _hr_pair(full.report)["ci"]
    reached = (hi - lo) / 2
    assert abs(reached - target) / target < 0.20, f"planned n={row.n_needed} reached half-width {reached:.4f}"
    assert main(["plan", str(_suite(tmp_path / "pilot", 150)), "--from", str(tmp_path / "pilot-report"),
                 "--halfwidth", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "better vs base" in out and f"{row.n_needed}" in out and "half-width 0.05" in out


def test_per_probe_targets_and_mde() -> None:
    assert parse_targets(["0.03", "membership=0.05"], "halfwidth", None) == (0.03, {"membership": 0.05})


@pytest.mark.parametrize("args, message", [
    (["--halfwidth", "0"], "--halfwidth '0': must be a positive number"),
    (["--halfwidth", "utility=-0.1"], "must be a positive number"),
    (["--mde", "abc"], "expected a number or PROBE=NUMBER"),
])
def test_bad_targets_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                            message: str) -> None:
    report = tmp_path / "r"
    report.mkdir()
    assert main(["plan", str(_suite(tmp_path / "s", 10)), "--from", str(report), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("recaudit: error:") == 1


def test_a_report_of_another_suite_exits_2(tmp_path: Path, recaudit_home: Path, ml100k: Dataset,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_suite(load_suite(_suite(tmp_path / "other", 20, name="othersuite")), out=tmp_path / "other-report",
              dataset=ml100k)
    assert load_report(tmp_path / "other-report")["suite"] == "othersuite"
    assert main(["plan", str(_suite(tmp_path / "s", 20)), "--from", str(tmp_path / "other-report")]) == 2
    err = capsys.readouterr().err
    assert "is of suite 'othersuite', not 'planplanted'" in err and err.count("recaudit: error:") == 1


def test_a_missing_report_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(_suite(tmp_path / "s", 20)), "--from", str(tmp_path / "nowhere")]) == 2
    assert "no report at" in capsys.readouterr().err


def test_a_probe_without_pairs_is_planned_from_its_own_ci(tmp_path: Path) -> None:
    report = {"suite": "x", "pairs": [], "dataset": {"n_users": 943},
              "results": [{"recommender": "r", "probe": "utility", "status": "pass", "headline": "hr@10",
                           "elapsed_s": 10.0, "metrics": {"hr@10": {"value": 0.5, "ci": [0.4, 0.6], "n": 100}}}]}
    (row,) = plan_rows(report, halfwidth=0.05)
    assert row.n_needed == 400 and row.seconds == pytest.approx(40.0), "n0 (h0/h)^2 = 100 * 4; 0.1 s per user"
    assert json.dumps(row.basis)
