"""The paired differences of one run (the report's ``pairs``), as the "Defended vs undefended" view shows them.

The runner pairs each recommender built as a variant of another with its parent (origin ``variant``:
``a`` = the parent, undefended; ``b`` = the variant) and adds the suite's ``compare:`` pairs (origin
``declared``), then stores, per pair x probe x metric, the paired difference ``b - a`` on the units both
saw with its 95% CI, n, p-value, Holm and Benjamini-Hochberg adjusted p-values and the minimum detectable
effect (:mod:`audit.pairs`). Here each entry is read on its own, so a malformed one becomes a problem of
its pair and the others still show; entries are grouped by pair and get a verdict from the CI and the
metric's declared better direction, read from the metric's ``spec`` in the report's results (never from
its name): see :func:`verdict`. No Streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import altair as alt
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from audit.paired import better_side
from audit.report import fmt_p
from audit.results import Metric
from dashboard.model import Report, format_value

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
UNDIRECTED = "differs (no better direction declared)"
NO_CI = "no CI"
#: verdict -> colour of its table cell and chart mark (green better, red worse, grey otherwise)
VERDICT_COLOURS: dict[str, str] = {BETTER: "#1a7f37", WORSE: "#c62828", NO_DIFFERENCE: "#6e7781",
                                   UNDIRECTED: "#9a6700", NO_CI: "#6e7781"}
ORIGIN_TEXT = {
    "variant": "derived: B is built as a variant of A (the runner pairs every variant with its parent)",
    "declared": "declared: the suite's `compare:` names this pair",
}
DIFFERENCE_COLUMN = "B − A [95% CI]"


def table_columns(a: str, b: str) -> list[str]:
    """The columns of :func:`probe_table` for the pair (a, b)."""
    return ["metric", "better if", f"A: {a}", f"B: {b}", DIFFERENCE_COLUMN, "n (shared)", "p", "p (Holm)",
            "p (BH)", "MDE", "method", "verdict"]


class _PairEntryModel(BaseModel):
    """One ``pairs`` entry as :func:`audit.pairs.pair_entries` writes it (extra keys are kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    a: str
    b: str
    origin: Literal["variant", "declared"]
    probe: str
    metric: str
    method: str = ""
    value: float
    ci: tuple[float | None, float | None]
    n: int
    unit: str = "users"
    p_value: float | None = None
    p_holm: float | None = None
    p_bh: float | None = None
    mde: float | None = None
    better: Literal["a", "b"] | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("the difference must be a finite number")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v: int) -> int:
        if v < 0:
            raise ValueError("n must be >= 0")
        return v

    @field_validator("p_value", "p_holm", "p_bh")
    @classmethod
    def _p(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"a p-value lies in [0, 1], got {v}")
        return v


@dataclass(frozen=True)
class PairDiff:
    """One metric of one pair: the report's entry, the two sides' own results and the verdict."""

    probe: str
    metric: str
    value: float
    lo: float
    hi: float
    n: int
    unit: str
    method: str
    p_value: float | None
    p_holm: float | None
    p_bh: float | None
    mde: float | None
    direction: str | None
    verdict: str
    a_metric: Metric | None
    b_metric: Metric | None


@dataclass
class PairSection:
    """Everything the run reports for one pair (``a`` the undefended / baseline side, ``b`` the
    variant / compared side): its differences, and the problems of entries that could not be read."""

    a: str
    b: str
    origin: str | None = None
    diffs: list[PairDiff] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def probes(self) -> list[str]:
        return list(dict.fromkeys(d.probe for d in self.diffs))

    def counts(self) -> dict[str, int]:
        """How many metrics got each verdict (verdicts in :data:`VERDICT_COLOURS` order, zeros left out)."""
        out = {v: sum(d.verdict == v for d in self.diffs) for v in VERDICT_COLOURS}
        return {v: c for v, c in out.items() if c}


