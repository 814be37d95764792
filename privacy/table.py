"""The privacy-utility table of a report: one row per recommender with its utility (HR@K,
NDCG@K with CIs), accounted (epsilon, delta) and privacy unit, membership-inference AUROC,
canary exposure and the empirical epsilon lower bound.

Reads ``report.json`` only (the probes measured everything): ``utility`` for HR/NDCG,
``privacy`` for the accounted budget, ``membership`` (not the null-audit control) for the
AUROC of the strongest attack present (``ref`` > ``minkpp`` > ``mink`` > ``loss`` > ``zlib`` >
``list``), ``canary`` for exposure by repetition (shown as "≥ x (s/n saturated)" when canaries
outrank every reference: then it is a lower bound), the log-likelihood margin that keeps
resolving past saturation, and ``epsilon_lb_*``. A missing measurement
is ``None`` (printed as a dash). Rows come sorted as an epsilon series: undefended models
(no accounted epsilon) first, then by epsilon, largest first. Below the table, the report's paired
differences of those figures (each variant against its parent, the suite's ``compare:`` pairs):
b - a with its 95% CI on the units both saw, instead of two intervals to compare by eye
(:func:`pairs_markdown`).

Run: ``.venv/bin/python -m privacy.table reports/privacy/report.json`` (Markdown to stdout).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.report import pair_table_markdown

ATTACK_PREFERENCE: tuple[str, ...] = ("ref", "minkpp", "mink", "loss", "zlib", "list")


@dataclass
class PrivacyRow:
    """One recommender's row; metric values are report metric dicts (value, ci, n) or None."""

    recommender: str
    variant: str
    hr: dict[str, Any] | None = None
    ndcg: dict[str, Any] | None = None
    epsilon: float | None = None
    delta: float | None = None
    unit: str | None = None
    mia_auroc: dict[str, Any] | None = None
    mia_attack: str | None = None
    exposure: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per repetition count: share of canaries that outrank every reference (exposure then a lower bound)
    saturated: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per repetition count: the canaries' log-likelihood margin over the references (SD units)
    margin: dict[str, dict[str, Any]] = field(default_factory=dict)
    epsilon_lb: float | None = None


def _results(report: Mapping[str, Any], probe_name: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in report.get("results", []):
        if r.get("probe_name", r.get("probe")) != probe_name or r.get("status") not in ("pass", "fail"):
            continue
        if probe_name == "membership" and r.get("details", {}).get("control"):
            continue
        out.setdefault(r["recommender"], r)
    return out


def _variant_label(entry: Mapping[str, Any]) -> str:
    variant = entry.get("variant")
    if not variant:
        return "undefended"
    return json.dumps(variant, separators=(",", ":"), sort_keys=True) if not isinstance(variant, str) else variant


def privacy_utility_table(report: Mapping[str, Any], k: int = 10) -> list[PrivacyRow]:
    """The table's rows (see the module docstring)."""
    utility, privacy = _results(report, "utility"), _results(report, "privacy")
    membership, canary = _results(report, "membership"), _results(report, "canary")
    rows = []
    for rec in report.get("recommenders", []):
        name = rec["name"]
        row = PrivacyRow(name, _variant_label(rec))
        if name in utility:
            row.hr = utility[name]["metrics"].get(f"hr@{k}")
            row.ndcg = utility[name]["metrics"].get(f"ndcg@{k}")
        if name in privacy:
            m = privacy[name]["metrics"]
            row.epsilon = m.get("epsilon", {}).get("value")
            row.delta = m.get("delta", {}).get("value")
            row.unit = privacy[name]["details"].get("privacy_unit")
            adjacency = privacy[name]["details"].get("adjacency")
            if row.unit and adjacency:
                row.unit = f"{row.unit}, {adjacency}"
        if name in membership:
            m = membership[name]["metrics"]
            for attack in ATTACK_PREFERENCE:
                if f"mia_auroc_{attack}" in m:
                    row.mia_auroc, row.mia_attack = m[f"mia_auroc_{attack}"], attack
                    break
        if name in canary:
            m = canary[name]["metrics"]
            for attr, prefix in (("exposure", "exposure_rep"), ("saturated", "exposure_saturated_rep"),
                                 ("margin", "exposure_margin_rep")):
                setattr(row, attr, {k_[len(prefix):]: v for k_, v in m.items() if k_.startswith(prefix)})
            # the Clopper-Pearson figure is heuristic (one run's canaries are not independent trials):
            # only the one-run bound is set against the accounted epsilon
            bounds = [m[b]["value"] for b in ("epsilon_lb_one_run",) if b in m and m[b].get("value") is not None]
            row.epsilon_lb = max(bounds) if bounds else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r.epsilon is not None, -(r.epsilon or 0.0)))


