"""Attacked and defended vs clean: target exposure ratios across the recommenders of one report.

A trained attack's clean twin is another recommender of the suite, so the ``poisoning`` probe
cannot pair them itself. This module does, from a report directory: for each recommender
with ``poisoning`` results it pairs the per-user, per-target ranks and scores in
``outputs.jsonl`` (condition ``target-exposure``) with those of the recommender named as
``clean``, over the users both measured, and computes

- ``target_hr@K`` of both and ``exposure_ratio@K`` = attacked / clean (paired bootstrap over
  users; NaN when the clean HR is 0) and ``exposure_gain@K`` = attacked - clean;
- ``score_shift``: mean attacked - clean target score (the models' log-likelihood scale);
- the stealth, budget and detector figures the probe reported for the recommender.

Usage::

    python -m attacks.summary reports/poisoning --clean clean [--clean backdoor-as-is=pretrained] [--k 10]

``--clean NAME`` is the default twin; ``--clean REC=NAME`` pairs one recommender with another
twin (e.g. the as-is backdoored model with the clean pretrained-only model). Below the table it
prints the report's own paired differences of the probe (:func:`pairs_markdown`: the runner pairs
each variant with its parent, e.g. ``clean`` -> ``fake-1pct``, and the suite's ``compare:`` pairs).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks.probe import ratio_metric
from audit.errors import ConfigError, RecauditError
from audit.report import OUTPUTS_FILE, fmt_metric, pair_table_markdown, report_path, validate_report
from audit.results import Metric
from audit.stats import mean_metric

CONDITION = "target-exposure"
CARRIED = ("hr@10", "ndcg@10", "budget", "detector_precision", "detector_recall", "fake_base_rate", "edit_cost")


@dataclass
class UserExposure:
    targets: list[str]
    eligible: np.ndarray
    ranks: np.ndarray
    scores: np.ndarray


@dataclass
class SummaryRow:
    """One recommender against its clean twin."""

    recommender: str
    clean: str
    metrics: dict[str, Metric] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"recommender": self.recommender, "clean": self.clean,
                "metrics": {k: m.to_json() for k, m in self.metrics.items()}}


def load_exposures(report_dir: str | Path, probe: str = "poisoning") -> dict[str, dict[str, UserExposure]]:
    """recommender -> user -> exposure record, from ``outputs.jsonl`` of the report."""
    out: dict[str, dict[str, UserExposure]] = {}
    path = report_path(report_dir).parent / OUTPUTS_FILE
    if not path.is_file():
        raise ConfigError(f"no {OUTPUTS_FILE} beside the report in {report_dir}")
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("probe") != probe or rec.get("condition") != CONDITION:
                continue
            out.setdefault(str(rec["recommender"]), {})[str(rec["user"])] = UserExposure(
                targets=[str(t) for t in rec["targets"]],
                eligible=np.asarray(rec["eligible"], dtype=bool),
                ranks=np.asarray([np.inf if r is None else r for r in rec["ranks"]], dtype=float),
                scores=np.asarray([np.nan if s is None else s for s in rec["scores"]], dtype=float))
    return out


def _per_user(records: Mapping[str, UserExposure], users: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    hits, scores = [], []
    for u in users:
        r = records[u]
        e = r.eligible
        hits.append(float(np.mean(r.ranks[e] <= k)) if e.any() else np.nan)
        s = r.scores[e]
        scores.append(float(np.mean(s)) if e.any() and np.isfinite(s).all() else np.nan)
    return np.asarray(hits), np.asarray(scores)


def summarize(report_dir: str | Path, clean: str, *, pairs: Mapping[str, str] | None = None,
              probe: str = "poisoning", k: int = 10, seed: int = 0) -> list[SummaryRow]:
    """One :class:`SummaryRow` per recommender with ``probe`` results (its twin: ``pairs`` or
    ``clean``), in report order."""
    report = validate_report(report_dir)
    exposures = load_exposures(report_dir, probe)
    pairs = dict(pairs or {})
    names = [r["name"] for r in report["recommenders"]]
    for name in [clean, *pairs.values()]:
        if name not in exposures:
            raise ConfigError(f"clean recommender {name!r} has no {probe!r} exposure records in {report_dir}; "
                              f"recommenders with them: {', '.join(n for n in names if n in exposures) or 'none'}")
    results = {(r["recommender"], r["probe"]): r for r in report["results"]}
    rows = []
    for name in names:
        if name not in exposures:
            continue
        twin = pairs.get(name, clean)
        a, b = exposures[name], exposures[twin]
        users = sorted(set(a) & set(b))
        if any(a[u].targets != b[u].targets for u in users):
            raise ConfigError(f"{name!r} and {twin!r} were measured on different targets; use one targets spec")
        ha, sa = _per_user(a, users, k)
        hb, sb = _per_user(b, users, k)
        row = SummaryRow(name, twin)
        row.metrics[f"target_hr@{k}"] = mean_metric(ha, seed=seed)
        row.metrics[f"clean_target_hr@{k}"] = mean_metric(hb, seed=seed)
        if name != twin:
            row.metrics[f"exposure_ratio@{k}"] = ratio_metric(ha, hb, seed=seed)
            row.metrics[f"exposure_gain@{k}"] = mean_metric(ha - hb, seed=seed)
            row.metrics["score_shift"] = mean_metric(sa - sb, seed=seed)
        reported = results.get((name, probe), {}).get("metrics", {})
        for key in CARRIED:
            if key in reported:
                row.metrics[key] = Metric.from_json(reported[key])
        rows.append(row)
    return rows


def render_markdown(rows: Sequence[SummaryRow], k: int = 10) -> str:
    cols = [f"target_hr@{k}", f"clean_target_hr@{k}", f"exposure_ratio@{k}", f"exposure_gain@{k}",
            "score_shift", "hr@10", "budget", "detector_precision", "detector_recall", "edit_cost"]
    lines = ["| recommender | clean twin | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [fmt_metric(r.metrics[c].to_json()) if c in r.metrics else "" for c in cols]
        lines.append(f"| {r.recommender} | {r.clean} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_entries(report: Mapping[str, Any], probe: str = "poisoning") -> list[Mapping[str, Any]]:
    """The report's ``pairs`` entries of ``probe`` (the runner's paired differences b - a: each variant
    against its parent, e.g. ``clean`` -> ``fake-1pct``, and the suite's ``compare:`` pairs), in report order."""
    return [e for e in report.get("pairs", []) if e["probe"] == probe]


