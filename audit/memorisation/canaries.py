"""Canary users inserted into the reference model's training data, and the ``canaries``
training variant that inserts them.

Two kinds of synthetic users, each a fixed profile and a random item sequence (``length``
catalog items drawn uniformly without replacement, seeded):

- **exposure canaries** (Carlini et al. 2019): for each count r in ``repetitions``,
  ``per_repetition`` distinct sequences, each inserted as r identical users. The canary
  probe ranks them against fresh random sequences of the same length that were never
  inserted (exposure by repetition count);
- **audit canaries** (Steinke, Nasr and Jagielski 2023): ``audit_canaries`` sequences, each
  inserted (``audit_repetitions`` times) with probability 1/2, independently; the manifest
  records which were. The canary probe guesses membership from their scores and turns the
  guesses into an epsilon lower bound.

Canary users have ids ``canary:<kind>:<index>:<copy>`` (never a real user id) and train
like any user of the stage (sliding windows, attribute dropout). By default they go into
the stages the recipe declares as holding the private data
(:meth:`~audit.training.recipe.RecipeOps.private_data_stages`): the reference's single
``full`` stage or ``finetune`` of a two-stage recipe, an ``hf`` model's ``lora`` stage
(``stage`` overrides). The transform's manifest (saved in the model's
``manifest.json`` under the stage's ``transforms``) lists every canary sequence, its
repetition count and, for audit canaries, whether it was included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
from pydantic import Field, field_validator

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.training.recipe import SequenceTransform
from audit.variants import BuildContext, Variant

CANARY_PREFIX = "canary:"
#: stages that hold the private training data, in the reference recipe's naming (used when no
#: recipe is given; a recipe declares its own in ``private_data_stages``)
PRIVATE_STAGES: tuple[str, ...] = ("full", "finetune")
TRANSFORM_NAME = "canaries"


def canary_user_id(kind: str, index: int, copy: int) -> str:
    return f"{CANARY_PREFIX}{kind}:{index}:{copy}"


def is_canary_user(user_id: str) -> bool:
    return user_id.startswith(CANARY_PREFIX)


def random_sequences(item_ids: list[str], n: int, length: int, rng: np.random.Generator) -> list[list[str]]:
    """``n`` sequences of ``length`` distinct items drawn uniformly from ``item_ids``."""
    if length > len(item_ids):
        raise ConfigError(f"canary length {length} exceeds the catalog's {len(item_ids)} items")
    return [[item_ids[j] for j in rng.choice(len(item_ids), size=length, replace=False)] for _ in range(n)]


@dataclass(frozen=True)
class CanaryTransform(SequenceTransform):
    """Adds exposure canaries and randomly included audit canaries to a stage (see module doc)."""

    name: ClassVar[str] = TRANSFORM_NAME
    repetitions: tuple[int, ...] = (1, 4, 16)
    per_repetition: int = 10
    length: int = 20
    audit_canaries: int = 0
    audit_repetitions: int = 1
    profile: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    stages: tuple[str, ...] | None = None

    def applies_to(self, stage: str, recipe: Any = None) -> bool:
        """``stages`` when given, else the stages ``recipe`` declares as holding the private data
        (:meth:`RecipeOps.private_data_stages`; without a recipe, the reference's names)."""
        if self.stages is not None:
            return stage in self.stages
        return stage in (recipe.private_data_stages() if recipe is not None else PRIVATE_STAGES)

    def apply(self, sequences: dict[str, list[str]], profiles: dict[str, dict[str, str]],
              dataset: Any, rng: np.random.Generator,
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], dict[str, Any]]:
        # Canary content depends on ``seed`` only (not on the stage's rng), so a probe can
        # trust the manifest and two models with equal canary configs share their canaries.
        own = np.random.default_rng([self.seed, 0xCA7A])
        items = sorted(map(str, dataset.items["item_id"]))
        profile = dict(self.profile)
        seqs = {u: list(s) for u, s in sequences.items()}
        profs = {u: dict(p) for u, p in profiles.items()}
        exposure: list[dict[str, Any]] = []
        index = 0
        for reps in self.repetitions:
            for seq in random_sequences(items, self.per_repetition, self.length, own):
                for copy in range(reps):
                    uid = canary_user_id("exposure", index, copy)
                    seqs[uid], profs[uid] = list(seq), dict(profile)
                exposure.append({"index": index, "repetitions": int(reps), "items": seq})
                index += 1
        audit: list[dict[str, Any]] = []
        if self.audit_canaries:
            audit_seqs = random_sequences(items, self.audit_canaries, self.length, own)
            included = own.random(self.audit_canaries) < 0.5
            for j, (seq, inc) in enumerate(zip(audit_seqs, included)):
                if inc:
                    for copy in range(self.audit_repetitions):
                        uid = canary_user_id("audit", j, copy)
                        seqs[uid], profs[uid] = list(seq), dict(profile)
                audit.append({"index": j, "included": bool(inc), "items": seq})
        manifest = {"profile": profile, "length": self.length, "seed": self.seed,
                    "item_pool": "catalog, uniform without replacement",
                    "exposure": exposure, "audit": audit,
                    "audit_repetitions": self.audit_repetitions}
        return seqs, profs, manifest


