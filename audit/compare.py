"""Compare two report directories metric by metric.

For each recommender x probe x metric present in either run: the values A and B,
``delta = B - A``, and whether the change is *beyond the uncertainty*:

- both metrics carry per-user values (``per_unit``) for at least :data:`MIN_PAIRED` shared
  users: a **paired** two-sided Wilcoxon signed-rank test on the per-user differences
  (zero differences dropped; for 0/1 hits this is the sign test of the discordant users,
  i.e. McNemar's test) at :data:`ALPHA`; this sees regressions that overlapping CIs hide;
- else, both metrics have a 95% CI: the CIs do not overlap;
- neither has a CI (an unsampled number, e.g. an accounted epsilon): any change;
- only one has a CI: the other value lies outside that CI.

Whether a change is better or worse comes from the metric's **declared** meaning
(``spec.direction`` in the report, :class:`audit.results.MetricSpec`, written by the probe
that emitted it; B's declaration first, else A's). Nothing is guessed from a metric's name:
an undeclared metric (reports of schema 1, or a probe that declares nothing) is reported,
never gated, and listed in the notes. A *regression* is a change in the worse direction
beyond the uncertainty, or a directional metric that A measured and B did not (B skipped,
errored or dropped it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
from scipy import stats

from audit.report import fmt_number, validate_report

Direction = Literal["higher", "lower"]
ALPHA = 0.05
MIN_PAIRED = 2


def declared_direction(*metrics: Mapping[str, Any] | None) -> Direction | None:
    """The better direction declared in the first metric that has a ``spec`` (None: undeclared
    or declared undirected)."""
    for m in metrics:
        spec = (m or {}).get("spec")
        if isinstance(spec, Mapping):
            return spec.get("direction")
    return None


def is_declared(*metrics: Mapping[str, Any] | None) -> bool:
    return any(isinstance((m or {}).get("spec"), Mapping) for m in metrics)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def paired_test(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float, int] | None:
    """(mean per-user difference B - A, two-sided p, shared users) of the paired test in the
    module docstring, or None when fewer than :data:`MIN_PAIRED` users carry values in both."""
    pa, pb = a.get("per_unit"), b.get("per_unit")
    if not isinstance(pa, Mapping) or not isinstance(pb, Mapping):
        return None
    shared = [u for u in pa if u in pb and _finite(pa[u]) and _finite(pb[u])]
    if len(shared) < MIN_PAIRED:
        return None
    d = np.array([float(pb[u]) - float(pa[u]) for u in shared])
    mean = float(d.mean())
    if not np.any(d != 0):
        return mean, 1.0, len(shared)
    return mean, _wilcoxon_p(tuple(d.tolist())), len(shared)


@functools.lru_cache(maxsize=4096)
def _wilcoxon_p(d: tuple[float, ...]) -> float:
    """Two-sided Wilcoxon p of the differences ``d``, cached: a comparison asks for each metric's
    test several times (change, regression, rendering), and with ties at n <= 13 scipy runs an
    exact permutation test over 2**n sign flips (about a second each)."""
    return float(stats.wilcoxon(np.array(d), zero_method="wilcox", alternative="two-sided").pvalue)


def beyond_uncertainty(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    """The rule in the module docstring; None when a value is missing."""
    va, vb = a.get("value"), b.get("value")
    if not (_finite(va) and _finite(vb)):
        return None
    paired = paired_test(a, b)
    if paired is not None:
        return paired[1] < ALPHA
    ca, cb = a.get("ci"), b.get("ci")
    ca = ca if ca is not None and all(_finite(x) for x in ca) else None
    cb = cb if cb is not None and all(_finite(x) for x in cb) else None
    if ca is not None and cb is not None:
        return bool(cb[0] > ca[1] or cb[1] < ca[0])
    if ca is None and cb is None:
        return va != vb
    lo, hi = ca if ca is not None else cb
    other = vb if ca is not None else va
    return bool(other < lo or other > hi)


@dataclass(frozen=True)
class MetricDelta:
    recommender: str
    probe: str
    metric: str
    a: Mapping[str, Any] | None
    b: Mapping[str, Any] | None
    direction: Direction | None

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None or not (_finite(self.a["value"]) and _finite(self.b["value"])):
            return None
        return float(self.b["value"]) - float(self.a["value"])

    @property
    def beyond_ci(self) -> bool | None:
        return None if self.a is None or self.b is None else beyond_uncertainty(self.a, self.b)

    @property
    def paired(self) -> tuple[float, float, int] | None:
        """(mean per-user difference, p, shared users) when a paired test applies."""
        return None if self.a is None or self.b is None else paired_test(self.a, self.b)

    @property
    def change(self) -> str:
        """better | worse | changed (no direction) | same (within uncertainty) | missing | new | n/a."""
        if self.a is None:
            return "new"
        if self.b is None or not _finite(self.b.get("value")):
            return "missing" if _finite(self.a.get("value")) else "n/a"
        if not self.beyond_ci:
            return "same" if self.beyond_ci is not None else "n/a"
        if self.direction is None:
            return "changed"
        paired = self.paired
        up = (paired[0] if paired is not None else (self.delta or 0.0)) > 0
        return "better" if up == (self.direction == "higher") else "worse"

    @property
    def regression(self) -> bool:
        return self.direction is not None and self.change in ("worse", "missing")


@dataclass
class Comparison:
    a: Path
    b: Path
    deltas: list[MetricDelta]
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.regression]


def _metrics(report: Mapping[str, Any]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {(r["recommender"], r["probe"], name): m
            for r in report["results"] for name, m in r["metrics"].items()}


def compare_reports(a: str | Path, b: str | Path) -> Comparison:
    """Compare run ``a`` (baseline) with run ``b`` (candidate); both are validated first."""
    ra, rb = validate_report(a), validate_report(b)
    ma, mb = _metrics(ra), _metrics(rb)
    keys = list(ma) + [k for k in mb if k not in ma]
    deltas = []
    undeclared = []
    for rec, probe, metric in keys:
        a_m, b_m = ma.get((rec, probe, metric)), mb.get((rec, probe, metric))
        if not is_declared(b_m, a_m):
            undeclared.append(f"{probe}.{metric}")
        deltas.append(MetricDelta(rec, probe, metric, a_m, b_m, declared_direction(b_m, a_m)))
    notes = []
    if undeclared:
        names = sorted(set(undeclared))
        notes.append(f"{len(names)} metric(s) without a declared meaning are shown but never gated: "
                     + ", ".join(names[:12]) + (" ..." if len(names) > 12 else ""))
    da, db = ra["dataset"], rb["dataset"]
    if da["fingerprint"] != db["fingerprint"]:
        notes.append(f"data sets differ: {da['name']} {da['fingerprint']} vs {db['name']} {db['fingerprint']}")
    if da["sampled_users"] != db["sampled_users"]:
        notes.append(f"audited users differ: {da['sampled_users']} vs {db['sampled_users']}")
    status_a = {(r["recommender"], r["probe"]): r for r in ra["results"]}
    for r in rb["results"]:
        before = status_a.get((r["recommender"], r["probe"]))
        if before is not None and before["status"] != r["status"]:
            notes.append(f"{r['recommender']} x {r['probe']}: status {before['status']} -> {r['status']}"
                         + (f" ({r['reason'].splitlines()[0]})" if r["reason"] else ""))
    return Comparison(Path(a), Path(b), deltas, notes)


def _cell(m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "-"
    ci = m.get("ci")
    ci_text = "" if ci is None else f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
    return f"{fmt_number(m.get('value'))}{ci_text}"


def _rows(cmp: Comparison) -> list[list[str]]:
    rows = []
    for d in cmp.deltas:
        delta = "" if d.delta is None else f"{d.delta:+.4g}"
        paired = d.paired
        if paired is not None:
            delta += f" (paired p={paired[1]:.2g}, n={paired[2]})"
        verdict = d.change + (" (REGRESSION)" if d.regression else "")
        rows.append([d.recommender, d.probe, d.metric, _cell(d.a), _cell(d.b), delta,
                     {"higher": "up", "lower": "down", None: "?"}[d.direction], verdict])
    return rows


HEADER = ["recommender", "probe", "metric", "A", "B", "delta", "better", "change"]


def render_comparison_text(cmp: Comparison) -> str:
    rows = _rows(cmp)
    widths = [max(len(c) for c in col) for col in zip(HEADER, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [f"A = {cmp.a}", f"B = {cmp.b}", "", fmt.format(*HEADER).rstrip(),
             fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines += [""] + [f"note: {n}" for n in cmp.notes]
    lines.append(f"{len(cmp.regressions)} regression(s) beyond the uncertainty (paired test or 95% CIs)")
    return "\n".join(lines)


def render_comparison_markdown(cmp: Comparison) -> str:
    lines = ["## recaudit compare", "", f"A = `{cmp.a}`, B = `{cmp.b}`", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _rows(cmp)]
    lines += [""] + [f"- note: {n}" for n in cmp.notes]
    lines.append(f"**{len(cmp.regressions)} regression(s)** beyond the uncertainty (paired test or 95% CIs)")
    return "\n".join(lines) + "\n"
