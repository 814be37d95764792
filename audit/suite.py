"""Suite files: one YAML file naming a data set, recommenders, probes, gates and an executor.

```yaml
name: quick
include: base.yaml            # optional; one file or a list, paths relative to this file
dataset: {name: ml-100k, users: 300, seed: 0}
seed: 0
recommenders:
  reference: {adapter: reference}
  reference+constrained: {adapter: reference, variant: constrained-decoding}
probes:
  utility: {k: [10]}
  fairness_age: {probe: fairness, attributes: [[age]]}   # alias: run one probe twice
gates:
  - {probe: utility, metric: ndcg@10, recommender: reference, op: ">=", threshold: 0.05}
  - {probe: utility, metric: hr@10, pair: [reference, reference+constrained], op: ">=", threshold: -0.05, on: ci_low}
compare: [{a: reference, b: reference+constrained}]   # pairs beyond the variant-of-parent ones (audit.pairs)
executor: {type: local}       # or {type: ray, address: "ray://head:10001", num_cpus: 2}
cache: true
```

Everything is validated at load, before any model is built: YAML syntax (with
file, line and column), the top-level keys (pydantic), adapter / variant / probe /
executor names (registry messages with suggestions; checked before any of their
modules is imported), adapter, variant and probe options, and the names gates
refer to (a gate's ``pair`` must be a pair of the suite; a ``compare:`` pair must name two
recommenders some probe runs on; a gate's ``metric`` must be one its probe declares it can emit
with its options, :meth:`audit.probes.base.Probe.emitted_metrics`, with "did you mean"). The names and the data set spec are checked first, importing nothing they
name; the options then import the modules that declare them (adapter, variant and probe
modules import no model library at module level).

``include`` merges the included files first (in order), then this file: top-level
keys of this file win; for mapping sections (``dataset``, ``recommenders``,
``probes``, ``executor``) the merge is per entry, so a file can add or replace a
recommender of its base. Relative paths inside the suite (data files, Python
modules) are resolved against the directory of the top-level suite file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import Field

from audit.build import adapter_class, check_variants_supported, make_variants, parse_variants
from audit.config import StrictConfig, validate_config
from audit.data.spec import DatasetSpec
from audit.errors import ConfigError, RecauditError, UnknownNameError, suggest
from audit.gates import GateSpec
from audit.errors import did_you_mean  # noqa: F401  (re-exported: callers import it from here)
from audit.pairs import Pair, PairSpec, suite_pairs
from audit.probes.base import Probe, ProbeConfig
from audit.registry import ADAPTERS, EXECUTORS, PROBES, VARIANTS, Registry
from audit.results import RUNNER_METRICS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+@=-]*$"
PROBE_ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
_MERGED_SECTIONS = ("dataset", "recommenders", "probes", "executor")


class SuiteFile(StrictConfig):
    """The top-level keys of a suite file (after ``include`` is merged)."""

    #: the suite's name (the default report directory is ``reports/<name>``)
    name: str = Field(pattern=NAME_PATTERN)
    #: free text shown in the report
    description: str = ""
    #: the data set and the users audited (see ``dataset:`` below)
    dataset: dict[str, Any]
    #: the run's seed: model training and every probe's sampling (each probe adds its own ``seed``)
    seed: int = 0
    #: ``NAME: {adapter: ..., variant: ..., ...options}`` per recommender (see ``recommenders:`` below)
    recommenders: dict[str, dict[str, Any]] = Field(min_length=1)
    #: ``KEY: {options}`` per probe job (see ``probes:`` below)
    probes: dict[str, dict[str, Any] | None] = Field(min_length=1)
    #: thresholds that decide the exit code (1 when one fails)
    gates: list[GateSpec] = Field(default_factory=list)
    #: pairs of recommenders compared on the same users, beyond each variant's pair with its parent
    compare: list[PairSpec] = Field(default_factory=list)
    #: where jobs run: ``{type: local}`` or ``{type: ray, ...}`` (see ``executor:`` below)
    executor: dict[str, Any] = Field(default_factory=lambda: {"type": "local"})
    #: read and write the shared result cache (false: recompute, but the run directory still resumes)
    cache: bool = True


@dataclass(frozen=True)
class ProbeSpec:
    """One probe job template: ``alias`` (its key in the suite), the registered probe
    ``name``, the probe class and its validated config."""

    alias: str
    name: str
    cls: type
    config: ProbeConfig

    def config_json(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


@dataclass
class Suite:
    """A loaded, validated suite."""

    name: str
    dataset: dict[str, Any]
    recommenders: dict[str, dict[str, Any]]
    probes: list[ProbeSpec]
    gates: list[GateSpec] = field(default_factory=list)
    seed: int = 0
    executor_type: str = "local"
    executor_config: StrictConfig | None = None
    cache: bool = True
    description: str = ""
    path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    dataset_spec: DatasetSpec | None = None
    #: pairs compared on the same units: variant-of-parent pairs and ``compare:`` (audit.pairs)
    pairs: list[Pair] = field(default_factory=list)

    def pair(self, a: str, b: str) -> Pair | None:
        """The pair comparing ``b`` with ``a``, or None."""
        return next((p for p in self.pairs if (p.a, p.b) == (a, b)), None)

    def probe(self, alias: str) -> ProbeSpec:
        for p in self.probes:
            if p.alias == alias:
                return p
        raise KeyError(alias)

    @property
    def users(self) -> int | None:
        """How many users the probes audit (None = every evaluable user)."""
        return self.dataset.get("users")

    @property
    def users_seed(self) -> int:
        return int(self.dataset.get("seed", 0) or 0)

    def check_probe_recommenders(self) -> None:
        """ConfigError when a probe's ``recommenders:`` names a recommender not in this suite."""
        for p in self.probes:
            for name in p.config.recommenders or ():
                if name not in self.recommenders:
                    raise ConfigError(f"probes.{p.alias}.recommenders: {name!r} is not a recommender of this "
                                      f"suite.{did_you_mean(name, list(self.recommenders))}")

    def check_gates(self, gates: list[GateSpec], where: str = "gates") -> None:
        """Raise ConfigError when a gate names a probe or recommender not in this suite, or a metric
        its probe cannot emit with its options (:meth:`audit.probes.base.Probe.emitted_metrics`)."""
        probes = [p.alias for p in self.probes]
        for i, gate in enumerate(gates):
            loc = f"{where}[{i}] ({gate.describe()})"
            if gate.probe not in probes:
                raise ConfigError(f"{loc}: unknown probe {gate.probe!r}.{did_you_mean(gate.probe, probes)} "
                                  f"Probes of this suite: {', '.join(probes)}")
            if gate.pair is not None:
                self._check_gate_pair(gate, loc)
            if gate.recommender is not None and gate.recommender not in self.recommenders:
                names = list(self.recommenders)
                raise ConfigError(f"{loc}: unknown recommender {gate.recommender!r}."
                                  f"{did_you_mean(gate.recommender, names)} Recommenders of this suite: {', '.join(names)}")
            self._check_gate_metric(gate, loc)

    def _check_gate_metric(self, gate: GateSpec, loc: str) -> None:
        probe = self.probe(gate.probe)
        emitted = probe.cls.emitted_metrics(probe.config) if issubclass(probe.cls, Probe) else None
        if emitted is None or gate.metric in emitted or gate.metric in RUNNER_METRICS:
            return
        close = emitted.closest(gate.metric, n=3, cutoff=0.5)
        others = [n for n in emitted.closest(gate.metric, n=6 + len(close)) if n not in close][:6]
        listed = f"{'Other names' if close else 'Names'} it emits: {', '.join(others)}" if others else ""
        more = f" ({len(emitted)} in all; docs/metrics.md says how they are formed)" \
            if len(emitted) > len(others) + len(close) else ""
        which = f"probe {gate.probe!r}" + (f" ({probe.name})" if probe.name != gate.probe else "")
        raise ConfigError(f"{loc}: {which} does not emit {gate.metric!r} with its options.{suggest(close)} "
                          f"{listed}{more}".rstrip())


    def _check_gate_pair(self, gate: GateSpec, loc: str) -> None:
        a, b = gate.pair  # type: ignore[misc]
        if self.pair(a, b) is None:
            known = ", ".join(f"[{p.a}, {p.b}]" for p in self.pairs) or "none"
            reverse = " (the suite compares them the other way round: swap a and b)" if self.pair(b, a) else ""
            raise ConfigError(f"{loc}: [{a}, {b}] is not a pair of this suite{reverse}; pairs: {known}. "
                              f"Name it under 'compare: [{{a: {a}, b: {b}}}]' or build {b} as a variant of {a}")
        probe = self.probe(gate.probe)
        if probe.config.recommenders is not None and not {a, b} <= set(probe.config.recommenders):
            raise ConfigError(f"{loc}: probe {gate.probe!r} does not run on both {a!r} and {b!r}")


