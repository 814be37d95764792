"""The recaudit CLI: exit codes 0/1/2/3/130 through main(), once through the real console script,
and the list / fetch / dashboard / serve sub-commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import runner_testkit as kit
from audit.cli import main
from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.executors import EXECUTORS, Executor

pytest_plugins = ["pytester"]

PASSING = [{"probe": "utility", "metric": "hr@5", "recommender": "oracle", "op": ">=", "threshold": 0.9}]
FAILING = PASSING + [{"probe": "utility", "metric": "hr@5", "recommender": "reverse", "op": ">=", "threshold": 0.9}]


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


def suite(tmp_path: Path, dataset: Dataset, **kw: Any) -> Path:
    return kit.write_suite(tmp_path / "suite", kit.utility_suite(**kw), dataset=dataset)


def test_run_with_passing_gates_exits_0_and_prints_the_table(tmp_path: Path, tiny_dataset: Dataset,
                                                            recaudit_home: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out, step_summary = tmp_path / "report", tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    assert main(["run", str(suite(tmp_path, tiny_dataset, gates=PASSING)), "--out", str(out)]) == 0
    assert step_summary.read_text().startswith("## recaudit: clitest")
    stdout = capsys.readouterr().out
    assert "oracle       hr@5 1.000 [0.758, 1.000] n=12" in stdout
    assert "oracle:utility.hr@5 >= 0.9  1.000  pass" in stdout
    assert f"report: {out} (gates: 1/1 passed)" in stdout
    assert (out / "report.json").is_file()


def test_run_with_a_failing_gate_exits_1(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(suite(tmp_path, tiny_dataset, gates=FAILING)), "--out", str(tmp_path / "r")]) == 1
    assert "reverse:utility.hr@5 >= 0.9  0.000  FAIL" in capsys.readouterr().out


def test_fail_on_junit_limit_users_and_quiet(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out, junit = tmp_path / "r", tmp_path / "ci" / "junit.xml"
    code = main(["run", str(suite(tmp_path, tiny_dataset)), "--out", str(out), "--quiet", "--limit-users", "5",
                 "--junit", str(junit), "--fail-on", "utility.mrr>=0.5"])
    assert code == 1, "reverse ranks the held-out item last: its MRR is 1/11"
    assert capsys.readouterr().out == f"report: {out} (gates: 1/2 passed)\n"
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["sampled_users"] == 5 and junit.is_file()


@pytest.mark.parametrize("content, message", [
    ("name: x\nprobes: [\n", r"suite.yaml:3:1: invalid YAML"),
    ("name: x\ndataset: {name: ml-100k}\nrecommenders: {a: {adapter: python, generate: m:f}}\n"
     "probes: {utilty: {}}\n", "Unknown probe 'utilty'. Did you mean 'utility'"),
])
def test_config_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            content: str, message: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(content)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recaudit: error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err)


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2


def test_job_error_exits_3_after_writing_the_report(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = kit.utility_suite(gates=PASSING)
    spec["recommenders"]["crashy"] = {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:crash"}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 3
    stdout = capsys.readouterr().out
    assert "error: crashy x utility: RuntimeError: planted crash inside the user's recommender" in stdout
    assert "1 job error(s)" in stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["exit_code"] == 3


class ExplodingExecutor(Executor):
    class Config(StrictConfig):
        pass

    def run(self, jobs, ctx, recommenders, on_done) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("planted bug in an executor")


def test_unexpected_exception_exits_3_traceback_only_with_debug(tmp_path: Path, tiny_dataset: Dataset,
                                                               recaudit_home: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    EXECUTORS.register("test-exploding", ExplodingExecutor, "test executor that raises")
    path = suite(tmp_path, tiny_dataset, executor={"type": "test-exploding"})
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err
    assert err == ("recaudit: error: unexpected RuntimeError: planted bug in an executor "
                   "(run with --debug for the traceback)\n")
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--debug"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_interrupt_exits_130_and_keeps_finished_jobs(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = kit.utility_suite()
    spec["probes"]["test-hit"] = {"k": 3}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    kit.HitProbe.interrupt_at = 1  # jobs in order: oracle x utility, oracle x test-hit (interrupted), ...
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r" / "jobs").glob("*.json")) == ["oracle__utility.json"]


def test_real_console_script(tmp_path: Path, tiny_dataset: Dataset) -> None:
    script = Path(sys.executable).with_name("recaudit")
    env = {**os.environ, "RECAUDIT_HOME": str(tmp_path / "home")}
    path = suite(tmp_path, tiny_dataset, gates=FAILING)
    done = subprocess.run([str(script), "run", str(path), "--out", str(tmp_path / "r")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "reverse:utility.hr@5 >= 0.9  0.000  FAIL" in done.stdout
    bad = subprocess.run([str(script), "run", str(tmp_path / "missing.yaml")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("recaudit: error: suite file not found")


def test_list_shows_registered_names_and_the_variants_each_adapter_supports(tmp_path: Path) -> None:
    # the support table reads each adapter's declared capabilities, so `list` imports the adapters
    done = subprocess.run([sys.executable, "-m", "audit.cli", "list"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("reference", "python", "utility", "fairness", "grounding", "local", "ray", "ml-100k"):
        assert f"  {name} " in done.stdout
    table = done.stdout.split("variants each adapter supports")[1]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip()}
    assert "lora" in rows["hf"] and "constrained-decoding" in rows["hf"] and " dp," in rows["hf"]
    assert "federated" in rows["hf"] and "federated" in rows["reference"] and "federated" not in rows["python"]
    assert "dp," in rows["reference"] and "lora" not in rows["reference"]
    assert "lora" not in rows["python"] and "grounding" in rows["python"]


def test_fetch_unknown_data_set_exits_2(recaudit_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "ml-100kk"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recaudit: error: ") and "ml-100k" in err


def test_dashboard_command_points_streamlit_at_the_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard import APP_PATH

    assert main(["dashboard", str(tmp_path), "--print-command"]) == 0
    out = capsys.readouterr().out.strip()
    assert f"streamlit run {APP_PATH}" in out and out.endswith(f"-- --reports {tmp_path.resolve()}")


def test_serve_rejects_an_unknown_recommender(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = suite(tmp_path, tiny_dataset)
    assert main(["serve", "--recommender", "oracl", "--suite", str(path)]) == 2
    assert "Did you mean 'oracle'" in capsys.readouterr().err


def test_pytest_plugin_fails_a_test_listing_the_failing_gates(pytester: pytest.Pytester, tiny_dataset: Dataset,
                                                              recaudit_home: Path) -> None:
    good = suite(pytester.path / "good", tiny_dataset, gates=PASSING)
    bad = suite(pytester.path / "bad", tiny_dataset, gates=FAILING)
    pytester.makepyfile(test_audits=f"""
        def test_good_suite(recaudit_run):
            outcome = recaudit_run(r"{good}")
            assert outcome.exit_code == 0

        def test_bad_suite(recaudit_run):
            recaudit_run(r"{bad}")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gate failed: reverse:utility.hr@5 >= 0.9 (got 0)*"])


