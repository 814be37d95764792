"""Sample size: how many users a probe needs for a target CI half-width (or MDE), from a pilot report.

``recaudit plan SUITE.yaml [--from REPORT] [--halfwidth 0.03] [--halfwidth membership=0.05] [--mde X]``
reads a previous (or a small pilot) run of the same suite and prints, per probe and pair, the users
needed and the time that costs:

- a pair entry of the report (:mod:`audit.pairs`) with per-user values on both sides: the standard
  deviation ``sd`` of the per-user differences gives ``n = (z sd / h)^2`` (z = 1.96) for half-width
  ``h``; other pairs (AUROC, TPR@FPR: a bootstrap over users) scale the measured half-width
  ``h0`` at n0 units as ``n = n0 (h0 / h)^2``; an MDE target ``m`` scales the measured MDE the same way;
- a probe result without pairs: its headline metric's own CI, scaled the same way;
- time: the measured seconds per unit of the jobs involved (``elapsed_s`` of the results, summed over
  the two recommenders of a pair) times the units needed.

Units are what the metric counts: users for utility, members + non-members for membership (the
``users`` option caps each group, so set it to half the units shown). The prediction assumes the
per-unit spread of the pilot; a pilot of a few dozen users is enough for a first figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from audit.errors import ConfigError
from audit.pairs import per_unit_sd

Z = 1.959963984540054  # the 97.5% normal quantile: a 95% CI


@dataclass(frozen=True)
class PlanRow:
    """One prediction: for ``what`` (a pair ``b vs a`` or one recommender) of ``probe.metric``."""

    probe: str
    what: str
    metric: str
    n_measured: int
    halfwidth_measured: float
    target: str
    n_needed: int
    seconds_per_unit: float | None
    basis: str

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_unit is None else self.seconds_per_unit * self.n_needed


def parse_targets(values: Sequence[str] | None, what: str, default: float | None) -> tuple[float | None, dict[str, float]]:
    """``["0.03", "membership=0.05"]`` -> (0.03, {"membership": 0.05}); ConfigError for a value <= 0."""
    base, per_probe = default, {}
    for text in values or ():
        probe, _, number = text.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise ConfigError(f"--{what} {text!r}: expected a number or PROBE=NUMBER, e.g. 0.03 or "
                              f"membership=0.05") from None
        if not x > 0 or not math.isfinite(x):
            raise ConfigError(f"--{what} {text!r}: must be a positive number (a CI half-width or effect in the "
                              f"metric's unit), got {x:g}")
        if probe:
            per_probe[probe] = x
        else:
            base = x
    return base, per_probe


def _halfwidth(ci: Sequence[Any] | None) -> float | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    h = (float(ci[1]) - float(ci[0])) / 2
    return h if math.isfinite(h) and h > 0 else None


def _per_unit_seconds(results: Sequence[Mapping[str, Any]], n: int) -> float | None:
    """Seconds the jobs took (``elapsed_s``, as first measured when reused from the cache) per unit."""
    spent = [r.get("elapsed_s") for r in results]
    if n <= 0 or any(not isinstance(s, (int, float)) for s in spent):
        return None
    return sum(float(s) for s in spent) / n


def check_report(report: Mapping[str, Any], suite_name: str, where: str) -> None:
    """ConfigError when ``report`` is of another suite than ``suite_name``."""
    if report.get("suite") != suite_name:
        raise ConfigError(f"--from {where}: that report is of suite {report.get('suite')!r}, not {suite_name!r}; "
                          f"plan from a run of this suite (a pilot: recaudit run SUITE.yaml --limit-users 50)")


def plan_rows(report: Mapping[str, Any], *, halfwidth: float | None = 0.03, halfwidths: Mapping[str, float] = {},
              mde: float | None = None, mdes: Mapping[str, float] = {}, all_metrics: bool = False) -> list[PlanRow]:
    """Predictions for every probe of ``report`` (headline metrics unless ``all_metrics``)."""
    results = {(r["recommender"], r["probe"]): r for r in report["results"]}
    heads = {key: r.get("headline") for key, r in results.items()}
    rows: list[PlanRow] = []
    paired_probes: set[str] = set()
    for e in report.get("pairs", []):
        ra, rb = results.get((e["a"], e["probe"])), results.get((e["b"], e["probe"]))
        if ra is None or rb is None or (not all_metrics and heads.get((e["b"], e["probe"])) != e["metric"]):
            continue
        h0 = _halfwidth(e.get("ci"))
        if h0 is None:
            continue
        paired_probes.add(e["probe"])
        sd = per_unit_sd(ra, rb, e["metric"])
        rows += _predict(e["probe"], f"{e['b']} vs {e['a']}", e["metric"], int(e["n"]), h0, sd, e.get("mde"),
                         _per_unit_seconds([ra, rb], int(e["n"])), halfwidths.get(e["probe"], halfwidth),
                         mdes.get(e["probe"], mde))
    for (rec, probe), r in results.items():
        if probe in paired_probes or r["status"] not in ("pass", "fail"):
            continue
        for name, m in r.get("metrics", {}).items():
            if not all_metrics and name != r.get("headline"):
                continue
            h0 = _halfwidth(m.get("ci"))
            if h0 is None:
                continue
            n = int(m.get("n", 0))
            rows += _predict(probe, rec, name, n, h0, None, None, _per_unit_seconds([r], n),
                             halfwidths.get(probe, halfwidth), None)
    return rows


def _predict(probe: str, what: str, metric: str, n: int, h0: float, sd: float | None, mde0: float | None,
             per_unit: float | None, halfwidth: float | None, mde: float | None) -> list[PlanRow]:
    out = []
    if halfwidth is not None:
        if sd is not None and sd > 0:
            need, basis = (Z * sd / halfwidth) ** 2, f"sd of per-user differences {sd:.3f}"
        else:
            need, basis = n * (h0 / halfwidth) ** 2, f"measured half-width {h0:.3f} at n={n}"
        out.append(PlanRow(probe, what, metric, n, h0, f"half-width {halfwidth:g}", max(2, math.ceil(need)),
                           per_unit, basis))
    if mde is not None and mde0 is not None and mde0 > 0:
        out.append(PlanRow(probe, what, metric, n, h0, f"MDE {mde:g}", max(2, math.ceil(n * (mde0 / mde) ** 2)),
                           per_unit, f"measured MDE {mde0:.3f} at n={n}"))
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_plan(rows: Sequence[PlanRow], report: Mapping[str, Any]) -> str:
    """The table ``recaudit plan`` prints."""
    from audit.report import _table

    if not rows:
        return "nothing to plan: the report has no metric with a confidence interval"
    n_users = report.get("dataset", {}).get("n_users")
    table = [[r.probe, r.what, r.metric, f"{r.halfwidth_measured:.3f} @ {r.n_measured}", r.target,
              f"{r.n_needed}" + (f" (data set: {n_users} users)" if isinstance(n_users, int)
                                 and r.n_needed > n_users else ""),
              _duration(r.seconds), r.basis] for r in rows]
    head = (f"plan from report of suite {report.get('suite')!r} (created {report.get('created')}); units needed "
            f"for a 95% CI of the given half-width, or an MDE at 80% power and alpha 0.05")
    return "\n".join([head, "", *_table(["probe", "pair / recommender", "metric", "half-width @ n", "target",
                                          "units needed", "time", "from"], table)])
