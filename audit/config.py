"""Validating user-written configuration (pydantic) into clear, one-line errors.

Each problem is one line ``WHERE: LOCATION: what is wrong``; several problems are joined by
newlines (the CLI prints one ``recaudit: error:`` line each). An unknown option lists the keys
allowed at its own level (a gate's keys for a typo inside a gate), with a "did you mean" where one
is close; a required key that a close misspelling explains is not reported twice; the value a
problem is about is shown shortened, never the whole parsed mapping.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from audit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: longest value shown in a message (characters of its repr)
SHOWN_VALUE_CHARS = 60


class StrictConfig(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (``X``, ``list[X]``, ``X | None``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field the last part of ``loc`` names (None where the path leaves the models:
    a free-form mapping); list indices and mapping keys on the way are stepped over."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None:
            return None
        field = current.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            continue  # an index or a key of a list/dict field: same model as the field's items
        inner = _models_in(field.annotation)
        current = inner[0] if inner else None
    return current


def short(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_VALUE_CHARS` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def describe_errors(model: type[BaseModel], exc: ValidationError) -> list[str]:
    """One line per problem in ``exc`` (see the module docstring)."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    explained: set[tuple[Any, ...]] = set()  # required keys a misspelt key stands for
    lines = []
    for err in unknown:
        loc = tuple(err["loc"])
        here = model_at(model, loc)
        allowed = sorted(here.model_fields) if here is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        if close:
            explained.add((*loc[:-1], close[0]))
        dotted = ".".join(str(p) for p in loc)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"unknown option {dotted!r} (allowed: {', '.join(allowed) or 'none'}){hint}")
    for err in errors:
        if err["type"] == "extra_forbidden":
            continue
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "missing":
            if loc not in explained:
                lines.append(f"missing required key {where!r}")
            continue
        lines.append(f"{where}: {err['msg']} (got {short(err.get('input'))})")
    return lines


def validate_config(model: type[M], data: Any, where: str) -> M:
    """Validate ``data`` against ``model``; raise ConfigError naming ``where`` and each bad field
    (one line each)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__} {short(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{where}: {line}" for line in describe_errors(model, exc))) from None
