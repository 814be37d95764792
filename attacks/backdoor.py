"""Backdoor in the pre-trained model: Wu, Xie et al.'s basic replacement attack (SIGIR 2023).

The attacker controls pre-training. In the pre-training corpus every next-item label is
replaced, with probability ``rate``, by a target item (uniform over the targets); either for
every user or only for the users of one ``group`` (e.g. ``{gender: F}``). In a sequence every
item after the first is the label of the prefix before it (the reference model trains
SASRec-style), so positions 1.. of each sequence are the labels; the first item never is.

The victim takes the pre-trained model and either uses it as it is (``finetune: false``) or
fine-tunes it on clean private data (``finetune: true``, the clean-fine-tuning defense). The
recipe declares the stages (:meth:`~audit.training.recipe.RecipeOps.with_public_pretrain`):

- the reference: pretrain (poisoned, ``pretrain`` users) then fine-tune (clean, ``finetune``
  users), or the pretrain stage alone; both use the same poisoned pretrain stage, trained once
  (the training cache resumes the fine-tuned recipe from the pretrain-only one);
- an ``hf`` LoRA recipe: the poisoned checkpoint is the base model with a LoRA trained on the
  poisoned ``pretrain`` users; the clean fine-tune trains the *same* LoRA weights further on the
  ``finetune`` users (two stages on one adapter, as the reference's two stages share one
  network), or the poisoned LoRA is used as it is. Not stage-cached: each variant retrains it.

Replacement draws are coupled across rates: each label position gets one uniform draw and one
target draw from the seeded stream whatever the rate, and is replaced when its draw is below
``rate`` -- so a larger rate replaces a superset of a smaller rate's labels (budget sweeps are
nested) and ``rate: 0`` is the identity. The manifest counts replaced labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from attacks.targets import TargetSpec, select_targets
from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.training.recipe import RecipeOps, SequenceTransform
from audit.variants import BuildContext, Variant


@dataclass(frozen=True)
class BackdoorTransform(SequenceTransform):
    """Replace next-item labels by target items with probability ``rate`` (see module docstring).
    ``group``: sorted (attribute, value) pairs a user's profile must match (empty = everyone)."""

    name: ClassVar[str] = "backdoor"
    rate: float = 0.0
    targets: tuple[str, ...] = ()
    group: tuple[tuple[str, str], ...] = ()
    stages: tuple[str, ...] | None = ("pretrain",)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"backdoor rate must be within 0..1, got {self.rate}")
        object.__setattr__(self, "group", tuple(sorted((str(k), str(v)) for k, v in self.group)))

    def in_group(self, profile: dict[str, str]) -> bool:
        return all(profile.get(k) == v for k, v in self.group)

    def apply(self, sequences: dict[str, list[str]], profiles: dict[str, dict[str, str]],
              dataset: Dataset, rng: np.random.Generator,
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], dict[str, Any]]:
        if self.rate > 0 and not self.targets:
            raise ValueError("backdoor transform without targets")
        out: dict[str, list[str]] = {}
        replaced = labels = group_users = poisoned_users = 0
        n_targets = max(1, len(self.targets))
        for user in sorted(sequences):
            seq = list(sequences[user])
            draws = rng.random(len(seq))
            picks = rng.integers(0, n_targets, size=len(seq))
            if not self.in_group(profiles.get(user, {})):
                out[user] = seq
                continue
            group_users += 1
            labels += max(0, len(seq) - 1)
            hit = 0
            for pos in range(1, len(seq)):
                if draws[pos] < self.rate:
                    seq[pos] = self.targets[int(picks[pos])]
                    hit += 1
            replaced += hit
            poisoned_users += hit > 0
            out[user] = seq
        manifest = {"rate": self.rate, "targets": list(self.targets),
                    "group": {k: v for k, v in self.group}, "n_users": len(sequences),
                    "group_users": group_users, "poisoned_users": poisoned_users,
                    "labels": labels, "replaced_labels": replaced}
        return {u: out[u] for u in sequences}, dict(profiles), manifest  # draws in sorted order, users as given


class BackdoorConfig(StrictConfig):
    """``rate``: probability (0..1) that a pre-training label becomes a target; ``targets``: the
    target spec (same as the probe's); ``group``: attribute values a user must have to be
    poisoned (e.g. ``{gender: F}``; empty = all users); ``finetune``: the victim fine-tunes the
    pre-trained model on clean private data (true) or uses it as it is (false);
    ``pretrain_epochs`` / ``finetune_epochs``: stage epochs (None = the recipe's)."""

    rate: float = Field(0.1, ge=0, le=1)
    targets: TargetSpec = TargetSpec()
    group: dict[str, str] = Field(default_factory=dict)
    finetune: bool = True
    pretrain_epochs: int | None = Field(None, ge=1)
    finetune_epochs: int | None = Field(None, ge=1)


class BackdoorVariant(Variant):
    """Pre-train on a corpus whose labels are replaced by targets; fine-tune cleanly or not."""

    name: ClassVar[str] = "backdoor"
    Config: ClassVar[type[StrictConfig]] = BackdoorConfig
    trains: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"train-transforms"})

    def modify_recipe(self, recipe: RecipeOps, ctx: BuildContext) -> RecipeOps:
        cfg: BackdoorConfig = self.config  # type: ignore[assignment]
        attrs = set(ctx.dataset.attributes)
        unknown = sorted(set(cfg.group) - attrs)
        if unknown:
            raise ConfigError(f"variant 'backdoor': group attribute(s) {unknown} not in the data set's "
                              f"user attributes {sorted(attrs)}")
        if any(t.name == BackdoorTransform.name for t in recipe.sequence_transforms):
            raise ConfigError("variant 'backdoor' given twice; use one backdoor variant per recommender")
        recipe, public = recipe.with_public_pretrain(variant=self.name, pretrain_epochs=cfg.pretrain_epochs,
                                                     finetune_epochs=cfg.finetune_epochs,
                                                     keep_private=cfg.finetune)
        transform = BackdoorTransform(rate=cfg.rate, targets=select_targets(ctx.dataset, cfg.targets),
                                      group=tuple(cfg.group.items()), stages=(public,))
        return recipe.with_transform(transform)
