"""Pairs of recommenders a run compares on the same units, and their paired differences.

Pairs come from two places:

- **variant**: a recommender built as a variant of another is paired with it (``a`` = the parent,
  ``b`` = the variant). The parent of ``R`` is, first, the recommender named like ``R`` without its
  last ``+part`` (``llm+lora+dp8`` -> ``llm+lora``, ``fake-5pct+pca`` -> ``fake-5pct``) when it has
  the same adapter options; else the recommender with the same adapter options whose variant steps
  are the longest proper sub-sequence of ``R``'s (``[dp, canaries, mia-reference]`` ->
  ``[canaries, mia-reference]``; a plain adapter is the parent of its one-step variants);
- **declared**: a suite's ``compare: [{a: clean, b: fake-5pct}]`` (checked at load: both names are
  recommenders of the suite and at least one probe runs on both, else ConfigError, exit 2).

:func:`pair_entries` computes, for every pair and every metric both results carry with paired
data, the paired difference ``b - a`` (:mod:`audit.paired`): per-unit values (``Metric.per_unit``)
on the shared users, or a score statistic (AUROC, TPR@FPR) declared in a result's
``details["unit_statistics"]`` over the scores in ``details["unit_scores"]`` on the shared
labelled users. Holm and Benjamini-Hochberg adjusted p-values are taken across all entries of a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import model_validator

from audit.build import parse_variants
from audit.config import StrictConfig
from audit.errors import ConfigError, did_you_mean
from audit.paired import (Paired, adjust_pvalues, auroc_statistic, better_side, paired_auroc, paired_units,
                          tpr_statistic)

Origin = Literal["variant", "declared"]
#: the fields of one report ``pairs`` entry, in order
PAIR_FIELDS: tuple[str, ...] = ("a", "b", "origin", "probe", "metric", "method", "value", "ci", "n", "unit",
                                "p_value", "p_holm", "p_bh", "mde", "better")


class PairSpec(StrictConfig):
    """One ``compare:`` entry of a suite: ``b`` is compared with ``a`` (differences are ``b - a``)."""

    #: the baseline recommender
    a: str
    #: the recommender compared with it (differences are ``b - a``)
    b: str

    @model_validator(mode="after")
    def _distinct(self) -> "PairSpec":
        if self.a == self.b:
            raise ValueError(f"a pair compares two different recommenders, got {self.a!r} twice")
        return self


@dataclass(frozen=True)
class Pair:
    """Two recommenders compared on the same units; ``origin`` says where the pair comes from."""

    a: str
    b: str
    origin: Origin

    def describe(self) -> str:
        return f"{self.b} - {self.a}"


def _options_key(entry: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "variant"}, sort_keys=True, default=str)


def _steps(entry: Mapping[str, Any], where: str) -> list[str]:
    return [json.dumps([name, opts], sort_keys=True, default=str)
            for name, opts in parse_variants(entry.get("variant"), where)]


def _is_subsequence(short: Sequence[str], long: Sequence[str]) -> bool:
    it = iter(long)
    return all(step in it for step in short)


def variant_parent(name: str, recommenders: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The recommender ``name`` is a variant of (see the module docstring), or None."""
    entry = recommenders[name]
    key = _options_key(entry)
    steps = _steps(entry, f"recommenders.{name}")
    if "+" in name:
        stem = name.rsplit("+", 1)[0]
        if stem in recommenders and _options_key(recommenders[stem]) == key:
            return stem
    best: tuple[int, str] | None = None
    for other, other_entry in recommenders.items():
        if other == name or _options_key(other_entry) != key:
            continue
        theirs = _steps(other_entry, f"recommenders.{other}")
        if len(theirs) < len(steps) and _is_subsequence(theirs, steps):
            if best is None or len(theirs) > best[0]:
                best = (len(theirs), other)
    return None if best is None else best[1]


def shared_probes(a: str, b: str, probes: Sequence[Any]) -> list[str]:
    """Aliases of the probes (suite ``ProbeSpec``-s) that run on both ``a`` and ``b``."""
    return [p.alias for p in probes
            if p.config.recommenders is None or (a in p.config.recommenders and b in p.config.recommenders)]


def suite_pairs(recommenders: Mapping[str, Mapping[str, Any]], declared: Sequence[PairSpec],
                probes: Sequence[Any]) -> list[Pair]:
    """Variant pairs (where a probe runs on both) then declared pairs, each (a, b) once.

    ConfigError when a declared pair names a recommender not in the suite or no probe runs on both."""
    out: dict[tuple[str, str], Pair] = {}
    for name in recommenders:
        parent = variant_parent(name, recommenders)
        if parent is not None and shared_probes(parent, name, probes):
            out[(parent, name)] = Pair(parent, name, "variant")
    names = list(recommenders)
    for i, spec in enumerate(declared):
        where = f"compare[{i}] ({spec.a} vs {spec.b})"
        for side in (spec.a, spec.b):
            if side not in recommenders:
                raise ConfigError(f"{where}: {side!r} is not a recommender of this suite."
                                  f"{did_you_mean(side, names)} Recommenders: {', '.join(names)}")
        if not shared_probes(spec.a, spec.b, probes):
            raise ConfigError(f"{where}: no probe runs on both recommenders, so they share no users to compare; "
                              f"add both to a probe's 'recommenders:' list or drop the pair")
        if (spec.a, spec.b) not in out:
            out[(spec.a, spec.b)] = Pair(spec.a, spec.b, "declared")
    return list(out.values())


