"""Result types shared by probes, the runner, reports and the dashboard."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

Status = Literal["pass", "fail", "skip", "error"]
Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means, declared by the probe that emits it.

    ``direction``: which way is better for the audited model (``higher``/``lower``), or None
    (context such as a baseline, a p-value or a signed difference: never gated by compare);
    ``range``: (low, high) the value can take (None = unbounded on that side);
    ``chance``: the value of a model that knows nothing, where one exists (0.5 for an AUROC,
    k/(n+1) for HR@k among n sampled negatives); ``unit``: what the value counts;
    ``sampled``: True when the value is estimated from sampled units (it has a CI), False when
    it is exact (an accounted epsilon); ``meaning``: one short sentence."""

    direction: Direction | None
    range: tuple[float | None, float | None] = (0.0, 1.0)
    chance: float | None = None
    unit: str = "share"
    sampled: bool = True
    meaning: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"direction": self.direction, "range": list(self.range), "chance": self.chance,
                "unit": self.unit, "sampled": self.sampled, "meaning": self.meaning}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MetricSpec":
        lo, hi = (list(data.get("range") or [None, None]) + [None, None])[:2]
        return cls(direction=data.get("direction"), range=(lo, hi), chance=data.get("chance"),
                   unit=str(data.get("unit", "")), sampled=bool(data.get("sampled", True)),
                   meaning=str(data.get("meaning", "")))

    def at(self, **changes: Any) -> "MetricSpec":
        """A copy with some fields changed (e.g. a chance level that depends on k)."""
        return replace(self, **changes)


def _bound(x: float | None, inf: str) -> str:
    return inf if x is None else f"{x:g}"


def spec_table_markdown(specs: Mapping[str, MetricSpec]) -> str:
    """A Markdown table of declared metrics: name, better, range, chance, unit, sampled, meaning
    (docs/metrics.md's tables are rendered with this; '|' escaped)."""
    lines = ["| metric | better | range | chance | unit | sampled | meaning |", "|---|---|---|---|---|---|---|"]
    for name, s in specs.items():
        better = {"higher": "higher", "lower": "lower", None: "– (context)"}[s.direction]
        rng = f"[{_bound(s.range[0], '-inf')}, {_bound(s.range[1], 'inf')}]"
        chance = "–" if s.chance is None else f"{s.chance:.3g}"
        unit, meaning = (" ".join(x.split()).replace("|", "\\|") for x in (s.unit, s.meaning))
        lines.append(f"| `{name}` | {better} | {rng} | {chance} | {unit} | {'yes' if s.sampled else 'no'} "
                     f"| {meaning} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class NameFamily:
    """Metric names with parts known only when the probe runs (a data set's attribute value, an item
    id, a canary repetition count): the literal ``parts`` with one parameter between each two of
    them, ``params`` saying what each parameter is (shown as ``<...>``). ``integer``: the parameters
    are whole numbers; else each is any text without ``=`` or ``&`` (the separators of conditions).

    ``NameFamily(("hr_gender=", ""), ("gender value",))`` stands for ``hr_gender=F``, ``hr_gender=M``."""

    parts: tuple[str, ...]
    params: tuple[str, ...]
    integer: bool = False

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.params) + 1 or not self.params:
            raise ValueError(f"a name family has one more literal part than parameters, got {self.parts} "
                             f"around {self.params}")

    def matches(self, name: str) -> bool:
        """Whether ``name`` is one of this family's names."""
        param = r"[0-9]+" if self.integer else r"[^=&]+"
        return re.fullmatch(param.join(re.escape(p) for p in self.parts), name) is not None

    @property
    def shown(self) -> str:
        """The family as messages and docs show it: ``hr_gender=<gender value>``."""
        out = self.parts[0]
        for param, part in zip(self.params, self.parts[1:]):
            out += f"<{param}>{part}"
        return out


#: metric names the runner adds to a probe's own (:meth:`audit.probes.base.Probe.emitted_metrics`):
#: ``failed_requests`` to every probe that sent generate requests
RUNNER_METRICS: frozenset[str] = frozenset({"failed_requests"})


