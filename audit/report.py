"""The report directory: a stable contract read by CI, ``recaudit compare`` and the dashboard.

``<out>/`` holds

- ``report.json``: the run (schema below, ``schema_version: 2``: each metric may carry its
  declared meaning ``spec`` and its per-user values ``per_unit``);
- ``outputs.jsonl``: one line per model call (recommender, probe, user, condition,
  prompt, raw, parsed, plus probe-specific keys) so every number can be recomputed. A call made
  for a request also names the request's history by its content address, ``history_id``; the
  titles themselves (``history``, oldest first) are written once per file, on the first line
  with that id (:func:`read_outputs` fills them in on every line; the ``python`` adapter's
  prompt names the history by this id instead of repeating it);
- ``summary.md``: Markdown tables for a PR comment or ``$GITHUB_STEP_SUMMARY``;
- ``junit.xml``: one test case per probe result and per gate;
- ``jobs/``: one record per finished job, written as each finishes (the resume state).

The four report files are staged in a temporary directory inside ``<out>``, the
report is validated against :data:`REPORT_SCHEMA`, then each file is moved into
place with ``os.replace``, ``report.json`` last: a reader that finds a
``report.json`` finds the files of the same run beside it, and an interrupted or
failed run leaves the previous report untouched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jsonschema

from audit.cache import atomic_write_jsonl, atomic_write_text, dumps_json
from audit.errors import ConfigError

SCHEMA_VERSION = 2
#: versions this code reads: 1 (metrics without declarations) and 2 (``spec`` and ``per_unit``)
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
REPORT_FILE = "report.json"
OUTPUTS_FILE = "outputs.jsonl"
SUMMARY_FILE = "summary.md"
JUNIT_FILE = "junit.xml"
OUTPUT_KEYS: tuple[str, ...] = ("recommender", "probe", "user", "condition", "prompt", "raw", "parsed")

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_METRIC = {
    "type": "object",
    "required": ["value", "n"],
    "properties": {
        "value": _NUMBER_OR_NULL,
        "ci": {"anyOf": [{"type": "null"},
                         {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 2, "maxItems": 2}]},
        "n": {"type": "integer", "minimum": 0},
        "unit": {"type": "string"},
        "spec": {
            "type": "object",
            "description": "the metric's declared meaning (audit.results.MetricSpec)",
            "required": ["direction", "range", "chance", "unit", "sampled"],
            "properties": {
                "direction": {"enum": ["higher", "lower", None]},
                "range": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 2, "maxItems": 2},
                "chance": _NUMBER_OR_NULL,
                "unit": {"type": "string"},
                "sampled": {"type": "boolean"},
                "meaning": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "per_unit": {"type": "object", "additionalProperties": {"type": "number"},
                     "description": "per-unit values (user id -> value) behind a mean, for paired tests"},
    },
    "additionalProperties": False,
}
_RESULT = {
    "type": "object",
    "required": ["recommender", "probe", "status", "metrics", "details", "reason"],
    "properties": {
        "recommender": {"type": "string"},
        "probe": {"type": "string", "description": "the probe's key in the suite (an alias or its name)"},
        "probe_name": {"type": "string", "description": "the registered probe name"},
        "status": {"enum": ["pass", "fail", "skip", "error"]},
        "metrics": {"type": "object", "additionalProperties": _METRIC},
        "headline": {"type": ["string", "null"], "description": "the metric summaries show first"},
        "details": {"type": "object"},
        "reason": {"type": "string"},
        "cached": {"type": "boolean"},
        "elapsed_s": {"type": "number", "minimum": 0},
        "key": {"type": "string"},
    },
}
_GATE = {
    "type": "object",
    "required": ["probe", "metric", "recommender", "op", "threshold", "value", "passed"],
    "properties": {
        "probe": {"type": "string"}, "metric": {"type": "string"}, "recommender": {"type": "string"},
        "op": {"enum": ["<=", "<", ">=", ">", "=="]}, "threshold": {"type": "number"},
        "use": {"enum": ["value", "ci_low", "ci_high"]}, "value": _NUMBER_OR_NULL,
        "passed": {"type": "boolean"}, "reason": {"type": "string"},
        "pair": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2,
                 "description": "[a, b]: the gate reads the paired difference b - a"},
    },
}
_PAIR = {
    "type": "object",
    "description": "a paired difference b - a of one metric on the units both recommenders saw (audit.pairs)",
    "required": ["a", "b", "origin", "probe", "metric", "method", "value", "ci", "n", "unit",
                 "p_value", "p_holm", "p_bh", "mde", "better"],
    "properties": {
        "a": {"type": "string"}, "b": {"type": "string"}, "origin": {"enum": ["variant", "declared"]},
        "probe": {"type": "string"}, "metric": {"type": "string"}, "method": {"type": "string"},
        "value": {"type": "number"},
        "ci": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 2, "maxItems": 2},
        "n": {"type": "integer", "minimum": 0}, "unit": {"type": "string"},
        "p_value": _NUMBER_OR_NULL, "p_holm": _NUMBER_OR_NULL, "p_bh": _NUMBER_OR_NULL, "mde": _NUMBER_OR_NULL,
        "better": {"enum": ["a", "b", None]},
    },
    "additionalProperties": False,
}
#: JSON Schema (draft 2020-12) of ``report.json``, schema_version 2 (version 1 reports, whose
#: metrics carry no ``spec``/``per_unit``, still validate).
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://recaudit.invalid/schemas/report-v2.json",
    "title": "recaudit report",
    "type": "object",
    "required": ["schema_version", "suite", "created", "dataset", "recommenders", "results", "gates"],
    "properties": {
        "schema_version": {"enum": list(READABLE_SCHEMA_VERSIONS)},
        "suite": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "seed": {"type": "integer"},
        "code_version": {"type": "string"},
        "dataset": {
            "type": "object",
            "required": ["name", "fingerprint", "n_users", "n_items", "source", "sampled_users"],
            "properties": {
                "name": {"type": "string"}, "fingerprint": {"type": "string"},
                "n_users": {"type": "integer", "minimum": 0}, "n_items": {"type": "integer", "minimum": 0},
                "n_interactions": {"type": "integer", "minimum": 0}, "source": {"type": "string"},
                "tied_next_share": {"type": "number", "minimum": 0, "maximum": 1},
                "order": {"enum": ["timestamp", "file"]},
                "duplicates": {"type": "object", "required": ["rule", "repeated", "dropped"],
                               "properties": {"rule": {"enum": ["first", "last", "keep", "error"]},
                                              "repeated": {"type": "integer", "minimum": 0},
                                              "dropped": {"type": "integer", "minimum": 0}}},
                "sampled_users": {"type": "integer", "minimum": 0}, "users_seed": {"type": "integer"},
                "spec": {"type": "object"},
            },
        },
        "recommenders": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "variant", "config"],
                "properties": {"name": {"type": "string"}, "variant": {"type": ["string", "null"]},
                               "config": {"type": "object"}, "info": {"type": "object"}},
            },
        },
        "probes": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "probe", "config"],
                      "properties": {"name": {"type": "string"}, "probe": {"type": "string"},
                                     "config": {"type": "object"}, "description": {"type": "string"}}},
        },
        "results": {"type": "array", "items": _RESULT},
        "pairs": {"type": "array", "items": _PAIR},
        "gates": {"type": "array", "items": _GATE},
        "gates_passed": {"type": "boolean"},
        "exit_code": {"type": "integer"},
    },
}


def now_iso() -> str:
    """The current UTC time, ISO-8601 with seconds and offset."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- reading --------------------------------------------------------------------------
