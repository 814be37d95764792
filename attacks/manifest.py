"""Reading what an attack or defense did from a recommender's ``info``.

Training variants record their transforms' manifests in the reference model's
``manifest.json`` (``stages[*].transforms[*]``: name, stages, config, manifest). A recommender
exposes it as ``info["manifest"]`` or, like the reference adapter, as its ``manifest``
attribute (wrappers forward it). Wrapping variants (the item-text attack) write their own keys
into ``info``. These helpers find the transform records wherever they are nested, so probes
do not depend on the exact layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from audit.interface import Recommender


@dataclass(frozen=True)
class TransformRecord:
    """One sequence transform as applied in one training stage."""

    stage: str
    name: str
    config: Mapping[str, Any]
    manifest: Mapping[str, Any]


def _stage_lists(obj: Any, depth: int = 0) -> Iterator[list[Any]]:
    """Every list of stage records (dicts with a ``transforms`` list) inside ``obj``."""
    if depth > 6:
        return
    if isinstance(obj, Mapping):
        stages = obj.get("stages")
        if isinstance(stages, list) and any(isinstance(s, Mapping) and isinstance(s.get("transforms"), list)
                                            for s in stages):
            yield stages
            return
        for value in obj.values():
            yield from _stage_lists(value, depth + 1)


def transform_records(info: Mapping[str, Any]) -> list[TransformRecord]:
    """The applied transforms recorded in ``info`` (first manifest found), in training order."""
    for stages in _stage_lists(info):
        out = []
        for stage in stages:
            if not isinstance(stage, Mapping):
                continue
            for t in stage.get("transforms") or []:
                if isinstance(t, Mapping):
                    out.append(TransformRecord(stage=str(stage.get("name", "")), name=str(t.get("name", "")),
                                               config=dict(t.get("config") or {}),
                                               manifest=dict(t.get("manifest") or {})))
        return out
    return []


def records_named(info: Mapping[str, Any], name: str) -> list[TransformRecord]:
    return [r for r in transform_records(info) if r.name == name]


def training_record(rec: Any) -> dict[str, Any]:
    """What a recommender says about how it was built: its ``info`` and, when it has one, its
    ``manifest`` attribute (the reference adapter's ``manifest.json``), as one mapping for
    :func:`transform_records` and :func:`attacked_targets`."""
    out: dict[str, Any] = dict(getattr(rec, "info", {}) or {})
    manifest = rec.manifest if isinstance(rec, Recommender) else None
    if isinstance(manifest, Mapping) and not transform_records(out):
        out["manifest"] = manifest
    return out


def attacked_targets(info: Mapping[str, Any]) -> set[str]:
    """Target item ids of every poisoning transform (fake users, backdoor) and of the item-text
    attack recorded in ``info`` (empty for a clean recommender)."""
    out: set[str] = set()
    for r in transform_records(info):
        if r.name in ("fake-users", "backdoor"):
            active = (r.manifest.get("n_fake_users", 0) or 0) > 0 or (r.manifest.get("rate", 0) or 0) > 0
            if active:
                out.update(str(t) for t in r.manifest.get("targets", []))
    text = info.get("text_attack")
    if isinstance(text, Mapping):
        out.update(str(t) for t in (text.get("targets") or {}))
    return out