@dataclass(frozen=True)
class MetricNames:
    """The metric names a probe can emit with one config, declared before it runs
    (:meth:`audit.probes.base.Probe.emitted_metrics`): exact ``names`` and ``families`` of names
    with a part known only when it runs. Where what a probe emits depends on the recommender (a
    score-based figure only for a recommender that scores), this is the union over recommenders:
    a name in it may be absent from one run, a name outside it is never emitted. The order is the
    probe's (its main figures first): suggestions for a misspelt name keep it among equals."""

    names: tuple[str, ...] = ()
    families: tuple[NameFamily, ...] = ()

    def __post_init__(self) -> None:  # each name once, in the order given
        object.__setattr__(self, "names", tuple(dict.fromkeys(self.names)))
        object.__setattr__(self, "families", tuple(dict.fromkeys(self.families)))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names or any(f.matches(name) for f in self.families))

    def __or__(self, other: "MetricNames") -> "MetricNames":
        return MetricNames(self.names + other.names, self.families + other.families)

    def __len__(self) -> int:
        return len(self.names) + len(self.families)

    def shown(self) -> list[str]:
        """Every exact name, then every family as :attr:`NameFamily.shown` writes it (declared order)."""
        return list(self.names) + [f.shown for f in self.families]

    def closest(self, name: str, n: int = 8, cutoff: float = 0.0) -> list[str]:
        """Up to ``n`` shown names most like ``name``: first those holding all of its ``_``-separated
        words in order (words left out: ``snsr_gender`` -> ``snsr_jaccard_gender``), fewest words
        added first, then in declared order; then the rest with difflib's ratio >= ``cutoff``, most
        alike first."""
        import difflib

        words = name.split("_")
        # a family is compared by its literal text too (its parameters cannot be spelt wrong)
        literals = list(self.names) + ["".join(f.parts) for f in self.families]
        ranked: list[tuple[int, float, int, str]] = []  # (group, order within it, declared index, name)
        for index, (shown, literal) in enumerate(zip(self.shown(), literals)):
            parts = shown.split("_")
            it = iter(parts)
            if len(words) > 1 and all(w in it for w in words):
                ranked.append((0, len(parts) - len(words), index, shown))
                continue
            ratio = max(difflib.SequenceMatcher(None, name, text).ratio() for text in {shown, literal})
            if ratio >= cutoff:
                ranked.append((1, -ratio, index, shown))
        return [shown for *_, shown in sorted(ranked)[:n]]


@dataclass(frozen=True)
class Metric:
    """One reported number: its value, a confidence interval where sampled, and n.

    ``n`` is the number of independent units the value averages over (users,
    unless ``unit`` says otherwise). ``ci`` is a 95% bootstrap interval or None
    when the number is not sampled (e.g. an accounted epsilon).
    """

    value: float
    n: int
    ci: tuple[float, float] | None = None
    unit: str = "users"
    spec: MetricSpec | None = None
    #: per-unit values (user id -> value) behind a mean, for paired comparisons between runs
    per_unit: Mapping[str, float] | None = None

    def declare(self, spec: MetricSpec) -> "Metric":
        """This metric with its declared meaning attached."""
        return replace(self, spec=spec)

    def with_units(self, units: "list[str] | tuple[str, ...]", values: Any) -> "Metric":
        """This metric with its per-unit values (same order as ``units``; NaN values dropped)."""
        vals = [float(v) for v in values]
        return replace(self, per_unit={str(u): v for u, v in zip(units, vals) if math.isfinite(v)})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": _finite(self.value), "n": int(self.n)}
        out["ci"] = None if self.ci is None else [_finite(self.ci[0]), _finite(self.ci[1])]
        if self.unit != "users":
            out["unit"] = self.unit
        if self.spec is not None:
            out["spec"] = self.spec.to_json()
        if self.per_unit is not None:
            out["per_unit"] = {u: round(float(v), 6) for u, v in self.per_unit.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Metric":
        ci = data.get("ci")
        spec = data.get("spec")
        return cls(value=_nan_if_none(data["value"]), n=int(data["n"]),
                   ci=None if ci is None else (_nan_if_none(ci[0]), _nan_if_none(ci[1])),
                   unit=data.get("unit", "users"),
                   spec=None if spec is None else MetricSpec.from_json(spec),
                   per_unit=data.get("per_unit"))


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class ProbeResult:
    """What one probe measured on one recommender."""

    status: Status
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def skipped(cls, reason: str) -> "ProbeResult":
        return cls(status="skip", reason=reason)

    @classmethod
    def errored(cls, reason: str) -> "ProbeResult":
        return cls(status="error", reason=reason)

    def declare(self, specs: Mapping[str, MetricSpec]) -> "ProbeResult":
        """Attach ``specs[name]`` to each metric named there (metrics already declared keep theirs)."""
        self.metrics = {name: (m.declare(specs[name]) if m.spec is None and name in specs else m)
                        for name, m in self.metrics.items()}
        return self

    def undeclared(self) -> list[str]:
        """Names of emitted metrics without a declared meaning."""
        return [name for name, m in self.metrics.items() if m.spec is None]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status,
                "metrics": {k: m.to_json() for k, m in self.metrics.items()},
                "details": self.details, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProbeResult":
        return cls(status=data["status"],
                   metrics={k: Metric.from_json(v) for k, v in data.get("metrics", {}).items()},
                   details=data.get("details", {}), reason=data.get("reason", ""))
