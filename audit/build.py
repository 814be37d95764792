"""Build one recommender from its suite entry: adapter + variants, via the registries."""

from __future__ import annotations

from typing import Any

from audit.config import validate_config
from audit.errors import ConfigError
from audit.interface import Adapter, Recommender
from audit.registry import ADAPTERS, VARIANTS
from audit.variants import BuildContext, Variant


def parse_variants(spec: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """``None`` | ``"name"`` | ``{name: {...}}`` | a list of those -> [(name, options)]."""
    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) >= 1:
            for name, opts in item.items():
                if opts is not None and not isinstance(opts, dict):
                    raise ConfigError(f"{where}: options of variant {name!r} must be a mapping, got {opts!r}")
                out.append((str(name), dict(opts or {})))
        else:
            raise ConfigError(f"{where}: a variant is a name or {{name: {{options}}}}, got {item!r}")
    return out


def make_variants(spec: Any, where: str) -> list[Variant]:
    variants = []
    for name, opts in parse_variants(spec, where):
        cls = VARIANTS.get(name)
        variants.append(cls(validate_config(cls.Config, opts, f"{where}: variant {name!r}")))
    return variants


def supports(adapter_cls: Any, variant_cls: Any, config: Any = None) -> bool:
    """Whether an adapter (built from ``config``, when given) declares every capability a variant requires."""
    declared = adapter_cls.capabilities if config is None else adapter_cls.capabilities_for(config)
    return variant_cls.required_capabilities() <= frozenset(declared)


def check_variants_supported(adapter_name: str, adapter_cls: Any, variants: list[Variant], where: str,
                             config: Any = None) -> None:
    """ConfigError, at load time, for a variant the adapter (with ``config``) cannot support, naming the
    adapters that can."""
    for v in variants:
        if not supports(adapter_cls, type(v), config):
            declared = adapter_cls.capabilities if config is None else adapter_cls.capabilities_for(config)
            missing = sorted(type(v).required_capabilities() - frozenset(declared))
            able = [n for n in ADAPTERS.names() if supports(ADAPTERS.get(n), type(v))]
            raise ConfigError(f"{where}: variant {v.name!r} needs {', '.join(missing)}, which adapter "
                              f"{adapter_name!r} does not declare; adapters that support it: "
                              f"{', '.join(able) or 'none'}")
    if sum(1 for v in variants if v.trains and "train-lora" in type(v).required_capabilities()) > 1:
        raise ConfigError(f"{where}: give at most one LoRA training variant")


def adapter_class(name: str, where: str) -> type[Adapter]:
    """The registered adapter ``name``; ConfigError unless it is an :class:`Adapter` subclass."""
    cls = ADAPTERS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"{where}: adapter {name!r} is registered as {cls!r}, which is not an "
                          "audit.interface.Adapter subclass (with Config and build); fix its registration")
    return cls


def build_recommender(name: str, entry: dict[str, Any], ctx: BuildContext) -> Recommender:
    """Build the recommender a suite entry describes.

    ``entry`` is ``{adapter: NAME, variant: ..., **adapter_options}``.
    Training variants edit the adapter's recipe before it builds; wrapping
    variants wrap the result in the order given.
    """
    where = f"recommenders.{name}"
    entry = dict(entry)
    if "adapter" not in entry:
        raise ConfigError(f"{where}: missing 'adapter' (one of: {', '.join(ADAPTERS.names())})")
    adapter_name = entry.pop("adapter")
    variants = make_variants(entry.pop("variant", None), where)
    adapter_cls = adapter_class(adapter_name, where)
    config = validate_config(adapter_cls.Config, entry, f"{where} (adapter {adapter_name!r})")
    check_variants_supported(adapter_name, adapter_cls, variants, where, config)
    training = [v for v in variants if v.trains]
    rec = adapter_cls.build(config, ctx, training)
    for v in variants:
        if not v.trains:
            rec = v.wrap(rec, ctx)
    rec.name = name
    rec.info.setdefault("adapter", adapter_name)
    rec.info["variants"] = [v.describe() for v in variants]
    return rec
