"""Fixtures: a tiny reference recipe and a model trained with it on the synthetic data set."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from audit.data.dataset import Dataset
from audit.reference import store
from audit.reference.presets import PRESETS
from audit.reference.recipe import TrainingRecipe
from audit.reference.training import TrainedReference
from audit.training.stages import torch_threads

#: one layer, d=32: trains on the 40-user synthetic set in a few seconds on one thread
TINY_RECIPE = PRESETS["tiny"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """32-wide models: one thread is faster than two on cores shared with other jobs."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_recipe() -> TrainingRecipe:
    return TINY_RECIPE


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reference-cache")


@pytest.fixture(scope="session")
def tiny_trained(tiny_dataset: Dataset, tiny_cache: Path) -> TrainedReference:
    """TINY_RECIPE trained on ``tiny_dataset`` (through the cache, so it is saved and reloaded)."""
    trained, _, _ = store.train_or_load(TINY_RECIPE, tiny_dataset, tiny_cache, threads=1)
    return trained
