"""The report as the dashboard reads it: typed, validated views of ``report.json`` (schema 1 or 2).

Parsing is strict on what the dashboard relies on (keys, types, statuses) and lenient
on what it does not (extra keys are kept, so newer writers that only add fields still
load). Every problem becomes a :class:`ReportFormatError` with one line naming the
field path, e.g. ``results.3.metrics.hr@10.n: Field required``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from audit.errors import RecauditError
from audit.results import Metric, MetricSpec

SCHEMA_VERSION = 2
#: report versions the dashboard reads (1: metrics without declared meanings)
READABLE_SCHEMA_VERSIONS = (1, 2)
STATUSES = ("pass", "fail", "skip", "error")


class ReportFormatError(RecauditError, ValueError):
    """A report file exists but cannot be read: bad JSON, wrong schema version, missing keys."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class _MetricModel(_Lenient):
    value: float | None
    ci: tuple[float | None, float | None] | None = None
    n: int

    @field_validator("n")
    @classmethod
    def _n_non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("n must be >= 0")
        return v


class _ResultModel(_Lenient):
    recommender: str
    probe: str
    status: Literal["pass", "fail", "skip", "error"]
    metrics: dict[str, _MetricModel] = {}
    details: dict[str, Any] = {}
    reason: str = ""
    headline: str | None = None
    probe_name: str | None = None


class _GateModel(_Lenient):
    probe: str
    metric: str
    recommender: str
    op: str
    threshold: float
    value: float | None = None
    passed: bool


class _RecommenderModel(_Lenient):
    name: str
    variant: Any = None
    config: dict[str, Any] = {}
    info: dict[str, Any] = {}


class _ReportModel(_Lenient):
    schema_version: int
    suite: str
    created: str
    dataset: dict[str, Any] = {}
    recommenders: list[_RecommenderModel]
    results: list[_ResultModel]
    gates: list[_GateModel]


@dataclass(frozen=True)
class RecommenderInfo:
    """One audited recommender: its name, variant names (empty = undefended) and settings."""

    name: str
    variants: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def variant_label(self) -> str:
        return " + ".join(self.variants) if self.variants else "no variant"


@dataclass(frozen=True)
class ResultRow:
    """What one probe measured on one recommender."""

    recommender: str
    probe: str
    status: str
    metrics: dict[str, Metric]
    details: dict[str, Any]
    reason: str = ""
    headline: str | None = None
    probe_name: str | None = None


@dataclass(frozen=True)
class GateRow:
    probe: str
    metric: str
    recommender: str
    op: str
    threshold: float
    value: float | None
    passed: bool


@dataclass(frozen=True)
class Report:
    """A parsed ``report.json``."""

    suite: str
    created: str
    dataset: dict[str, Any]
    recommenders: tuple[RecommenderInfo, ...]
    results: tuple[ResultRow, ...]
    gates: tuple[GateRow, ...]
    #: the report's ``pairs`` entries as written (paired differences b - a); read one by one by
    #: :func:`dashboard.pairs.pair_sections`, so one malformed entry does not hide the others
    pairs: tuple[Any, ...] = ()

    @property
    def probes(self) -> list[str]:
        """Probe names in the order they first appear in the results."""
        return list(dict.fromkeys(r.probe for r in self.results))

    @property
    def recommender_names(self) -> list[str]:
        names = [r.name for r in self.recommenders]
        names += [r.recommender for r in self.results if r.recommender not in names]
        return list(dict.fromkeys(names))

    def recommender(self, name: str) -> RecommenderInfo:
        for r in self.recommenders:
            if r.name == name:
                return r
        return RecommenderInfo(name=name, variants=())

    def result(self, recommender: str, probe: str) -> ResultRow | None:
        for r in self.results:
            if r.recommender == recommender and r.probe == probe:
                return r
        return None

    def results_for_probe(self, probe: str) -> list[ResultRow]:
        return [r for r in self.results if r.probe == probe]

    @property
    def gates_passed(self) -> int:
        return sum(g.passed for g in self.gates)

    @property
    def gates_failed(self) -> int:
        return sum(not g.passed for g in self.gates)


