"""Fake-user injection (shilling) into a training stage: random, average, bandwagon, segment.

The classic profile-injection attacks (Lam & Riedl; Mobasher et al.; as implemented in RecAD
and ARLib) adapted to implicit, sequential feedback. Each fake profile is a sequence of
catalog items holding

- the **targets** (every fake profile contains all of them),
- **selected** items, which make the profile look like an attractive neighbour:
  ``bandwagon``: drawn from the ``popular_pool`` most popular items of the stage's corpus;
  ``segment``: drawn from the most popular items of the targets' segment (the genre most
  targets share); none for ``random`` and ``average``;
- **filler** items: ``random`` / ``bandwagon`` / ``segment``: uniform over the catalog;
  ``average``: drawn with probability proportional to the item's popularity in the corpus
  (the implicit-feedback analogue of rating fillers at their item mean: the profile looks
  like an average user's).

Sizes: the profile's non-target part has ``filler_size`` items (default: the mean real profile
length of the stage, rounded), of which ``selected_share`` are selected items. Each target
appears ``target_repeats`` times (default 1, the classic profile; implicit feedback allows
repeated consumption, and a sequential model learns from every occurrence). Order: the
non-target items in a seeded random order; the targets either at random positions
(``placement: random``, the profile as a set, as in the classic attacks) or at the end
(``placement: end``, default: an attacker who knows the recommender learns from sequences puts
the targets where the next-item labels of the newest training window are; fake ``i`` ends with
target ``i mod n``; repeats beyond the first go to random positions). Each fake user copies the attributes of a random real user of the stage,
so fake prompts look like real ones.

Budget: ``share`` of the stage's real users, rounded (at least one fake when ``share`` > 0);
``share: 0`` is the identity. Fake user ``i`` depends only on the transform seed and ``i``,
so a larger budget adds fakes to the smaller budget's fakes (budget sweeps are nested).
The manifest records the fake user ids, the targets and the sizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from attacks.detection import DetectFakesTransform, InjectsFakeUsers
from attacks.targets import TargetSpec, select_targets
from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.training.recipe import RecipeOps, SequenceTransform
from audit.variants import BuildContext, Variant

ProfileKind = Literal["random", "average", "bandwagon", "segment"]
PROFILE_KINDS: tuple[str, ...] = ("random", "average", "bandwagon", "segment")
Placement = Literal["end", "random"]
PLACEMENTS: tuple[str, ...] = ("end", "random")
FAKE_PREFIX = "fake-"


@dataclass(frozen=True)
class FakeUsersTransform(InjectsFakeUsers, SequenceTransform):
    """Adds fake user profiles containing ``targets`` to a stage's training sequences
    (see the module docstring). ``share``: fake users per real user of the stage (0..1)."""

    name: ClassVar[str] = "fake-users"
    kind: str = "bandwagon"
    share: float = 0.01
    targets: tuple[str, ...] = ()
    filler_size: int | None = None
    selected_share: float = 0.1
    popular_pool: int = 50
    placement: str = "end"
    target_repeats: int = 1
    stages: tuple[str, ...] | None = ("finetune",)

    def __post_init__(self) -> None:
        if self.kind not in PROFILE_KINDS:
            raise ValueError(f"fake-user kind must be one of {PROFILE_KINDS}, got {self.kind!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"fake-user placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.target_repeats < 1:
            raise ValueError(f"target_repeats must be at least 1, got {self.target_repeats}")
        if not 0 <= self.share <= 1:
            raise ValueError(f"fake-user share must be within 0..1, got {self.share}")

    def n_fakes(self, n_real: int) -> int:
        """Number of fake users for ``n_real`` real users: ``share * n_real`` rounded half up,
        at least 1 when ``share`` > 0."""
        if self.share <= 0 or n_real <= 0:
            return 0
        return max(1, math.floor(self.share * n_real + 0.5))

    def apply(self, sequences: dict[str, list[str]], profiles: dict[str, dict[str, str]],
              dataset: Dataset, rng: np.random.Generator,
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], dict[str, Any]]:
        real_users = sorted(sequences)
        n_fake = self.n_fakes(len(real_users))
        manifest: dict[str, Any] = {"kind": self.kind, "share": self.share, "targets": list(self.targets),
                                    "placement": self.placement, "target_repeats": self.target_repeats,
                                    "n_real_users": len(real_users), "n_fake_users": n_fake,
                                    "fake_users": []}
        base_seed = int(rng.integers(0, 2**63 - 1))  # drawn even for share 0: equal streams
        if n_fake == 0:
            return dict(sequences), dict(profiles), manifest
        if not self.targets:
            raise ValueError("fake-user transform without targets")
        catalog = list(dataset.item_titles)
        counts = Counter(i for u in real_users for i in sequences[u])
        lengths = [len(sequences[u]) for u in real_users]
        filler = self.filler_size if self.filler_size is not None else round(float(np.mean(lengths)))
        non_target = [i for i in catalog if i not in set(self.targets)]
        filler = max(0, min(filler, len(non_target)))
        n_selected = round(self.selected_share * filler) if self.kind in ("bandwagon", "segment") else 0
        selected_pool, segment = self._selected_pool(dataset, counts, non_target)
        if n_selected and not selected_pool:
            raise ValueError(f"{self.kind} attack: no items to select from")
        n_selected = min(n_selected, len(selected_pool))
        out_seqs = dict(sequences)
        out_profiles = dict(profiles)
        fake_ids = _fresh_ids(n_fake, set(sequences))
        for index, uid in enumerate(fake_ids):
            r = np.random.default_rng([base_seed, index])
            chosen = [selected_pool[j] for j in r.choice(len(selected_pool), size=n_selected, replace=False)] \
                if n_selected else []
            taken = set(chosen)
            rest = [i for i in non_target if i not in taken]
            n_fill = filler - len(chosen)
            if self.kind == "average" and any(counts.get(i, 0) for i in rest):
                w = np.array([counts.get(i, 0) for i in rest], dtype=float)
                nonzero = int((w > 0).sum())
                fill_idx = r.choice(len(rest), size=min(n_fill, nonzero), replace=False, p=w / w.sum())
            else:
                fill_idx = r.choice(len(rest), size=n_fill, replace=False)
            body = chosen + [rest[j] for j in fill_idx]
            out_seqs[uid] = self._place([body[j] for j in r.permutation(len(body))], index, r)
            donor = real_users[int(r.integers(0, len(real_users)))]
            out_profiles[uid] = dict(profiles.get(donor, {}))
        manifest.update({"fake_users": fake_ids, "filler_size": filler, "selected_size": n_selected,
                         "profile_length": filler + len(self.targets) * self.target_repeats,
                         "segment_genre": segment,
                         "mean_real_length": float(np.mean(lengths)) if lengths else 0.0})
        return out_seqs, out_profiles, manifest

    def _place(self, body: list[str], index: int, r: np.random.Generator) -> list[str]:
        """Insert the targets into the shuffled non-target items per ``placement``."""
        targets = list(self.targets)
        extra = targets * (self.target_repeats - 1)
        seq = list(body)
        if self.placement == "random":
            extra = extra + targets
        for t in extra:
            seq.insert(int(r.integers(0, len(seq) + 1)), t)
        if self.placement == "end":
            last = targets.pop(index % len(targets))
            seq += [targets[j] for j in r.permutation(len(targets))] + [last]
        return seq

    def _selected_pool(self, dataset: Dataset, counts: Counter, non_target: list[str],
                       ) -> tuple[list[str], str | None]:
        by_pop = sorted(non_target, key=lambda i: (-counts.get(i, 0), _id_key(i)))
        if self.kind == "bandwagon":
            return by_pop[:self.popular_pool], None
        if self.kind == "segment":
            genres = _genres(dataset)
            shared = Counter(g for t in self.targets for g in genres.get(t, ()))
            if not shared:
                return by_pop[:self.popular_pool], None
            segment = min(shared, key=lambda g: (-shared[g], g))
            in_segment = [i for i in by_pop if segment in genres.get(i, ())]
            return in_segment[:self.popular_pool], segment
        return [], None


def _genres(dataset: Dataset) -> dict[str, tuple[str, ...]]:
    if "genres" not in dataset.items.columns:
        return {}
    return {str(r.item_id): tuple(g for g in str(r.genres or "").split("|") if g)
            for r in dataset.items[["item_id", "genres"]].itertuples(index=False)}


def _fresh_ids(n: int, taken: set[str]) -> list[str]:
    out = []
    i = 0
    while len(out) < n:
        i += 1
        uid = f"{FAKE_PREFIX}{i:05d}"
        if uid not in taken:
            out.append(uid)
    return out


def _id_key(item_id: str) -> tuple[int, str]:
    return (int(item_id), item_id) if item_id.isdigit() else (1 << 62, item_id)


# ---------------------------------------------------------------------------------------------
# the variant
# ---------------------------------------------------------------------------------------------
class FakeUsersConfig(StrictConfig):
    """``kind``: random | average | bandwagon | segment; ``share``: fake users per real user of
    the poisoned stage (0..1, default 1%); ``targets``: the target spec (same as the probe's);
    ``filler_size``: non-target items per fake profile (None = mean real profile length);
    ``selected_share``: share (0..1) of those that are selected items (bandwagon, segment);
    ``popular_pool``: how many of the most popular (segment) items selected items come from;
    ``placement``: end (targets close each fake sequence) | random (anywhere);
    ``target_repeats``: occurrences of each target per fake profile (1 = classic);
    ``stage``: ``finetune`` (fakes in the private fine-tune corpus: the reference becomes public
    pretrain + fine-tune, the pretrain stage shared through the training cache; an ``hf`` model's
    LoRA stage) or ``full`` (one training stage, fakes in it)."""

    kind: ProfileKind = "bandwagon"
    share: float = Field(0.01, ge=0, le=1)
    targets: TargetSpec = TargetSpec()
    filler_size: int | None = Field(None, ge=0)
    selected_share: float = Field(0.1, ge=0, le=1)
    popular_pool: int = Field(50, ge=1)
    placement: Placement = "end"
    target_repeats: int = Field(1, ge=1, le=100)
    stage: Literal["finetune", "full"] = "finetune"


class FakeUsersVariant(Variant):
    """Inject fake user profiles that contain the target items into the training data."""

    name: ClassVar[str] = "fake-users"
    Config: ClassVar[type[StrictConfig]] = FakeUsersConfig
    trains: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"train-transforms"})

    def modify_recipe(self, recipe: RecipeOps, ctx: BuildContext) -> RecipeOps:
        cfg: FakeUsersConfig = self.config  # type: ignore[assignment]
        recipe, stages = poisoned_stage_recipe(recipe, cfg.stage, self.name)
        transform = FakeUsersTransform(kind=cfg.kind, share=cfg.share,
                                       targets=select_targets(ctx.dataset, cfg.targets),
                                       filler_size=cfg.filler_size, selected_share=cfg.selected_share,
                                       popular_pool=cfg.popular_pool, placement=cfg.placement,
                                       target_repeats=cfg.target_repeats, stages=stages)
        return insert_before_detection(recipe, transform)


def poisoned_stage_recipe(recipe: RecipeOps, stage: str, variant: str,
                          ) -> tuple[RecipeOps, tuple[str, ...] | None]:
    """The recipe to poison and the stages a transform applies to.

    ``finetune``: the recipe in its public + private form, transform on its private stage;
    ``full``: the recipe must have one stage, transform on every stage (None).

    The private stage is the one the recipe declares (:meth:`RecipeOps.with_private_stage`): the
    reference's ``finetune`` (identical to the ``finetune`` variant's recipe), an ``hf`` LoRA
    recipe's ``lora`` stage (the base checkpoint is the public part)."""
    names = [s.name for s in recipe.stages]
    if stage == "full":
        if len(names) != 1:
            raise ConfigError(f"variant {variant!r}: stage: full needs a one-stage recipe, got stages "
                              f"{names}; use stage: finetune or drop the variant that added stages")
        return recipe, None
    recipe, private = recipe.with_private_stage(variant=variant)
    return recipe, (private,)


def insert_before_detection(recipe: RecipeOps, transform: SequenceTransform) -> RecipeOps:
    """``recipe`` with ``transform`` placed before the first fake-user detection transform
    (so a detector always sees the injected users, whatever the variant order); a detector
    that applies to every stage is narrowed to the stages ``transform`` poisons."""
    transforms = list(recipe.sequence_transforms)
    at = next((j for j, t in enumerate(transforms) if isinstance(t, DetectFakesTransform)), len(transforms))
    transforms.insert(at, transform)
    if transform.stages is not None:  # a detector added before the recipe had stages: clean these
        transforms = [dataclasses.replace(t, stages=transform.stages)
                      if isinstance(t, DetectFakesTransform) and t.stages is None else t for t in transforms]
    return dataclasses.replace(recipe, sequence_transforms=tuple(transforms))