# -- YAML ----------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (YAML would silently keep the last)."""


_BOOL_TAG, _STR_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str"


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        # YAML 1.1 reads plain `on:`, `off:`, `yes:`, `no:` keys as booleans (a gate's `on: ci_low`
        # would become `True: ci_low`); as keys they are the words written, as in YAML 1.2
        if (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _BOOL_TAG and key_node.style is None
                and key_node.value.lower() not in ("true", "false")):
            key_node.tag = _STR_TAG
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}",
                                                    key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors -> ConfigError ``FILE:LINE:COLUMN: invalid YAML: ...``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read suite file {path}: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"{where}: invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def _merge(base: dict[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in local.items():
        if key in _MERGED_SECTIONS and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def read_suite_mapping(path: Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The suite file's mapping with its ``include`` files merged in (local keys win)."""
    path = Path(path).resolve()
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite file is a mapping (name, dataset, recommenders, probes, ...), "
                          f"got a {type(data).__name__}")
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: include must be a file name or a list of file names, got {includes!r}")
    merged: dict[str, Any] = {}
    for item in includes:
        target = (path.parent / item).resolve()
        if target in _stack or target == path:
            chain = " -> ".join(str(p) for p in (*_stack, path, target))
            raise ConfigError(f"{path}: include {item!r} is circular ({chain})")
        if not target.is_file():
            raise ConfigError(f"{path}: include {item!r}: file not found ({target})")
        merged = _merge(merged, read_suite_mapping(target, (*_stack, path)))
    return _merge(merged, data)


