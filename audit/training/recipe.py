"""The model-independent part of a training recipe: stages, user groups, sequence transforms.

Every trainable model's recipe (the reference's ``TrainingRecipe``, the ``hf`` LoRA recipe) is a
frozen, JSON-serialisable dataclass built from these pieces and :class:`RecipeOps`; training
variants edit it (``replace_stage``, ``with_transform``, the recipe forms below) and never look at
the model. Its JSON, with the data fingerprint, the base model's identity and the training code
version, is the cache key of the trained part (:mod:`audit.training.identity`).

- **users**: ``StageSpec.users`` names a group of ``dataset.user_groups(seed=split_seed,
  pretrain=pretrain_share, heldout=heldout_share)``: ``trained`` (pretrain + finetune),
  ``pretrain``, ``finetune``, ``heldout`` or ``all``. Held-out users are never trained on by a
  default recipe (clean non-members for the memorisation probes).
- **sequence transforms** (canaries, fake users, backdoor labels): an ordered tuple of
  :class:`SequenceTransform` applied to a stage's training sequences before its examples are
  built; ``stages=`` restricts one to the named stages; each returns a manifest saved with the model.
- **trainers**: ``StageSpec.trainer`` names an entry of :data:`audit.training.trainers.TRAINERS`
  (``plain``, ``dp``, ``federated``); ``StageSpec.options`` carries its JSON-able options.
- **recipe forms** every model's recipe declares, so the privacy and poisoning variants work on
  any model: :meth:`RecipeOps.private_data_stages`, :meth:`RecipeOps.with_private_stage`,
  :meth:`RecipeOps.with_public_pretrain`, :meth:`RecipeOps.private_finetune`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, TypeVar

import numpy as np

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

USER_GROUPS: tuple[str, ...] = ("trained", "pretrain", "finetune", "heldout", "all")
#: the stage names of a two-stage recipe: public pre-training, then the private fine-tune
PRETRAIN, FINETUNE = "pretrain", "finetune"

R = TypeVar("R", bound="RecipeOps")


@dataclass(frozen=True)
class StageSpec:
    """One training stage: which users, which trainer, and its optimisation settings.

    ``epochs`` are passes over the stage's training examples (for the reference, plus one pass
    over the catalog's ``<item_X> title`` rows when ``catalog_titles``); ``lr`` is AdamW's peak
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

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "options": {k: jsonable(v) for k, v in self.options}}


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
            return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
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
    """Stage and transform edits every recipe offers, and the recipe forms each model's recipe
    declares. The class using it is a frozen dataclass with ``stages``, ``sequence_transforms``,
    ``seed`` and the user split (``split_seed``, ``pretrain_share``, ``heldout_share``)."""

    stages: tuple[StageSpec, ...]
    sequence_transforms: tuple[SequenceTransform, ...]

    #: names of the stages that hold the private users' data when the recipe has them
    private_stage_names: ClassVar[tuple[str, ...]] = ()

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in {[s.name for s in self.stages]}")

    def replace_stage(self: R, name: str, **changes: Any) -> R:
        """A copy with one stage's fields changed (e.g. ``trainer='dp'``)."""
        self.stage(name)
        return dataclasses.replace(self, stages=tuple(  # type: ignore[type-var]
            dataclasses.replace(s, **changes) if s.name == name else s for s in self.stages))

    def with_transform(self: R, transform: SequenceTransform) -> R:
        """A copy with ``transform`` appended to the sequence transforms."""
        return dataclasses.replace(self, sequence_transforms=self.sequence_transforms + (transform,))  # type: ignore[type-var]

    def private_data_stages(self) -> tuple[str, ...]:
        """The stages of this recipe that train on the private users' data (where canaries go)."""
        return tuple(s.name for s in self.stages if s.name in self.private_stage_names)

    def prefix(self: R, n: int) -> R | None:
        """The recipe of the first ``n`` stages (what the model is after stage ``n``: its cache
        entry), or None where that recipe would not train those stages alike: a transform of a
        later stage listed before one of theirs (the transform seeds follow list positions)."""
        names = [s.name for s in self.stages[:n]]
        edits = [any(t.applies_to(name, self) for name in names) for t in self.sequence_transforms]
        kept = sum(edits)
        if not 0 < n < len(self.stages) or any(edits[kept:]) or not all(edits[:kept]):
            return None
        return dataclasses.replace(self, stages=self.stages[:n],  # type: ignore[type-var]
                                   sequence_transforms=self.sequence_transforms[:kept])

    # -- the recipe forms a model's recipe declares ---------------------------------------------
    def with_private_stage(self: R, *, variant: str) -> tuple[R, str]:
        """This recipe in its public + private form and the name of its private stage (where data
        poisoning and its detection go)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare a private stage")

    def with_public_pretrain(self: R, *, variant: str, pretrain_epochs: int | None, finetune_epochs: int | None,
                             keep_private: bool) -> tuple[R, str]:
        """This recipe with a public pre-training stage (the one a pre-training backdoor poisons),
        followed by the private fine-tune when ``keep_private``; returns (recipe, the public stage's name)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare a public pre-training stage")

    def private_finetune(self: R, *, variant: str, pretrain_epochs: int | None, **finetune: Any) -> R:
        """This recipe with its private fine-tune stage's fields replaced by ``finetune`` (e.g.
        ``trainer='dp', options={...}``): what the privacy variants train."""
        raise NotImplementedError(f"{type(self).__name__} does not declare a private fine-tune stage")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (sets sorted, dataclasses as dicts); TypeError for anything else."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"recipe value {value!r} ({type(value).__name__}) is not JSON-able")
