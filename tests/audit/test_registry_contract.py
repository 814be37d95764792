"""Every registered adapter, variant, probe and executor imports and honours its contract (garak-style).

The names come from the registries at collection time, so a name registered without its
module, or a plug-in with missing metadata, fails here by name.
"""

from __future__ import annotations

import inspect

import pytest

from audit import capabilities
from audit.capabilities import unmet
from audit.config import StrictConfig
from audit.executors import EXECUTORS, Executor
from audit.interface import CAPABILITIES, Recommender
from audit.probes.base import Probe, ProbeConfig
from audit.registry import ADAPTERS, PROBES, VARIANTS
from audit.variants import Variant


def _overrides(cls: type, base: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(base, method)


@pytest.mark.parametrize("name", PROBES.names())
def test_probe_contract(name: str) -> None:
    cls = PROBES.get(name)
    assert inspect.isclass(cls) and issubclass(cls, Probe), f"{name}: not a Probe subclass"
    assert cls.name == name, f"{name}: class attribute name is {cls.name!r}"
    assert cls.description.strip() and PROBES.description(name).strip(), f"{name}: no description"
    assert issubclass(cls.Config, ProbeConfig) and issubclass(cls.Config, StrictConfig)
    assert isinstance(cls.requires, frozenset) and cls.requires <= CAPABILITIES, \
        f"{name}: requires {sorted(cls.requires - CAPABILITIES)} beyond {sorted(CAPABILITIES)}"
    assert _overrides(cls, Probe, "run"), f"{name}: does not implement run"
    headline = getattr(cls, "headline", None)
    assert headline is None or isinstance(headline, str)


@pytest.mark.parametrize("name", VARIANTS.names())
def test_variant_contract(name: str) -> None:
    cls = VARIANTS.get(name)
    assert inspect.isclass(cls) and issubclass(cls, Variant), f"{name}: not a Variant subclass"
    assert cls.name == name, f"{name}: class attribute name is {cls.name!r}"
    assert VARIANTS.description(name).strip(), f"{name}: no description"
    assert issubclass(cls.Config, StrictConfig)
    assert isinstance(cls.trains, bool)
    hook = "modify_recipe" if cls.trains else "wrap"
    assert _overrides(cls, Variant, hook), f"{name}: trains={cls.trains} but does not override {hook}"


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_adapter_contract(name: str) -> None:
    cls = ADAPTERS.get(name)
    assert inspect.isclass(cls) and issubclass(cls, Recommender), f"{name}: not a Recommender subclass"
    assert ADAPTERS.description(name).strip(), f"{name}: no description"
    assert issubclass(cls.Config, StrictConfig)
    assert isinstance(cls.capabilities, frozenset) and cls.capabilities <= CAPABILITIES, \
        f"{name}: capabilities {sorted(cls.capabilities - CAPABILITIES)} beyond {sorted(CAPABILITIES)}"
    assert isinstance(inspect.getattr_static(cls, "build"), classmethod), f"{name}: build is not a classmethod"
    assert list(inspect.signature(cls.build).parameters)[:3] == ["config", "ctx", "training_variants"]


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_adapter_implements_every_capability_it_declares(name: str) -> None:
    cls = ADAPTERS.get(name)
    assert unmet(cls) == [], f"{name}: {unmet(cls)}"


def test_a_declared_capability_without_its_implementation_is_caught() -> None:
    class Boasting(Recommender):
        capabilities = frozenset({"score", "embed-user", "constrain", "soft-prompt", "generate"})

        def generate_detailed(self, reqs, k):  # kept: the one promise honoured
            return []

    problems = unmet(Boasting)
    assert [p.split(":")[0] for p in problems] == ["constrain", "embed-user", "score", "soft-prompt"]
    assert "constraint_layout" in problems[0] and "with_soft_prefix" in problems[3]


def test_every_capability_names_what_keeps_it() -> None:
    trained = {c for c in CAPABILITIES if c.startswith("train")}
    assert CAPABILITIES - trained == set(capabilities.METHODS) | set(capabilities.PROTOCOLS)
    assert all("_" not in c for c in CAPABILITIES), "capabilities are named with hyphens"


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_executor_contract(name: str) -> None:
    cls = EXECUTORS.get(name)
    assert issubclass(cls, Executor) and issubclass(cls.Config, StrictConfig)
    assert cls.name == name and EXECUTORS.description(name).strip()
    assert _overrides(cls, Executor, "run")
    cls(cls.Config())  # default options are valid
