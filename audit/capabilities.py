"""What each declared capability obliges a recommender class to implement.

A capability (:data:`audit.interface.CAPABILITIES`) is a promise; this table names what keeps it:
the :class:`~audit.interface.Recommender` methods a class must override (the base methods raise
``CapabilityMissing``), or a ``typing.Protocol`` (a lazy ``"module:Class"`` target) whose members
the class must define. :func:`unmet` lists the broken promises of a class; the registry contract
test runs it over every registered adapter, built-in or plugin.

The ``train*`` capabilities are promises about how the adapter trains (its recipe and trainable
model), kept by its ``build`` taking training variants; they name no method here.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from typing import Any

#: capability -> the Recommender methods a class declaring it overrides
METHODS: dict[str, tuple[str, ...]] = {
    "generate": ("generate_detailed",),
    "score": ("score",),
    "token-logprobs": ("token_logprobs",),
    "token-stats": ("token_logprob_stats",),
    "answer-logprobs": ("answer_logprobs",),
    "answer-generate": ("answer_generate",),
    "embed-user": ("embed_user",),
    "embed": ("embed",),
    "complete": ("complete",),
}

#: capability -> the protocol a class declaring it satisfies (lazy targets: the protocols live
#: with the code that uses them)
PROTOCOLS: dict[str, str] = {
    "constrain": "audit.decoding.constrained:ConstrainableGeneration",
    "soft-prompt": "audit.fairness.fair_prompt:SoftPromptable",
}


def protocol(capability: str) -> Any:
    """The protocol class behind ``capability`` (imported on first use)."""
    module, _, name = PROTOCOLS[capability].partition(":")
    return getattr(importlib.import_module(module), name)


def protocol_members(proto: Any) -> list[str]:
    """The attribute and method names a protocol class declares (its own and inherited)."""
    names: set[str] = set()
    for klass in proto.__mro__:
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= set(getattr(klass, "__annotations__", {}))
    return sorted(names)


def unmet(cls: type) -> list[str]:
    """Each declared capability of ``cls`` whose methods or protocol members it lacks, as
    ``"capability: what is missing"`` (empty when every promise is kept)."""
    from audit.interface import Recommender

    problems = []
    declared = frozenset(getattr(cls, "capabilities", frozenset()))
    for capability in sorted(declared):
        if capability in METHODS:
            missing = [m for m in METHODS[capability] if getattr(cls, m, None) is getattr(Recommender, m, None)]
            if missing:
                problems.append(f"{capability}: does not implement {', '.join(missing)}")
        elif capability in PROTOCOLS:
            members = protocol_members(protocol(capability))
            missing = [m for m in members if not _defines(cls, m)]
            if missing:
                problems.append(f"{capability}: lacks {', '.join(missing)} of {PROTOCOLS[capability]}")
    return problems


def _defines(cls: type, member: str) -> bool:
    """Whether instances of ``cls`` carry ``member``: a class attribute, method or property, or an
    instance attribute an ``__init__`` of the class (or a base) assigns (``self.member = ...``)."""
    if hasattr(cls, member):
        return True
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            source = inspect.getsource(init)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(member)}\s*(:[^=]+)?=(?!=)", source):
            return True
    return False
