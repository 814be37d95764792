"""Altair charts for the dashboard: tidy frame in, chart out, no Streamlit here.

Frames come from :mod:`dashboard.extract` (long format: one row per recommender and
metric with ``value``, ``lo``, ``hi`` and ``n``). Error bars are 95% bootstrap CIs;
rows without a CI are drawn as points only.
"""

from __future__ import annotations

import math
from typing import Sequence

import altair as alt
import pandas as pd

CI_TITLE = "value (95% CI)"
_TOOLTIP = [alt.Tooltip("recommender:N"), alt.Tooltip("metric:N"),
            alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f", title="CI low"),
            alt.Tooltip("hi:Q", format=".3f", title="CI high"), alt.Tooltip("n:Q")]


SCHEME = "tableau10"
SIDE_COLORS = ("#4c78a8", "#e45756")  # A (base / older run), B (compared / this run)


def _color(field: str = "recommender", title: str | None = "recommender", orient: str = "right",
           scale: alt.Scale | None = None) -> alt.Color:
    return alt.Color(f"{field}:N", title=title, scale=scale or alt.Scale(scheme=SCHEME),
                     legend=alt.Legend(orient=orient, labelLimit=260, symbolOpacity=1))


def _y_axis() -> alt.Axis:
    return alt.Axis(labelLimit=280)


#: the least height, in pixels, of one ``y`` row of :func:`ci_dots` (its label is 11 px high)
MIN_ROW_PX = 26


def ci_dots(frame: pd.DataFrame, *, y: str = "metric", color: str = "recommender",
            x_title: str = CI_TITLE, title: str = "", row_px: int = 12) -> alt.Chart:
    """Dot-and-whisker plot: one row per ``y`` value, one dot per ``color`` group with its CI.

    Each group's dot gets ``row_px`` pixels and each row at least :data:`MIN_ROW_PX`, as a Vega-Lite
    step: the chart grows with its rows, and its labels never overlap (a fixed total height is
    shrunk by Streamlit's theme to fit title, axis and legend, which crushed two or three rows)."""
    groups = max(1, frame[color].nunique())
    step = max(row_px, math.ceil(MIN_ROW_PX / groups))
    base = alt.Chart(frame, title=title).encode(
        y=alt.Y(f"{y}:N", title=None, sort=None, axis=_y_axis()),
        yOffset=alt.YOffset(f"{color}:N"),
        color=_color(color, color),
        tooltip=[t for t in _TOOLTIP if t.shorthand.split(":")[0] in frame.columns],
    )
    whiskers = base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q", title=x_title), x2="hi:Q")
    dots = base.mark_point(filled=True, size=70).encode(x=alt.X("value:Q", title=x_title))
    return alt.layer(whiskers, dots).properties(height=alt.Step(step))


def forest(frame: pd.DataFrame, *, title: str = "", panel_width: int = 230, panel_height: int = 22,
           colors: Sequence[str] | None = None) -> alt.FacetChart:
    """One small panel per metric (own x scale), a dot with its CI per recommender: for
    comparing two sides when metrics live on different scales (rates, exposure, seconds)."""
    order = list(dict.fromkeys(frame["metric"]))
    names = list(dict.fromkeys(frame["recommender"]))
    scale = alt.Scale(domain=names, range=list(colors)) if colors else None
    base = alt.Chart().encode(
        y=alt.Y("recommender:N", title=None, axis=None, sort=names),
        color=_color(title=None, orient="top", scale=scale),
        tooltip=[t for t in _TOOLTIP if t.shorthand.split(":")[0] in frame.columns],
    )
    whiskers = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("lo:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(tickCount=3, labelFontSize=9)),
        x2="hi:Q")
    dots = base.mark_point(filled=True, size=50).encode(x="value:Q")
    return alt.layer(whiskers, dots, data=frame).properties(width=panel_width, height=panel_height).facet(
        row=alt.Row("metric:N", title=None, sort=order,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelLimit=170, labelFontSize=11)),
        title=title, spacing=2,
    ).resolve_scale(x="independent")


