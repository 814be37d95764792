"""Which users and sequences each training stage trains on, its seeds, thread settings, and
the stage loop every trainable model shares (:func:`run_stages`).

Model-independent: any recipe with ``stages``, ``sequence_transforms``, ``seed`` and the user
split (``split_seed``, ``pretrain_share``, ``heldout_share``) works, the reference's and the
LoRA recipe alike.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    from audit.data.dataset import Dataset, UserGroups
    from audit.training.identity import Resume
    from audit.training.protocol import Trainable, TrainableModel
    from audit.training.recipe import StageSpec

#: most CPU threads used while training (the default configs are sized for 2 cores)
TRAIN_THREADS = 2


def default_threads() -> int:
    """``TRAIN_THREADS``, or fewer when the process was limited to fewer threads."""
    import torch

    return max(1, min(TRAIN_THREADS, torch.get_num_threads()))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recipe_groups(recipe: Any, dataset: "Dataset") -> "UserGroups":
    """The seeded pretrain / finetune / held-out split the recipe's stages draw their users from."""
    return dataset.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share,
                               heldout=recipe.heldout_share)


def stage_users(spec: "StageSpec", groups: "UserGroups", dataset: "Dataset") -> list[str]:
    """The users of stage ``spec``: its user group, or every user for ``all``."""
    if spec.users == "all":
        return dataset.user_ids()
    return list(getattr(groups, spec.users))


def stage_training_sequences(recipe: Any, index: int, stage: "StageSpec", groups: "UserGroups", dataset: "Dataset",
                             ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], list[dict[str, Any]]]:
    """The ``train`` sequences and profiles of stage ``index``'s users after the recipe's sequence
    transforms for that stage (each seeded by recipe, stage and position), with the transforms'
    manifests."""
    users = stage_users(stage, groups, dataset)
    seqs = {u: list(dataset.sequences[u].train) for u in users if u in dataset.sequences}
    profiles = {u: dict(dataset.user_profiles.get(u, {})) for u in seqs}
    transforms = []
    for t_index, transform in enumerate(recipe.sequence_transforms):
        if not transform.applies_to(stage.name, recipe):
            continue
        rng = np.random.default_rng(stage_seed(recipe, index, f"transform{t_index}"))
        seqs, profiles, manifest = transform.apply(seqs, profiles, dataset, rng)
        transforms.append({**transform.to_json(), "manifest": manifest})
    titles = dataset.item_titles
    unknown = sorted({i for s in seqs.values() for i in s if i not in titles})
    if unknown:
        raise ValueError(f"stage {stage.name!r}: sequences hold items outside the catalog, e.g. {unknown[:3]}")
    return seqs, profiles, transforms


def stage_seed(recipe: Any, index: int, what: str) -> int:
    """A 32-bit seed for ``what`` in stage ``index`` of ``recipe`` (stable across runs)."""
    h = hashlib.sha256(f"{recipe.seed}/{index}/{what}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def run_stages(recipe: Any, model: "TrainableModel", dataset: "Dataset", *, progress: bool = False,
               resume: "Resume | None" = None,
               after_stage: Callable[[int, "Trainable", list[dict[str, Any]]], None] | None = None,
               ) -> tuple["Trainable", list[dict[str, Any]]]:
    """Train ``model`` stage by stage as ``recipe`` says: each stage's users and (transformed)
    sequences, the model's examples for them, the stage's trainer from
    :data:`audit.training.trainers.TRAINERS`. With ``resume``, start from its state after its
    stages. ``after_stage(n, trainable, records)`` runs after each stage but the last (the cache
    publishes the prefix there). Returns (the trainable, one record per stage)."""
    from audit.training.trainers import TRAINERS

    trainable = model.trainable()
    groups = recipe_groups(recipe, dataset)
    records: list[dict[str, Any]] = []
    if resume is not None:
        trainable.load_trained_state(resume.state)
        records = [dict(r) for r in resume.records]
    for index, stage in enumerate(recipe.stages):
        if index < len(records):
            continue
        seqs, profiles, transforms = stage_training_sequences(recipe, index, stage, groups, dataset)
        before = model.before_stage(index, stage, seqs)
        data = model.stage_data(stage, seqs, profiles)
        summary = TRAINERS.get(stage.trainer)(trainable, data, stage, stage_seed(recipe, index, "train"), progress)
        record = {"name": stage.name, "users_group": stage.users, "n_users": len(seqs), "users": sorted(seqs),
                  "transforms": transforms, "summary": summary}
        if before is not None:
            record["before"] = before
        records.append(record)
        if after_stage is not None and index < len(recipe.stages) - 1:
            after_stage(index + 1, trainable, records)
    trainable.module.eval()
    return trainable, records
