"""Gates: thresholds on reported metrics that decide a run's exit code.

A gate names a probe (its key in the suite), a metric, a recommender (or none:
every recommender of the suite), a comparison and a threshold, and which number
to compare: the point ``value``, the CI's lower bound ``ci_low`` or its upper
bound ``ci_high``. ``use: ci_high`` with ``op: "<"`` reads "the whole CI must lie
below the threshold". ``==`` compares with ``math.isclose`` (rel 1e-9, abs 1e-12).

A gate may instead name a ``pair: [a, b]`` of the suite (see :mod:`audit.pairs`): it reads the
paired difference ``b - a`` of the metric (value, ``ci_low``, ``ci_high``) from the report's
``pairs`` list, e.g. non-inferiority ``{probe: utility, metric: hr@10, pair: [llm+lora, llm+lora+dp8],
op: ">=", threshold: -0.05, on: ci_low}`` (``on`` is another spelling of ``use``); its message
carries the difference's CI and n.

A gate whose metric was not measured (job skipped or errored, metric absent,
value or CI missing) fails, with the reason: a gate never passes silently.

Gates read the metric's declared meaning (:class:`audit.results.MetricSpec`), not its name:
a gate whose comparison points against the declared better direction (``>=`` on a
lower-is-better metric), or whose threshold lies outside the declared range, is evaluated
as written but carries a note saying so in its ``reason``.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from pydantic import AliasChoices, Field, model_validator

from audit.config import StrictConfig, validate_config
from audit.errors import ConfigError
from audit.results import ProbeResult

Op = Literal["<=", "<", ">=", ">", "=="]
Use = Literal["value", "ci_low", "ci_high"]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}

_FAIL_ON = re.compile(r"^\s*(?:(?P<recommender>[^:]+):)?(?P<probe>[^.:\s]+)\.(?P<metric>[^\s<>=]+)\s*"
                      r"(?P<op><=|>=|==|<|>)\s*(?P<threshold>\S+)\s*$")


class GateSpec(StrictConfig):
    """One gate as written in a suite file (``recommender: null`` = every recommender; ``pair: [a, b]``
    gates the paired difference b - a instead of one recommender's value)."""

    #: the probe's key in the suite's ``probes:``
    probe: str
    #: an emitted metric name (``hr@10``, ``snsr_jaccard_gender``; docs/metrics.md lists the families); a name
    #: the probe cannot emit with its options is an error at load
    metric: str
    #: the recommender whose value is gated (null = every recommender the probe runs on)
    recommender: str | None = None
    #: ``[a, b]``: gate the paired difference b - a of two recommenders of the suite instead
    pair: tuple[str, str] | None = None
    #: the comparison the number must pass: ``number op threshold``
    op: Op
    #: the bound the number is compared with
    threshold: float
    #: which number: the point ``value``, or the 95% CI's ``ci_low`` / ``ci_high``
    use: Use = Field("value", validation_alias=AliasChoices("use", "on"))

    @model_validator(mode="after")
    def _one_target(self) -> "GateSpec":
        if self.pair is not None and self.recommender is not None:
            raise ValueError("a gate names either a recommender or a pair: [a, b], not both")
        if self.pair is not None and self.pair[0] == self.pair[1]:
            raise ValueError(f"a pair compares two different recommenders, got {self.pair[0]!r} twice")
        return self

    def describe(self, recommender: str | None = None) -> str:
        rec = (f"[{self.pair[0]}, {self.pair[1]}]" if self.pair is not None
               else recommender or self.recommender or "*")
        what = self.metric if self.use == "value" else f"{self.metric}.{self.use}"
        return f"{rec}:{self.probe}.{what} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class GateOutcome:
    """A gate evaluated on one recommender's result."""

    spec: GateSpec
    recommender: str
    value: float | None
    passed: bool
    reason: str = ""

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        text = f"{self.spec.describe(self.recommender)} (got {shown})"
        return f"{text}: {self.reason}" if self.reason else text

    def to_json(self) -> dict[str, Any]:
        out = {"probe": self.spec.probe, "metric": self.spec.metric, "recommender": self.recommender,
               "op": self.spec.op, "threshold": self.spec.threshold, "use": self.spec.use,
               "value": self.value, "passed": self.passed, "reason": self.reason}
        if self.spec.pair is not None:
            out["pair"] = list(self.spec.pair)
        return out


def parse_fail_on(text: str) -> GateSpec:
    """Parse a CLI gate ``[RECOMMENDER:]PROBE.METRIC OP X`` (e.g. ``utility.ndcg@10>=0.05``,
    ``reference:fairness.snsr_jaccard_gender<=0.1``); ``.ci_low``/``.ci_high`` after the
    metric compares that CI bound instead of the value."""
    m = _FAIL_ON.match(text)
    if m is None:
        raise ConfigError(f"--fail-on {text!r}: expected [RECOMMENDER:]PROBE.METRIC OP NUMBER with OP one of "
                          f"{', '.join(OPERATORS)}, e.g. 'utility.ndcg@10>=0.05'")
    metric, use = m["metric"], "value"
    for bound in ("ci_low", "ci_high"):
        if metric.endswith("." + bound):
            metric, use = metric[: -len(bound) - 1], bound
    try:
        threshold = float(m["threshold"])
    except ValueError:
        raise ConfigError(f"--fail-on {text!r}: threshold {m['threshold']!r} is not a number") from None
    return validate_config(GateSpec, {"probe": m["probe"], "metric": metric, "recommender": m["recommender"],
                                      "op": m["op"], "threshold": threshold, "use": use}, f"--fail-on {text!r}")


def _number(result: ProbeResult, spec: GateSpec) -> tuple[float | None, str]:
    if result.status in ("skip", "error"):
        return None, f"not measured: the job ended in {result.status} ({result.reason})"
    metric = result.metrics.get(spec.metric)
    if metric is None:
        return None, f"metric {spec.metric!r} not reported; available: {', '.join(sorted(result.metrics)) or 'none'}"
    if spec.use == "value":
        x = metric.value
    elif metric.ci is None:
        return None, f"metric {spec.metric!r} has no confidence interval"
    else:
        x = metric.ci[0] if spec.use == "ci_low" else metric.ci[1]
    if x is None or not math.isfinite(x):
        return None, f"{spec.use} of {spec.metric!r} is not a finite number"
    return float(x), ""


def declaration_note(result: ProbeResult, spec: GateSpec) -> str:
    """A note when the gate contradicts the metric's declaration ('' when it agrees or none is declared)."""
    metric = result.metrics.get(spec.metric)
    decl = metric.spec if metric is not None else None
    if decl is None:
        return ""
    notes = []
    if decl.direction == "lower" and spec.op in (">", ">="):
        notes.append(f"note: lower is better for {spec.metric}, but this gate asks for a minimum")
    elif decl.direction == "higher" and spec.op in ("<", "<="):
        notes.append(f"note: higher is better for {spec.metric}, but this gate asks for a maximum")
    lo, hi = decl.range
    if (lo is not None and spec.threshold < lo) or (hi is not None and spec.threshold > hi):
        notes.append(f"note: threshold {spec.threshold:g} is outside the declared range "
                     f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]")
    return "; ".join(notes)


def _pair_gate(spec: GateSpec, pairs: Sequence[Mapping[str, Any]]) -> GateOutcome:
    a, b = spec.pair  # type: ignore[misc]
    entry = next((e for e in pairs if (e["a"], e["b"], e["probe"], e["metric"]) == (a, b, spec.probe, spec.metric)),
                 None)
    if entry is None:
        return GateOutcome(spec, b, None, False, f"no paired difference of {spec.metric!r} for [{a}, {b}] in "
                                                 f"probe {spec.probe!r} (a job skipped or errored, the metric is "
                                                 f"absent, or it carries no per-unit values)")
    ci = entry.get("ci") or [None, None]
    x = entry["value"] if spec.use == "value" else (ci[0] if spec.use == "ci_low" else ci[1])
    lo, hi = (f"{c:.4g}" if isinstance(c, (int, float)) else "n/a" for c in ci)
    text = (f"{b} - {a} = {entry['value']:.4g} [{lo}, {hi}] n={entry['n']} ({entry['method']}, "
            f"p={entry['p_value'] if entry['p_value'] is not None else 'n/a'})")
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return GateOutcome(spec, b, None, False, f"{spec.use} of the difference is not a finite number: {text}")
    return GateOutcome(spec, b, float(x), bool(OPERATORS[spec.op](float(x), spec.threshold)), text)


def evaluate_gates(specs: Sequence[GateSpec], results: Mapping[tuple[str, str], ProbeResult],
                   recommenders: Sequence[str], pairs: Sequence[Mapping[str, Any]] = ()) -> list[GateOutcome]:
    """Evaluate each gate on each recommender it names; ``results`` maps (recommender, probe);
    pair gates read the report's ``pairs`` entries (:func:`audit.pairs.pair_entries`)."""
    out: list[GateOutcome] = []
    for spec in specs:
        if spec.pair is not None:
            out.append(_pair_gate(spec, pairs))
            continue
        for rec in ([spec.recommender] if spec.recommender else list(recommenders)):
            result = results.get((rec, spec.probe))
            if result is None:
                out.append(GateOutcome(spec, rec, None, False, "no such job in this run"))
                continue
            value, why = _number(result, spec)
            if value is None:
                out.append(GateOutcome(spec, rec, None, False, why))
            else:
                out.append(GateOutcome(spec, rec, value, bool(OPERATORS[spec.op](value, spec.threshold)),
                                       declaration_note(result, spec)))
    return out
