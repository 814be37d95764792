"""The CI recipe for a repository that uses recaudit, end to end: a temporary git repository with its
own recommender (a ``python``-adapter module), its own data (CSV) and its own suite, released three
times through ``examples/ci/release_gate.sh`` (the first release becomes the baseline; an unchanged
model passes against it; a planted regression fails the compare step with exit 1 and is not promoted),
and the same audit and compare steps of ``examples/github-actions.yml`` run as written in bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from audit.data.dataset import Dataset
from tests.conftest import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "release_gate.sh"
WORKFLOW = ROOT / "examples" / "github-actions.yml"

#: the user's recommender at each release: v1 ranks the held-out item first (the utility probe lists
#: it first among the candidates), v2 is a refactor with the same lists, v3 the planted regression
#: (the candidate list backwards: the held-out item last)
RELEASES = {
    "v1": "def recommend(requests, k):\n    return [list(r.candidates)[:k] for r in requests]\n",
    "v2": "def recommend(requests, k):\n    return [[c for c in r.candidates][:k] for r in requests]\n",
    "v3": "def recommend(requests, k):\n    return [list(reversed(r.candidates))[:k] for r in requests]\n",
}

SUITE = {
    "name": "release",
    "dataset": {"name": "csv", "interactions": "data/interactions.csv", "items": "data/items.csv",
                "users_file": "data/users.csv", "seed": 0},
    "recommenders": {"ours": {"adapter": "python", "generate": "recs:recommend"}},
    "probes": {"utility": {"k": [5], "negatives": 10}},
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args], cwd=repo,
                   check=True, capture_output=True)


@pytest.fixture()
def user_repo(tmp_path: Path, recaudit_home: Path) -> Path:
    """A git repository of a team that depends on recaudit: pyproject naming it, data, suite, model."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "movies-recs"
    (repo / "data").mkdir(parents=True)
    (repo / "audits").mkdir()
    data: Dataset = make_tiny_dataset(n_users=60)
    data.interactions.to_csv(repo / "data" / "interactions.csv", index=False)
    data.items.to_csv(repo / "data" / "items.csv", index=False)
    assert data.users is not None
    data.users.to_csv(repo / "data" / "users.csv", index=False)
    suite = dict(SUITE, dataset={**SUITE["dataset"], **{k: f"../{v}" for k, v in SUITE["dataset"].items()
                                                          if k in ("interactions", "items", "users_file")}})
    (repo / "audits" / "release.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    (repo / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "movies-recs"
        version = "1.0.0"
        dependencies = ["recaudit==0.1.0"]
    """))
    git(repo, "init", "-q")
    return repo


def release(repo: Path, tag: str) -> None:
    (repo / "recs.py").write_text(RELEASES[tag])
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"release {tag}")
    git(repo, "tag", tag)


def env_for(repo: Path, **extra: str) -> dict[str, str]:
    """The CI job's environment: recaudit on PATH as an installed dependency, no terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def gate(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=repo, env=env_for(repo, **env), capture_output=True,
                          text=True, timeout=600)


def test_first_release_is_the_baseline_an_unchanged_model_passes_and_a_regression_fails(user_repo: Path) -> None:
    repo = user_repo
    summary = repo / "step-summary.md"
    release(repo, "v1")
    first = gate(repo, "--baseline", "baseline", "--out", "report-v1", "--promote", "audits/release.yaml")
    assert first.returncode == 0, first.stderr
    assert "compare skipped" in first.stdout and "promoted to the baseline baseline" in first.stdout
    assert (repo / "baseline" / "report.json").is_file() and (repo / "baseline" / "junit.xml").is_file()

    release(repo, "v2")
    second = gate(repo, "--baseline", "baseline", "--out", "report-v2", "--promote", "audits/release.yaml",
                  GITHUB_STEP_SUMMARY=str(summary))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "REGRESSION" not in second.stdout and "PASSED" in second.stdout
    assert (repo / "report-v2" / "compare.md").stat().st_size > 0 and summary.stat().st_size > 0

    baseline_before = (repo / "baseline" / "report.json").read_bytes()
    release(repo, "v3")
    third = gate(repo, "--baseline", "baseline", "--out", "report-v3", "--promote", "audits/release.yaml")
    assert third.returncode == 1, third.stdout + third.stderr
    assert "ours" in third.stdout and "hr@5" in third.stdout and "REGRESSION" in third.stdout
    assert "a metric regressed against the baseline" in third.stderr
    assert (repo / "report-v3" / "report.json").is_file(), "the failing release still leaves its report to read"
    assert (repo / "baseline" / "report.json").read_bytes() == baseline_before, "a failing release is not promoted"


def test_bad_invocations_exit_2_with_one_line_naming_the_fix(user_repo: Path) -> None:
    release(user_repo, "v1")
    cases = {("audits/release.yaml", "--frobnicate"): "unknown option '--frobnicate'",
             (): "no suite file",
             ("--out", "same", "--baseline", "same", "audits/release.yaml"): "must go elsewhere",
             ("audits/nope.yaml",): "nope.yaml"}
    (user_repo / "same").mkdir()
    for args, message in cases.items():
        proc = gate(user_repo, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def workflow_step(name: str) -> str:
    """The ``run:`` script of the workflow step called ``name``."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["audit"]["steps"]
    [step] = [s for s in steps if s.get("name") == name]
    return step["run"]


def test_the_github_workflow_run_and_compare_steps_run_as_written(user_repo: Path) -> None:
    """The workflow's 'Run the suite' and 'Compare with the last release' steps, as bash with the
    workflow's env: against v1's report as the restored baseline, v3 fails the compare step (exit 1)."""
    repo = user_repo
    release(repo, "v1")
    env = dict(RECAUDIT_SUITE="audits/release.yaml", RECAUDIT_BASELINE="recaudit-baseline",
               RECAUDIT_OUT="recaudit-report", RECAUDIT_COMPARE_ARGS="",
               GITHUB_STEP_SUMMARY=str(repo / "summary.md"))
    steps = {name: workflow_step(name) for name in ("Run the suite", "Compare with the last release")}

    def step(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", steps[name]], cwd=repo,
                              env=env_for(repo, **env), capture_output=True, text=True, timeout=600)

    assert step("Run the suite").returncode == 0
    skipped = step("Compare with the last release")
    assert skipped.returncode == 0 and "compare skipped" in skipped.stdout
    shutil.copytree(repo / "recaudit-report", repo / "recaudit-baseline")  # what the restore step unpacks

    release(repo, "v3")
    assert step("Run the suite").returncode == 0
    compare = step("Compare with the last release")
    assert compare.returncode == 1, compare.stdout + compare.stderr
    assert "REGRESSION" in compare.stdout and "hr@5" in (repo / "recaudit-report" / "compare.md").read_text()
