"""The training recipe: a frozen, JSON-serialisable description of how the reference model
is trained. Training variants edit it with :func:`dataclasses.replace` in
``Variant.modify_recipe``; its JSON (with the data fingerprint and the code version)
is the cache key of the trained model.

Hooks for the other issues:

- **users**: ``StageSpec.users`` names a user group of ``dataset.user_groups(seed=split_seed,
  pretrain=pretrain_share, heldout=heldout_share)``: ``trained`` (default: pretrain +
  finetune), ``pretrain``, ``finetune``, ``heldout`` or ``all``. Held-out users are never
  trained on by the default recipe (clean non-members for the memorisation probes).
- **sequence transforms** (canaries, fake users / shilling, backdoor labels):
  ``sequence_transforms`` is an ordered tuple of :class:`SequenceTransform` objects applied
  to each stage's training sequences before examples are built; a transform with
  ``stages=("pretrain",)`` only touches that stage. Each returns a manifest dict that is
  stored in ``manifest.json`` beside the model.
- **two-stage training**: ``stages`` is one ``full`` stage by default; :func:`two_stage`
  gives pretrain (``groups.pretrain``) then fine-tune (``groups.finetune``) on the same weights.
- **trainers**: ``StageSpec.trainer`` names a function in
  :data:`audit.reference.trainers.TRAINERS` (``plain`` built in; the privacy package
  registers ``dp`` and ``federated``); ``StageSpec.options`` carries its JSON-able options.
- **Opacus**: ``ModelSpec.tie_embeddings`` switches tied input/output embeddings off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

USER_GROUPS: tuple[str, ...] = ("trained", "pretrain", "finetune", "heldout", "all")
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
class StageSpec:
    """One training stage: which users, which trainer, and its optimisation settings.

    ``epochs`` are passes over all sliding windows of the stage's users (plus one pass over
    the catalog's ``<item_X> title`` rows when ``catalog_titles``); ``lr`` is AdamW's peak
    learning rate (linear warm-up over ``warmup`` of the steps, then linear decay to 0);
    ``bf16``: run forward/backward under CPU bfloat16 autocast (weights stay float32).
    ``options`` holds trainer-specific settings as sorted (name, JSON value) pairs."""

    name: str = "full"
    users: str = "trained"
    trainer: str = "plain"
    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.01
    warmup: float = 0.05
    catalog_titles: bool = True
    bf16: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.users not in USER_GROUPS:
            raise ValueError(f"stage {self.name!r}: users must be one of {USER_GROUPS}, got {self.users!r}")
        opts = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def with_options(self, **options: Any) -> "StageSpec":
        """A copy with ``options`` merged in (e.g. ``stage.with_options(epsilon=8.0)``)."""
        merged = dict(self.options)
        merged.update(options)
        return dataclasses.replace(self, options=tuple(merged.items()))


class SequenceTransform:
    """Edits a stage's training sequences (canaries, fake users, backdoors).

    Subclasses are frozen dataclasses (hashable, so the recipe stays hashable) that set
    ``name`` and implement :meth:`apply`. ``stages`` restricts the transform to the named
    stages (None = every stage). :meth:`config` must be JSON-able: it enters the cache key.
    """

    name: ClassVar[str] = "transform"
    stages: tuple[str, ...] | None = None

    def config(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {}

    def applies_to(self, stage: str, recipe: "RecipeOps | None" = None) -> bool:
        """Whether the transform edits stage ``stage`` of ``recipe`` (None = every stage)."""
        return self.stages is None or stage in self.stages

    def apply(self, sequences: dict[str, list[str]], profiles: dict[str, dict[str, str]],
              dataset: "Dataset", rng: np.random.Generator,
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], dict[str, Any]]:
        """Return the new (sequences, profiles, manifest). ``sequences`` maps a user id to the
        catalog item ids it trains on (oldest first); new users may be added (give them a
        profile, possibly empty). The manifest (JSON-able) is saved with the model."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "class": f"{type(self).__module__}:{type(self).__qualname__}",
                "stages": None if self.stages is None else list(self.stages), "config": self.config()}


