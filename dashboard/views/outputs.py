"""Drill-down into the raw outputs of one user: prompts, raw answers, parsed and grounded lists."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.loader import ReportsRoot

SHOWN_FIELDS = ("recommender", "probe", "user", "condition", "prompt", "raw", "parsed", "grounded", "history",
                "history_id")


def item_lists(record: dict[str, Any]) -> pd.DataFrame:
    """The parsed list (and the grounded list, when recorded) side by side, ranked from 1."""
    parsed = [str(x) for x in record.get("parsed") or []]
    grounded = record.get("grounded")
    columns: dict[str, list[str]] = {"parsed": parsed}
    if isinstance(grounded, list):
        size = max(len(parsed), len(grounded))
        grounded_text = ["" if g is None else str(g) for g in grounded]
        columns = {"parsed": parsed + [""] * (size - len(parsed)),
                   "grounded": grounded_text + [""] * (size - len(grounded_text))}
    size = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.RangeIndex(1, size + 1, name="rank"))


def render(root: ReportsRoot, run_id: str) -> None:
    """Pick recommender, probe and user from the run's ``outputs.jsonl``; show each model call."""
    st.subheader("Raw outputs of one user")
    index, bad = root.outputs_index(run_id)
    if bad:
        st.warning(f"{bad} line(s) of outputs.jsonl could not be read (bad JSON); they are left out — "
                   "the file may be half-written.")
    if not index:
        st.info("This run has no readable outputs.jsonl, so there are no raw outputs to show.")
        return
    recommenders = list(dict.fromkeys(rec for rec, _ in index))
    col_rec, col_probe, col_user = st.columns(3)
    recommender = col_rec.selectbox("Recommender", recommenders, key=f"out_rec:{run_id}")
    probes = [p for rec, p in index if rec == recommender]
    probe = col_probe.selectbox("Probe", probes, key=f"out_probe:{run_id}:{recommender}")
    users = index[(recommender, probe)]
    user = col_user.selectbox(f"User ({len(users)} with outputs)", users,
                              key=f"out_user:{run_id}:{recommender}:{probe}")
    records, _ = root.outputs(run_id, recommender=recommender, probe=probe, user=user)
    st.caption(f"{len(records)} model call(s) for user {user} — {recommender} / {probe}")
    for i, rec in enumerate(records):
        condition = rec.get("condition") or "(no condition)"
        with st.expander(f"{i + 1}. condition: {condition}", expanded=i < 2):
            history = rec.get("history")
            if isinstance(history, list):
                st.markdown(f"**History** ({len(history)} titles, oldest first; id `{rec.get('history_id')}`)")
                st.code("\n".join(str(t) for t in history), language=None, height=160)
            st.markdown("**Prompt**")
            st.code(str(rec.get("prompt", "")), language=None, wrap_lines=True)
            st.markdown("**Raw answer**")
            st.code(str(rec.get("raw", "")), language=None, wrap_lines=True)
            st.markdown("**Parsed" + (" and grounded" if "grounded" in rec else "") + " lists**")
            st.dataframe(item_lists(rec), key=f"lists_{i}")
            extra = {k: v for k, v in rec.items() if k not in SHOWN_FIELDS}
            if extra:
                st.json(extra, expanded=False)
