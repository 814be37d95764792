"""One probe of one run: a metrics table for any probe, plus the charts its data supports.

Charts are picked by content (see :mod:`dashboard.extract`), so a new probe that follows
the metric-name patterns gets its charts without dashboard changes, and an unknown one
still shows its metrics table and raw details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, extract
from dashboard.model import Report, ResultRow
from dashboard.views.tables import arrow_safe, metric_matrix


@dataclass(frozen=True)
class ChartRule:
    """A chart a probe view shows when ``build`` returns one (it returns None otherwise)."""

    title: str
    build: Callable[[Report, Sequence[ResultRow], pd.DataFrame], alt.TopLevelMixin | None]


def _fairness(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.fairness_frame(long)
    if frame.empty:
        return None
    frame = frame.assign(metric=frame["attributes"], panel=frame["kind"] + " · " + frame["measure"])
    return charts.bars_with_ci(frame, category="metric", facet="panel",
                               title="Sensitivity to the user attribute in the prompt "
                                     "(SNSR = max − min similarity, SNSV = its spread; 0 = fair)")


def _per_value(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.per_value_frame(long)
    if frame.empty:
        return None
    return charts.bars_with_ci(frame, category="level", facet="stem",
                               title="Per attribute value (e.g. similarity to the neutral prompt)")


def _rates(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.rates_frame(long)
    if frame.empty:
        return None
    return charts.bars_with_ci(frame, category="metric", domain=(0.0, 1.0),
                               title="Rates (fraction of recommended items, 95% CI)")


def _auc(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.auc_frame(long)
    if frame.empty:
        return None
    return charts.bars_with_ci(frame, category="metric", domain=(0.0, 1.0), chance=0.5,
                               title="Attack / classifier AUC (0.5 = chance, dashed)")


def _roc(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.roc_frame(results)
    return None if frame.empty else charts.roc_curves(frame)


def _series(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.series_frame(long)
    if frame.empty:
        return None
    log_x = bool(frame["stem"].str.endswith("rep").all() and (frame["x"] > 0).all())
    return charts.series_lines(frame, facet="stem", log_x=log_x,
                               title="Series by position / repetitions / rank (95% CI band)")


def _distances(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.distance_frame(results)
    return None if frame.empty else charts.distance_boxes(frame, title="Distances (per item)")


def _histograms(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.histogram_frame(results)
    return None if frame.empty else charts.binned_steps(
        frame, title="Histograms from details (share of the total per recommender)")


def _budget(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
    frame = extract.budget_frame(results)
    if frame.empty:
        return None
    return charts.series_lines(frame, x="budget", x_title="attack budget", facet="metric",
                               title="Target exposure against attack budget")


def _against(field: str, x_title: str | Callable[[Report], str]):
    def build(report: Report, results: Sequence[ResultRow], long: pd.DataFrame):
        frame = extract.axis_frame(report, long, field)
        frame = frame[frame["metric"].isin(_headline_metrics(results))]
        if frame.empty or frame["x"].notna().sum() == 0:
            return None
        title = x_title(report) if callable(x_title) else x_title
        return charts.against_axis(frame, x_title=title,
                                   title=f"{', '.join(frame['metric'].unique())} against {title} "
                                         "(dashed: recommenders without it)")
    return build


def _headline_metrics(results: Sequence[ResultRow]) -> set[str]:
    return {m for r in results if (m := extract.headline_metric(r)) is not None}


RULES: tuple[ChartRule, ...] = (
    ChartRule("fairness", _fairness),
    ChartRule("per-value", _per_value),
    ChartRule("rates", _rates),
    ChartRule("auc", _auc),
    ChartRule("roc", _roc),
    ChartRule("series", _series),
    ChartRule("distances", _distances),
    ChartRule("histograms", _histograms),
    ChartRule("budget", _budget),
    ChartRule("epsilon", _against("epsilon", extract.epsilon_axis_title)),
    ChartRule("attack budget", _against("budget", "attack budget")),
)


def render(report: Report, probe: str) -> None:
    """Metrics table, the charts the data supports, statuses and raw details of ``probe``."""
    results = report.results_for_probe(probe)
    st.subheader(f"Probe: {probe}")
    if not results:
        st.info(f"No results for probe {probe!r} in this run.")
        return
    for r in results:
        if r.status in ("skip", "error"):
            (st.warning if r.status == "error" else st.info)(
                f"{r.recommender}: {r.status} — {r.reason or 'no reason given'}")
    measured = [r for r in results if r.metrics]
    if measured:
        st.markdown("**Metrics** — value [95% CI] n")
        st.dataframe(metric_matrix(measured), key=f"metrics_{probe}")
    notes = extract.statements(measured)
    if not notes.empty:
        st.markdown("**What the figures cover and assume**")
        st.dataframe(notes, hide_index=True, key=f"statements_{probe}")
    long = extract.metrics_frame(measured)
    for rule in RULES:
        try:
            chart = rule.build(report, measured, long)
        except extract.DetailShapeError as exc:
            st.warning(f"Cannot draw the {rule.title} chart: {exc}")
            continue
        if chart is not None:
            st.altair_chart(chart, width="stretch")
    for key, table in extract.detail_tables(measured).items():
        with st.expander(f"details: {key}"):
            st.dataframe(arrow_safe(table), hide_index=True)
    with st.expander("Raw details (JSON)"):
        for r in results:
            st.markdown(f"**{r.recommender}**")
            st.json(r.details, expanded=False)