def verdict(direction: str | None, lo: float, hi: float) -> str:
    """``better`` / ``worse`` when the 95% CI of ``b - a`` excludes 0 and the metric declares which way
    is better (``higher`` or ``lower``) for the audited model; ``no detectable difference`` when the CI
    contains 0; a CI that excludes 0 on a metric without a better direction ``differs (no better
    direction declared)``; ``no CI`` without finite bounds."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NO_CI
    if lo <= 0.0 <= hi:
        return NO_DIFFERENCE
    side = better_side(direction, (lo, hi))  # the runner's rule for the entry's ``better``
    return UNDIRECTED if side is None else BETTER if side == "b" else WORSE


def metric_direction(a: Metric | None, b: Metric | None) -> str | None:
    """The better direction the report declares for the metric (``b``'s spec first, then ``a``'s, as
    :mod:`audit.pairs` reads it); None when neither side declares one (a schema-1 report)."""
    for m in (b, a):
        if m is not None and m.spec is not None:
            return m.spec.direction
    return None


def _problem(i: int, entry: Any, why: str) -> str:
    where = f"pairs[{i}]"
    if isinstance(entry, Mapping) and isinstance(entry.get("probe"), str) and isinstance(entry.get("metric"), str):
        where += f" ({entry['probe']}.{entry['metric']})"
    return f"{where}: {why}"


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(entry)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _bound(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _metric_of(report: Report, recommender: str, probe: str, metric: str) -> Metric | None:
    result = report.result(recommender, probe)
    return None if result is None else result.metrics.get(metric)


def pair_sections(report: Report) -> tuple[list[PairSection], list[str]]:
    """The run's pairs in report order, one :class:`PairSection` each, and the problems of entries
    that name no readable pair (not an object, ``a``/``b`` missing).

    An entry that names its pair but cannot be read (a missing or mistyped field, a p-value outside
    [0, 1], a recommender the run does not have, a CI with its bounds swapped) is a problem of that
    pair's section, which still shows the pair's other entries."""
    sections: dict[tuple[str, str], PairSection] = {}
    loose: list[str] = []
    known = set(report.recommender_names)
    for i, entry in enumerate(report.pairs):
        a = entry.get("a") if isinstance(entry, Mapping) else None
        b = entry.get("b") if isinstance(entry, Mapping) else None
        if not (isinstance(a, str) and isinstance(b, str)):
            loose.append(_problem(i, entry, "not a pair entry (expected an object with string 'a' and 'b')"))
            continue
        section = sections.setdefault((a, b), PairSection(a, b))
        try:
            e = _PairEntryModel.model_validate(entry)
        except ValidationError as exc:
            section.problems.append(_problem(i, entry, _validation_text(exc)))
            continue
        missing = [name for name in (a, b) if name not in known]
        lo, hi = _bound(e.ci[0]), _bound(e.ci[1])
        if missing:
            section.problems.append(_problem(i, entry, f"names {', '.join(map(repr, missing))}, not a recommender "
                                                      "of this run"))
            continue
        if a == b:
            section.problems.append(_problem(i, entry, f"pairs {a!r} with itself"))
            continue
        if math.isfinite(lo) and math.isfinite(hi) and lo > hi:
            section.problems.append(_problem(i, entry, f"its CI [{lo}, {hi}] has the low bound above the high"))
            continue
        section.origin = section.origin or e.origin
        ma, mb = _metric_of(report, a, e.probe, e.metric), _metric_of(report, b, e.probe, e.metric)
        direction = metric_direction(ma, mb)
        section.diffs.append(PairDiff(
            probe=e.probe, metric=e.metric, value=float(e.value), lo=lo, hi=hi, n=int(e.n), unit=e.unit,
            method=e.method, p_value=e.p_value, p_holm=e.p_holm, p_bh=e.p_bh, mde=e.mde,
            direction=direction, verdict=verdict(direction, lo, hi), a_metric=ma, b_metric=mb))
    return list(sections.values()), loose


def difference_text(d: PairDiff, digits: int = 3) -> str:
    """``-1.000 [-1.000, -0.657]``: the paired difference b - a and its 95% CI (the CI left out when
    it has no finite bounds)."""
    text = f"{d.value:+.{digits}f}"
    if math.isfinite(d.lo) and math.isfinite(d.hi):
        text += f" [{d.lo:+.{digits}f}, {d.hi:+.{digits}f}]"
    return text


def _side_text(m: Metric | None) -> str:
    if m is None:
        return "–"
    text = format_value(m.value)
    if m.ci is not None and all(math.isfinite(c) for c in m.ci):
        text += f" [{format_value(m.ci[0])}, {format_value(m.ci[1])}]"
    return f"{text} n={m.n}"


def probe_table(section: PairSection, probe: str) -> pd.DataFrame:
    """The differences of one probe of a pair, as text cells (columns :func:`table_columns`): each
    side's own value [CI] n, the paired difference b - a [95% CI], the shared n, p with its Holm and
    BH adjusted values, the MDE (80% power, alpha 0.05), the method and the verdict."""
    rows = []
    for d in section.diffs:
        if d.probe != probe:
            continue
        rows.append({
            "metric": d.metric,
            "better if": {"higher": "higher", "lower": "lower"}.get(d.direction or "", "–"),
            f"A: {section.a}": _side_text(d.a_metric), f"B: {section.b}": _side_text(d.b_metric),
            DIFFERENCE_COLUMN: difference_text(d), "n (shared)": f"{d.n} {d.unit}",
            "p": fmt_p(d.p_value), "p (Holm)": fmt_p(d.p_holm), "p (BH)": fmt_p(d.p_bh),
            "MDE": "n/a" if d.mde is None else format_value(d.mde), "method": d.method or "–",
            "verdict": d.verdict,
        })
    return pd.DataFrame(rows, columns=table_columns(section.a, section.b))


def forest_frame(section: PairSection) -> pd.DataFrame:
    """One row per difference of a pair: ``label`` (probe · metric), value, lo, hi, n, verdict."""
    return pd.DataFrame([{"label": f"{d.probe} · {d.metric}", "probe": d.probe, "metric": d.metric,
                          "value": d.value, "lo": d.lo, "hi": d.hi, "n": d.n, "verdict": d.verdict}
                         for d in section.diffs],
                        columns=["label", "probe", "metric", "value", "lo", "hi", "n", "verdict"])


def forest_chart(frame: pd.DataFrame, *, title: str = "") -> alt.FacetChart:
    """A forest plot of a pair's differences: one small panel per metric (its own x scale, since
    metrics live on different scales), the difference as a dot with its 95% CI bar, a dashed line
    at 0, coloured by verdict."""
    order = list(dict.fromkeys(frame["label"]))
    verdicts = list(VERDICT_COLOURS)
    colour = alt.Color("verdict:N", title="verdict",
                       scale=alt.Scale(domain=verdicts, range=[VERDICT_COLOURS[v] for v in verdicts]),
                       legend=alt.Legend(orient="top", labelLimit=260))
    tooltip = [alt.Tooltip("label:N", title="metric"), alt.Tooltip("value:Q", format="+.3f", title="b − a"),
               alt.Tooltip("lo:Q", format="+.3f", title="CI low"), alt.Tooltip("hi:Q", format="+.3f", title="CI high"),
               alt.Tooltip("n:Q"), alt.Tooltip("verdict:N")]
    x_axis = alt.Axis(tickCount=3, labelFontSize=9, title=None)
    zero = alt.Chart().mark_rule(color="black", strokeDash=[4, 3]).encode(x=alt.datum(0.0))
    bars = alt.Chart().mark_rule(strokeWidth=2).encode(
        x=alt.X("lo:Q", scale=alt.Scale(zero=True), axis=x_axis), x2="hi:Q", color=colour, tooltip=tooltip)
    dots = alt.Chart().mark_point(filled=True, size=55).encode(x="value:Q", color=colour, tooltip=tooltip)
    return alt.layer(zero, bars, dots, data=frame).properties(width=300, height=18).facet(
        row=alt.Row("label:N", title=None, sort=order,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelLimit=240, labelFontSize=11)),
        title=title, spacing=2,
    ).resolve_scale(x="independent")


def side_roles(section: PairSection) -> tuple[str, str]:
    """How the view names the two sides: (A's role, B's role)."""
    if section.origin == "variant":
        return "undefended parent", "its defended (or attacked) variant"
    return "baseline", "compared"


def pair_title(section: PairSection) -> str:
    return f"{section.b} vs {section.a}"


def verdict_summary(section: PairSection) -> str:
    """``2 worse, 4 no detectable difference`` for the pair's metrics."""
    return ", ".join(f"{c} {v}" for v, c in section.counts().items()) or "no readable difference"


def styled_table(table: pd.DataFrame) -> Any:
    """``table`` with its verdict and difference cells coloured by verdict (a pandas Styler)."""
    def colours(row: pd.Series) -> list[str]:
        css = f"color: {VERDICT_COLOURS.get(row['verdict'], '#000000')}; font-weight: 600"
        return [css if col in ("verdict", DIFFERENCE_COLUMN) else "" for col in row.index]

    return table.style.apply(colours, axis=1)

