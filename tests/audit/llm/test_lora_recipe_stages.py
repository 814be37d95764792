"""The stages a LoRA recipe declares to the data variants (no model): the private-data stage is the
LoRA stage, the backdoor's public pre-training form is a ``pretrain`` LoRA stage before it, and the
variants' transforms land in those stages whatever order the variants come in."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.build import make_variants
from audit.errors import ConfigError
from audit.llm.training import LORA_STAGE, LoraRecipe
from audit.memorisation.canaries import CanaryTransform
from audit.reference.recipe import TrainingRecipe
from audit.variants import BuildContext

TARGETS = {"n": 2, "seed": 0, "min_interactions": 2}


def recipe_for(spec: list, dataset, recipe=None) -> LoraRecipe:
    ctx = BuildContext(dataset=dataset, cache_dir=Path("/nonexistent"), progress=False)
    recipe = LoraRecipe() if recipe is None else recipe
    for variant in make_variants(spec, "test"):
        recipe = variant.modify_recipe(recipe, ctx)
    return recipe


def test_each_recipe_names_its_private_data_stage() -> None:
    assert LoraRecipe().private_data_stages() == (LORA_STAGE,)
    assert TrainingRecipe().private_data_stages() == ("full",)
    assert TrainingRecipe().two_stage().private_data_stages() == ("finetune",)
    canary = CanaryTransform()
    assert canary.applies_to(LORA_STAGE, LoraRecipe()) and not canary.applies_to("full", LoraRecipe())


def test_fakes_detection_and_canaries_land_in_the_lora_stage(tiny_dataset) -> None:
    recipe = recipe_for([{"detect-fakes": {}}, {"fake-users": {"targets": TARGETS}}, {"canaries": {}}], tiny_dataset)
    assert [s.name for s in recipe.stages] == [LORA_STAGE]
    assert [(t.name, t.stages) for t in recipe.sequence_transforms] == [
        ("fake-users", (LORA_STAGE,)), ("detect-fakes", (LORA_STAGE,)), ("canaries", None)]
    assert all(t.applies_to(LORA_STAGE, recipe) for t in recipe.sequence_transforms)


@pytest.mark.parametrize("order", ["lora first", "backdoor first"])
def test_backdoor_adds_a_poisoned_pretrain_stage_before_the_lora_stage_on_the_finetune_users(tiny_dataset,
                                                                                          order) -> None:
    lora = {"lora": {"epochs": 3, "lr": 2e-3}}
    backdoor = {"backdoor": {"rate": 0.2, "targets": TARGETS, "pretrain_epochs": 5}}
    spec = [lora, backdoor, {"canaries": {}}, {"dp": {"epsilon": 8.0}}]
    if order == "backdoor first":
        spec = [backdoor, lora, {"canaries": {}}, {"dp": {"epsilon": 8.0}}]
    recipe = recipe_for(spec, tiny_dataset)
    pre, fine = recipe.stages
    assert (pre.name, pre.users, pre.trainer, pre.epochs) == ("pretrain", "pretrain", "plain", 5)
    assert (fine.name, fine.users, fine.trainer) == (LORA_STAGE, "finetune", "dp")
    assert fine.epochs == 10  # dp's epochs; the LoRA variant's settings reach the pretrain stage when listed first
    assert pre.lr == (2e-3 if order == "lora first" else LoraRecipe().stages[0].lr)
    backdoor_t, canaries_t = recipe.sequence_transforms
    assert backdoor_t.stages == ("pretrain",)
    assert canaries_t.applies_to(LORA_STAGE, recipe) and not canaries_t.applies_to("pretrain", recipe)


def test_backdoor_as_is_is_the_first_stage_of_the_clean_finetuned_recipe(tiny_dataset) -> None:
    """The poisoned checkpoint used as it is is exactly the public stage of the fine-tuned form
    (so the LoRA cache trains it once for both), and it has no private stage."""
    backdoor = {"rate": 0.2, "targets": TARGETS}
    as_is = recipe_for([{"backdoor": {**backdoor, "finetune": False}}], tiny_dataset)
    finetuned = recipe_for([{"backdoor": backdoor}], tiny_dataset)
    (stage,) = as_is.stages
    assert (stage.name, stage.users) == ("pretrain", "pretrain")
    assert as_is.sequence_transforms[0].stages == ("pretrain",)
    assert finetuned.prefix(1) == as_is and finetuned.prefix(2) is None and finetuned.prefix(0) is None
    assert as_is.private_data_stages() == ()


def test_a_prefix_whose_transform_seeds_would_shift_is_not_offered(tiny_dataset) -> None:
    """Transforms are seeded by their list position: a later stage's transform listed before the
    first stage's makes the first stage's own recipe draw differently, so no prefix is offered."""
    canaries_first = recipe_for([{"canaries": {"repetitions": [2], "per_repetition": 1}},
                                 {"backdoor": {"rate": 0.2, "targets": TARGETS}}], tiny_dataset)
    assert [t.name for t in canaries_first.sequence_transforms] == ["canaries", "backdoor"]
    assert canaries_first.prefix(1) is None
    backdoor_first = recipe_for([{"backdoor": {"rate": 0.2, "targets": TARGETS}},
                                 {"canaries": {"repetitions": [2], "per_repetition": 1}}], tiny_dataset)
    assert [t.name for t in backdoor_first.prefix(1).sequence_transforms] == ["backdoor"]


def test_conflicting_backdoor_recipes_are_refused(tiny_dataset) -> None:
    backdoor = {"backdoor": {"rate": 0.2, "targets": TARGETS}}
    with pytest.raises(ConfigError, match="given twice"):
        recipe_for([backdoor, backdoor], tiny_dataset)
    with pytest.raises(ConfigError, match="finetune: false uses the poisoned checkpoint as it is.*trainer to 'dp'"):
        recipe_for([{"dp": {"epsilon": 8.0}}, {"backdoor": {**backdoor["backdoor"], "finetune": False}}],
                   tiny_dataset)
    with pytest.raises(ConfigError, match="no private LoRA stage.*set finetune: true"):
        recipe_for([{"backdoor": {**backdoor["backdoor"], "finetune": False}}, {"dp": {"epsilon": 8.0}}],
                   tiny_dataset)
