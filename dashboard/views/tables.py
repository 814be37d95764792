"""Display tables shared by the views: numbers formatted once, same column names everywhere."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from dashboard.model import ResultRow, format_metric, format_value


def significance_label(flag: object) -> str:
    """'yes' / 'no' for a CI-disjointness verdict, '–' when there is none."""
    if flag is None or (isinstance(flag, float) and math.isnan(flag)):
        return "–"
    return "yes" if bool(flag) else "no"


def ci_text(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{format_value(lo)}, {format_value(hi)}]"


def value_ci_text(value: float, lo: float, hi: float) -> str:
    """``0.420 [0.370, 0.470]``, or the value alone without a CI."""
    text = format_value(value)
    return text if not (math.isfinite(lo) and math.isfinite(hi)) else f"{text} {ci_text(lo, hi)}"


#: the words of the ``change`` column (:attr:`audit.compare.MetricDelta.change`)
CHANGE_LABELS = {"better": "better", "worse": "worse", "changed": "changed (no direction)",
                 "same": "same", "n/a": "–"}


def comparison_display(table: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """A :func:`dashboard.compare.metric_deltas` table with readable columns: each side as
    ``value [95% CI]`` text, the delta numeric, whether it is better or worse (``change``: by the
    metric's declared direction, when beyond the uncertainty), whether it is beyond the uncertainty
    (paired test or CIs: yes/no/–), the declared better direction (``better when``), and n."""
    n = len(table)
    better = table["better"] if "better" in table else [None] * n
    change = table["change"] if "change" in table else ["n/a"] * n
    return pd.DataFrame({
        "metric": table["metric"],
        label_a: [value_ci_text(v, lo, hi) for v, lo, hi in zip(table["a"], table["a_lo"], table["a_hi"])],
        label_b: [value_ci_text(v, lo, hi) for v, lo, hi in zip(table["b"], table["b_lo"], table["b_hi"])],
        "delta (B − A)": table["delta"],
        "change": [CHANGE_LABELS.get(c, "–") for c in change],
        "beyond uncertainty": [significance_label(s) for s in table["significant"]],
        "better when": [b if b in ("higher", "lower") else "–" for b in better],
        "n": [f"{a} / {b}" for a, b in zip(table["a_n"], table["b_n"])],
    })


def metric_matrix(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Metrics (rows) x recommenders (columns), each cell ``value [lo, hi] n=N``."""
    names = list(dict.fromkeys(m for r in results for m in r.metrics))
    data = {r.recommender: [format_metric(r.metrics[m]) if m in r.metrics else "–" for m in names]
            for r in results}
    return pd.DataFrame(data, index=pd.Index(names, name="metric"))


def arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of mixed value types turned into text, so Streamlit can
    send it to the browser as an Arrow table."""
    out = frame.copy()
    for col in out.columns:
        kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            out[col] = [("" if v is None else str(v)) for v in out[col]]
    return out
