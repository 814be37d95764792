"""What a user noticed in the dashboard (issue 30, point 8), checked in the app as it runs
(``AppTest``): the headline chart's rows have room for their labels, a comparison table keeps
its verdict columns in view, and "Run vs run" says whether a change is better or worse, by the
metric's declared direction, on reports the real runner wrote."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from apptest_helpers import chart_specs
from audit.data.dataset import Dataset
from audit.runner import run_suite_file
from dashboard import charts
from report_fixtures import RECOMMENDERS

#: the y labels are 11 px high: a row needs more than that, or neighbouring labels overlap
LABEL_PX = 11
COMPARISON_COLUMNS = ["delta (B − A)", "change", "beyond uncertainty", "better when", "n"]

RECS = textwrap.dedent('''
    def history(requests, k):
        """Every slot a catalog title the user already watched."""
        return [list(reversed(r.history))[:k] for r in requests]

    def invent(requests, k):
        """Every slot a film that does not exist."""
        return [[f"Imaginary Picture {i} of {len(r.history)}" for i in range(k)] for r in requests]
''')


def _row_px(spec: dict, recommenders: int) -> int:
    """Pixels one y row of a :func:`charts.ci_dots` spec gets (a Vega-Lite step per dot)."""
    height = spec["height"]
    assert isinstance(height, dict) and "step" in height, \
        f"a fixed total height ({height!r}) is shrunk to fit title, axis and legend, crushing the rows"
    return int(height["step"]) * recommenders


def test_the_headline_chart_gives_each_metric_row_room_for_its_label(reports_dir: Path, run_app) -> None:
    at = run_app(reports_dir)
    assert not at.exception
    specs = chart_specs(at)
    assert len(specs) == 1
    assert _row_px(specs[0], len(RECOMMENDERS)) > 2 * LABEL_PX


@pytest.mark.parametrize("recommenders", [1, 2, 3, 7])
@pytest.mark.parametrize("metrics", [1, 2, 12])
def test_ci_dots_rows_have_room_whatever_the_number_of_rows_and_dots(recommenders: int, metrics: int) -> None:
    frame = pd.DataFrame([{"recommender": f"r{r}", "metric": f"probe{m}: metric_{m}", "value": 0.5,
                           "lo": 0.4, "hi": 0.6, "n": 10} for m in range(metrics) for r in range(recommenders)])
    spec = charts.ci_dots(frame).to_dict()
    assert _row_px(spec, recommenders) > 2 * LABEL_PX


def test_a_comparison_table_has_the_page_width_with_its_verdict_columns(reports_dir: Path, run_app) -> None:
    at = run_app(reports_dir, view="Any two recommenders")
    assert not at.exception
    tables = [df for df in at.dataframe if "delta (B − A)" in df.value.columns]
    assert tables
    for df in tables:
        assert list(df.value.columns)[-len(COMPARISON_COLUMNS):] == COMPARISON_COLUMNS
    # a table that shares a row with a chart (st.columns) gets part of the width and cuts off its
    # last columns ("beyond uncertainty" and after), as a user saw
    in_columns = [df for col in at.columns for df in col.dataframe if "delta (B − A)" in df.value.columns]
    assert in_columns == []


@pytest.fixture(scope="module")
def changed_runs(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Path:
    """Two real runs of one recommender name: 'model' recommends what the user watched in run
    'before', and invents films in run 'after'."""
    work = tmp_path_factory.mktemp("run-vs-run")
    (work / "layoutrecs.py").write_text(RECS)
    reports = work / "reports"
    for run, target in (("before", "history"), ("after", "invent")):
        suite = {"name": "changed", "dataset": {"name": "ml-100k", "users": 20, "seed": 0},
                 "recommenders": {"model": {"adapter": "python", "generate": f"layoutrecs:{target}"}},
                 "probes": {"hallucination": {"k": 5}}}
        path = work / f"{run}.yaml"
        path.write_text(yaml.safe_dump(suite, sort_keys=False))
        run_suite_file(path, out=reports / run, dataset=tiny_dataset, home=work / "home", no_cache=True)
    return reports


def _run_vs_run(run_app, reports: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    at = run_app(reports, view="Run vs run", run="after")
    assert not at.exception and not at.error
    assert at.selectbox(key="hist_run:after").value == "before"
    table = next(df.value for df in at.dataframe if "B: after" in df.value.columns).set_index("metric")
    summary = next(df.value for df in at.dataframe if "significant deltas" in df.value.columns).set_index("probe")
    return table, summary


def test_run_vs_run_says_better_or_worse_by_the_declared_direction(changed_runs: Path, run_app) -> None:
    table, summary = _run_vs_run(run_app, changed_runs)
    hallu, consumed = table.loc["hallucination_rate"], table.loc["consumed_rate"]
    assert (hallu["better when"], hallu["beyond uncertainty"], hallu["change"]) == ("lower", "yes", "worse")
    assert hallu["delta (B − A)"] == pytest.approx(1.0)
    assert (consumed["better when"], consumed["change"]) == ("lower", "better")
    assert consumed["delta (B − A)"] == pytest.approx(-1.0)
    row = summary.loc["hallucination"]
    assert row["worse"] == (table["change"] == "worse").sum() >= 1
    assert row["better"] == (table["change"] == "better").sum() >= 1
    assert "hallucination_rate +1.000 (worse)" in row["significant deltas"]
    assert "consumed_rate -1.000 (better)" in row["significant deltas"]


def test_the_verdict_follows_the_declaration_not_the_name(changed_runs: Path, run_app, tmp_path: Path) -> None:
    """The same numbers with hallucination_rate declared 'higher is better' in both runs: the
    verdict flips; with no declaration, the change is shown without one."""
    import shutil

    for direction, verdict in (("higher", "better"), (None, "changed (no direction)")):
        reports = tmp_path / f"reports-{direction}"
        shutil.copytree(changed_runs, reports)
        for run in ("before", "after"):
            path = reports / run / "report.json"
            data = json.loads(path.read_text())
            for res in data["results"]:
                metric = res["metrics"].get("hallucination_rate")
                if metric is not None:
                    metric["spec"]["direction"] = direction
            path.write_text(json.dumps(data))
        table, _ = _run_vs_run(run_app, reports)
        assert table.loc["hallucination_rate", "change"] == verdict
        assert table.loc["hallucination_rate", "better when"] == (direction or "–")


def test_the_fixture_tables_say_changed_without_declarations(reports_dir: Path, run_app) -> None:
    """Schema-1 reports declare nothing: a change beyond the uncertainty is neither better nor worse."""
    at = run_app(reports_dir, view="Any two recommenders")
    table = next(df.value for df in at.dataframe
                 if "B: reference+dp8" in df.value.columns and "hr@10" in set(df.value["metric"])).set_index("metric")
    assert table.loc["hr@10", "beyond uncertainty"] == "yes"
    assert table.loc["hr@10", "change"] == "changed (no direction)"
    assert table.loc["ndcg@10", "change"] == "same"
