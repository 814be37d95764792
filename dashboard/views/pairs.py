"""Defended vs undefended: the paired differences the run reports for each of its pairs.

One section per pair (A = the undefended parent or the declared baseline, B = the variant or the
compared recommender, and why they are paired), a forest plot of its differences and, per probe, a
table of each side's value, the paired difference B − A with its 95% CI on the units both saw, n, p
with Holm and BH adjusted p, the MDE and a verdict coloured by the metric's declared better direction
(:mod:`dashboard.pairs`).
"""

from __future__ import annotations

import streamlit as st

from dashboard.model import Report
from dashboard.pairs import ORIGIN_TEXT, PairSection, forest_chart, forest_frame, pair_sections, pair_title, \
    probe_table, side_roles, styled_table, verdict_summary

EXPLANATION = (
    "Each pair is compared on the units both recommenders saw (the same users, candidates and canaries): "
    "B − A is the paired difference with its 95% CI, n the shared units, p the two-sided p-value of "
    "\"no difference\" with Holm and Benjamini–Hochberg (BH) adjusted p-values across all the run's paired "
    "differences, MDE the smallest difference detectable at that n (80% power, α 0.05). The verdict reads "
    "the metric's declared better direction: better / worse when the CI excludes 0, "
    "else no detectable difference.")
NO_PAIRS = ("This run has no paired differences: no recommender is a variant of another and the suite "
            "declares no `compare:` pairs (or the report predates paired differences).")


def _variant_text(report: Report, name: str) -> str:
    return report.recommender(name).variant_label


def _render_section(report: Report, section: PairSection, index: int) -> None:
    role_a, role_b = side_roles(section)
    st.markdown(f"### {pair_title(section)}")
    st.markdown(f"**A** = `{section.a}` ({role_a}; {_variant_text(report, section.a)}) · "
                f"**B** = `{section.b}` ({role_b}; {_variant_text(report, section.b)})")
    why = ORIGIN_TEXT.get(section.origin or "", "unknown (no readable entry says)")
    st.caption(f"Paired because: {why}. Verdicts: {verdict_summary(section)}.")
    for problem in section.problems:
        st.error(f"An entry of this pair cannot be shown — {problem}")
    if not section.diffs:
        return
    st.altair_chart(forest_chart(forest_frame(section), title=f"B − A: {section.b} − {section.a} (95% CI)"),
                    key=f"pairs_forest_{index}")
    for probe in section.probes:
        st.markdown(f"**{probe}**")
        st.table(styled_table(probe_table(section, probe)))


def render(report: Report) -> None:
    """The "Defended vs undefended" page of ``report``."""
    st.subheader("Defended vs undefended")
    sections, loose = pair_sections(report)
    for problem in loose:
        st.error(f"A paired-difference entry cannot be shown — {problem}")
    if not sections:
        if not loose:
            st.info(NO_PAIRS)
        return
    st.caption(EXPLANATION)
    for i, section in enumerate(sections):
        _render_section(report, section, i)