# -- paired differences from report results -----------------------------------------------------
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _direction(*metrics: Mapping[str, Any]) -> str | None:
    for m in metrics:
        spec = m.get("spec")
        if isinstance(spec, Mapping):
            return spec.get("direction")
    return None


def _statistic(result: Mapping[str, Any], metric: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(statistic declaration, its unit scores) of ``metric`` in ``result``'s details, or None."""
    details = result.get("details") or {}
    decl = (details.get("unit_statistics") or {}).get(metric)
    if not isinstance(decl, Mapping):
        return None
    scores = (details.get("unit_scores") or {}).get(decl.get("scores"))
    if not isinstance(scores, Mapping):
        return None
    return dict(decl), dict(scores)


def paired_metric(ra: Mapping[str, Any], rb: Mapping[str, Any], metric: str, *, seed: int = 0) -> Paired | None:
    """The paired difference of ``metric`` between two report results (b - a), or None when the
    two carry no paired data for it (see the module docstring)."""
    sa, sb = _statistic(ra, metric), _statistic(rb, metric)
    if sa is not None and sb is not None and sa[0].get("statistic") == sb[0].get("statistic"):
        decl = sa[0]
        la, lb = sa[1].get("labels") or {}, sb[1].get("labels") or {}
        xa, xb = sa[1].get("scores") or {}, sb[1].get("scores") or {}
        units = [u for u in xa if u in xb and u in la and u in lb and bool(la[u]) == bool(lb[u])
                 and _finite(xa[u]) and _finite(xb[u])]
        if not units:
            return None
        if decl.get("statistic") == "tpr":
            stat, method = tpr_statistic(float(decl["fpr"])), "paired-bootstrap-tpr"
        else:
            stat, method = auroc_statistic(), "paired-bootstrap-auroc"
        return paired_auroc([float(xa[u]) for u in units], [float(xb[u]) for u in units],
                            [bool(la[u]) for u in units], statistic=stat, method=method, seed=seed)
    pa = (ra.get("metrics", {}).get(metric) or {}).get("per_unit")
    pb = (rb.get("metrics", {}).get(metric) or {}).get("per_unit")
    if not isinstance(pa, Mapping) or not isinstance(pb, Mapping):
        return None
    units = [u for u in pa if u in pb and _finite(pa[u]) and _finite(pb[u])]
    if len(units) < 2:
        return None
    return paired_units([float(pa[u]) for u in units], [float(pb[u]) for u in units], seed=seed)


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def pair_entries(results: Sequence[Mapping[str, Any]], pairs: Sequence[Pair], *, seed: int = 0) -> list[dict[str, Any]]:
    """The report's ``pairs`` list: one entry per pair x probe x metric with paired data on both
    sides (fields :data:`PAIR_FIELDS`), with Holm and BH adjusted p-values across all entries."""
    by_key = {(r["recommender"], r["probe"]): r for r in results}
    probes = list(dict.fromkeys(r["probe"] for r in results))
    entries: list[dict[str, Any]] = []
    for pair in pairs:
        for probe in probes:
            ra, rb = by_key.get((pair.a, probe)), by_key.get((pair.b, probe))
            if ra is None or rb is None or ra["status"] not in ("pass", "fail") or rb["status"] not in ("pass", "fail"):
                continue
            for metric, ma in ra.get("metrics", {}).items():
                mb = rb.get("metrics", {}).get(metric)
                if mb is None:
                    continue
                d = paired_metric(ra, rb, metric, seed=seed)
                if d is None or not math.isfinite(d.value):
                    continue
                ci = (float(d.ci[0]), float(d.ci[1]))
                entries.append({
                    "a": pair.a, "b": pair.b, "origin": pair.origin, "probe": probe, "metric": metric,
                    "method": d.method, "value": _round(d.value), "ci": [_round(ci[0]), _round(ci[1])],
                    "n": int(d.n), "unit": str(mb.get("unit", ma.get("unit", "users"))),
                    "p_value": _round(d.p_value, 8), "p_holm": None, "p_bh": None, "mde": _round(d.mde),
                    "better": better_side(_direction(mb, ma), ci),
                })
    holm, bh = adjust_pvalues([e["p_value"] for e in entries])
    for e, h, f in zip(entries, holm, bh):
        e["p_holm"], e["p_bh"] = _round(h, 8), _round(f, 8)
    return entries


def find_entry(entries: Sequence[Mapping[str, Any]], a: str, b: str, probe: str, metric: str,
               ) -> Mapping[str, Any] | None:
    """The ``pairs`` entry for (a, b, probe, metric), or None."""
    for e in entries:
        if (e["a"], e["b"], e["probe"], e["metric"]) == (a, b, probe, metric):
            return e
    return None


def per_unit_sd(result_a: Mapping[str, Any], result_b: Mapping[str, Any], metric: str) -> float | None:
    """Standard deviation of the per-unit differences of ``metric`` (None without per-unit values)."""
    pa = (result_a.get("metrics", {}).get(metric) or {}).get("per_unit")
    pb = (result_b.get("metrics", {}).get(metric) or {}).get("per_unit")
    if not isinstance(pa, Mapping) or not isinstance(pb, Mapping):
        return None
    d = np.array([float(pb[u]) - float(pa[u]) for u in pa if u in pb and _finite(pa[u]) and _finite(pb[u])])
    return float(d.std(ddof=1)) if d.size >= 2 else None
