"""The reference model's training recipe: a frozen, JSON-serialisable description of how the
reference GPT-2 is trained (its network size, tokenizer, history window, item initialisation),
built on the model-independent pieces of :mod:`audit.training.recipe` (stages, user groups,
sequence transforms, trainers by name). Training variants edit it with ``replace_stage`` /
``with_transform`` and the recipe forms below; its JSON is part of the trained model's cache key.

Recipe forms (what the privacy and poisoning variants ask of any model's recipe):

- one ``full`` stage by default; :meth:`TrainingRecipe.two_stage` gives ``pretrain`` (the
  ``pretrain`` user group, public) then ``finetune`` (the ``finetune`` group, private) on the
  same weights;
- :meth:`TrainingRecipe.private_finetune` (privacy variants): the two-stage form with the
  fine-tune stage's trainer and options set; the pretrain stage is the same for every privacy
  variant, so the training cache trains it once and every variant resumes from it;
- :meth:`TrainingRecipe.with_private_stage` (fake users, their detection): the two-stage form
  and its ``finetune`` stage; :meth:`TrainingRecipe.with_public_pretrain` (a pre-training
  backdoor): the public ``pretrain`` stage, followed by the private fine-tune or not;
- ``ModelSpec.tie_embeddings`` switches tied input/output embeddings off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audit.errors import ConfigError
from audit.training.recipe import FINETUNE, PRETRAIN, RecipeOps, SequenceTransform, StageSpec

ITEM_INITS: tuple[str, ...] = ("cooccurrence", "random")


@dataclass(frozen=True)
class ModelSpec:
    """Size of the GPT-2 network. ``n_positions`` bounds prompt + one output item in tokens."""

    n_layer: int = 2
    n_head: int = 2
    d_model: int = 128
    ffn_mult: int = 4
    dropout: float = 0.3
    attn_dropout: float = 0.0
    n_positions: int = 192
    tie_embeddings: bool = True
    activation: str = "gelu"


@dataclass(frozen=True)
class TrainingRecipe(RecipeOps):
    """Everything that determines the trained reference model (with the data set).

    ``max_history``: history items per prompt/window; ``attribute_dropout``: probability
    (0..1) that each profile attribute is hidden in a training prompt (so neutral prompts
    are in distribution); ``text_vocab_size``: BPE tokens besides the item tokens;
    ``item_init``: ``cooccurrence`` initialises item embeddings from the first stage's training
    sequences (SVD of item-pair PPMI within ``item_init_window`` positions, see
    :mod:`audit.reference.item_init`), ``random`` keeps GPT-2's init. A recipe whose first stage
    must not touch data outside its own trainer (e.g. DP-only) should use ``random``."""

    model: ModelSpec = field(default_factory=ModelSpec)
    stages: tuple[StageSpec, ...] = (StageSpec(),)
    sequence_transforms: tuple[SequenceTransform, ...] = ()
    split_seed: int = 0
    pretrain_share: float = 0.5
    heldout_share: float = 0.1
    max_history: int = 50
    attribute_dropout: float = 0.5
    text_vocab_size: int = 2000
    item_init: str = "cooccurrence"
    item_init_window: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.item_init not in ITEM_INITS:
            raise ValueError(f"item_init must be one of {ITEM_INITS}, got {self.item_init!r}")
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "sequence_transforms", tuple(self.sequence_transforms))
        if not self.stages:
            raise ValueError("a recipe needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct, got {names}")

    #: the one-stage recipe's ``full`` and the two-stage recipe's ``finetune`` hold the private users
    private_stage_names: ClassVar[tuple[str, ...]] = ("full", FINETUNE)

    def two_stage(self, pretrain_epochs: int | None = None, finetune_epochs: int | None = None) -> "TrainingRecipe":
        """Pretrain on ``groups.pretrain`` then fine-tune on ``groups.finetune`` (same settings
        as the current first stage unless epochs are given)."""
        base = self.stages[0]
        pre = dataclasses.replace(base, name=PRETRAIN, users="pretrain",
                                  epochs=pretrain_epochs if pretrain_epochs is not None else base.epochs)
        fine = dataclasses.replace(base, name=FINETUNE, users="finetune",
                                   epochs=finetune_epochs if finetune_epochs is not None else base.epochs)
        return dataclasses.replace(self, stages=(pre, fine))

    def with_private_stage(self, *, variant: str) -> tuple["TrainingRecipe", str]:
        """The two-stage form (kept if already so) and its private ``finetune`` stage."""
        if [s.name for s in self.stages] == [PRETRAIN, FINETUNE]:
            return self, FINETUNE
        return self.private_finetune(variant=variant, pretrain_epochs=None), FINETUNE

    def with_public_pretrain(self, *, variant: str, pretrain_epochs: int | None, finetune_epochs: int | None,
                             keep_private: bool) -> tuple["TrainingRecipe", str]:
        """``pretrain`` (public) + ``finetune``, or ``pretrain`` alone without ``keep_private``;
        returns (recipe, ``pretrain``)."""
        recipe: TrainingRecipe = self
        names = [s.name for s in recipe.stages]
        if names == [PRETRAIN]:
            raise ConfigError(f"variant {variant!r} given twice (or after a variant that dropped the "
                              f"fine-tune stage); use one {variant} variant per recommender")
        if names != [PRETRAIN, FINETUNE]:
            recipe = recipe.private_finetune(variant=variant, pretrain_epochs=pretrain_epochs)
        elif pretrain_epochs is not None:
            recipe = recipe.replace_stage(PRETRAIN, epochs=pretrain_epochs)
        if finetune_epochs is not None:
            recipe = recipe.replace_stage(FINETUNE, epochs=finetune_epochs)
        if not keep_private:
            if recipe.stage(FINETUNE).trainer != "plain":
                raise ConfigError(f"variant {variant!r}: finetune: false drops the fine-tune stage, but "
                                  f"another variant set its trainer to {recipe.stage(FINETUNE).trainer!r}")
            recipe = dataclasses.replace(recipe, stages=(recipe.stage(PRETRAIN),))
        return recipe, PRETRAIN

    def private_finetune(self, *, variant: str, pretrain_epochs: int | None, **finetune: Any) -> "TrainingRecipe":
        """Pretrain (public) + fine-tune (private) with the fine-tune stage's fields replaced by
        ``finetune``. A recipe that is already two-stage keeps its stages; two privacy variants
        that both set the fine-tune trainer are an error (FL + DP is ``federated: {dp: ...}``)."""
        names = [s.name for s in self.stages]
        if names == [PRETRAIN, FINETUNE]:
            current = self.stage(FINETUNE).trainer
            if current != "plain" and "trainer" in finetune:
                raise ConfigError(
                    f"variant {variant!r}: the fine-tune stage already uses trainer {current!r} (from another "
                    f"variant); apply one privacy variant per recommender (FL + DP is `federated: {{dp: {{...}}}}`)")
            out = self
            if pretrain_epochs is not None:
                out = out.replace_stage(PRETRAIN, epochs=pretrain_epochs)
        elif len(names) == 1:
            out = self.two_stage(pretrain_epochs=pretrain_epochs)
        else:
            raise ConfigError(f"variant {variant!r}: cannot turn a recipe with stages {names} into "
                              f"pretrain + fine-tune")
        return out.replace_stage(FINETUNE, **finetune)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model),
            "stages": [s.to_json() for s in self.stages],
            "sequence_transforms": [t.to_json() for t in self.sequence_transforms],
            "split_seed": self.split_seed, "pretrain_share": self.pretrain_share,
            "heldout_share": self.heldout_share, "max_history": self.max_history,
            "attribute_dropout": self.attribute_dropout, "text_vocab_size": self.text_vocab_size,
            "item_init": self.item_init, "item_init_window": self.item_init_window, "seed": self.seed,
        }
