"""Side-by-side comparisons: defended vs undefended recommenders, and one run vs another.

The rule for calling a difference significant is ``recaudit compare``'s
(:func:`audit.compare.beyond_uncertainty`), so the dashboard and the CLI always agree, and so is its
text (:data:`audit.compare.SIGNIFICANCE_RULE`, built from the methods :mod:`audit.paired` runs):
with per-user values on both sides (``per_unit``, schema 2), a paired test on the shared users;
else the 95% CIs; with no CI on either side (an accounted epsilon, say), any change.
Whether a change is better or worse is ``recaudit compare``'s verdict too
(:attr:`audit.compare.MetricDelta.change`), read from the metric's declared direction (the ``better``
column: higher / lower / None for undeclared or undirected), never from its name: the ``change``
column is better / worse / changed (beyond the uncertainty, no declared direction) / same (within
it) / n/a (a value missing).
"""

from __future__ import annotations

import math

import pandas as pd

from audit.compare import SIGNIFICANCE_RULE as COMPARE_RULE
from audit.compare import MetricDelta, beyond_uncertainty, paired_difference
from audit.results import Metric
from dashboard.model import Report

SIGNIFICANCE_RULE = ("A delta is marked significant when it is beyond the uncertainty, as in "
                     f"`recaudit compare`: {COMPARE_RULE}")

COLUMNS = ["metric", "a", "a_lo", "a_hi", "a_n", "b", "b_lo", "b_hi", "b_n", "delta", "significant", "better",
           "change"]


def _as_record(m: Metric) -> dict:
    return {"value": m.value, "ci": m.ci, "per_unit": m.per_unit}


def better_direction(a: Metric, b: Metric) -> str | None:
    """The declared better direction ('higher'/'lower'), B's declaration first; None if undeclared."""
    for m in (b, a):
        if m.spec is not None:
            return m.spec.direction
    return None


def significant_change(a: Metric, b: Metric) -> bool | None:
    """Whether ``b`` differs from ``a`` beyond the uncertainty (the module's rule); None when
    a value is missing or not finite."""
    return beyond_uncertainty(_as_record(a), _as_record(b))


def metric_change(a: Metric, b: Metric) -> MetricDelta:
    """``recaudit compare``'s judgement of ``b`` against ``a``: ``.beyond`` (the module's rule) and
    ``.change`` (better / worse / changed / same / n/a by the declared direction)."""
    ra, rb = _as_record(a), _as_record(b)
    return MetricDelta("", "", "", ra, rb, better_direction(a, b), paired_difference(ra, rb))


def metric_deltas(a: dict[str, Metric], b: dict[str, Metric]) -> pd.DataFrame:
    """One row per metric present on both sides: values, CIs, n, ``delta`` = b - a and
    ``significant`` (beyond the uncertainty: True/False, or None without values), the declared
    ``better`` direction and the ``change`` verdict (:func:`metric_change`). Metrics on one side
    only are left out. Columns: see ``COLUMNS``."""
    rows = []
    for name in [k for k in a if k in b]:
        ma, mb = a[name], b[name]
        judged = metric_change(ma, mb)
        rows.append({
            "metric": name,
            "a": ma.value, "a_lo": ma.ci[0] if ma.ci else math.nan, "a_hi": ma.ci[1] if ma.ci else math.nan,
            "a_n": ma.n,
            "b": mb.value, "b_lo": mb.ci[0] if mb.ci else math.nan, "b_hi": mb.ci[1] if mb.ci else math.nan,
            "b_n": mb.n,
            "delta": mb.value - ma.value,
            "significant": judged.beyond,
            "better": judged.direction,
            "change": judged.change,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["significant"] = table["significant"].astype(object)  # True / False / None, not numpy bools
    return table


def undefended(report: Report) -> list[str]:
    """Recommenders of the run with no variant (the undefended twins)."""
    return [r.name for r in report.recommenders if not r.variants]


def default_pairs(report: Report) -> list[tuple[str, str]]:
    """(base, compared) pairs to show first: the first recommender without variants against
    each recommender with variants. Without such a split, the first against each other."""
    names = report.recommender_names
    if not names:
        return []
    bases = undefended(report)
    base = bases[0] if bases else names[0]
    defended = [r.name for r in report.recommenders if r.variants and r.name != base]
    others = defended or [n for n in names if n != base]
    return [(base, other) for other in others]


def compare_recommenders(report: Report, base: str, other: str) -> dict[str, pd.DataFrame]:
    """Per probe measured on both recommenders: :func:`metric_deltas` of base (a) vs other (b)."""
    out: dict[str, pd.DataFrame] = {}
    for probe in report.probes:
        ra, rb = report.result(base, probe), report.result(other, probe)
        if ra is None or rb is None:
            continue
        table = metric_deltas(ra.metrics, rb.metrics)
        if not table.empty:
            out[probe] = table
    return out


def compare_runs(old: Report, new: Report, recommender: str) -> dict[str, pd.DataFrame]:
    """Per probe of ``recommender`` measured in both runs: deltas of ``new`` (b) against ``old`` (a)."""
    out: dict[str, pd.DataFrame] = {}
    for probe in new.probes:
        ra, rb = old.result(recommender, probe), new.result(recommender, probe)
        if ra is None or rb is None:
            continue
        table = metric_deltas(ra.metrics, rb.metrics)
        if not table.empty:
            out[probe] = table
    return out


def common_recommenders(a: Report, b: Report) -> list[str]:
    """Recommender names present in both runs, in the order of ``b``."""
    in_a = set(a.recommender_names)
    return [n for n in b.recommender_names if n in in_a]
