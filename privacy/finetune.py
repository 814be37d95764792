"""The fine-tuning setting every privacy variant shares, and its undefended baseline.

Every privacy variant trains a public part and fine-tunes it on the private users: the recipe
declares the form (``recipe.private_finetune``, :mod:`audit.training.recipe`). The reference is
pre-trained on the ``pretrain`` user group (public; trained once for every variant by the
training cache) and fine-tuned on the ``finetune`` group; an ``hf`` LLM's public part is its base
checkpoint and its LoRA stage is the private one. ``heldout`` users are never trained on.
:func:`private_finetune_recipe` lets a variant set the private stage's trainer and options;
:class:`FinetuneVariant` (``finetune``) is the undefended baseline: plain fine-tuning.

Every privacy variant fine-tunes on the private users' windows only: the catalog's
``<item_X> title`` rows are public and were learnt in the pretrain stage, so the fine-tune
stages (plain, DP, federated) leave them out (``catalog_titles=False``) and differ only in
how they use the private data.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from audit.config import StrictConfig
from audit.variants import BuildContext, Variant


def private_finetune_recipe(recipe: Any, *, variant: str, pretrain_epochs: int | None,
                            **finetune: Any) -> Any:
    """``recipe`` with its private fine-tune stage's fields replaced by ``finetune`` (e.g.
    ``trainer='dp', options={...}``), as the recipe declares it (``recipe.private_finetune``)."""
    return recipe.private_finetune(variant=variant, pretrain_epochs=pretrain_epochs, **finetune)


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

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        cfg: FinetuneConfig = self.config  # type: ignore[assignment]
        return private_finetune_recipe(recipe, variant=self.name, pretrain_epochs=cfg.pretrain_epochs,
                                       **stage_changes(epochs=cfg.epochs, lr=cfg.lr, catalog_titles=False))


def stage_changes(**values: Any) -> dict[str, Any]:
    """Drop the ``None`` values (settings left to the recipe)."""
    return {k: v for k, v in values.items() if v is not None}