@pytest.mark.parametrize("stop, why", [("SIGINT", "interrupted"), ("SIGTERM", "SIGTERM")])
def test_serve_answers_over_http_until_stopped_and_logs_how(tmp_path: Path, tiny_dataset: Dataset,
                                                             stop: str, why: str) -> None:
    """The real console script: Ctrl-C or a service manager's SIGTERM ends it with exit 0 and one
    line on stderr saying how it stopped, after how many requests (issue 30, point 8)."""
    pytest.importorskip("audit.serve")
    import signal
    import socket
    import time

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = suite(tmp_path, tiny_dataset)
    env = {**os.environ, "RECAUDIT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("recaudit")), "serve", "--recommender", "oracle",
                             "--suite", str(path), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, models = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert models is not None, proc.stderr.read() if proc.poll() is not None else "server did not start"
        assert [m["id"] for m in models["data"]] == ["oracle"]
        body = {"model": "oracle", "messages": [{"role": "user", "content": "x"}],
                "recaudit": {"task": "rank", "k": 2, "request": {"history": ["A"], "candidates": ["B", "C", "D"]}}}
        answer = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10).json()
        assert json.loads(answer["choices"][0]["message"]["content"]) == ["B", "C"]
    finally:
        proc.send_signal(getattr(signal, stop))
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"recaudit serve: stopped ({why}) after 1 request(s), 0 error(s); recommender closed" in stderr