def bars_with_ci(frame: pd.DataFrame, *, category: str, facet: str | None = None,
                 x_title: str = CI_TITLE, domain: tuple[float, float] | None = None,
                 chance: float | None = None, title: str = "", width: int = 320) -> alt.Chart:
    """Horizontal bars per ``category`` (grouped by recommender) with CI whiskers; optional
    fixed x ``domain``, a dashed ``chance`` line, and one panel per ``facet`` value."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=True)
    base = alt.Chart().encode(
        y=alt.Y(f"{category}:N", title=None, sort=None, axis=_y_axis()),
        yOffset=alt.YOffset("recommender:N"),
        color=_color(),
        tooltip=[t for t in _TOOLTIP if t.shorthand.split(":")[0] in frame.columns],
    )
    bars = base.mark_bar(opacity=0.85).encode(x=alt.X("value:Q", title=x_title, scale=scale))
    whiskers = base.mark_rule().encode(x="lo:Q", x2="hi:Q", color=alt.value("black"))
    layers = [bars, whiskers]
    if chance is not None:
        layers.append(alt.Chart().mark_rule(strokeDash=[4, 4], color="gray")
                      .encode(x=alt.datum(chance)))
    chart = alt.layer(*layers, data=frame)
    if facet:
        return chart.properties(width=width).facet(
            facet=alt.Facet(f"{facet}:N", title=None), columns=2, title=title
        ).resolve_scale(y="independent")
    return chart.properties(title=title)


def series_lines(frame: pd.DataFrame, *, x: str = "x", x_title: str = "", y_title: str = CI_TITLE,
                 facet: str | None = None, log_x: bool = False, title: str = "",
                 width: int = 320) -> alt.Chart:
    """Lines over numeric ``x`` per recommender with a CI band where CIs exist."""
    scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    base = alt.Chart().encode(x=alt.X(f"{x}:Q", title=x_title, scale=scale), color=_color())
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title=y_title), y2="hi:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title=y_title),
        tooltip=[alt.Tooltip(f"{x}:Q"), *[t for t in _TOOLTIP if t.shorthand.split(":")[0] in frame.columns]])
    chart = alt.layer(band, line, data=frame)
    if facet:
        return chart.properties(width=width).facet(
            facet=alt.Facet(f"{facet}:N", title=None), columns=2, title=title
        ).resolve_scale(y="independent")
    return chart.properties(title=title)


def roc_curves(frame: pd.DataFrame, *, title: str = "ROC of membership-inference attacks") -> alt.Chart:
    """ROC curves (fpr, tpr) per recommender (colour) and attack (dash), with the chance diagonal."""
    diagonal = alt.Chart(pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="fpr:Q", y="tpr:Q")
    curves = alt.Chart(frame).mark_line().encode(
        x=alt.X("fpr:Q", title="false-positive rate", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true-positive rate", scale=alt.Scale(domain=[0, 1])),
        color=_color(), strokeDash=alt.StrokeDash("attack:N", title="attack"),
        order="order:Q",
        tooltip=["recommender:N", "attack:N", alt.Tooltip("fpr:Q", format=".3f"),
                 alt.Tooltip("tpr:Q", format=".3f")])
    return alt.layer(diagonal, curves).properties(title=title, height=320)


def distance_boxes(frame: pd.DataFrame, *, field: str = "distance", title: str = "") -> alt.Chart:
    """Box plot of ``field`` per recommender (raw per-item values)."""
    return alt.Chart(frame, title=title).mark_boxplot(extent=1.5).encode(
        x=alt.X(f"{field}:Q", title=field), y=alt.Y("recommender:N", title=None, axis=_y_axis()),
        color=_color())


def binned_steps(frame: pd.DataFrame, *, title: str = "", width: int = 420) -> alt.Chart:
    """Pre-binned histograms (``lo``, ``hi``, ``share``) as step lines per recommender, one
    panel per histogram ``key``."""
    line = alt.Chart().mark_line(interpolate="step-after", point=False).encode(
        x=alt.X("lo:Q", title="bin (lower edge)"), y=alt.Y("share:Q", title="share of slots"),
        color=_color(), tooltip=["recommender:N", alt.Tooltip("lo:Q", format=".3f"),
                                 alt.Tooltip("hi:Q", format=".3f"), "count:Q",
                                 alt.Tooltip("share:Q", format=".3f")])
    return alt.layer(line, data=frame).properties(width=width, height=220).facet(
        facet=alt.Facet("key:N", title=None), columns=2, title=title)


def against_axis(frame: pd.DataFrame, *, x_title: str, log_x: bool = True, title: str = "") -> alt.Chart:
    """Metric value against a per-recommender number (``x``: epsilon, budget) with CIs, the
    points joined in order of ``x``; rows without ``x`` (the undefended reference) are drawn
    as dashed horizontal rules."""
    with_x = frame[frame["x"].notna()]
    without = frame[frame["x"].isna()]
    scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    x = alt.X("x:Q", title=x_title, scale=scale)
    base = alt.Chart(with_x).encode(x=x)
    layers = [base.mark_line(color="gray", strokeWidth=1).encode(y=alt.Y("value:Q", title=CI_TITLE),
                                                                  detail="metric:N", order="x:Q"),
              base.mark_rule(strokeWidth=2).encode(y=alt.Y("lo:Q", title=CI_TITLE), y2="hi:Q",
                                                   color=_color()),
              base.mark_point(filled=True, size=80).encode(
                  y=alt.Y("value:Q", title=CI_TITLE), color=_color(),
                  tooltip=[alt.Tooltip("x:Q", title=x_title),
                           *[t for t in _TOOLTIP if t.shorthand.split(":")[0] in frame.columns]])]
    if not without.empty:
        layers.append(alt.Chart(without).mark_rule(strokeDash=[6, 4]).encode(
            y="value:Q", color=_color(), tooltip=["recommender:N", alt.Tooltip("value:Q", format=".3f")]))
    return alt.layer(*layers).properties(title=title, height=300)


def comparison_frame(table: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """The two sides of a comparison table (:func:`dashboard.compare.metric_deltas`) in long
    format: metric, recommender (= the side's label), value, lo, hi, n."""
    cols = ["metric", "value", "lo", "hi", "n"]
    a = table.rename(columns={"a": "value", "a_lo": "lo", "a_hi": "hi", "a_n": "n"})[cols]
    b = table.rename(columns={"b": "value", "b_lo": "lo", "b_hi": "hi", "b_n": "n"})[cols]
    return pd.concat([a.assign(recommender=label_a), b.assign(recommender=label_b)], ignore_index=True)


def comparison_chart(table: pd.DataFrame, label_a: str, label_b: str, *, title: str = "") -> alt.FacetChart:
    """A :func:`forest` of the two sides of a comparison table, one panel per metric."""
    return forest(comparison_frame(table, label_a, label_b), title=title, colors=SIDE_COLORS)