def variant_names(variant: Any) -> tuple[str, ...]:
    """Normalise a report's ``variant`` field to a tuple of names; None/""/[]/{} mean none.

    A string is one name, or several joined by ``+`` as the runner writes them
    (``"dp+grounding"``); a list names each (strings, or one-key mappings by their key);
    a mapping names its keys (``{dp: {epsilon: 8}}`` -> ``("dp",)``).
    """
    if variant is None or variant == "" or variant == [] or variant == {}:
        return ()
    if isinstance(variant, str):
        return tuple(part.strip() for part in variant.split("+") if part.strip())
    if isinstance(variant, dict):
        return tuple(str(k) for k in variant)
    if isinstance(variant, (list, tuple)):
        out: list[str] = []
        for v in variant:
            out.extend(variant_names(v))
        return tuple(out)
    return (str(variant),)


def _metric(m: _MetricModel) -> Metric:
    value = float("nan") if m.value is None else float(m.value)
    ci = None
    if m.ci is not None:
        lo, hi = (float("nan") if c is None else float(c) for c in m.ci)
        ci = (lo, hi)
    extra = m.model_extra or {}
    unit = extra.get("unit", "users")
    spec = extra.get("spec")
    per_unit = extra.get("per_unit")
    return Metric(value=value, n=int(m.n), ci=ci, unit=str(unit),
                  spec=MetricSpec.from_json(spec) if isinstance(spec, dict) else None,
                  per_unit=per_unit if isinstance(per_unit, dict) else None)


def _one_line(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def parse_report(data: Any) -> Report:
    """Validate decoded ``report.json`` content and return a :class:`Report`.

    Raises :class:`ReportFormatError` (one line naming the field) when the content is not
    a schema-1 report.
    """
    if not isinstance(data, dict):
        raise ReportFormatError(f"expected a JSON object at the top level, got {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise ReportFormatError("missing 'schema_version' (expected 1 or 2); is this a recaudit report?")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ReportFormatError(f"schema_version {version!r} is not supported; this dashboard reads "
                                f"schema_version {' or '.join(map(str, READABLE_SCHEMA_VERSIONS))}")
    try:
        model = _ReportModel.model_validate(data)
    except ValidationError as exc:
        raise ReportFormatError(_one_line(exc)) from None
    recommenders = tuple(
        RecommenderInfo(name=r.name,
                        variants=variant_names(r.variant if r.variant is not None
                                               else (r.model_extra or {}).get("variants")),
                        config=dict(r.config), info=dict(r.info))
        for r in model.recommenders)
    results = tuple(
        ResultRow(recommender=r.recommender, probe=r.probe, status=r.status,
                  metrics={k: _metric(m) for k, m in r.metrics.items()},
                  details=dict(r.details), reason=r.reason, headline=r.headline,
                  probe_name=r.probe_name)
        for r in model.results)
    gates = tuple(GateRow(probe=g.probe, metric=g.metric, recommender=g.recommender, op=g.op,
                          threshold=g.threshold, value=g.value, passed=g.passed)
                  for g in model.gates)
    raw_pairs = (model.model_extra or {}).get("pairs")
    return Report(suite=model.suite, created=model.created, dataset=dict(model.dataset),
                  recommenders=recommenders, results=results, gates=gates,
                  pairs=tuple(raw_pairs) if isinstance(raw_pairs, list) else ())


def format_value(x: float | None, digits: int = 3) -> str:
    """A number for a table cell; NaN/None as an en dash."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def format_metric(m: Metric, digits: int = 3) -> str:
    """``0.412 [0.380, 0.445] n=300``; the CI is left out when the number is not sampled
    (or its bounds are unknown)."""
    text = format_value(m.value, digits)
    if m.ci is not None and all(math.isfinite(c) for c in m.ci):
        text += f" [{format_value(m.ci[0], digits)}, {format_value(m.ci[1], digits)}]"
    return f"{text} n={m.n}"
