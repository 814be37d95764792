"""Named sizes of the reference recipe and the adapter-config -> recipe mapping.

``default`` is the configuration measured by ``benchmarks/reference_quality.py`` on
ML-100k (2 CPU threads); ``small`` trades quality for a few CPU minutes; ``tiny`` is for
unit tests on synthetic data (seconds). All train in float32: CPU bfloat16 autocast is
opt-in (``bf16: true``) because on CPUs without native bf16 (AVX2-only, like the 2-core
machine the figures come from) it is emulated and measured 8x slower per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from audit.reference.recipe import ModelSpec, TrainingRecipe
from audit.training.recipe import StageSpec

PRESETS: dict[str, TrainingRecipe] = {
    "default": TrainingRecipe(
        model=ModelSpec(n_layer=2, n_head=2, d_model=64, dropout=0.25),
        stages=(StageSpec(epochs=20, lr=1e-2, batch_size=64),),
        max_history=50,
    ),
    "small": TrainingRecipe(
        model=ModelSpec(n_layer=2, n_head=2, d_model=64, dropout=0.1),
        stages=(StageSpec(epochs=6, lr=1e-2, batch_size=64),),
        max_history=50,
    ),
    "tiny": TrainingRecipe(
        model=ModelSpec(n_layer=1, n_head=2, d_model=32, dropout=0.0, n_positions=128),
        stages=(StageSpec(epochs=40, lr=1e-2, batch_size=32),),
        max_history=12, text_vocab_size=300, item_init="random",
    ),
}


def make_recipe(config: Any, seed: int = 0) -> TrainingRecipe:
    """The preset ``config.size`` with the config's overrides (None = keep the preset) and ``seed``.

    ``config`` is a :class:`audit.adapters.reference.ReferenceConfig` (any object with the
    same attribute names works)."""
    recipe = PRESETS[config.size]
    model_changes = {k: getattr(config, k) for k in ("d_model", "n_layer", "n_head", "dropout")
                     if getattr(config, k, None) is not None}
    stage_changes: dict[str, Any] = {}
    for field, attr in (("epochs", "epochs"), ("lr", "lr"), ("batch_size", "train_batch_size"), ("bf16", "bf16")):
        if getattr(config, attr, None) is not None:
            stage_changes[field] = getattr(config, attr)
    changes: dict[str, Any] = {"seed": seed}
    if model_changes:
        changes["model"] = dataclasses.replace(recipe.model, **model_changes)
    if stage_changes:
        changes["stages"] = tuple(dataclasses.replace(s, **stage_changes) for s in recipe.stages)
    if getattr(config, "max_history", None) is not None:
        changes["max_history"] = config.max_history
    return dataclasses.replace(recipe, **changes)
