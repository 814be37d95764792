"""Soft-prompt training on a frozen tiny reference model: the prefix path is exact, the model's
weights never change, training is seeded, and the discriminator sees the planted attribute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.data.dataset import Dataset
from audit.fairness.soft_prompt import PromptTrainingSettings, train_fair_prompt
from audit.reference.model import forward_hidden, token_embeddings
from audit.reference.recipe import ModelSpec, TrainingRecipe
from audit.reference.soft_prompt import ReferenceSoftPromptTarget, prefixed_hidden
from audit.reference.training import TrainedReference, train_reference
from audit.training.recipe import StageSpec
from audit.training.soft_prompt import splice_prefix


@pytest.fixture(scope="module")
def tiny_reference(tiny_dataset: Dataset) -> TrainedReference:
    recipe = TrainingRecipe(model=ModelSpec(n_layer=1, n_head=2, d_model=32, n_positions=64, dropout=0.1),
                            stages=(StageSpec(epochs=2, batch_size=32, users="all"),), max_history=8,
                            text_vocab_size=300)
    return train_reference(recipe, tiny_dataset, threads=1)


def prompt_batch(ref: TrainedReference, dataset: Dataset, users: list[str]) -> torch.Tensor:
    rows = [ref.fmt.prompt_ids_for_items(dataset.sequences[u].test_history, {}) for u in users]
    ids = torch.full((len(rows), max(map(len, rows))), ref.fmt.pad)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids


def test_a_prefix_of_real_token_embeddings_equals_inserting_those_tokens(
        tiny_reference: TrainedReference, tiny_dataset: Dataset) -> None:
    ids = prompt_batch(tiny_reference, tiny_dataset, ["1", "2", "3"])
    model = tiny_reference.model.eval()
    inserted = torch.tensor([tiny_reference.fmt.hist, tiny_reference.fmt.sep])
    prefix = token_embeddings(model, inserted)
    with torch.no_grad():
        spliced = prefixed_hidden(model, ids, prefix)
        tokens = torch.cat([ids[:, :1], inserted.expand(3, -1), ids[:, 1:]], dim=1)
        direct = forward_hidden(model, input_ids=tokens)
    torch.testing.assert_close(spliced, direct, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(prefixed_hidden(model, ids, None), forward_hidden(model, input_ids=ids))


def test_splice_puts_the_prefix_after_bos() -> None:
    embeds = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)
    out = splice_prefix(embeds, torch.tensor([[-1.0], [-2.0]]))
    assert out[:, :, 0].tolist() == [[0, -1, -2, 1, 2], [3, -1, -2, 4, 5]]


def test_training_leaves_the_model_unchanged_and_is_seeded(
        tiny_reference: TrainedReference, tiny_dataset: Dataset) -> None:
    model = tiny_reference.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.requires_grad for p in model.parameters()]
    users = tiny_dataset.user_ids()
    seqs = {u: tiny_dataset.sequences[u].train for u in users}
    labels = {u: tiny_dataset.user_profiles[u]["gender"] for u in users}
    settings = PromptTrainingSettings(prefix_len=3, epochs=2, batch_size=16, seed=4)
    prefix, summary = train_fair_prompt(ReferenceSoftPromptTarget(model, tiny_reference.fmt), seqs, labels, settings)
    again, _ = train_fair_prompt(ReferenceSoftPromptTarget(model, tiny_reference.fmt), seqs, labels, settings)
    assert prefix.shape == (3, model.config.n_embd)
    torch.testing.assert_close(prefix, again)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert summary["classes"] == ["F", "M"] and summary["users"] == 40 and summary["steps"] >= 2 * 3
    assert np.isfinite(summary["base_rec_loss"]) and np.isfinite(summary["final_rec_loss"])


def test_a_single_attribute_value_cannot_be_trained_against(
        tiny_reference: TrainedReference, tiny_dataset: Dataset) -> None:
    users = tiny_dataset.user_ids()
    with pytest.raises(ValueError, match="fewer than two attribute values"):
        train_fair_prompt(ReferenceSoftPromptTarget(tiny_reference.model, tiny_reference.fmt),
                          {u: tiny_dataset.sequences[u].train for u in users}, {u: "F" for u in users},
                          PromptTrainingSettings(epochs=1))
