"""Compare two report directories metric by metric (``recaudit compare RUN_A RUN_B``).

**What may be compared.** Two runs are compared only when they measured the same thing: the same
data (``dataset.fingerprint``: the parsed content, the split and how a file was read), the same
audited users (their number and sample seed), the same run seed, and, for every probe both ran, the
same probe and options (``probes[].config`` except ``recommenders``, which only says where a probe
runs). Any difference is an :class:`IncomparableRunsError` (exit 2) naming what differs, unless
``allow_different_data``: then the differences become a note, and when the data differ the users of
A and B are not the same units, so no paired test is run (intervals only).

**Which metrics.** A metric (recommender x probe x name) present in one run only is listed apart
(:attr:`Comparison.only_a`, :attr:`Comparison.only_b`), never counted as a regression; a metric
whose declaration (``spec``: direction, range, chance, unit) differs between A and B measures
something else and is listed apart too (:attr:`Comparison.incomparable`).

**Beyond the uncertainty** (``delta = B - A``), by the first rule that applies (:attr:`MetricDelta.basis`):

- ``paired``: both sides carry per-user values (``per_unit``) on at least :data:`MIN_PAIRED`
  shared users, or per-unit scores of a declared statistic (AUROC): the paired difference of
  :mod:`audit.paired` on the shared units (:func:`audit.pairs.paired_metric`: Newcombe's interval
  and McNemar's exact p for 0/1 values, else the bootstrap CI of the mean per-user difference and
  the paired t-test's p; the paired bootstrap for AUROC). The change is beyond the uncertainty when
  that 95% CI excludes 0 and the test's p is below :data:`ALPHA` (both: a percentile bootstrap of
  differences on a handful of users can exclude 0 where the test does not). For a deterministic
  recommender this sees a change on a few users that overlapping CIs hide, and an identical rerun
  is never a change, whatever the CIs' width;
- ``intervals`` (no per-user values): both 95% CIs do not overlap; with a CI on one side only,
  the other value lies outside it;
- ``values`` (no CI on either side, e.g. an accounted epsilon): any change.

**Better or worse** comes from the metric's **declared** direction (``spec.direction``,
:class:`audit.results.MetricSpec`; B's declaration first, else A's); nothing is read from a metric's
name. A change of a metric with no declared direction is ``changed``, never a regression. A
*regression* is a change beyond the uncertainty in the worse direction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from audit.errors import ConfigError
from audit.paired import METHODS, Paired, paired_units
from audit.report import fmt_number, validate_report

Direction = Literal["higher", "lower"]
Basis = Literal["paired", "intervals", "values"]
Rows = Literal["default", "changed", "all"]
Key = tuple[str, str, str]  # (recommender, probe alias, metric)
ALPHA = 0.05
MIN_PAIRED = 2
#: the declaration fields that say what a metric measures; a difference makes A and B incomparable
SPEC_FIELDS: tuple[str, ...] = ("direction", "range", "chance", "unit")
#: probe options that do not change what a probe measures (where it runs)
PLACEMENT_OPTIONS: frozenset[str] = frozenset({"recommenders"})
#: the rule for "beyond the uncertainty" on per-user values, in words, from the methods
#: :func:`audit.paired.paired_units` chooses between (the dashboard shows :data:`SIGNIFICANCE_RULE`)
PER_USER_RULE = (f"a paired test on the users both sides measured: {METHODS['newcombe-mcnemar']}, else "
                 f"{METHODS['paired-bootstrap-mean']}; a change counts when that 95% CI of B − A "
                 f"excludes 0 and p < {ALPHA:g}")
SIGNIFICANCE_RULE = (f"with per-user values on both sides (at least {MIN_PAIRED} users shared), {PER_USER_RULE}; "
                     "else the two 95% CIs do not overlap; with a CI on one side only, the other value lies "
                     "outside it; with no CI on either side (an accounted epsilon, say), any change.")
BASIS_TEXT = {
    "paired": "paired test on per-user values (its 95% CI of B-A excludes 0 and p < 0.05)",
    "intervals": "interval rule, no per-user values (the two 95% CIs do not overlap)",
    "values": "exact values, no CI (any change)",
}


class IncomparableRunsError(ConfigError):
    """Two runs measured different data or protocols (exit 2); the message names what differs."""


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
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _usable(paired: Paired | None) -> bool:
    return paired is not None and paired.n >= MIN_PAIRED and all(_finite(x) for x in (paired.value, *paired.ci))


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> Paired | None:
    """The paired difference ``b - a`` of two metric records' per-user values on the users both carry
    (:func:`audit.paired.paired_units`), or None when fewer than :data:`MIN_PAIRED` users are shared."""
    pa, pb = a.get("per_unit"), b.get("per_unit")
    if not isinstance(pa, Mapping) or not isinstance(pb, Mapping):
        return None
    shared = [u for u in pa if u in pb and _finite(pa[u]) and _finite(pb[u])]
    if len(shared) < MIN_PAIRED:
        return None
    out = paired_units([float(pa[u]) for u in shared], [float(pb[u]) for u in shared])
    return out if _usable(out) else None


def judge(a: Mapping[str, Any], b: Mapping[str, Any], paired: Paired | None) -> tuple[bool | None, Basis]:
    """(beyond the uncertainty, the rule used) for two metric records, by the rules of the module
    docstring; beyond is None when a value is missing or not finite."""
    va, vb = a.get("value"), b.get("value")
    ca, cb = a.get("ci"), b.get("ci")
    ca = ca if ca is not None and all(_finite(x) for x in ca) else None
    cb = cb if cb is not None and all(_finite(x) for x in cb) else None
    basis: Basis = "paired" if _usable(paired) else ("values" if ca is None and cb is None else "intervals")
    if not (_finite(va) and _finite(vb)):
        return None, basis
    if basis == "paired":
        assert paired is not None
        p = paired.p_value
        return bool((paired.ci[0] > 0 or paired.ci[1] < 0) and (p is None or p < ALPHA)), basis
    if ca is not None and cb is not None:
        return bool(cb[0] > ca[1] or cb[1] < ca[0]), basis
    if ca is None and cb is None:
        return va != vb, basis
    lo, hi = ca if ca is not None else cb
    other = vb if ca is not None else va
    return bool(other < lo or other > hi), basis


def beyond_uncertainty(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    """Whether metric record ``b`` differs from ``a`` beyond the uncertainty (paired on their
    ``per_unit`` values when both carry them, else the interval rule); None when a value is missing."""
    return judge(a, b, paired_difference(a, b))[0]


@dataclass(frozen=True)
class MetricDelta:
    """One metric both runs measured with the same declaration."""

    recommender: str
    probe: str
    metric: str
    a: Mapping[str, Any]
    b: Mapping[str, Any]
    direction: Direction | None
    #: the paired difference B - A on the shared units, when both sides carry paired data
    paired: Paired | None = None
    #: the metric the job's summary shows first
    headline: bool = False

    @property
    def delta(self) -> float | None:
        va, vb = self.a.get("value"), self.b.get("value")
        return float(vb) - float(va) if _finite(va) and _finite(vb) else None

    @property
    def basis(self) -> Basis:
        return judge(self.a, self.b, self.paired)[1]

    @property
    def beyond(self) -> bool | None:
        return judge(self.a, self.b, self.paired)[0]

    @property
    def change(self) -> str:
        """better | worse | changed (no declared direction) | same (within the uncertainty) | n/a."""
        beyond = self.beyond
        if beyond is None:
            return "n/a"
        if not beyond:
            return "same"
        if self.direction is None:
            return "changed"
        up = (self.paired.value if self.basis == "paired" and self.paired is not None else (self.delta or 0.0)) > 0
        return "better" if up == (self.direction == "higher") else "worse"

    @property
    def regression(self) -> bool:
        return self.change == "worse"


@dataclass
class Comparison:
    a: Path
    b: Path
    report_a: Mapping[str, Any]
    report_b: Mapping[str, Any]
    deltas: list[MetricDelta]
    #: metrics in one run only (never regressions)
    only_a: list[Key] = field(default_factory=list)
    only_b: list[Key] = field(default_factory=list)
    #: metrics declared differently in A and B, with what differs (not compared)
    incomparable: list[tuple[Key, str]] = field(default_factory=list)
    #: data / protocol differences accepted with ``allow_different_data`` (empty: same data and protocol)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.regression]

    @property
    def changed(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.change in ("better", "worse", "changed")]


def _metrics(report: Mapping[str, Any]) -> dict[Key, Mapping[str, Any]]:
    return {(r["recommender"], r["probe"], name): m
            for r in report["results"] for name, m in r["metrics"].items()}


def _show(x: Any) -> str:
    """A recorded value as a user reads it: strings bare, floats to 4 significant digits, else JSON."""
    if isinstance(x, str):
        return x
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in x) + "]"
    return json.dumps(x, sort_keys=True, default=str)


def protocol_differences(ra: Mapping[str, Any], rb: Mapping[str, Any]) -> list[str]:
    """What makes two reports measure different things (empty: same data and protocol): data
    fingerprint, audited users and their seed, run seed, and the options of each probe both ran
    (an option recorded on one side only, one that another recaudit version added, is
    :func:`option_changes`' note, not a difference)."""
    da, db = ra["dataset"], rb["dataset"]
    out = []
    if da["fingerprint"] != db["fingerprint"]:
        out.append(f"data set {da['name']} {da['fingerprint']} vs {db['name']} {db['fingerprint']}")
    if da["sampled_users"] != db["sampled_users"]:
        out.append(f"audited users {da['sampled_users']} vs {db['sampled_users']}")
    if da.get("users_seed") != db.get("users_seed") and "users_seed" in da and "users_seed" in db:
        out.append(f"users' sample seed {da['users_seed']} vs {db['users_seed']}")
    if ra.get("seed") != rb.get("seed") and "seed" in ra and "seed" in rb:
        out.append(f"run seed {ra['seed']} vs {rb['seed']}")
    probes_b = {p["name"]: p for p in rb.get("probes") or []}
    for pa in ra.get("probes") or []:
        pb = probes_b.get(pa["name"])
        if pb is None:
            continue
        diff = []
        if pa.get("probe") != pb.get("probe"):
            diff.append(f"probe {pa.get('probe')} vs {pb.get('probe')}")
        ca, cb = pa.get("config") or {}, pb.get("config") or {}
        for k in sorted(set(ca) & set(cb) - PLACEMENT_OPTIONS):
            if ca[k] != cb[k]:
                diff.append(f"{k} {_show(ca[k])} vs {_show(cb[k])}")
        if diff:
            out.append(f"probe '{pa['name']}': " + ", ".join(diff))
    return out


def option_changes(ra: Mapping[str, Any], rb: Mapping[str, Any]) -> list[str]:
    """Probe options recorded in one report only (``probe 'utility': sampling only in B (uniform)``)."""
    probes_b = {p["name"]: p for p in rb.get("probes") or []}
    out = []
    for pa in ra.get("probes") or []:
        pb = probes_b.get(pa["name"])
        if pb is None:
            continue
        ca, cb = pa.get("config") or {}, pb.get("config") or {}
        one = [f"{k} only in A ({_show(ca[k])})" for k in sorted(set(ca) - set(cb) - PLACEMENT_OPTIONS)]
        one += [f"{k} only in B ({_show(cb[k])})" for k in sorted(set(cb) - set(ca) - PLACEMENT_OPTIONS)]
        if one:
            out.append(f"probe '{pa['name']}': option " + ", ".join(one))
    return out


def _same(x: Any, y: Any) -> bool:
    if _finite(x) and _finite(y):
        return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    return x == y


def spec_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """What the two metrics' declarations disagree on (:data:`SPEC_FIELDS`), or None; a side
    without a declaration (schema 1) disagrees with nothing."""
    sa, sb = a.get("spec"), b.get("spec")
    if not isinstance(sa, Mapping) or not isinstance(sb, Mapping):
        return None
    diff = [f"{k} {_show(sa.get(k))} vs {_show(sb.get(k))}" for k in SPEC_FIELDS if not _same(sa.get(k), sb.get(k))]
    return ", ".join(diff) or None


def compare_reports(a: str | Path, b: str | Path, *, allow_different_data: bool = False) -> Comparison:
    """Compare run ``a`` (baseline) with run ``b`` (candidate); both are validated first.

    :class:`IncomparableRunsError` (exit 2) when they measured different data or protocols
    (:func:`protocol_differences`), unless ``allow_different_data``."""
    from audit.pairs import paired_metric

    ra, rb = validate_report(a), validate_report(b)
    differences = protocol_differences(ra, rb)
    if differences and not allow_different_data:
        raise IncomparableRunsError(
            f"{a} and {b} cannot be compared: {'; '.join(differences)}. Compare runs of the same data and "
            "protocol, or pass --allow-different-data to compare their values anyway")
    same_units = ra["dataset"]["fingerprint"] == rb["dataset"]["fingerprint"]
    ma, mb = _metrics(ra), _metrics(rb)
    res_a = {(r["recommender"], r["probe"]): r for r in ra["results"]}
    res_b = {(r["recommender"], r["probe"]): r for r in rb["results"]}
    cmp = Comparison(Path(a), Path(b), ra, rb, [], differences=differences)
    undeclared = []
    for key in list(ma) + [k for k in mb if k not in ma]:
        rec, probe, metric = key
        a_m, b_m = ma.get(key), mb.get(key)
        if b_m is None:
            cmp.only_a.append(key)
            continue
        if a_m is None:
            cmp.only_b.append(key)
            continue
        why = spec_difference(a_m, b_m)
        if why is not None:
            cmp.incomparable.append((key, why))
            continue
        if not is_declared(b_m, a_m):
            undeclared.append(f"{probe}.{metric}")
        result_a, result_b = res_a[(rec, probe)], res_b[(rec, probe)]
        paired = paired_metric(result_a, result_b, metric) if same_units else None
        cmp.deltas.append(MetricDelta(rec, probe, metric, a_m, b_m, declared_direction(b_m, a_m),
                                      paired if _usable(paired) else None,
                                      headline=metric == (result_b.get("headline") or result_a.get("headline"))))
    if differences:
        cmp.notes.append("compared although the runs differ (--allow-different-data): " + "; ".join(differences)
                         + ("; the users are not the same units, so no paired test (intervals only)"
                            if not same_units else ""))
    options = option_changes(ra, rb)
    if options:
        cmp.notes.append("probe options recorded in one run only (added or removed by another recaudit "
                         "version; not checked): " + "; ".join(options))
    if cmp.incomparable:
        cmp.notes.append(f"{len(cmp.incomparable)} metric(s) declared differently in A and B (they measure "
                         "something else) are not compared: "
                         + _names([f"{k[0]} x {k[1]}.{k[2]} ({why})" for k, why in cmp.incomparable], 6))
    if undeclared:
        names = sorted(set(undeclared))
        cmp.notes.append(f"{len(names)} metric(s) without a declared meaning are compared but never regressions: "
                         + _names(names, 12))
    for key, r in res_b.items():
        before = res_a.get(key)
        if before is not None and before["status"] != r["status"]:
            cmp.notes.append(f"{r['recommender']} x {r['probe']}: status {before['status']} -> {r['status']}"
                             + (f" ({r['reason'].splitlines()[0]})" if r.get("reason") else ""))
    return cmp


# -- rendering -------------------------------------------------------------------------------------
def _names(names: Sequence[str], limit: int) -> str:
    return ", ".join(names[:limit]) + (f" ... (+{len(names) - limit})" if len(names) > limit else "")


def _one_sided(keys: Sequence[Key], report: Mapping[str, Any], limit: int = 8) -> str:
    """``3: oracle x utility (all 7 metrics), reverse x utility: hr@5, mrr`` grouped by job."""
    per_job: dict[tuple[str, str], list[str]] = {}
    for rec, probe, metric in keys:
        per_job.setdefault((rec, probe), []).append(metric)
    totals = {(r["recommender"], r["probe"]): len(r["metrics"]) for r in report["results"]}
    parts = []
    jobs = list(per_job.items())
    for (rec, probe), names in jobs[:4]:
        if len(names) == totals.get((rec, probe)) and len(names) > 1:
            parts.append(f"{rec} x {probe} (all {len(names)} metrics)")
        else:
            parts.append(f"{rec} x {probe}: {_names(names, limit)}")
    more = f" ... (+{len(jobs) - 4} more job(s))" if len(jobs) > 4 else ""
    return f"{len(keys)} metric(s): " + "; ".join(parts) + more


def _cell(m: Mapping[str, Any]) -> str:
    ci = m.get("ci")
    ci_text = "" if ci is None else f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
    return f"{fmt_number(m.get('value'))}{ci_text}"


def _signed(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.2g}" if x != 0 and abs(x) < 0.001 else f"{x:+.3f}"


def _test(d: MetricDelta) -> str:
    if d.basis == "paired" and d.paired is not None:
        p = d.paired.p_value
        return f"paired n={d.paired.n}" + ("" if p is None else f" p={p:.2g}")
    return d.basis


def _verdict(d: MetricDelta) -> str:
    return d.change + (" (REGRESSION)" if d.regression else "")


HEADER = ["recommender", "probe", "metric", "A", "B", "B-A [95% CI]", "test", "change"]


def _row(d: MetricDelta) -> list[str]:
    if d.basis == "paired" and d.paired is not None:
        delta = f"{_signed(d.paired.value)} [{_signed(d.paired.ci[0])}, {_signed(d.paired.ci[1])}]"
    else:
        delta = _signed(d.delta)
    return [d.recommender, d.probe, d.metric, _cell(d.a), _cell(d.b), delta, _test(d), _verdict(d)]


def shown(cmp: Comparison, rows: Rows = "default") -> list[MetricDelta]:
    """The table's metrics: ``changed``: those changed beyond the uncertainty; ``default``: those
    and each job's headline metric; ``all``: every compared metric."""
    if rows == "all":
        return list(cmp.deltas)
    changed = set(map(id, cmp.changed))
    return [d for d in cmp.deltas if id(d) in changed or (rows == "default" and d.headline)]


def _run_label(path: Path, report: Mapping[str, Any]) -> str:
    return f"{path} (suite {report['suite']}, {report['created']})"


def _data_label(report: Mapping[str, Any]) -> str:
    d = report["dataset"]
    seed = f", users' seed {d['users_seed']}" if "users_seed" in d else ""
    run_seed = f", run seed {report['seed']}" if "seed" in report else ""
    return f"{d['name']} {d['fingerprint']} ({d['n_users']} users, {d['n_items']} items), " \
           f"{d['sampled_users']} audited users{seed}{run_seed}"


def summary_lines(cmp: Comparison) -> list[str]:
    """Header lines: the runs, the data, and how many metrics were compared and by which rule."""
    lines = [f"A = {_run_label(cmp.a, cmp.report_a)}", f"B = {_run_label(cmp.b, cmp.report_b)}"]
    la, lb = _data_label(cmp.report_a), _data_label(cmp.report_b)
    if not cmp.differences:
        lines.append(f"data: {la}; same data and protocol in A and B")
    else:
        lines += [f"data A: {la}", f"data B: {lb}"]
    by_basis = {basis: [d for d in cmp.deltas if d.basis == basis] for basis in BASIS_TEXT}
    ns = sorted({d.paired.n for d in by_basis["paired"] if d.paired is not None})
    n_text = "" if not ns else f" (n={ns[0]})" if len(ns) == 1 else f" (n={ns[0]}..{ns[-1]})"
    parts = [f"{len(by_basis['paired'])} by the paired test on per-user values{n_text}"] if by_basis["paired"] else []
    parts += [f"{len(by_basis['intervals'])} by the interval rule (no per-user values)"] if by_basis["intervals"] else []
    parts += [f"{len(by_basis['values'])} as exact values (no CI)"] if by_basis["values"] else []
    jobs = {(d.recommender, d.probe) for d in cmp.deltas}
    lines.append(f"compared {len(cmp.deltas)} metric(s) of {len(jobs)} job(s)" + (": " + ", ".join(parts) if parts else ""))
    return lines


def footer_lines(cmp: Comparison) -> list[str]:
    """Counts, one-sided metrics, notes and the regressions, one line each."""
    changed = cmp.changed
    unchanged = sum(d.change == "same" for d in cmp.deltas)
    missing = sum(d.change == "n/a" for d in cmp.deltas)
    lines = []
    if changed:
        counts = {w: sum(d.change == w for d in changed) for w in ("worse", "better", "changed")}
        lines.append(f"{len(changed)} metric(s) changed beyond the uncertainty ("
                     + ", ".join(f"{n} {w}" for w, n in counts.items() if n) + f"); {unchanged} unchanged"
                     + (f"; {missing} without a value on one side" if missing else ""))
    else:
        lines.append(f"no change beyond the uncertainty in {len(cmp.deltas)} compared metric(s)"
                     + (f" ({missing} without a value on one side)" if missing else ""))
    if cmp.only_a:
        lines.append("only in A (not compared, never a regression): " + _one_sided(cmp.only_a, cmp.report_a))
    if cmp.only_b:
        lines.append("only in B (not compared, never a regression): " + _one_sided(cmp.only_b, cmp.report_b))
    lines += [f"note: {n}" for n in cmp.notes]
    regs = cmp.regressions
    lines.append(f"{len(regs)} regression(s)" + (": " + _names([f"{d.recommender} x {d.probe}.{d.metric}" for d in regs], 8)
                                                 if regs else ""))
    return lines


def _legend(ds: Sequence[MetricDelta]) -> str:
    used = [b for b in BASIS_TEXT if any(d.basis == b for d in ds)]
    return "test: " + "; ".join(f"{b}: {BASIS_TEXT[b]}" for b in used)


def render_comparison_text(cmp: Comparison, rows: Rows = "default") -> str:
    """The comparison as text: header, a table of the :func:`shown` metrics, the footer."""
    ds = shown(cmp, rows)
    lines = summary_lines(cmp) + [""]
    if ds:
        table = [_row(d) for d in ds]
        widths = [max(len(c) for c in col) for col in zip(HEADER, *table)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*HEADER).rstrip(), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r).rstrip() for r in table]
        lines += [_legend(ds), ""]
    return "\n".join(lines + footer_lines(cmp))


def render_comparison_markdown(cmp: Comparison, rows: Rows = "default") -> str:
    """The comparison as a Markdown section (for a CI job summary or a pull-request comment)."""
    ds = shown(cmp, rows)
    lines = ["## recaudit compare", ""] + [f"- {line}" for line in summary_lines(cmp)] + [""]
    if ds:
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _row(d)) + " |" for d in ds]
        lines += ["", _legend(ds), ""]
    foot = footer_lines(cmp)
    lines += [f"- {line}" for line in foot[:-1]] + ["", f"**{foot[-1]}**"]
    return "\n".join(lines) + "\n"
