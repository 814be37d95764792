"""The ``mia-reference`` variant: attach a calibration model for the reference-calibrated
membership attack (Carlini et al. 2022's "LiRA-offline"-style calibration by one reference).

The calibration model is a reference model trained on users disjoint from the ones the
membership probe audits. With the default recipe (the audited model trains on the
``pretrain`` + ``finetune`` groups of ``dataset.user_groups(seed=0)``), it trains on the
``pretrain`` group only: the probe then removes those users from both groups, so members
are the ``finetune`` users (seen by the audited model only) and non-members the
``heldout`` users (seen by neither). Its training is short: same default recipe, with
``epochs`` (default 10) passes over about half the users.

With ``base: true`` the calibration model is instead the audited model's untuned base (an
``hf`` LoRA fine-tune's checkpoint without the LoRA, :meth:`Recommender.untrained`): it trained
on none of the data set's users, so no user is removed and the attack is the loss ratio to the
pretrained model (the natural reference of a fine-tune; Carlini et al. 2021's ``zlib``/reference
comparisons use the same idea).

It is a *wrapping* variant: the audited recommender is returned unchanged, with the
calibration model attached as ``calibration_reference`` (and summarised in
``info["calibration_reference"]``). List it after other wrapping variants, so the object
it decorates is the one the probes receive. The calibration model is built by the
reference adapter (cached like any reference model); ``options`` are that adapter's
options (give the same size options as the audited model).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from audit.config import StrictConfig, validate_config
from audit.errors import ConfigError
from audit.interface import Recommender
from audit.variants import BuildContext, Variant


class MiaReferenceConfig(StrictConfig):
    """``users``: the user group the calibration model trains on (pretrain | finetune);
    ``epochs``: training epochs (>= 1); ``options``: reference adapter options; ``base``: instead
    of training a reference model, attach the audited model's own untuned base (an ``hf`` model
    without its LoRA: the natural reference of a fine-tune; ``users``, ``epochs`` and ``options``
    do not apply)."""

    users: Literal["pretrain", "finetune"] = "pretrain"
    epochs: int = Field(10, ge=1, le=1000)
    options: dict[str, Any] = {}
    base: bool = False

    @model_validator(mode="after")
    def _base_takes_no_training(self) -> "MiaReferenceConfig":
        if self.base and (self.options or self.model_fields_set & {"users", "epochs"}):
            raise ValueError("base: true attaches the untuned base model, which trains on nobody; drop users, "
                             "epochs and options")
        return self


class _TrainOnGroup(Variant):
    """Internal training variant: one stage on one user group, no sequence transforms."""

    name: ClassVar[str] = "mia-reference-training"
    trains: ClassVar[bool] = True

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        cfg: MiaReferenceConfig = self.config  # type: ignore[assignment]
        stage = dataclasses.replace(recipe.stages[0], name="full", users=cfg.users, epochs=cfg.epochs)
        return dataclasses.replace(recipe, stages=(stage,), sequence_transforms=())


class MiaReferenceVariant(Variant):
    """Wrapping variant: attach a reference model trained on disjoint users (module doc)."""

    name: ClassVar[str] = "mia-reference"
    Config = MiaReferenceConfig
    trains: ClassVar[bool] = False

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        from audit.registry import ADAPTERS

        cfg: MiaReferenceConfig = self.config  # type: ignore[assignment]
        if cfg.base:
            return self._attach_base(rec, ctx)
        adapter = ADAPTERS.get("reference")
        config = validate_config(adapter.Config, dict(cfg.options), "variant 'mia-reference': options")
        reference = adapter.build(config, ctx, [_TrainOnGroup(cfg)])
        reference.name = f"{rec.name}:calibration"
        rec.calibration_reference = reference
        rec.info["calibration_reference"] = {"users": cfg.users, "epochs": cfg.epochs,
                                             "options": dict(cfg.options)}
        return rec

    @staticmethod
    def _attach_base(rec: Recommender, ctx: BuildContext) -> Recommender:
        base = rec.untrained(ctx)
        if base is None:
            raise ConfigError(f"variant 'mia-reference': base: true needs a model fine-tuned here from a "
                              f"pretrained checkpoint (an hf adapter with a training variant such as lora); "
                              f"{rec.name!r} has no untuned base; drop base: true to train a reference model")
        base.name = f"{rec.name}:calibration"
        rec.calibration_reference = base
        rec.info["calibration_reference"] = {"base": True}
        return rec
