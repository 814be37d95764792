"""Tidy data frames for the charts, pulled from metric names and known ``details`` keys.

Probe views are generic: every chart below is chosen by what the results contain, not by
the probe's name. Metric-name patterns (the probes' flat, stable names):

- ``snsr_<measure>_<attrs>`` / ``snsv_<measure>_<attrs>``: fairness sensitivity per attribute set;
- ``<stem>=<value>``: one figure per attribute value (``sim_jaccard_gender=F``, ``hr_gender=F``);
- ``<stem><N>`` with the stem ending in ``pos``, ``rep``, ``rank`` or ``budget``: a series over N
  (``exposure_rep16``, ``position_bias_hr@1_pos3``);
- ``*_rate``: rates in [0, 1] (hallucination, compliance, out-of-candidate ...);
- ``auc_*`` / ``*auroc*``: classifier AUCs where 0.5 is chance (attribute leakage, MIA).

Known ``details`` keys:

- ``roc``: ``{attack: {"fpr": [...], "tpr": [...]}}`` (membership inference);
- any key containing ``distance`` holding a list of numbers (grounding distances);
- ``budget_series``: target exposure against attack budget, either records
  ``[{"budget": b, "value": v, "ci": [lo, hi], "n": n}, ...]`` or columns
  ``{"budget": [...], "value": [...], "ci_low": [...], "ci_high": [...]}``;
- any other key holding equal-length numeric columns (a mapping of lists) or a list of flat
  records is offered as a generic series table.

A detail value of the wrong shape raises :class:`DetailShapeError` naming the key.
"""

from __future__ import annotations

import fnmatch
import math
import re
from numbers import Real
from typing import Any, Sequence

import pandas as pd

from dashboard.model import Report, ResultRow

LONG_COLUMNS = ["recommender", "metric", "value", "lo", "hi", "n"]
FAIRNESS_RE = re.compile(r"^(?P<kind>snsr|snsv)_(?P<measure>[a-z0-9]+)_(?P<attributes>.+)$")
PER_VALUE_RE = re.compile(r"^(?P<stem>[^=]+)=(?P<level>.+)$")
SERIES_RE = re.compile(r"^(?P<stem>.*?(?:pos|rep|rank|budget))(?P<x>\d+(?:\.\d+)?)$")
KNOWN_DETAIL_KEYS = frozenset({"roc", "budget_series"})


class DetailShapeError(ValueError):
    """A ``details`` entry does not have the shape its chart expects."""


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