class CanariesConfig(StrictConfig):
    """``repetitions``: how many copies of each exposure canary (each >= 1);
    ``per_repetition``: distinct canaries per repetition count; ``length``: items per canary
    sequence; ``audit_canaries``: canaries each included with probability 1/2 for the
    one-run epsilon audit (0 = none); ``audit_repetitions``: copies of an included audit
    canary; ``profile``: the canaries' fixed profile attributes (empty = neutral prompt);
    ``stage``: the stage to insert them in (None = the recipe's private-data stage: the
    reference's ``full`` or ``finetune``, an ``hf`` model's ``lora``); ``seed``: seeds the canary sequences and inclusion draws."""

    repetitions: list[int] = [1, 4, 16]
    per_repetition: int = Field(10, ge=1, le=1000)
    length: int = Field(20, ge=2, le=500)
    audit_canaries: int = Field(200, ge=0, le=100_000)
    audit_repetitions: int = Field(1, ge=1, le=100)
    profile: dict[str, str] = {}
    stage: str | None = None
    seed: int = 0

    @field_validator("repetitions")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v) or len(set(v)) != len(v):
            raise ValueError("repetitions must be distinct counts >= 1, e.g. [1, 4, 16]")
        return v


class CanariesVariant(Variant):
    """Training variant: insert canary users (see module doc) into the recipe's private data."""

    name: ClassVar[str] = "canaries"
    Config = CanariesConfig
    trains: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"train-transforms"})

    def transform(self) -> CanaryTransform:
        cfg: CanariesConfig = self.config  # type: ignore[assignment]
        return CanaryTransform(
            repetitions=tuple(cfg.repetitions), per_repetition=cfg.per_repetition, length=cfg.length,
            audit_canaries=cfg.audit_canaries, audit_repetitions=cfg.audit_repetitions,
            profile=tuple(sorted(cfg.profile.items())), seed=cfg.seed,
            stages=None if cfg.stage is None else (cfg.stage,))

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        cfg: CanariesConfig = self.config  # type: ignore[assignment]
        names = [s.name for s in recipe.stages]
        if cfg.stage is not None and cfg.stage not in names:
            raise ConfigError(f"variant 'canaries': stage {cfg.stage!r} is not in the recipe's stages {names}")
        return recipe.with_transform(self.transform())


def canary_manifests(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The canary transforms' manifests found in a trained model's manifest (reference or hf LoRA)."""
    out = []
    for stage in manifest.get("stages", []):
        for t in stage.get("transforms", []):
            if t.get("name") == TRANSFORM_NAME:
                out.append({**t["manifest"], "stage": stage.get("name")})
    return out