def report_path(path: str | Path) -> Path:
    """``report.json`` of a report directory (or the given JSON file itself)."""
    p = Path(path)
    return p / REPORT_FILE if p.is_dir() else p


def validate_report_data(data: Any, where: str = "report") -> dict[str, Any]:
    """Check a loaded report against :data:`REPORT_SCHEMA`; ConfigError names the first problem."""
    if isinstance(data, dict) and data.get("schema_version") not in (None, *READABLE_SCHEMA_VERSIONS):
        raise ConfigError(f"{where}: schema_version {data.get('schema_version')!r} is not supported "
                          f"(this recaudit reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        loc = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"{where} is not a valid recaudit report: at {loc}: {error.message}")
    return data


def validate_report(path: str | Path) -> dict[str, Any]:
    """Load a report (directory or ``report.json``) and validate it; returns the parsed report."""
    file = report_path(path)
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no report at {path} (expected {file}); run `recaudit run SUITE.yaml --out DIR`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read report {file}: {exc}") from None
    return validate_report_data(data, str(file))


load_report = validate_report


def read_outputs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The call records of an ``outputs.jsonl``, each with its ``history`` filled in from the
    first line that carries the titles of its ``history_id``."""
    with open(path, encoding="utf-8") as fh:
        return list(with_histories(json.loads(line) for line in fh if line.strip()))


def with_histories(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``records`` (in file order) with ``history`` set on every record that names a ``history_id``
    whose titles an earlier (or the same) record carries."""
    seen: dict[str, Any] = {}
    for rec in records:
        hid = rec.get("history_id")
        if isinstance(hid, str):
            if "history" in rec:
                seen.setdefault(hid, rec["history"])
            elif hid in seen:
                rec = {**rec, "history": seen[hid]}
        yield rec


def histories_once(outputs: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """``outputs`` with each history's titles kept on the first record naming its ``history_id``
    only (each job's records carry their own first copy; the report file needs one)."""
    written: set[str] = set()
    for rec in outputs:
        hid = rec.get("history_id")
        if isinstance(hid, str) and "history" in rec:
            if hid in written:
                rec = {k: v for k, v in rec.items() if k != "history"}
            else:
                written.add(hid)
        yield rec


# -- writing ----------------------------------------------------------------------------
def write_report_dir(out: Path, report: Mapping[str, Any], outputs: Iterable[Mapping[str, Any]],
                     *, junit_xml: str, summary_md: str) -> dict[str, Path]:
    """Validate and write the report files into ``out`` (see module docstring); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = dumps_json(report) + "\n"
    validate_report_data(json.loads(text), f"report for {out}")
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        atomic_write_jsonl(stage / OUTPUTS_FILE, histories_once(outputs))
        atomic_write_text(stage / SUMMARY_FILE, summary_md)
        atomic_write_text(stage / JUNIT_FILE, junit_xml)
        atomic_write_text(stage / REPORT_FILE, text)
        paths = {}
        for name in (OUTPUTS_FILE, SUMMARY_FILE, JUNIT_FILE, REPORT_FILE):
            os.replace(stage / name, out / name)
            paths[name] = out / name
        return paths
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# -- rendering -----------------------------------------------------------------------------
def fmt_number(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"


def fmt_metric(m: Mapping[str, Any]) -> str:
    """``0.412 [0.371, 0.455] n=300`` (CI omitted when there is none)."""
    ci = m.get("ci")
    ci_text = "" if ci is None else f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
    return f"{fmt_number(m.get('value'))}{ci_text} n={m.get('n', 0)}"


def headline_cell(result: Mapping[str, Any]) -> str:
    """What a summary shows for one result: its headline metric, or its status and reason."""
    status = result["status"]
    if status in ("skip", "error"):
        return status
    name = result.get("headline")
    metrics = result.get("metrics", {})
    if not name or name not in metrics:
        return status
    cell = f"{name} {fmt_metric(metrics[name])}"
    return cell if status == "pass" else f"{cell} ({status})"


def _matrix(report: Mapping[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Mapping[str, Any]]]:
    recs = [r["name"] for r in report["recommenders"]]
    probes: list[str] = [p["name"] for p in report.get("probes", [])]
    for r in report["results"]:
        if r["probe"] not in probes:
            probes.append(r["probe"])
    return recs, probes, {(r["recommender"], r["probe"]): r for r in report["results"]}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def gate_text(g: Mapping[str, Any]) -> str:
    use = g.get("use", "value")
    metric = g["metric"] if use == "value" else f"{g['metric']}.{use}"
    who = f"[{g['pair'][0]}, {g['pair'][1]}]" if g.get("pair") else g["recommender"]
    return f"{who}:{g['probe']}.{metric} {g['op']} {g['threshold']:g}"


def fmt_p(p: float | None) -> str:
    """A p-value for a table: ``<0.001`` below one in a thousand, ``n/a`` when absent."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def better_mark(entry: Mapping[str, Any]) -> str:
    """Which side the metric's declared direction favours (CI excludes 0), else ``no difference``
    (or ``undirected`` for a metric without a better direction)."""
    better = entry.get("better")
    if better == "b":
        return f"better: {entry['b']}"
    if better == "a":
        return f"worse than {entry['a']}"
    lo, hi = entry.get("ci") or (None, None)
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and (lo > 0 or hi < 0):
        return "differs (undirected)"
    return "no difference"


def pair_rows(entries: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows ``b vs a | probe | metric | b - a [CI] n | p (Holm, BH) | MDE | verdict`` of the pairs."""
    rows = []
    for e in entries:
        lo, hi = e["ci"]
        rows.append([f"{e['b']} vs {e['a']}", e["probe"], e["metric"],
                     f"{e['value']:+.3f} [{fmt_number(lo)}, {fmt_number(hi)}] n={e['n']}",
                     f"{fmt_p(e['p_value'])} ({fmt_p(e['p_holm'])}, {fmt_p(e['p_bh'])})",
                     fmt_number(e.get("mde")), better_mark(e)])
    return rows


PAIR_HEADER = ("pair (b vs a)", "probe", "metric", "b - a [95% CI] n", "p (Holm, BH)", "MDE", "verdict")


def pair_table_markdown(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``pairs`` entries (:data:`PAIR_HEADER`, :func:`pair_rows`)."""
    return (["| " + " | ".join(PAIR_HEADER) + " |", "|" + "---|" * len(PAIR_HEADER)]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in pair_rows(entries)])


def _headline_pairs(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pairs entries of each result's headline metric (what the summary tables show first)."""
    heads = {(r["recommender"], r["probe"]): r.get("headline") for r in report["results"]}
    return [e for e in report.get("pairs", []) if heads.get((e["b"], e["probe"])) == e["metric"]]


def _reading_notes(ds: Mapping[str, Any]) -> str:
    """How the interactions were read, when it is not the default (file order, repeated pairs)."""
    notes = []
    if ds.get("order") == "file":
        notes.append("Each user's interactions are taken in file order (`order: file`).")
    dup = ds.get("duplicates") or {}
    if dup.get("repeated"):
        notes.append(f"{dup['repeated']} interaction(s) repeat a user-item pair (`duplicates: {dup['rule']}`: "
                     f"{dup['dropped']} dropped).")
    return " ".join(notes)


def render_summary_markdown(report: Mapping[str, Any]) -> str:
    """Markdown summary: headline matrix, gates, unmeasured jobs, and every metric (collapsed)."""
    recs, probes, cells = _matrix(report)
    ds = report["dataset"]
    gates = report["gates"]
    passed = sum(1 for g in gates if g["passed"])
    lines = [f"## recaudit: {_md(report['suite'])}", "",
             f"Data set `{_md(ds['name'])}` (fingerprint `{ds['fingerprint']}`): {ds['n_users']} users, "
             f"{ds['n_items']} items; {ds['sampled_users']} users audited; seed {report.get('seed', 0)}; "
             f"created {report['created']}.", ""]
    reading = _reading_notes(ds)
    if reading:
        lines[-2] += " " + reading
    if gates:
        verdict = "all passed" if passed == len(gates) else f"**{len(gates) - passed} failed**"
        lines += [f"**Gates: {passed}/{len(gates)} passed** ({verdict})", ""]
    lines += ["Headline metric per probe: value [95% CI] n (Wilson score intervals for shares of 0/1 outcomes, "
              "bootstrap over users otherwise).", "",
              "| recommender | " + " | ".join(_md(p) for p in probes) + " |",
              "|---|" + "---|" * len(probes)]
    for rec in recs:
        row = [headline_cell(cells[(rec, p)]) if (rec, p) in cells else "" for p in probes]
        lines.append(f"| {_md(rec)} | " + " | ".join(_md(c) for c in row) + " |")
    if gates:
        lines += ["", "### Gates", "", "| gate | value | result |", "|---|---|---|"]
        for g in gates:
            verdict = "pass" if g["passed"] else "**FAIL**"
            why = f" ({_md(g['reason'])})" if g.get("reason") else ""
            lines.append(f"| `{_md(gate_text(g))}` | {fmt_number(g['value'])} | {verdict}{why} |")
    pairs = report.get("pairs", [])
    if pairs:
        lines += ["", "### Paired differences", "",
                  "Each variant against its parent (and the suite's `compare:` pairs) on the units both saw: "
                  "the difference b - a with its 95% CI, p-value with Holm and Benjamini-Hochberg adjusted "
                  "p-values across the run's pairs, and the minimum detectable effect (80% power, alpha 0.05). "
                  "The verdict follows the metric's declared better direction. Headline metrics here; every "
                  "metric below.", ""]
        lines += pair_table_markdown(_headline_pairs(report))
        lines += ["", "<details><summary>All paired differences</summary>", ""]
        lines += pair_table_markdown(pairs)
        lines += ["", "</details>"]
    unmeasured = [r for r in report["results"] if r["status"] in ("skip", "error")]
    if unmeasured:
        lines += ["", "### Not measured", ""]
        lines += [f"- {r['status']}: {_md(r['recommender'])} x {_md(r['probe'])}: {_md(r['reason'])}"
                  for r in unmeasured]
    lines += ["", "<details><summary>All metrics</summary>", "",
              "| recommender | probe | metric | value | 95% CI | n |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        for name, m in r["metrics"].items():
            ci = m.get("ci")
            ci_text = "" if ci is None else f"[{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
            lines.append(f"| {_md(r['recommender'])} | {_md(r['probe'])} | {_md(name)} | "
                         f"{fmt_number(m['value'])} | {ci_text} | {m['n']} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.rstrip() for line in
            (fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows))]


def render_summary_text(report: Mapping[str, Any]) -> str:
    """The short plain-text table the CLI prints: recommender x probe headline, then gates."""
    recs, probes, cells = _matrix(report)
    rows = [[rec, *(headline_cell(cells[(rec, p)]) if (rec, p) in cells else "" for p in probes)]
            for rec in recs]
    lines = _table(["recommender", *probes], rows)
    for r in report["results"]:
        if r["status"] in ("skip", "error"):
            lines.append(f"{r['status']}: {r['recommender']} x {r['probe']}: {r['reason'].splitlines()[0] if r['reason'] else ''}")
    heads = _headline_pairs(report)
    if heads:
        lines += ["", "paired differences (b - a, headline metrics):"]
        lines += _table(["pair", "probe", "metric", "b - a [95% CI] n", "p (Holm, BH)", "MDE", "verdict"],
                        pair_rows(heads))
    if report["gates"]:
        lines.append("")
        lines += _table(["gate", "value", "result"],
                        [[gate_text(g), fmt_number(g["value"]), "pass" if g["passed"] else "FAIL"]
                         for g in report["gates"]])
    return "\n".join(lines)
