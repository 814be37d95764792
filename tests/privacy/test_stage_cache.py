"""The ``cached`` trainer: equal stage inputs train once; any changed input trains again;
an interrupted store leaves nothing that counts as an entry."""

from __future__ import annotations

import copy

import pytest
import torch

from audit.reference.trainable import ReferenceTrainable

from audit.reference.recipe import StageSpec
from privacy import stage_cache
from privacy.task import get_weights
from tests.privacy.conftest import stage_data


def _stage(epochs: int = 1, **changes) -> StageSpec:
    return StageSpec(name="pretrain", users="pretrain", trainer="cached", epochs=epochs, batch_size=8,
                     options=(("inner", "plain"),), **changes)


def _run(ref, data, stage, seed=0):
    model = copy.deepcopy(ref.model)
    summary = stage_cache.train_cached_stage(ReferenceTrainable(model, ref.tokenizer), data, stage, seed, False)
    return model, summary


def test_second_identical_stage_loads_the_same_weights(recaudit_home, tiny_reference, tiny_dataset):
    data = stage_data(tiny_reference, tiny_dataset, catalog_titles=True)
    first, s1 = _run(tiny_reference, data, _stage())
    second, s2 = _run(tiny_reference, data, _stage())
    assert s1["cache"]["hit"] is False and s2["cache"]["hit"] is True
    assert s1["cache"]["key"] == s2["cache"]["key"] and s2["steps"] == s1["steps"]
    assert (stage_cache.stages_dir() / s1["cache"]["key"]).is_relative_to(recaudit_home)
    for (name, a), b in zip(get_weights(first).items(), get_weights(second).values()):
        assert torch.equal(a, b), name
    # and equal to training the inner stage directly
    plain = copy.deepcopy(tiny_reference.model)
    from audit.reference.trainers import train_plain
    train_plain(ReferenceTrainable(plain, tiny_reference.tokenizer), data, StageSpec(name="pretrain", users="pretrain", epochs=1,
                                                                 batch_size=8), 0, False)
    for (name, a), b in zip(get_weights(plain).items(), get_weights(second).values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("change", ["seed", "epochs", "users", "weights"])
def test_any_changed_input_gives_a_new_key(change, recaudit_home, tiny_reference, tiny_dataset):
    data = stage_data(tiny_reference, tiny_dataset)
    base = stage_cache.stage_key(tiny_reference.model, tiny_reference.tokenizer, data, _stage(), 0)
    model, stage, seed = tiny_reference.model, _stage(), 0
    if change == "seed":
        seed = 1
    elif change == "epochs":
        stage = _stage(epochs=2)
    elif change == "users":
        data = stage_data(tiny_reference, tiny_dataset, users=tiny_dataset.user_ids()[:-1])
    else:
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.transformer.ln_f.bias.add_(1e-3)
    assert stage_cache.stage_key(model, tiny_reference.tokenizer, data, stage, seed) != base


def test_interrupted_store_leaves_no_entry(recaudit_home, tiny_reference, tiny_dataset, monkeypatch):
    data = stage_data(tiny_reference, tiny_dataset)
    key = stage_cache.stage_key(tiny_reference.model, tiny_reference.tokenizer, data, _stage(), 0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while saving")
    monkeypatch.setattr(stage_cache, "save_model", crash)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_reference, data, _stage())
    root = stage_cache.stages_dir()
    assert not (root / key).exists()
    assert list(root.iterdir()) == []
