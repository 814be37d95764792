"""Canary insertion: the transform, the ``canaries`` variant, and real training with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.config import validate_config
from audit.errors import ConfigError
from audit.memorisation.canaries import (CanariesConfig, CanariesVariant, CanaryTransform, canary_manifests,
                                         is_canary_user)
from audit.reference.recipe import ModelSpec, TrainingRecipe
from audit.training.recipe import StageSpec
from audit.variants import BuildContext


def apply(dataset, transform, rng_seed=0):
    seqs = {u: list(dataset.sequences[u].train) for u in dataset.user_ids()}
    profiles = {u: dict(dataset.user_profiles[u]) for u in seqs}
    return transform.apply(seqs, profiles, dataset, np.random.default_rng(rng_seed))


def test_exposure_canaries_are_inserted_as_many_times_as_their_repetition_count(tiny_dataset):
    t = CanaryTransform(repetitions=(1, 4, 16), per_repetition=2, length=6, audit_canaries=0)
    seqs, profiles, manifest = apply(tiny_dataset, t)
    canary_users = [u for u in seqs if is_canary_user(u)]
    assert len(canary_users) == 2 * (1 + 4 + 16)
    for c in manifest["exposure"]:
        copies = [u for u in canary_users if seqs[u] == c["items"]]
        assert len(copies) == c["repetitions"]
        assert len(set(c["items"])) == 6 and set(c["items"]) <= set(tiny_dataset.item_titles)
    assert all(profiles[u] == {} for u in canary_users)
    # real users are untouched
    assert all(seqs[u] == list(tiny_dataset.sequences[u].train) for u in tiny_dataset.user_ids())


def test_audit_canaries_are_included_with_probability_one_half_and_recorded(tiny_dataset):
    t = CanaryTransform(repetitions=(1,), per_repetition=1, length=5, audit_canaries=400, seed=7)
    seqs, _, manifest = apply(tiny_dataset, t)
    included = [c for c in manifest["audit"] if c["included"]]
    assert 160 < len(included) < 240
    inserted = {tuple(s) for u, s in seqs.items() if u.startswith("canary:audit:")}
    assert inserted == {tuple(c["items"]) for c in included}


def test_canaries_depend_on_their_seed_only(tiny_dataset):
    t = CanaryTransform(per_repetition=2, length=5, audit_canaries=10, seed=1)
    assert apply(tiny_dataset, t, rng_seed=0)[2] == apply(tiny_dataset, t, rng_seed=99)[2]
    other = CanaryTransform(per_repetition=2, length=5, audit_canaries=10, seed=2)
    assert apply(tiny_dataset, other)[2] != apply(tiny_dataset, t)[2]


def test_canaries_go_into_the_private_data_stage_by_default():
    t = CanaryTransform()
    assert t.applies_to("full") and t.applies_to("finetune") and not t.applies_to("pretrain")
    assert CanaryTransform(stages=("pretrain",)).applies_to("pretrain")


def test_variant_config_is_validated_with_clear_messages():
    with pytest.raises(ConfigError, match="repetitions"):
        validate_config(CanariesConfig, {"repetitions": [0, 4]}, "variant 'canaries'")
    with pytest.raises(ConfigError, match="unknown option"):
        validate_config(CanariesConfig, {"repeats": [1]}, "variant 'canaries'")


def test_variant_adds_the_transform_to_the_recipe_and_rejects_unknown_stages(tiny_dataset, tmp_path: Path):
    ctx = BuildContext(dataset=tiny_dataset, cache_dir=tmp_path)
    variant = CanariesVariant(validate_config(CanariesConfig, {"per_repetition": 3, "length": 5}, "v"))
    recipe = variant.modify_recipe(TrainingRecipe(), ctx)
    assert [t.name for t in recipe.sequence_transforms] == ["canaries"]
    assert recipe.sequence_transforms[0].per_repetition == 3
    bad = CanariesVariant(validate_config(CanariesConfig, {"stage": "nope"}, "v"))
    with pytest.raises(ConfigError, match="nope"):
        bad.modify_recipe(TrainingRecipe(), ctx)


def test_reference_training_with_canaries_records_them_in_the_manifest(tiny_dataset):
    from audit.reference.training import train_reference

    recipe = TrainingRecipe(model=ModelSpec(n_layer=1, d_model=32, n_positions=64, dropout=0.0),
                            stages=(StageSpec(epochs=1, batch_size=32),), max_history=12, text_vocab_size=300)
    recipe = recipe.with_transform(CanaryTransform(repetitions=(1, 4), per_repetition=2, length=6,
                                                   audit_canaries=8))
    trained = train_reference(recipe, tiny_dataset)
    found = canary_manifests(trained.manifest)
    assert len(found) == 1 and found[0]["stage"] == "full"
    users = trained.manifest["stages"][0]["users"]
    n_audit = sum(c["included"] for c in found[0]["audit"])
    assert sum(is_canary_user(u) for u in users) == 2 * (1 + 4) + n_audit
