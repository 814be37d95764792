"""The dashboard on a report written by the real runner (python-adapter recommenders of known
behaviour, real probes on the tiny synthetic data set), not on hand-made JSON."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from apptest_helpers import chart_specs
from audit.data.dataset import Dataset
from audit.runner import run_suite_file
from dashboard.compare import compare_recommenders
from dashboard.loader import ReportsRoot

RECS = textwrap.dedent('''
    def history(requests, k):
        """Recommends what the user already watched: every slot is a catalog title, all consumed."""
        return [list(reversed(r.history))[:k] for r in requests]

    def invent(requests, k):
        """Recommends films that do not exist: every slot is a hallucination."""
        return [[f"Imaginary Picture {i} of {len(r.history)}" for i in range(k)] for r in requests]
''')


@pytest.fixture(scope="module")
def real_reports(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Path:
    work = tmp_path_factory.mktemp("real-run")
    (work / "dashrecs.py").write_text(RECS)
    suite = {
        "name": "dash-real",
        "dataset": {"name": "ml-100k", "users": 20, "seed": 0},
        "recommenders": {
            "history": {"adapter": "python", "generate": "dashrecs:history"},
            "inventor": {"adapter": "python", "generate": "dashrecs:invent"},
        },
        "probes": {"hallucination": {"k": 5},
                   "fairness": {"attributes": [["gender"]], "k": 5, "bootstrap": 200, "permutations": 0}},
        "gates": [{"probe": "hallucination", "metric": "hallucination_rate", "recommender": "history",
                   "op": "<=", "threshold": 0.1}],
    }
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    reports = work / "reports"
    run_suite_file(path, out=reports / "dash-real", dataset=tiny_dataset, home=work / "home", no_cache=True)
    return reports


def test_a_runner_report_loads_and_its_numbers_reach_the_comparison(real_reports: Path) -> None:
    runs, warnings = ReportsRoot(real_reports).discover()
    assert warnings == [] and [r.run_id for r in runs] == ["dash-real"]
    report = runs[0].report
    assert report is not None, runs[0].error
    assert report.probes == ["hallucination", "fairness"]
    assert report.gates_passed == 1
    hallu = compare_recommenders(report, "history", "inventor")["hallucination"].set_index("metric")
    assert hallu.loc["hallucination_rate", "a"] == 0.0 and hallu.loc["hallucination_rate", "b"] == 1.0
    assert hallu.loc["hallucination_rate", "significant"] is True
    assert hallu.loc["consumed_rate", "a"] == 1.0


@pytest.mark.parametrize("view, probe", [("Runs", None), ("Probes", "hallucination"), ("Probes", "fairness"),
                                         ("Any two recommenders", None), ("Raw outputs", None)])
def test_every_view_renders_a_runner_report_without_errors(real_reports: Path, run_app, view: str,
                                                           probe: str | None) -> None:
    at = run_app(real_reports, view=view, **({"probe": probe} if probe else {}))
    assert not at.exception and not at.error
    if view != "Raw outputs":
        assert chart_specs(at)
    else:  # the first recorded call (history / hallucination / first user) is shown verbatim
        first = json.loads((real_reports / "dash-real" / "outputs.jsonl").read_text().splitlines()[0])
        shown = [str(c.value) for c in at.code]
        assert first["prompt"] in shown and first["raw"] in shown
