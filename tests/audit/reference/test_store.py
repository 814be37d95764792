"""The train-or-load cache: atomic saves, no retraining on a hit, identical reloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.reference import store
from audit.reference.inference import prompt_states
from audit.reference.recipe import TrainingRecipe
from audit.reference.training import TrainedReference


def _prompts(trained: TrainedReference, dataset: Dataset) -> list[list[int]]:
    return [trained.fmt.prompt_ids_for_items(dataset.sequences[u].test_history, dataset.user_profiles[u])
            for u in dataset.user_ids()[:5]]


def test_second_build_loads_without_training_and_scores_identically(
        tiny_trained: TrainedReference, tiny_dataset: Dataset, tiny_recipe: TrainingRecipe, tiny_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have been hit")

    monkeypatch.setattr(store, "train_cached", no_training)
    again, directory, trained_now = store.train_or_load(tiny_recipe, tiny_dataset, tiny_cache)
    assert not trained_now
    assert directory == tiny_cache / "reference" / store.recipe_key(tiny_recipe, tiny_dataset)
    assert {p.name for p in directory.iterdir()} >= set(store.MODEL_FILES)
    a = prompt_states(tiny_trained.model, _prompts(tiny_trained, tiny_dataset))[1]
    b = prompt_states(again.model, _prompts(again, tiny_dataset))[1]
    np.testing.assert_array_equal(a, b)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["complete"] and manifest["recipe"] == tiny_recipe.to_json()
    assert manifest["key"] == directory.name


def test_changed_recipe_or_data_changes_the_key(tiny_dataset: Dataset, tiny_recipe: TrainingRecipe) -> None:
    key = store.recipe_key(tiny_recipe, tiny_dataset)
    assert key == store.recipe_key(dataclasses.replace(tiny_recipe), tiny_dataset)
    assert key != store.recipe_key(dataclasses.replace(tiny_recipe, attribute_dropout=0.1), tiny_dataset)
    assert key != store.recipe_key(tiny_recipe.replace_stage("full", lr=5e-3), tiny_dataset)
    fewer = tiny_dataset.subset_users(tiny_dataset.user_ids()[:30])
    assert key != store.recipe_key(tiny_recipe, fewer)


def test_interrupted_save_leaves_nothing_that_counts_as_a_model(
        tiny_trained: TrainedReference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    target = tmp_path / "reference" / "somekey"
    monkeypatch.setattr(store, "save_tokenizer", crash)  # weights written, then the save dies
    with pytest.raises(KeyboardInterrupt):
        store.save_atomic(tiny_trained, target)
    assert not target.exists()
    assert not store.is_complete(target)
    assert list((tmp_path / "reference").iterdir()) == []  # the temporary directory is gone too
    monkeypatch.undo()
    store.save_atomic(tiny_trained, target)
    assert store.is_complete(target)


def test_a_directory_without_the_complete_manifest_is_retrained(
        tiny_trained: TrainedReference, tiny_dataset: Dataset, tiny_recipe: TrainingRecipe, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = store.recipe_key(tiny_recipe, tiny_dataset)
    half = tmp_path / "reference" / key
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # what a crash outside save_atomic could leave
    assert not store.is_complete(half)
    _, directory, trained_now = store.train_or_load(tiny_recipe, tiny_dataset, tmp_path)
    assert trained_now and directory == half and store.is_complete(half)


def test_loading_a_non_model_directory_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        store.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="model.safetensors"):
        store.load(tmp_path)


def test_saved_weights_are_safetensors_only(tiny_trained: TrainedReference, tmp_path: Path) -> None:
    store.save(tiny_trained, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = store.load(tmp_path)
    for (name, a), b in zip(tiny_trained.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
