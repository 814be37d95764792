"""Side-by-side views: defended vs undefended recommenders of one run, and one run vs another."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.compare import (SIGNIFICANCE_RULE, common_recommenders, compare_recommenders,
                               compare_runs, default_pairs)
from dashboard.loader import RunEntry
from dashboard.model import Report
from dashboard.views.tables import comparison_display

_NUMBER = st.column_config.NumberColumn(format="%.3f")


def summary_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per probe: how many metrics were compared, how many deltas are beyond the uncertainty, how
    many of those are better and worse (by the declared direction), and those deltas
    (``metric +0.012 (worse)``; no verdict for a metric that declares no direction)."""
    rows = []
    for probe, table in tables.items():
        sig = table[table["significant"].map(lambda v: v is True)]
        change = sig["change"] if "change" in sig else pd.Series(["changed"] * len(sig), index=sig.index)
        deltas = ", ".join(f"{m} {d:+.3f}" + (f" ({c})" if c in ("better", "worse") else "")
                           for m, d, c in zip(sig["metric"], sig["delta"], change))
        rows.append({"probe": probe, "metrics": len(table), "significant": len(sig),
                     "better": int((change == "better").sum()), "worse": int((change == "worse").sum()),
                     "significant deltas": deltas})
    return pd.DataFrame(rows, columns=["probe", "metrics", "significant", "better", "worse", "significant deltas"])


def _render_tables(tables: dict[str, pd.DataFrame], label_a: str, label_b: str, key: str) -> None:
    if not tables:
        st.info("No probe was measured on both sides.")
        return
    st.dataframe(summary_table(tables), hide_index=True, key=f"{key}__summary")
    for probe, table in tables.items():
        st.markdown(f"**{probe}**")
        # the table has the page's width, so its verdict columns (change, beyond uncertainty,
        # better, n) are never cut off; the chart of the two sides goes under it
        st.dataframe(comparison_display(table, label_a, label_b), hide_index=True, key=f"{key}_{probe}",
                     column_config={"delta (B − A)": _NUMBER})
        with_ci = table[table["a_lo"].notna() & table["b_lo"].notna()]
        if not with_ci.empty:
            st.altair_chart(charts.comparison_chart(with_ci, label_a, label_b), width="stretch")


def render_defended(report: Report, run_id: str) -> None:
    """Pick a base (default: the recommender without variants) and the recommenders to compare
    with it (default: those with variants); one delta table per probe for each pair."""
    st.subheader("Any two recommenders")
    st.caption(SIGNIFICANCE_RULE + " Delta = B − A.")
    names = report.recommender_names
    if len(names) < 2:
        st.info("This run has a single recommender; there is nothing to compare.")
        return
    pairs = default_pairs(report)
    base_default = pairs[0][0] if pairs else names[0]
    col_base, col_other = st.columns([1, 2])
    base = col_base.selectbox("Base (A)", names, index=names.index(base_default), key=f"cmp_base:{run_id}",
                        format_func=lambda n: f"{n} — {report.recommender(n).variant_label}")
    others = [n for n in names if n != base]
    defaults = [b for a, b in pairs if a == base and b in others] or others
    compared = col_other.multiselect("Compared (B)", others, default=defaults, key=f"cmp_other:{run_id}",
                              format_func=lambda n: f"{n} — {report.recommender(n).variant_label}")
    if not compared:
        return
    tabs = st.tabs([f"vs {other}" for other in compared])
    for tab, other in zip(tabs, compared):
        with tab:
            st.markdown(f"A = `{base}` — {report.recommender(base).variant_label} · "
                        f"B = `{other}` — {report.recommender(other).variant_label}")
            _render_tables(compare_recommenders(report, base, other), f"A: {base}", f"B: {other}",
                           key=f"cmp_{other}")


def render_two_runs(runs: Sequence[RunEntry], run_id: str) -> None:
    """The current run (B) against another run (A, default: the latest earlier run of the same
    suite): per recommender present in both, one delta table per probe."""
    st.subheader("Run vs run")
    st.caption(SIGNIFICANCE_RULE + " Delta = B (this run) − A (the other run).")
    by_id = {r.run_id: r.report for r in runs if r.report is not None}
    current = by_id[run_id]
    others = [rid for rid in by_id if rid != run_id]
    if not others:
        st.info("Only one readable run; add another report directory to compare runs.")
        return
    earlier = sorted((rid for rid in others
                      if by_id[rid].suite == current.suite and by_id[rid].created <= current.created),
                     key=lambda rid: by_id[rid].created)
    default = earlier[-1] if earlier else others[0]
    col_run, col_rec = st.columns([2, 1])
    other_id = col_run.selectbox("Compare with run (A)", others, index=others.index(default),
                                 key=f"hist_run:{run_id}",
                                 format_func=lambda rid: f"{rid} — {by_id[rid].suite}, {by_id[rid].created}")
    old = by_id[other_id]
    names = common_recommenders(old, current)
    if not names:
        st.info(f"The runs {other_id!r} and {run_id!r} share no recommender name.")
        return
    name = col_rec.selectbox("Recommender", names, key=f"hist_rec:{run_id}:{other_id}")
    _render_tables(compare_runs(old, current, name), f"A: {other_id}", f"B: {run_id}",
                   key="hist")