# -- validation ---------------------------------------------------------------------------
def _registry_check(registry: Registry[Any], name: Any, where: str) -> None:
    """UnknownNameError for a name ``registry`` lacks, prefixed with ``where``; imports nothing."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: {registry.kind} name must be a string, got {name!r}")
    try:
        registry.check(name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{where}: {exc}") from None


def _registry_get(registry: Registry[Any], name: Any, where: str) -> Any:
    _registry_check(registry, name, where)
    try:
        return registry.get(name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{where}: {exc}") from None
    except (ImportError, AttributeError) as exc:
        raise RecauditError(f"{where}: the {registry.kind} {name!r} is registered but cannot be imported "
                            f"({type(exc).__name__}: {exc}); is its module installed?") from exc


def check_names(model: SuiteFile) -> None:
    """Every adapter, variant, probe and executor the suite names is registered.

    Runs before any option is validated and imports no adapter, variant or probe module, so a
    misspelt name is reported at once."""
    for name, entry in model.recommenders.items():
        where = f"recommenders.{name}"
        if "adapter" in entry:
            _registry_check(ADAPTERS, entry["adapter"], where)
        for variant, _ in parse_variants(entry.get("variant"), where):
            _registry_check(VARIANTS, variant, where)
    for alias, options in model.probes.items():
        _registry_check(PROBES, (options or {}).get("probe", alias), f"probes.{alias}")
    _registry_check(EXECUTORS, model.executor.get("type", "local"), "executor")


def check_recommender_entry(name: str, entry: Any, base_dir: Path | None = None) -> None:
    """Validate one ``recommenders`` entry without building it: adapter and variant names,
    their options, what the options name outside the suite (:meth:`Adapter.check`, e.g. the
    ``python`` adapter imports its targets from ``base_dir`` or the working directory), and that
    training variants go with a trainable adapter."""
    where = f"recommenders.{name}"
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(f"{where}: a recommender name uses letters, digits and _ . + @ = - "
                          f"(and starts with a letter or digit), got {name!r}")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping like {{adapter: reference}}, got {entry!r}")
    if "adapter" not in entry:
        raise ConfigError(f"{where}: missing 'adapter' (one of: {', '.join(ADAPTERS.names())})")
    _registry_get(ADAPTERS, entry["adapter"], where)
    adapter = adapter_class(str(entry["adapter"]), where)
    variants = make_variants(entry.get("variant"), where)
    options = {k: v for k, v in entry.items() if k not in ("adapter", "variant")}
    config = validate_config(adapter.Config, options, f"{where} (adapter {entry['adapter']!r})")
    try:
        adapter.check(config, base_dir)
    except ConfigError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    check_variants_supported(str(entry["adapter"]), adapter, variants, where, config)


def _probe_spec(alias: str, options: dict[str, Any] | None) -> ProbeSpec:
    where = f"probes.{alias}"
    if not re.match(PROBE_ALIAS_PATTERN, alias):
        raise ConfigError(f"{where}: a probe key uses letters, digits, _ + - (no dots), got {alias!r}")
    options = dict(options or {})
    name = options.pop("probe", alias)
    cls = _registry_get(PROBES, name, where)
    config = validate_config(cls.Config, options, f"{where} (probe {name!r})")
    return ProbeSpec(alias=alias, name=name, cls=cls, config=config)


def validate_dataset_spec(data: dict[str, Any]) -> DatasetSpec:
    """The suite's ``dataset:`` mapping as a validated :class:`~audit.data.spec.DatasetSpec`."""
    return validate_config(DatasetSpec, data, "dataset")


