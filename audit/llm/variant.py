"""The ``lora`` variant: LoRA instruction fine-tuning of an ``hf`` model on the data set's users.

Suite entry::

    llm+lora: {adapter: hf, model: smollm2-135m, variant: {lora: {epochs: 1, r: 8}}}

Held-out users (``heldout_share`` of the seeded split) are never trained on, exactly as for the
reference; ``users`` picks the trained group (``trained`` = pretrain + finetune by default).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.llm.lora import DEFAULT_LAYERS, LoraOptions
from audit.variants import BuildContext, Variant

if TYPE_CHECKING:
    from audit.llm.training import LoraRecipe


class LoraVariantConfig(StrictConfig):
    """LoRA: ``r`` (rank), ``alpha`` (scaling: the update is multiplied by alpha / r), ``dropout`` (on the
    LoRA input), ``target_modules`` (left out: the model's
    attention and MLP projections, whatever its architecture), ``layers`` (last N layers, None =
    all; left out: 8, or all of a model with fewer; see :class:`~audit.llm.lora.LoraOptions`).
    Training: ``epochs`` (passes over the users' drawn windows), ``lr`` (AdamW peak, linear
    warm-up over ``warmup`` then decay), ``warmup`` (share of the steps warming up), ``batch_size``
    (examples per step),
    ``examples_per_user`` (windows per user per epoch), ``targets`` (answer items per example:
    the user's next items as a numbered list; 1 = the one-item TALLRec form), ``users`` (group;
    None = the recipe's: ``trained``, or ``finetune`` after a ``backdoor`` variant listed before),
    ``attribute_dropout`` (probability 0..1 that each profile attribute is hidden in an example's prompt),
    ``seed`` (the training run's seed). Defaults were sized for SmolLM2-135M on 2 CPU cores
    (about 1 example/s): see BENCHMARKS.md. On an ``hf`` model with ``items: tokens`` the stage
    settings left out are the item-token recipe's (:class:`audit.llm.item_training.ItemRecipe`:
    1 epoch over every window, lr 3e-3, batch 4), ``targets`` and ``examples_per_user`` do not
    apply (an error when given), and ``item_init`` / ``train_item_inputs`` choose how the item rows
    start and whether the input rows train."""

    r: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] | None = None
    layers: int | None = Field(DEFAULT_LAYERS, ge=1)
    epochs: int = Field(1, ge=1, le=100)
    lr: float = Field(1e-3, gt=0, le=1.0)
    warmup: float = Field(0.05, ge=0.0, lt=1.0)
    batch_size: int = Field(8, ge=1, le=1024)
    examples_per_user: int = Field(1, ge=1, le=100)
    targets: int = Field(10, ge=1, le=50)
    users: Literal["trained", "pretrain", "finetune", "all"] | None = None
    attribute_dropout: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = 0
    #: ``items: tokens`` only: how the item rows start (``titles``: the mean of the title's token
    #: embeddings; ``random``: the ablation; None = titles)
    item_init: Literal["titles", "random"] | None = None
    #: ``items: tokens`` only: whether the item input rows train too (else only the output rows and bias;
    #: None = the item-token recipe's)
    train_item_inputs: bool | None = None


class LoraVariant(Variant):
    """LoRA-tune an ``hf`` causal LM (frozen base) on the users' interaction sequences."""

    name: ClassVar[str] = "lora"
    Config: ClassVar[type[StrictConfig]] = LoraVariantConfig
    trains: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"train-lora"})

    def modify_recipe(self, recipe: "LoraRecipe", ctx: BuildContext) -> "LoraRecipe":
        from audit.llm.training import LORA_STAGE

        cfg: LoraVariantConfig = self.config  # type: ignore[assignment]
        given = cfg.model_fields_set
        unread = sorted(given & {"targets", "examples_per_user"} - type(recipe).example_options)
        if unread:
            raise ConfigError(f"variant 'lora': {', '.join(unread)} shape title answers, which this model (items: "
                              f"tokens) does not write; drop {' and '.join(unread)}")
        chosen = {name: getattr(cfg, name) for name in ("target_modules", "layers") if name in given}
        lora = LoraOptions(r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, **chosen)  # left out: the model decides
        examples = {name: getattr(cfg, name) for name in type(recipe).example_options}
        fields = {f.name for f in dataclasses.fields(recipe)}
        for name in ("item_init", "train_item_inputs"):
            if name in given and getattr(cfg, name) is not None:
                if name not in fields:
                    raise ConfigError(f"variant 'lora': {name} applies to an hf model with items: tokens only")
                examples[name] = getattr(cfg, name)
        out = dataclasses.replace(recipe, lora=lora, attribute_dropout=cfg.attribute_dropout, seed=cfg.seed, **examples)
        stage = {name: getattr(cfg, name) for name in ("epochs", "lr", "warmup", "batch_size", "users")
                 if name in given and getattr(cfg, name) is not None}
        return out.replace_stage(LORA_STAGE, **stage)
