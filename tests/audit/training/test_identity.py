"""The one training path's identity: a stage prefix trains once and every recipe that shares it
resumes from it with the same weights as training straight through; an interrupted publish
leaves nothing that counts as an entry; the code version follows the source it names."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from audit.reference import store
from audit.reference.presets import PRESETS
from audit.reference.training import train_reference
from audit.training import identity
from audit.training.identity import source_digest, training_code_version
from audit.training.stages import torch_threads


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


def _two_stage(finetune_epochs: int):
    return PRESETS["tiny"].two_stage(pretrain_epochs=3, finetune_epochs=finetune_epochs)


def test_a_shared_prefix_trains_once_and_resuming_gives_the_straight_through_weights(tiny_dataset, tmp_path):
    first, first_dir, trained = store.train_or_load(_two_stage(1), tiny_dataset, tmp_path, threads=1)
    assert trained
    second, second_dir, trained = store.train_or_load(_two_stage(2), tiny_dataset, tmp_path, threads=1)
    assert trained and second_dir != first_dir
    # the pretrain prefix was published once, under its own key, and the second recipe resumed from it
    prefix_key = store.recipe_key(_two_stage(2).prefix(1), tiny_dataset)
    assert store.recipe_key(_two_stage(1).prefix(1), tiny_dataset) == prefix_key
    assert store.is_complete(tmp_path / "reference" / prefix_key)
    assert "resumed_from" not in first.manifest
    assert second.manifest["resumed_from"] == {"key": prefix_key, "stages": 1}
    assert second.manifest["stages"][0] == first.manifest["stages"][0]
    assert second.manifest["item_init"] == first.manifest["item_init"]
    # resuming is exact: the same weights as training both stages in one go without any cache
    straight = train_reference(_two_stage(2), tiny_dataset, threads=1)
    for (name, a), b in zip(second.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), name
    again, again_dir, trained = store.train_or_load(_two_stage(2), tiny_dataset, tmp_path, threads=1)
    assert not trained and again_dir == second_dir


def test_an_interrupted_publish_leaves_no_entry(tiny_dataset, tmp_path, monkeypatch):
    recipe = PRESETS["tiny"].replace_stage("full", epochs=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while saving")
    monkeypatch.setattr(store.ReferenceEntry, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        store.train_or_load(recipe, tiny_dataset, tmp_path, threads=1)
    assert list((tmp_path / "reference").iterdir()) == []


def test_the_code_version_follows_the_source_it_names(tmp_path, monkeypatch):
    pkg = tmp_path / "plugin_trainer_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_digest(("plugin_trainer_pkg",))
    (pkg / "__init__.py").write_text("X = 2\n")
    source_digest.cache_clear()
    assert source_digest(("plugin_trainer_pkg",)) != before
    sys.modules.pop("plugin_trainer_pkg", None)


def test_the_training_code_version_covers_the_recipes_trainers():
    plain = PRESETS["tiny"].two_stage()
    dp = plain.replace_stage("finetune", trainer="dp", options={"epsilon": 1.0})
    assert identity.recipe_modules(plain) == ("audit.training.trainers",)
    assert "privacy.dp" in identity.recipe_modules(dp)
    assert training_code_version(plain, ()) != training_code_version(dp, ())
    json.dumps(dp.to_json())  # the recipe stays JSON-able
