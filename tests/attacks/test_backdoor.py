"""The backdoor transform replaces pre-training labels as specified, and the variant builds the
pretrain / fine-tune recipe the attack needs."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.backdoor import BackdoorConfig, BackdoorTransform, BackdoorVariant
from attacks.targets import TargetSpec
from audit.errors import ConfigError
from audit.reference.recipe import TrainingRecipe
from audit.variants import BuildContext


def _corpus(ds):
    seqs = {u: list(s.train) for u, s in ds.sequences.items()}
    return seqs, {u: dict(ds.user_profiles[u]) for u in seqs}


def test_rate_zero_is_the_identity(longtail):
    seqs, profiles = _corpus(longtail)
    out, prof, manifest = BackdoorTransform(rate=0.0, targets=("5",)).apply(
        seqs, profiles, longtail, np.random.default_rng(0))
    assert out == seqs and prof == profiles
    assert manifest["replaced_labels"] == 0


def test_replacement_rate_targets_and_first_item_kept(longtail):
    seqs, profiles = _corpus(longtail)
    targets = ("70", "75")
    out, _, m = BackdoorTransform(rate=0.3, targets=targets).apply(seqs, profiles, longtail,
                                                                    np.random.default_rng(1))
    changed = sum(a != b for u in seqs for a, b in zip(seqs[u], out[u]))
    assert 0.2 < m["replaced_labels"] / m["labels"] < 0.4
    assert changed <= m["replaced_labels"]  # a replaced label may already have been that target
    for u in seqs:
        assert out[u][0] == seqs[u][0]
        assert len(out[u]) == len(seqs[u])
        assert all(b in targets for a, b in zip(seqs[u], out[u]) if a != b)


def test_group_backdoor_only_touches_the_group(longtail):
    seqs, profiles = _corpus(longtail)
    out, _, m = BackdoorTransform(rate=0.5, targets=("70",), group=(("gender", "F"),)).apply(
        seqs, profiles, longtail, np.random.default_rng(2))
    for u in seqs:
        if profiles[u]["gender"] != "F":
            assert out[u] == seqs[u]
    assert m["group_users"] == sum(p["gender"] == "F" for p in profiles.values())
    assert m["poisoned_users"] > 0


def test_larger_rate_replaces_a_superset_and_same_seed_reproduces(longtail):
    seqs, profiles = _corpus(longtail)

    def replaced(rate):
        out, _, _ = BackdoorTransform(rate=rate, targets=("70",)).apply(
            seqs, profiles, longtail, np.random.default_rng(3))
        return {(u, j) for u in seqs for j, (a, b) in enumerate(zip(seqs[u], out[u])) if b == "70" and a != "70"}

    small, large = replaced(0.1), replaced(0.3)
    assert small and small <= large
    assert replaced(0.1) == small


def test_variant_poisons_only_the_pretrain_stage(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    cfg = BackdoorConfig(rate=0.2, targets=TargetSpec(n=2), finetune_epochs=3)
    recipe = BackdoorVariant(cfg).modify_recipe(TrainingRecipe(), ctx)
    assert [s.name for s in recipe.stages] == ["pretrain", "finetune"]
    assert recipe.stage("finetune").epochs == 3
    (t,) = recipe.sequence_transforms
    assert isinstance(t, BackdoorTransform) and t.stages == ("pretrain",) and len(t.targets) == 2
    as_is = BackdoorVariant(BackdoorConfig(rate=0.2, finetune=False)).modify_recipe(TrainingRecipe(), ctx)
    assert [s.name for s in as_is.stages] == ["pretrain"]
    # the as-is model shares the poisoned pretrain stage with the fine-tuned one
    assert as_is.stages[0] == BackdoorVariant(BackdoorConfig(rate=0.2)).modify_recipe(
        TrainingRecipe(), ctx).stage("pretrain")


def test_group_attribute_must_exist(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="occupation"):
        BackdoorVariant(BackdoorConfig(group={"occupation": "writer"})).modify_recipe(TrainingRecipe(), ctx)
