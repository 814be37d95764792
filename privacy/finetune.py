"""The fine-tuning setting every privacy variant shares, and its undefended baseline.

The reference model is pre-trained on the ``pretrain`` user group (treated as public) and
fine-tuned on the ``finetune`` group (private); ``heldout`` users are never trained on.
:func:`private_finetune_recipe` turns a recipe into that two-stage form with the pretrain
stage behind the stage cache (so every privacy variant reuses one pretrained model) and lets
a variant set the fine-tune stage's trainer and options. :class:`FinetuneVariant`
(``finetune``) is the undefended baseline: the same two stages, plain fine-tuning.

Every privacy variant fine-tunes on the private users' windows only: the catalog's
``<item_X> title`` rows are public and were learnt in the pretrain stage, so the fine-tune
stages (plain, DP, federated) leave them out (``catalog_titles=False``) and differ only in
how they use the private data.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.reference.recipe import TrainingRecipe
from audit.variants import BuildContext, Variant
from privacy import stage_cache

PRETRAIN, FINETUNE = "pretrain", "finetune"


def private_finetune_recipe(recipe: Any, *, variant: str, pretrain_epochs: int | None,
                            **finetune: Any) -> Any:
    """``recipe`` with its private fine-tune stage's fields replaced by ``finetune`` (e.g.
    ``trainer='dp', options={...}``), as the recipe declares it (:meth:`private_finetune`): the
    reference's recipe becomes pretrain (public, cached) + fine-tune (private); an ``hf`` LoRA
    recipe's public part is its base checkpoint and its LoRA stage is the private one."""
    return recipe.private_finetune(variant=variant, pretrain_epochs=pretrain_epochs, **finetune)


def two_stage_private(recipe: TrainingRecipe, *, variant: str, pretrain_epochs: int | None,
                      **finetune: Any) -> TrainingRecipe:
    """The reference's :meth:`private_finetune`: pretrain (public, cached) + fine-tune (private).
    A recipe that is already two-stage keeps its stages; applying two privacy variants that
    both set the fine-tune trainer is an error (use ``federated: {dp: ...}`` for FL + DP)."""
    names = [s.name for s in recipe.stages]
    if names == [PRETRAIN, FINETUNE]:
        current = recipe.stage(FINETUNE).trainer
        if current != "plain" and "trainer" in finetune:
            raise ConfigError(
                f"variant {variant!r}: the fine-tune stage already uses trainer {current!r} (from another "
                f"variant); apply one privacy variant per recommender (FL + DP is `federated: {{dp: {{...}}}}`)")
        out = recipe
        if pretrain_epochs is not None:
            out = out.replace_stage(PRETRAIN, epochs=pretrain_epochs)
    elif len(names) == 1:
        out = recipe.two_stage(pretrain_epochs=pretrain_epochs)
    else:
        raise ConfigError(f"variant {variant!r}: cannot turn a recipe with stages {names} into "
                          f"pretrain + fine-tune")
    pre = out.stage(PRETRAIN)
    if pre.trainer != stage_cache.TRAINER_NAME:
        out = out.replace_stage(PRETRAIN, trainer=stage_cache.TRAINER_NAME,
                                options=pre.with_options(inner=pre.trainer).options)
    return out.replace_stage(FINETUNE, **finetune)


class FinetuneConfig(StrictConfig):
    """``epochs``: plain fine-tuning passes over the private users' windows (None = the
    recipe's); ``lr``: peak learning rate (None = the recipe's); ``pretrain_epochs``:
    passes of the public pretrain stage (None = the recipe's)."""

    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    pretrain_epochs: int | None = Field(default=None, ge=1)


class FinetuneVariant(Variant):
    """Undefended baseline of the privacy comparison: public pretrain, plain private fine-tune."""

    name = "finetune"
    Config = FinetuneConfig
    trains = True

    def modify_recipe(self, recipe: TrainingRecipe, ctx: BuildContext) -> TrainingRecipe:
        cfg: FinetuneConfig = self.config  # type: ignore[assignment]
        return private_finetune_recipe(recipe, variant=self.name, pretrain_epochs=cfg.pretrain_epochs,
                                       **stage_changes(epochs=cfg.epochs, lr=cfg.lr, catalog_titles=False))


def stage_changes(**values: Any) -> dict[str, Any]:
    """Drop the ``None`` values (settings left to the recipe)."""
    return {k: v for k, v in values.items() if v is not None}

