"""On real ML-100k, a few minutes' reduced reference model already ranks better than popularity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from audit.adapters.reference import ReferenceAdapter, ReferenceConfig
from audit.data.dataset import Dataset
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.utility import UtilityConfig, UtilityProbe
from audit.reference import store
from audit.reference.presets import PRESETS


@pytest.mark.slow
def test_reduced_model_beats_popularity_on_ml100k(ml100k: Dataset, tmp_path: Path) -> None:
    base = PRESETS["small"]
    recipe = dataclasses.replace(
        base, max_history=30,
        model=dataclasses.replace(base.model, d_model=48, dropout=0.1),
        stages=(dataclasses.replace(base.stages[0], epochs=3, batch_size=128, lr=2e-2, catalog_titles=False,
                                     bf16=False),))
    trained, directory, _ = store.train_or_load(recipe, ml100k, tmp_path, threads=2)
    rec = ReferenceAdapter(trained, ReferenceConfig(score_mode="item"), directory)
    users = ml100k.sample_users(300, seed=0)
    ctx = ProbeContext(dataset=ml100k, users=users, seed=0, recorder=OutputRecorder("reference", "utility"))
    result = UtilityProbe(UtilityConfig(k=[10])).run(rec, ctx)
    model, popularity = result.metrics["hr@10"], result.metrics["popularity_hr@10"]
    print(f"hr@10 {model.value:.4f} {model.ci} vs popularity {popularity.value:.4f}; "
          f"train {trained.manifest['train_seconds']} s")  # shown with -s
    assert model.n == popularity.n == 300
    assert model.value > popularity.value + 0.05, (model, popularity)