class RecipeOps:
    """Stage and transform edits every recipe offers (the reference's :class:`TrainingRecipe` and
    the LoRA recipe of ``hf`` models), so training variants edit either the same way. The
    class using it is a frozen dataclass with ``stages`` and ``sequence_transforms``."""

    stages: tuple[StageSpec, ...]
    sequence_transforms: tuple[SequenceTransform, ...]

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in {[s.name for s in self.stages]}")

    def replace_stage(self, name: str, **changes: Any) -> "TrainingRecipe":
        """A copy with one stage's fields changed (e.g. ``trainer='dp'``)."""
        self.stage(name)
        return dataclasses.replace(self, stages=tuple(
            dataclasses.replace(s, **changes) if s.name == name else s for s in self.stages))

    def with_transform(self, transform: SequenceTransform) -> "TrainingRecipe":
        """A copy with ``transform`` appended to the sequence transforms."""
        return dataclasses.replace(self, sequence_transforms=self.sequence_transforms + (transform,))

    #: names of the stages that hold the private users' data when the recipe has them (the
    #: reference's one-stage ``full`` and two-stage ``finetune``); a recipe naming its stages
    #: otherwise overrides this (the LoRA recipe: its ``lora`` stage)
    private_stage_names: ClassVar[tuple[str, ...]] = ("full", "finetune")

    def private_data_stages(self) -> tuple[str, ...]:
        """The stages of this recipe that train on the private users' data (where canaries go)."""
        return tuple(s.name for s in self.stages if s.name in self.private_stage_names)

    def with_private_stage(self, *, variant: str) -> tuple["TrainingRecipe", str]:
        """This recipe in its public + private form and the name of its private fine-tune stage
        (where data poisoning and its detection go): the reference becomes pretrain (public,
        cached) + ``finetune`` (as :meth:`private_finetune` makes it; kept if already so)."""
        from privacy.finetune import FINETUNE, PRETRAIN

        if [s.name for s in self.stages] == [PRETRAIN, FINETUNE]:
            return self, FINETUNE  # type: ignore[return-value]
        return self.private_finetune(variant=variant, pretrain_epochs=None), FINETUNE

    def with_public_pretrain(self, *, variant: str, pretrain_epochs: int | None, finetune_epochs: int | None,
                             keep_private: bool) -> tuple["TrainingRecipe", str]:
        """This recipe with a public pre-training stage (the one a pre-training backdoor poisons),
        followed by the private fine-tune when ``keep_private``; returns (recipe, the public stage's
        name). The reference: ``pretrain`` (stage-cached) + ``finetune``, or ``pretrain`` alone."""
        from audit.errors import ConfigError
        from privacy.finetune import FINETUNE, PRETRAIN

        recipe: Any = self
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
        """This recipe as public pretrain (cached) + private fine-tune with the fine-tune stage's
        fields replaced by ``finetune`` (see :func:`privacy.finetune.two_stage_private`)."""
        from privacy.finetune import two_stage_private

        return two_stage_private(self, variant=variant, pretrain_epochs=pretrain_epochs, **finetune)  # type: ignore[arg-type]

    def two_stage(self, pretrain_epochs: int | None = None, finetune_epochs: int | None = None) -> "TrainingRecipe":
        """Pretrain on ``groups.pretrain`` then fine-tune on ``groups.finetune`` (same settings
        as the current first stage unless epochs are given)."""
        base = self.stages[0]
        pre = dataclasses.replace(base, name="pretrain", users="pretrain",
                                  epochs=pretrain_epochs if pretrain_epochs is not None else base.epochs)
        fine = dataclasses.replace(base, name="finetune", users="finetune",
                                   epochs=finetune_epochs if finetune_epochs is not None else base.epochs)
        return dataclasses.replace(self, stages=(pre, fine))


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

    def to_json(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model),
            "stages": [{**dataclasses.asdict(s), "options": {k: _jsonable(v) for k, v in s.options}}
                       for s in self.stages],
            "sequence_transforms": [t.to_json() for t in self.sequence_transforms],
            "split_seed": self.split_seed, "pretrain_share": self.pretrain_share,
            "heldout_share": self.heldout_share, "max_history": self.max_history,
            "attribute_dropout": self.attribute_dropout, "text_vocab_size": self.text_vocab_size,
            "item_init": self.item_init, "item_init_window": self.item_init_window, "seed": self.seed,
        }


def cache_key(recipe: TrainingRecipe, data_fingerprint: str, code_version: str) -> str:
    """16 hex chars of SHA-256 over the recipe JSON, the data fingerprint and the code version."""
    payload = json.dumps({"recipe": recipe.to_json(), "data": data_fingerprint, "code": code_version},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"recipe value {value!r} ({type(value).__name__}) is not JSON-able")
