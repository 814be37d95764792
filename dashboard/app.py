"""Streamlit entry of the recaudit dashboard (read-only view of a reports directory).

Run: ``streamlit run dashboard/app.py -- --reports DIR``; without ``--reports`` the
directory is ``$RECAUDIT_REPORTS``, else ``reports/``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import streamlit as st

from audit.errors import ConfigError
from dashboard import reports_dir_from
from dashboard.loader import ReportAccessError, ReportsRoot, RunEntry
from dashboard.model import Report, ReportFormatError
from dashboard.views import compare, outputs, pairs, probes, runs


@dataclass(frozen=True)
class Page:
    """What a view gets: the reports root, every discovered run, and the selected run."""

    root: ReportsRoot
    runs: list[RunEntry]
    warnings: list[str]
    run_id: str
    report: Report


def _runs_view(page: Page) -> None:
    runs.render_run_list(page.runs, page.warnings)
    runs.render_overview(page.root, page.run_id, page.report)


def _probes_view(page: Page) -> None:
    if not page.report.probes:
        st.info("This run has no probe results.")
        return
    probe = st.selectbox("Probe", page.report.probes, key="probe", bind="query-params")
    probes.render(page.report, probe)


VIEWS: dict[str, Callable[[Page], None]] = {
    "Runs": _runs_view,
    "Probes": _probes_view,
    "Defended vs undefended": lambda page: pairs.render(page.report),
    "Any two recommenders": lambda page: compare.render_defended(page.report, page.run_id),
    "Run vs run": lambda page: compare.render_two_runs(page.runs, page.run_id),
    "Raw outputs": lambda page: outputs.render(page.root, page.run_id),
}


def main() -> None:
    st.set_page_config(page_title="recaudit dashboard", layout="wide")
    st.sidebar.title("recaudit")
    try:
        root = ReportsRoot(reports_dir_from(sys.argv[1:]))
    except ConfigError as exc:
        st.error(str(exc))
        return
    st.sidebar.caption(f"Reports: `{root.path}` (read-only)")
    run_entries, warnings = root.discover()
    readable = [r for r in run_entries if r.ok]
    if not readable:
        runs.render_run_list(run_entries, warnings)
        st.info(f"No readable report under {root.path}. Write one with "
                f"`recaudit run SUITE.yaml --out {root.path}/NAME`.")
        return
    latest = max(range(len(readable)), key=lambda i: (readable[i].report.created, readable[i].run_id))
    run_id = st.sidebar.selectbox("Run", [r.run_id for r in readable], index=latest, key="run",
                                  bind="query-params")
    unreadable = len(run_entries) - len(readable)
    if unreadable:
        st.sidebar.warning(f"{unreadable} report(s) cannot be read; see Runs.")
    view = st.sidebar.radio("View", list(VIEWS), key="view", bind="query-params")
    try:
        report = root.load(run_id)
    except (ReportFormatError, ReportAccessError) as exc:
        st.error(f"Run {run_id!r} cannot be shown — {exc}")
        return
    st.title(f"{report.suite} — {run_id}")
    VIEWS[view](Page(root, run_entries, warnings, run_id, report))


main()