def metrics_frame(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Long table of every metric: recommender, metric, value, lo, hi (NaN without CI), n."""
    rows = []
    for r in results:
        for name, m in r.metrics.items():
            lo, hi = m.ci if m.ci is not None else (math.nan, math.nan)
            rows.append({"recommender": r.recommender, "metric": name, "value": m.value,
                         "lo": lo, "hi": hi, "n": m.n})
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def _match(long: pd.DataFrame, pattern: re.Pattern[str], groups: Sequence[str]) -> pd.DataFrame:
    parts = long["metric"].str.extract(pattern)
    keep = parts[groups[0]].notna() if not parts.empty else pd.Series(False, index=long.index)
    out = pd.concat([long[keep], parts.loc[keep, list(groups)]], axis=1)
    return out.reset_index(drop=True)


def fairness_frame(long: pd.DataFrame) -> pd.DataFrame:
    """SNSR/SNSV rows with ``kind`` (snsr|snsv), ``measure`` (jaccard, serp, prag...) and
    ``attributes`` (gender, gender_age ...)."""
    out = _match(long, FAIRNESS_RE, ["kind", "measure", "attributes"])
    out["kind"] = out["kind"].str.upper()
    return out


def per_value_frame(long: pd.DataFrame) -> pd.DataFrame:
    """``<stem>=<value>`` rows with ``stem`` and ``level`` (the attribute value)."""
    return _match(long, PER_VALUE_RE, ["stem", "level"])


def series_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Numbered-metric rows with ``stem`` and numeric ``x`` (position, repetitions, rank, budget)."""
    out = _match(long, SERIES_RE, ["stem", "x"])
    out["x"] = out["x"].astype(float)
    # a single point is not a series
    sizes = out.groupby(["recommender", "stem"])["x"].transform("size") if not out.empty else out["x"]
    return out[sizes > 1].reset_index(drop=True)


def rates_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Rows of metrics named ``*_rate``."""
    return long[long["metric"].str.endswith("_rate")].reset_index(drop=True)


def auc_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Rows of AUC metrics (``auc_*`` or containing ``auroc``), where 0.5 is chance."""
    keep = long["metric"].str.startswith("auc_") | long["metric"].str.contains("auroc", regex=False)
    return long[keep].reset_index(drop=True)


def roc_frame(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Long ROC points: recommender, attack, fpr, tpr, from ``details['roc']``."""
    rows = []
    for r in results:
        roc = r.details.get("roc")
        if roc is None:
            continue
        if not isinstance(roc, dict):
            raise DetailShapeError(f"{r.recommender}: details.roc should map attack names to "
                                   f"{{fpr: [...], tpr: [...]}}, got {type(roc).__name__}")
        for attack, curve in roc.items():
            try:
                fpr = [_num(x) for x in curve["fpr"]]
                tpr = [_num(x) for x in curve["tpr"]]
            except (KeyError, TypeError) as exc:
                raise DetailShapeError(f"{r.recommender}: details.roc.{attack} needs numeric "
                                       f"'fpr' and 'tpr' lists ({exc})") from None
            if len(fpr) != len(tpr):
                raise DetailShapeError(f"{r.recommender}: details.roc.{attack} has {len(fpr)} fpr "
                                       f"and {len(tpr)} tpr points")
            rows += [{"recommender": r.recommender, "attack": str(attack), "fpr": f, "tpr": t,
                      "order": i} for i, (f, t) in enumerate(zip(fpr, tpr))]
    return pd.DataFrame(rows, columns=["recommender", "attack", "fpr", "tpr", "order"])


def distance_frame(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Long distances: recommender, key, distance, from details keys containing ``distance``
    whose value is a list of numbers (other shapes are left to the raw details)."""
    rows = []
    for r in results:
        for key, val in r.details.items():
            if "distance" not in key or not isinstance(val, list) or not val:
                continue
            if not all(isinstance(x, Real) and not isinstance(x, bool) for x in val):
                continue
            rows += [{"recommender": r.recommender, "key": key, "distance": float(x)} for x in val]
    return pd.DataFrame(rows, columns=["recommender", "key", "distance"])


def histogram_frame(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Pre-binned histograms from details keys ending in ``histogram`` shaped
    ``{"edges": [e0..en], "counts": [c1..cn]}``: recommender, key, lo, hi, count and share
    (count / total of that recommender and key, 0..1)."""
    rows = []
    for r in results:
        for key, val in r.details.items():
            if not key.endswith("histogram") or not isinstance(val, dict) or "edges" not in val:
                continue
            try:
                edges = [_num(x) for x in val["edges"]]
                counts = [_num(x) for x in val["counts"]]
            except (KeyError, TypeError) as exc:
                raise DetailShapeError(f"{r.recommender}: details.{key} needs numeric 'edges' and "
                                       f"'counts' lists ({exc})") from None
            if len(edges) != len(counts) + 1:
                raise DetailShapeError(f"{r.recommender}: details.{key} has {len(edges)} edges for "
                                       f"{len(counts)} counts (expected one more edge than counts)")
            total = sum(counts) or 1.0
            rows += [{"recommender": r.recommender, "key": key, "lo": lo, "hi": hi, "count": c,
                      "share": c / total} for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return pd.DataFrame(rows, columns=["recommender", "key", "lo", "hi", "count", "share"])


def budget_frame(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Target exposure against attack budget from ``details['budget_series']``:
    recommender, metric, budget, value, lo, hi, n."""
    rows = []
    for r in results:
        series = r.details.get("budget_series")
        if series is None:
            continue
        try:
            records = _records(series)
            for rec in records:
                ci = rec.get("ci") or [rec.get("ci_low"), rec.get("ci_high")]
                lo, hi = (math.nan if c is None else _num(c) for c in ci)
                rows.append({"recommender": r.recommender, "metric": str(rec.get("metric", "value")),
                             "budget": _num(rec["budget"]), "value": _num(rec["value"]),
                             "lo": lo, "hi": hi, "n": rec.get("n")})
        except (KeyError, TypeError, ValueError) as exc:
            raise DetailShapeError(f"{r.recommender}: details.budget_series needs records with "
                                   f"numeric 'budget' and 'value' (and optional 'ci', 'n'): {exc}") from None
    return pd.DataFrame(rows, columns=["recommender", "metric", "budget", "value", "lo", "hi", "n"])


def _records(obj: Any) -> list[dict[str, Any]]:
    """Records from a list of mappings or a mapping of equal-length lists."""
    if isinstance(obj, list):
        if not all(isinstance(x, dict) for x in obj):
            raise TypeError("a list of records must hold only mappings")
        return obj
    if isinstance(obj, dict):
        cols = {k: v for k, v in obj.items() if isinstance(v, list)}
        lengths = {len(v) for v in cols.values()}
        if not cols or len(lengths) != 1:
            raise ValueError("columns must be lists of one common length")
        n = lengths.pop()
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    raise TypeError(f"expected records or columns, got {type(obj).__name__}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def detail_tables(results: Sequence[ResultRow]) -> dict[str, pd.DataFrame]:
    """Generic tabular details (other than the known keys), ``{key: frame}``:

    - flat records or equal-length columns -> one row per record, with a ``recommender`` column;
    - a flat mapping of scalars (counts by kind, say) -> one row per mapping key
      (column ``key``), one column per recommender.
    Nested structures are left to the raw JSON view."""
    records_by_key: dict[str, list[pd.DataFrame]] = {}
    scalars_by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        for key, val in r.details.items():
            if key in KNOWN_DETAIL_KEYS or not isinstance(val, (list, dict)) or not val:
                continue
            if isinstance(val, dict) and all(_is_scalar(v) for v in val.values()):
                scalars_by_key.setdefault(key, {})[r.recommender] = val
                continue
            if isinstance(val, list) and not all(isinstance(x, dict) for x in val):
                continue
            try:
                records = _records(val)
            except (TypeError, ValueError):
                continue
            if not records or not all(_is_scalar(v) for rec in records for v in rec.values()):
                continue
            frame = pd.DataFrame.from_records(records)
            frame.insert(0, "recommender", r.recommender)
            records_by_key.setdefault(key, []).append(frame)
    out = {k: pd.concat(v, ignore_index=True) for k, v in records_by_key.items()}
    for key, per_rec in scalars_by_key.items():
        names = list(dict.fromkeys(n for mapping in per_rec.values() for n in mapping))
        out[key] = pd.DataFrame({"key": names, **{rec: [mapping.get(n) for n in names]
                                                  for rec, mapping in per_rec.items()}})
    return out


def info_number(report: Report, recommender: str, field: str) -> float | None:
    """A numeric setting of a recommender (``epsilon``, ``budget``) from its ``info``, or from a
    metric of that name in any of its results; None when absent or not finite."""
    value = report.recommender(recommender).info.get(field)
    if value is None:
        for r in report.results:
            if r.recommender == recommender and field in r.metrics:
                value = r.metrics[field].value
                break
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


#: a text detail longer than this is a statement (what a figure covers or assumes), not a label
STATEMENT_MIN_CHARS = 40


def statements(results: Sequence[ResultRow]) -> pd.DataFrame:
    """Top-level text ``details`` that read as sentences (which users a privacy epsilon covers,
    its adjacency, the assumptions a figure rests on, heuristic labels): one row per
    recommender and key (columns recommender, key, text); short labels are left out, except
    ``adjacency``. Empty without any."""
    rows = [{"recommender": r.recommender, "key": key, "text": val}
            for r in results for key, val in r.details.items()
            if isinstance(val, str) and (len(val) >= STATEMENT_MIN_CHARS or key == "adjacency")]
    return pd.DataFrame(rows, columns=["recommender", "key", "text"])


def epsilon_adjacency(results: Sequence[ResultRow]) -> dict[str, str]:
    """recommender -> the neighbouring relation its accounted ``epsilon`` is for
    (``details["adjacency"]`` of a result with an ``epsilon`` metric: add/remove for DP-SGD,
    replace-one for federated); a recommender with several lists them."""
    out: dict[str, str] = {}
    for r in results:
        adjacency = r.details.get("adjacency")
        if "epsilon" in r.metrics and adjacency:
            text = adjacency if isinstance(adjacency, str) else " + ".join(map(str, adjacency))
            out[r.recommender] = text if r.recommender not in out else f"{out[r.recommender]}, {text}"
    return out


def epsilon_axis_title(report: Report) -> str:
    """"privacy budget ε" with each recommender's adjacency, so ε under different neighbouring
    relations are not read as one scale (e.g. "(add/remove: a, b; replace-one: c)")."""
    by_adjacency: dict[str, list[str]] = {}
    for rec, adjacency in epsilon_adjacency(report.results).items():
        by_adjacency.setdefault(adjacency, []).append(rec)
    if not by_adjacency:
        return "privacy budget ε (adjacency not recorded)"
    return "privacy budget ε (" + "; ".join(f"{a}: {', '.join(recs)}" for a, recs in sorted(by_adjacency.items())) + ")"


def axis_frame(report: Report, long: pd.DataFrame, field: str) -> pd.DataFrame:
    """Metrics of ``long`` with each recommender's ``field`` (e.g. epsilon) as column ``x``
    (NaN for recommenders without it: the undefended reference). Empty when no recommender
    has the field, or the field is the only metric."""
    xs = {name: info_number(report, name, field) for name in long["recommender"].unique()}
    if not any(v is not None for v in xs.values()):
        return long.iloc[0:0].assign(x=pd.Series(dtype=float))
    out = long[long["metric"] != field].copy()
    out["x"] = [math.nan if xs[r] is None else xs[r] for r in out["recommender"]]
    return out.reset_index(drop=True)


HEADLINE_PATTERNS = ("snsr_*", "hallucination_rate", "out_of_candidate_rate", "mia_auroc*", "target_hr@*",
                     "hr@10", "ndcg@10", "hr@*", "auc_*", "epsilon")


def headline_metric(result: ResultRow) -> str | None:
    """The metric that stands for a result in the overview: the result's ``headline`` (set by
    the runner from the probe) or ``details['headline']`` when it names a metric, else the
    first metric matching ``HEADLINE_PATTERNS`` in order, else the first metric; None
    without metrics."""
    for wanted in (result.headline, result.details.get("headline")):
        if isinstance(wanted, str) and wanted in result.metrics:
            return wanted
    for pattern in HEADLINE_PATTERNS:
        for name in result.metrics:
            if fnmatch.fnmatchcase(name, pattern):
                return name
    return next(iter(result.metrics), None)
