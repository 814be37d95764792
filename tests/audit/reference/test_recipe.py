"""The training recipe: frozen, JSON-able, and a cache key that follows every input."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from audit.adapters.reference import ReferenceConfig
from audit.reference.presets import PRESETS, make_recipe
from audit.reference.recipe import TrainingRecipe
from audit.training.identity import trained_key
from audit.training.recipe import SequenceTransform, StageSpec


@dataclass(frozen=True)
class RepeatLast(SequenceTransform):
    name: ClassVar[str] = "repeat-last"
    times: int = 2
    stages: tuple[str, ...] | None = None

    def apply(self, sequences, profiles, dataset, rng):
        return sequences, profiles, {}


def test_recipe_is_hashable_and_json_serialisable() -> None:
    recipe = TrainingRecipe().with_transform(RepeatLast(times=3, stages=("pretrain",))).two_stage()
    hash(recipe)
    data = json.loads(json.dumps(recipe.to_json()))
    assert [s["name"] for s in data["stages"]] == ["pretrain", "finetune"]
    assert data["sequence_transforms"][0]["config"] == {"times": 3, "stages": ["pretrain"]}
    assert data["sequence_transforms"][0]["stages"] == ["pretrain"]


def test_cache_key_changes_with_recipe_data_and_code() -> None:
    base = TrainingRecipe()
    key = trained_key(base, None, "data1", "code1")
    assert key == trained_key(TrainingRecipe(), None, "data1", "code1")
    assert key != trained_key(dataclasses.replace(base, seed=1), None, "data1", "code1")
    assert key != trained_key(base.replace_stage("full", epochs=3), None, "data1", "code1")
    assert key != trained_key(base.with_transform(RepeatLast()), None, "data1", "code1")
    assert key != trained_key(base.with_transform(RepeatLast(times=4)), None, "data1", "code1") != trained_key(
        base.with_transform(RepeatLast()), None, "data1", "code1")
    assert key != trained_key(base, None, "data2", "code1")
    assert key != trained_key(base, None, "data1", "code2")
    assert key != trained_key(base, "base-weights", "data1", "code1")


def test_stage_options_are_order_free_and_merge() -> None:
    a = StageSpec(options={"b": 1, "a": 2})
    b = StageSpec(options=(("a", 2), ("b", 1)))
    assert a == b and a.option("a") == 2 and a.option("zzz", 5) == 5
    c = a.with_options(epsilon=8.0)
    assert c.option("epsilon") == 8.0 and c.option("b") == 1


def test_two_stage_splits_users_into_pretrain_and_finetune() -> None:
    two = TrainingRecipe().two_stage(pretrain_epochs=3, finetune_epochs=2)
    assert [(s.name, s.users, s.epochs) for s in two.stages] == [("pretrain", "pretrain", 3),
                                                                 ("finetune", "finetune", 2)]
    assert two.stage("finetune").trainer == "plain"
    assert two.replace_stage("finetune", trainer="dp").stage("finetune").trainer == "dp"


def test_invalid_recipes_are_rejected() -> None:
    with pytest.raises(ValueError, match="users must be one of"):
        StageSpec(users="everyone")
    with pytest.raises(ValueError, match="distinct"):
        TrainingRecipe(stages=(StageSpec(), StageSpec()))
    with pytest.raises(ValueError, match="at least one stage"):
        TrainingRecipe(stages=())


def test_adapter_bf16_option_overrides_the_preset_and_none_keeps_it() -> None:
    assert all(not s.bf16 for preset in PRESETS.values() for s in preset.stages)  # float32 by default
    assert make_recipe(ReferenceConfig(size="small")).stages[0].bf16 is False
    on = make_recipe(ReferenceConfig(size="small", bf16=True))
    assert on.stages[0].bf16 is True
    assert on.stages[0].epochs == PRESETS["small"].stages[0].epochs
    assert make_recipe(ReferenceConfig(size="tiny", bf16=True)).stages[0].bf16 is True
