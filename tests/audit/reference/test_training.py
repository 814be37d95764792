"""Training the reference model: it learns, it is seeded, it honours users, stages and transforms."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from audit.data.dataset import Dataset
from audit.reference.examples import StageData
from audit.reference.model import lm_loss, lm_loss_at_targets, make_model
from audit.reference.recipe import TrainingRecipe
from audit.training.recipe import SequenceTransform, StageSpec
from audit.training.trainers import TRAINERS
from audit.reference.training import TrainedReference, train_reference


def _fixed_batch(trained: TrainedReference, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = trained.fmt
    data = StageData(fmt, {u: dataset.sequences[u].train for u in dataset.user_ids()[:16]}, {}, 0.0, True)
    return data.collate(data.epoch_examples(np.random.default_rng(0))[:64])


def test_training_lowers_the_loss(tiny_trained: TrainedReference, tiny_dataset: Dataset,
                                  tiny_recipe: TrainingRecipe) -> None:
    ids, targets = _fixed_batch(tiny_trained, tiny_dataset)
    fresh = make_model(tiny_recipe.model, len(tiny_trained.tokenizer), bos_id=tiny_trained.fmt.bos,
                       eos_id=tiny_trained.fmt.eos, pad_id=tiny_trained.fmt.pad, seed=0).eval()
    with torch.no_grad():
        before = float(lm_loss(fresh, ids, targets))
        after = float(lm_loss(tiny_trained.model.eval(), ids, targets))
    assert before > np.log(len(tiny_trained.tokenizer)) - 1.0  # untrained: about uniform
    assert after < before - 2.0
    summary = tiny_trained.manifest["stages"][0]["summary"]
    assert summary["steps"] > 0 and summary["final_loss"] < before


def test_both_losses_agree(tiny_trained: TrainedReference, tiny_dataset: Dataset) -> None:
    ids, targets = _fixed_batch(tiny_trained, tiny_dataset)
    with torch.no_grad():
        full = lm_loss(tiny_trained.model.eval(), ids, targets)
        fast = lm_loss_at_targets(tiny_trained.model, ids, targets)
    assert abs(float(full) - float(fast)) < 1e-5


def _short(recipe: TrainingRecipe, **stage_changes) -> TrainingRecipe:
    return recipe.replace_stage("full", epochs=2, **stage_changes)


def test_same_seed_gives_the_same_weights(tiny_dataset: Dataset, tiny_recipe: TrainingRecipe) -> None:
    a = train_reference(_short(tiny_recipe), tiny_dataset, threads=1)
    b = train_reference(_short(tiny_recipe), tiny_dataset, threads=1)
    c = train_reference(dataclasses.replace(_short(tiny_recipe), seed=1), tiny_dataset, threads=1)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_default_stage_never_trains_heldout_users(tiny_trained: TrainedReference, tiny_dataset: Dataset) -> None:
    groups = tiny_dataset.user_groups(seed=0)
    stage = tiny_trained.manifest["stages"][0]
    assert set(stage["users"]) == set(groups.trained)
    assert not set(stage["users"]) & set(groups.heldout)
    assert tiny_trained.manifest["parameters"] > 0


@dataclass(frozen=True)
class AddCopies(SequenceTransform):
    """Adds ``copies`` synthetic users that all hold one fixed sequence."""

    name: ClassVar[str] = "add-copies"
    copies: int = 3
    stages: tuple[str, ...] | None = None

    def apply(self, sequences, profiles, dataset, rng):
        seq = [str(i) for i in rng.choice(np.arange(1, 31), size=6, replace=False)]
        sequences = dict(sequences)
        profiles = dict(profiles)
        for c in range(self.copies):
            sequences[f"canary-{c}"] = list(seq)
            profiles[f"canary-{c}"] = {}
        return sequences, profiles, {"sequence": seq, "copies": self.copies}


def test_transforms_apply_only_to_their_stage_and_are_recorded(tiny_dataset: Dataset,
                                                                tiny_recipe: TrainingRecipe) -> None:
    recipe = tiny_recipe.two_stage(pretrain_epochs=1, finetune_epochs=1).with_transform(
        AddCopies(copies=2, stages=("pretrain",)))
    trained = train_reference(recipe, tiny_dataset, threads=1)
    pre, fine = trained.manifest["stages"]
    groups = tiny_dataset.user_groups(seed=0)
    assert set(pre["users"]) == set(groups.pretrain) | {"canary-0", "canary-1"}
    assert set(fine["users"]) == set(groups.finetune)
    assert pre["transforms"][0]["name"] == "add-copies"
    assert len(pre["transforms"][0]["manifest"]["sequence"]) == 6
    assert fine["transforms"] == []


def test_stages_use_the_registered_trainer(tiny_dataset: Dataset, tiny_recipe: TrainingRecipe) -> None:
    calls = []

    def counting(trainable, data, stage, seed, progress):
        calls.append((stage.name, len(data.users), stage.option("marker")))
        return {"trainer": "counting", "steps": 0, "seconds": 0.0, "final_loss": float("nan")}

    TRAINERS.register("test-counting", counting)
    recipe = tiny_recipe.two_stage().replace_stage("finetune", trainer="test-counting",
                                                   options={"marker": 7}, epochs=1)
    recipe = recipe.replace_stage("pretrain", epochs=1)
    trained = train_reference(recipe, tiny_dataset, threads=1)
    groups = tiny_dataset.user_groups(seed=0)
    assert calls == [("finetune", len(groups.finetune), 7)]
    assert trained.manifest["stages"][1]["summary"]["trainer"] == "counting"
    assert trained.manifest["stages"][0]["summary"]["trainer"] == "plain"


def test_stage_data_windows_cover_long_sequences(tiny_trained: TrainedReference) -> None:
    fmt = tiny_trained.fmt
    seq = tuple(str(i) for i in range(1, 31))  # 30 items, windows of 12 history items
    data = StageData(fmt, {"u": seq}, {"u": {"gender": "F"}}, attribute_dropout=0.0, catalog_titles=False)
    windows = data.user_examples("u", np.random.default_rng(0))
    assert len(windows) >= 2
    targets = {int(t) for w in windows for t in w.targets if t in set(fmt.vocab.token_of.values())}
    newest = fmt.vocab.token_of["30"]
    assert newest in targets  # the newest item is always a target
    assert len(targets) >= 24  # nearly every item is a next-item target once
    assert all(len(w) <= tiny_trained.model.config.n_positions for w in windows)


def test_a_model_too_short_for_the_data_is_refused_with_what_to_change(tiny_dataset: Dataset,
                                                                        tiny_recipe: TrainingRecipe) -> None:
    import pytest

    from audit.errors import ConfigError

    short = dataclasses.replace(tiny_recipe, model=dataclasses.replace(tiny_recipe.model, n_positions=16))
    with pytest.raises(ConfigError, match="n_positions=16 is too small"):
        train_reference(short, tiny_dataset, threads=1)
