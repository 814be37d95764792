"""A tiny trained reference model and its stage data, shared by the privacy tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.data.dataset import Dataset
from audit.reference.examples import StageData
from audit.reference.recipe import ModelSpec, TrainingRecipe
from audit.training.recipe import StageSpec
from audit.reference.training import TrainedReference, train_reference
from audit.training.stages import torch_threads

TINY_MODEL = ModelSpec(n_layer=1, n_head=2, d_model=32, n_positions=64, dropout=0.0)


def tiny_recipe(epochs: int = 2, batch_size: int = 8, dropout: float = 0.0, tie: bool = True) -> TrainingRecipe:
    """A seconds-to-train recipe for the ``tiny_dataset`` fixture (history of 8 items)."""
    model = ModelSpec(n_layer=1, n_head=2, d_model=32, n_positions=64, dropout=dropout, tie_embeddings=tie)
    return TrainingRecipe(model=model, stages=(StageSpec(epochs=epochs, batch_size=batch_size),),
                          max_history=8, text_vocab_size=300)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (and the cores are shared)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_reference(tiny_dataset: Dataset) -> TrainedReference:
    """The tiny recipe trained on every user of ``tiny_dataset`` (dropout off)."""
    return train_reference(tiny_recipe(), tiny_dataset, threads=1)


@pytest.fixture(scope="session")
def tiny_untied_reference(tiny_dataset: Dataset) -> TrainedReference:
    return train_reference(tiny_recipe(tie=False), tiny_dataset, threads=1)


def stage_data(ref: TrainedReference, dataset: Dataset, users: list[str] | None = None,
               catalog_titles: bool = False) -> StageData:
    """Training sequences of ``users`` (default all) in ``ref``'s prompt format, no attribute dropout."""
    users = users if users is not None else dataset.user_ids()
    seqs = {u: dataset.sequences[u].train for u in users}
    return StageData(ref.fmt, seqs, {u: dict(dataset.user_profiles.get(u, {})) for u in users}, 0.0, catalog_titles)


def one_window_batch(data: StageData, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One window from each of the first ``n`` users, collated."""
    rng = np.random.default_rng(seed)
    return data.collate([data.user_examples(u, rng)[0] for u in data.users[:n]])