def _fmt(metric: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    text = f"{metric['value']:.{digits}f}"
    ci = metric.get("ci")
    if ci and all(c is not None for c in ci):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _exposure(row: PrivacyRow, rep: str) -> str:
    """Exposure in bits; where any canary outranks every reference the mean is a lower bound
    ("≥ 13.29, 5/5 saturated"), and the margin (SD units) is what still resolves."""
    text = _fmt(row.exposure.get(rep), 2)
    sat = row.saturated.get(rep)
    if sat and sat.get("value"):
        n = sat.get("n") or 0
        value = row.exposure.get(rep, {}).get("value")
        text = (f"≥ {value:.2f}" if value is not None else "≥ –") + f" ({round(sat['value'] * n)}/{n} saturated)"
    return text


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def to_markdown(rows: list[PrivacyRow], k: int = 10) -> str:
    """A Markdown table of the rows (values with 95% CIs in brackets)."""
    reps = sorted({r for row in rows for r in row.exposure}, key=lambda s: int(s) if s.isdigit() else 1 << 30)
    margin_reps = [r for r in reps if any(r in row.margin for row in rows)]
    head = ["recommender", "variant", f"HR@{k}", f"NDCG@{k}", "ε (accounted)", "δ", "unit", "MIA AUROC (attack)",
            *[f"exposure rep{r} (bits)" for r in reps], *[f"margin rep{r} (SD)" for r in margin_reps], "ε lower bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        mia = _fmt(row.mia_auroc) + (f" ({row.mia_attack})" if row.mia_attack else "")
        cells = [row.recommender, row.variant, _fmt(row.hr), _fmt(row.ndcg), _num(row.epsilon),
                 _num(row.delta, ".0e"), row.unit or "–", mia,
                 *[_exposure(row, r) for r in reps],
                 *[_fmt(row.margin.get(r), 2) for r in margin_reps], _num(row.epsilon_lb)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: (probe, metric prefixes) of the figures whose paired differences :func:`pairs_markdown` lists
_PAIRED_FIGURES: dict[str, tuple[str, ...]] = {"canary": ("exposure_rep", "exposure_margin_rep")}


def _shown_in_table(entry: Mapping[str, Any], probe_name: str | None, k: int,
                    attacks: Mapping[str, str | None]) -> bool:
    metric = entry["metric"]
    if probe_name == "utility":
        return metric in (f"hr@{k}", f"ndcg@{k}")
    if probe_name == "membership":  # the attack the table shows for the defended / compared side
        return attacks.get(entry["b"]) is not None and metric == f"mia_auroc_{attacks[entry['b']]}"
    return any(metric.startswith(prefix) for prefix in _PAIRED_FIGURES.get(probe_name or "", ()))


def paired_entries(report: Mapping[str, Any], k: int = 10) -> list[Mapping[str, Any]]:
    """The report's ``pairs`` entries (paired differences b - a) of the figures the table shows:
    HR@K and NDCG@K of ``utility``, the MIA AUROC of the attack shown for ``b`` (not the null-audit
    control), canary exposure and its margin per repetition; in report order."""
    names: dict[str, str] = {}
    for r in report.get("results", []):
        if r.get("details", {}).get("control"):
            names.setdefault(r["probe"], "control")
        names.setdefault(r["probe"], r.get("probe_name", r["probe"]))
    attacks = {row.recommender: row.mia_attack for row in privacy_utility_table(report, k)}
    return [e for e in report.get("pairs", []) if _shown_in_table(e, names.get(e["probe"]), k, attacks)]


def pairs_markdown(report: Mapping[str, Any], k: int = 10) -> str:
    """The paired differences of the table's figures as a Markdown section ("" when the report has
    none): each variant against its parent and the suite's ``compare:`` pairs, b - a with its 95% CI
    and n on the units both saw, p with Holm and BH adjusted p, MDE and the verdict."""
    entries = paired_entries(report, k)
    if not entries:
        return ""
    lines = ["Paired differences (b - a on the users or canaries both saw; each variant against its parent and "
             "the suite's `compare:` pairs; p with Holm and Benjamini-Hochberg adjusted p across the run's "
             "pairs; verdict from the metric's declared better direction):", "", *pair_table_markdown(entries)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="privacy-utility table of a recaudit report")
    ap.add_argument("report", type=Path, help="report.json, or the report directory")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    path = args.report / "report.json" if args.report.is_dir() else args.report
    report = json.loads(path.read_text())
    print(to_markdown(privacy_utility_table(report, args.k), args.k))
    paired = pairs_markdown(report, args.k)
    if paired:
        print("\n" + paired)


if __name__ == "__main__":
    main()
