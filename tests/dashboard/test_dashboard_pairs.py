"""The "Defended vs undefended" view: the paired differences of a report written by the real runner
(python-adapter recommenders of known behaviour, the real utility probe), shown per pair with the
report's numbers, its Holm / BH p-values and a verdict read from the metric's declared direction."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from streamlit import dataframe_util

from apptest_helpers import chart_specs, marks
from audit.data.dataset import Dataset
from audit.report import fmt_p
from dashboard.model import parse_report
from dashboard.pairs import (BETTER, NO_CI, NO_DIFFERENCE, UNDIRECTED, WORSE, VERDICT_COLOURS, pair_sections,
                             verdict)
from dashboard.views.pairs import NO_PAIRS
from pair_reports import RUN_ID, VARIANT, read_report, write_pair_run

VIEW = "Defended vs undefended"
NUMBER = r"[+-]?\d+\.\d+"


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Path:
    work = tmp_path_factory.mktemp("pairs-run")
    return write_pair_run(work / "reports", work, tiny_dataset)


def _reports_with(tmp_path: Path, pair_run: Path, edit=None) -> Path:
    """A reports root holding a copy of the real run, its report.json passed through ``edit``."""
    reports = tmp_path / "reports"
    shutil.copytree(pair_run, reports / RUN_ID)
    if edit is not None:
        path = reports / RUN_ID / "report.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return reports


def _table(at, a: str, b: str, metric: str | None = None):
    """The pair table of (a, b) shown by the view (the one holding ``metric`` when given)."""
    for t in at.table:
        frame = t.value
        if f"A: {a}" in frame.columns and f"B: {b}" in frame.columns and (
                metric is None or metric in set(frame["metric"])):
            return frame.set_index("metric")
    raise AssertionError(f"no table for {b} vs {a}; shown: {[list(t.value.columns) for t in at.table]}")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(NUMBER, text)]


# -- the real run's numbers reach the page ---------------------------------------------------------
def test_every_paired_difference_of_the_report_is_shown_with_its_ci_n_and_adjusted_p(
        pair_run: Path, tmp_path: Path, run_app) -> None:
    report = read_report(pair_run)
    entries = report["pairs"]
    assert {(e["a"], e["b"], e["origin"]) for e in entries} == {("oracle", VARIANT, "variant"),
                                                                ("oracle", "reverse", "declared")}
    at = run_app(_reports_with(tmp_path, pair_run), view=VIEW)
    assert not at.exception and not at.error
    shown = 0
    for e in entries:
        row = _table(at, e["a"], e["b"], e["metric"]).loc[e["metric"]]
        value, lo, hi = _numbers(row["B − A [95% CI]"])
        assert value == pytest.approx(e["value"], abs=5e-4)
        assert (lo, hi) == pytest.approx(tuple(e["ci"]), abs=5e-4)
        assert row["n (shared)"] == f"{e['n']} {e['unit']}"
        assert (row["p"], row["p (Holm)"], row["p (BH)"]) == (fmt_p(e["p_value"]), fmt_p(e["p_holm"]),
                                                              fmt_p(e["p_bh"]))
        assert row["method"] == e["method"]
        shown += 1
    assert shown == len(entries) > 0


def test_oracle_to_reverse_is_worse_on_hr_and_the_grounding_variant_shows_no_difference(
        pair_run: Path, tmp_path: Path, run_app) -> None:
    report = read_report(pair_run)
    results = {(r["recommender"], r["probe"]): r for r in report["results"]}
    at = run_app(_reports_with(tmp_path, pair_run), view=VIEW)
    declared = _table(at, "oracle", "reverse", "hr@5")
    hr = declared.loc["hr@5"]
    assert hr["verdict"] == WORSE and hr["better if"] == "higher"
    assert _numbers(hr["B − A [95% CI]"])[0] == pytest.approx(-1.0)
    oracle_hr = results[("oracle", "utility")]["metrics"]["hr@5"]
    reverse_hr = results[("reverse", "utility")]["metrics"]["hr@5"]
    assert _numbers(hr["A: oracle"])[0] == pytest.approx(oracle_hr["value"]) == 1.0
    assert _numbers(hr["B: reverse"])[0] == pytest.approx(reverse_hr["value"]) == 0.0
    # the popularity baseline is context (no better direction): the same for both sides
    assert declared.loc["popularity_hr@5", "better if"] == "–"
    assert declared.loc["popularity_hr@5", "verdict"] == NO_DIFFERENCE
    variant = _table(at, "oracle", VARIANT, "hr@5")
    assert set(variant["verdict"]) == {NO_DIFFERENCE}
    captions = " ".join(str(c.value) for c in at.caption)
    assert "derived: B is built as a variant of A" in captions and "declared: the suite's `compare:`" in captions
    markdown = " ".join(str(m.value) for m in at.markdown)
    assert f"**A** = `oracle` (undefended parent; no variant) · **B** = `{VARIANT}`" in markdown
    assert "**A** = `oracle` (baseline; no variant) · **B** = `reverse` (compared" in markdown


def test_the_verdict_follows_the_declared_direction_in_the_report_not_the_metric_name(
        pair_run: Path, tmp_path: Path, run_app) -> None:
    def lower_is_better(data: dict[str, Any]) -> None:
        for r in data["results"]:
            r["metrics"]["hr@5"]["spec"]["direction"] = "lower"

    at = run_app(_reports_with(tmp_path, pair_run, lower_is_better), view=VIEW)
    row = _table(at, "oracle", "reverse", "hr@5").loc["hr@5"]
    assert (row["better if"], row["verdict"]) == ("lower", BETTER)
    assert _table(at, "oracle", "reverse", "ndcg@5").loc["ndcg@5", "verdict"] == WORSE


def test_each_pair_has_a_forest_chart_of_its_differences_with_a_zero_line(
        pair_run: Path, tmp_path: Path, run_app) -> None:
    report = read_report(pair_run)
    at = run_app(_reports_with(tmp_path, pair_run), view=VIEW)
    charts = {str(json.loads(el.proto.spec).get("title", "")): el for el in at.get("vega_lite_chart")}
    assert set(charts) == {f"B − A: {VARIANT} − oracle (95% CI)", "B − A: reverse − oracle (95% CI)"}
    element = charts["B − A: reverse − oracle (95% CI)"]
    spec = json.loads(element.proto.spec)
    assert {"rule", "point"} <= marks(spec)
    assert '"datum": 0.0' in json.dumps(spec)  # the zero line
    assert VERDICT_COLOURS[WORSE] in json.dumps(spec)
    (data,) = [dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data) for d in element.proto.datasets]
    drawn = data.set_index("metric")
    for e in report["pairs"]:
        if e["b"] == "reverse":
            row = drawn.loc[e["metric"]]
            assert (row["value"], row["lo"], row["hi"]) == pytest.approx((e["value"], *e["ci"]))
    assert drawn.loc["hr@5", "verdict"] == WORSE


# -- no pairs, malformed pairs -------------------------------------------------------------------------
def test_a_run_without_pairs_says_so_in_one_line(pair_run: Path, tmp_path: Path, run_app) -> None:
    at = run_app(_reports_with(tmp_path, pair_run, lambda data: data.pop("pairs")), view=VIEW)
    assert not at.exception and not at.error
    assert [str(i.value) for i in at.info] == [NO_PAIRS]
    assert not at.table and not chart_specs(at)


def test_a_malformed_entry_is_an_error_of_its_pair_and_the_rest_still_renders(
        pair_run: Path, tmp_path: Path, run_app) -> None:
    def break_two(data: dict[str, Any]) -> None:
        for e in data["pairs"]:
            if e["b"] == "reverse" and e["metric"] == "ndcg@5":
                e["p_holm"] = 7.0  # not a p-value
        ghost = dict(next(e for e in data["pairs"] if e["b"] == "reverse" and e["metric"] == "hr@5"))
        data["pairs"].append({**ghost, "b": "ghost"})

    at = run_app(_reports_with(tmp_path, pair_run, break_two), view=VIEW)
    assert not at.exception
    errors = [str(e.value) for e in at.error]
    assert len(errors) == 2
    assert any("(utility.ndcg@5)" in e and "p_holm" in e and "[0, 1]" in e for e in errors)
    assert any("'ghost'" in e and "not a recommender of this run" in e for e in errors)
    declared = _table(at, "oracle", "reverse", "hr@5")
    assert "ndcg@5" not in declared.index and declared.loc["hr@5", "verdict"] == WORSE
    assert set(_table(at, "oracle", VARIANT, "hr@5")["verdict"]) == {NO_DIFFERENCE}
    assert "### ghost vs oracle" in [str(m.value) for m in at.markdown]


def test_entries_without_a_pair_or_with_missing_fields_are_reported_one_by_one(pair_run: Path) -> None:
    data = read_report(pair_run)
    good = [e for e in data["pairs"] if e["b"] == "reverse"]
    no_n = {k: v for k, v in good[0].items() if k != "n"}
    swapped = {**good[1], "ci": [0.5, -0.5]}
    data["pairs"] = [*good[2:], "not an entry", no_n, swapped]
    sections, loose = pair_sections(parse_report(data))
    assert loose == [f"pairs[{len(good) - 2}]: not a pair entry (expected an object with string 'a' and 'b')"]
    (section,) = sections
    assert (section.a, section.b, section.origin) == ("oracle", "reverse", "declared")
    assert [d.metric for d in section.diffs] == [e["metric"] for e in good[2:]]
    assert len(section.problems) == 2
    assert f"({good[0]['probe']}.{good[0]['metric']}): n: Field required" in section.problems[0]
    assert "low bound above the high" in section.problems[1]


# -- the verdict rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction, lo, hi, expected", [
    ("higher", 0.01, 0.2, BETTER), ("higher", -0.3, -0.1, WORSE), ("higher", -0.1, 0.1, NO_DIFFERENCE),
    ("lower", 0.01, 0.2, WORSE), ("lower", -0.3, -0.1, BETTER), ("lower", -0.1, 0.0, NO_DIFFERENCE),
    (None, 0.1, 0.2, UNDIRECTED), (None, -0.1, 0.2, NO_DIFFERENCE), ("higher", math.nan, math.nan, NO_CI),
])
def test_verdict_reads_the_ci_against_zero_and_the_declared_direction(direction, lo, hi, expected) -> None:
    assert verdict(direction, lo, hi) == expected