def pairs_markdown(report: Mapping[str, Any], probe: str = "poisoning") -> str:
    """:func:`paired_entries` as a Markdown section ("" when there are none): target exposure and
    utility, b - a with its 95% CI and n on the users both saw, p with Holm and BH adjusted p, MDE, verdict."""
    entries = paired_entries(report, probe)
    if not entries:
        return ""
    return "\n".join([f"Paired differences of `{probe}` in the report (b - a on the users both saw; each variant "
                      "against its parent and the suite's `compare:` pairs; p with Holm and Benjamini-Hochberg "
                      "adjusted p across the run's pairs; verdict from the metric's declared better direction):",
                      "", *pair_table_markdown(entries)]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attacks.summary", description=__doc__.split("\n")[0])
    parser.add_argument("report", help="report directory (or its report.json)")
    parser.add_argument("--clean", action="append", required=True,
                        help="the clean twin: NAME (default for all) or REC=NAME (for one recommender)")
    parser.add_argument("--probe", default="poisoning", help="alias of the poisoning probe in the suite")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    default = [c for c in args.clean if "=" not in c]
    if len(default) != 1:
        parser.error("give exactly one --clean NAME (plus any number of --clean REC=NAME)")
    pairs = dict(c.split("=", 1) for c in args.clean if "=" in c)
    try:
        rows = summarize(args.report, default[0], pairs=pairs, probe=args.probe, k=args.k)
    except RecauditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    sys.stdout.write(render_markdown(rows, args.k))
    paired = pairs_markdown(validate_report(args.report), args.probe)
    if paired:
        sys.stdout.write("\n" + paired)
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