def suite_from_mapping(data: Mapping[str, Any], *, path: Path | None = None,
                       base_dir: Path | None = None, validate_dataset: bool = True) -> Suite:
    """Validate a suite mapping (as read from YAML) into a :class:`Suite`.

    ``validate_dataset=False`` skips the data set spec check (for callers that pass an
    already-loaded :class:`~audit.data.dataset.Dataset` to the runner)."""
    where = str(path) if path is not None else "suite"
    model = validate_config(SuiteFile, dict(data), where)
    check_names(model)
    dataset_spec = validate_dataset_spec(dict(model.dataset)) if validate_dataset else None
    resolved_base = Path(base_dir) if base_dir is not None else (path.parent if path is not None else Path.cwd())
    for name, entry in model.recommenders.items():
        check_recommender_entry(name, entry, resolved_base)
    probes = [_probe_spec(alias, opts) for alias, opts in model.probes.items()]
    executor_options = dict(model.executor)
    executor_type = executor_options.pop("type", "local")
    executor_cls = _registry_get(EXECUTORS, executor_type, "executor")
    executor_config = validate_config(executor_cls.Config, executor_options, f"executor (type {executor_type!r})")
    suite = Suite(
        name=model.name, description=model.description, dataset=dict(model.dataset),
        recommenders={k: dict(v) for k, v in model.recommenders.items()}, probes=probes,
        gates=list(model.gates), seed=model.seed, executor_type=executor_type,
        executor_config=executor_config, cache=model.cache, path=path,
        pairs=suite_pairs(model.recommenders, model.compare, probes),
        base_dir=resolved_base,
    )
    suite.check_gates(suite.gates)
    suite.check_probe_recommenders()
    suite.dataset_spec = dataset_spec
    return suite


def load_suite(path: str | Path, *, validate_dataset: bool = True) -> Suite:
    """Read, merge ``include``-s and validate a suite file (raises ConfigError / UnknownNameError)."""
    path = Path(path).resolve()
    return suite_from_mapping(read_suite_mapping(path), path=path, base_dir=path.parent,
                              validate_dataset=validate_dataset)
