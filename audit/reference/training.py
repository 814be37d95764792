"""Train the reference model from a recipe: tokenizer, network, then the shared stage loop.

:class:`ReferenceModel` is the reference as a :class:`~audit.training.protocol.TrainableModel`:
its BPE tokenizer (trained on the catalog titles and profile strings, no interactions), its
freshly initialised network, its examples (:class:`~audit.reference.examples.StageData`) and its
item-embedding initialisation before the first stage. :func:`audit.training.stages.run_stages`
trains it; each stage trains on the leave-one-out *train* part of its users' sequences (never
the validation or test item), after the recipe's sequence transforms for that stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.reference.examples import StageData, stage_sequences
from audit.reference.item_init import init_item_embeddings
from audit.reference.model import make_model, parameter_count
from audit.reference.prompts import PromptFormat, profile_text
from audit.reference.recipe import TrainingRecipe
from audit.reference.tokenizer import ItemVocab, train_tokenizer
from audit.reference.trainable import ReferenceTrainable
from audit.training.recipe import StageSpec
from audit.training.stages import default_threads, recipe_groups, run_stages, stage_seed, torch_threads

#: the reference modules whose code decides the trained weights (inference code is not among them)
TRAINING_MODULES = tuple(f"audit.reference.{name}" for name in
                         ("tokenizer", "prompts", "model", "recipe", "examples", "item_init", "trainable", "training"))

@dataclass
class TrainedReference:
    """A trained (or loaded) reference model with what it needs to read and write its format."""

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    titles: dict[str, str]
    max_history: int
    manifest: dict[str, Any]

    @property
    def vocab(self) -> ItemVocab:
        if not hasattr(self, "_vocab"):
            self._vocab = ItemVocab(self.tokenizer, self.titles)
        return self._vocab

    @property
    def fmt(self) -> PromptFormat:
        if not hasattr(self, "_fmt"):
            self._fmt = PromptFormat(self.vocab, self.max_history)
        return self._fmt


def tokenizer_corpus(dataset: Dataset) -> list[str]:
    """Text the BPE is trained on: catalog titles (as written after an item token) and
    profile strings (attribute names and values; no interactions)."""
    texts = [" " + t for t in dataset.item_titles.values()]
    texts += sorted({profile_text(p) for p in dataset.user_profiles.values()})
    return texts


def check_positions(recipe: TrainingRecipe, fmt: PromptFormat, profiles: list[dict[str, str]]) -> None:
    """Raise ConfigError when the longest training sequence (full profile, ``max_history``
    items, the longest title) would not fit the model's ``n_positions``."""
    longest_profile = max((len(fmt.profile_ids(p)) for p in profiles), default=0)
    longest_output = max((len(fmt.item_output_ids(i)) for i in fmt.vocab.item_ids), default=0)
    need = 3 + longest_profile + recipe.max_history + longest_output
    if need > recipe.model.n_positions:
        raise ConfigError(
            f"reference recipe: n_positions={recipe.model.n_positions} is too small for this data set: a training "
            f"sequence takes up to {need} tokens ({longest_profile} profile, {recipe.max_history} history items, "
            f"{longest_output} output); raise n_positions or lower max_history")


class ReferenceModel:
    """The reference GPT-2 before training (see the module docstring); ``identity`` is None: it is
    built from the recipe and the data set alone."""

    identity: str | None = None
    training_modules: tuple[str, ...] = TRAINING_MODULES

    def __init__(self, recipe: TrainingRecipe, dataset: Dataset) -> None:
        self.recipe = recipe
        self.titles = dict(dataset.item_titles)
        self.tokenizer = train_tokenizer(tokenizer_corpus(dataset), list(self.titles), recipe.text_vocab_size)
        self.vocab = ItemVocab(self.tokenizer, self.titles)
        self.fmt = PromptFormat(self.vocab, recipe.max_history)
        check_positions(recipe, self.fmt, list(dataset.user_profiles.values()))
        self.model = make_model(recipe.model, len(self.tokenizer), bos_id=self.fmt.bos, eos_id=self.fmt.eos,
                                pad_id=self.fmt.pad, seed=recipe.seed)
        self._trainable = ReferenceTrainable(self.model, self.tokenizer)

    def trainable(self) -> ReferenceTrainable:
        return self._trainable

    def before_stage(self, index: int, stage: StageSpec,
                     sequences: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
        """Before the first stage, with ``item_init: cooccurrence``: item embeddings from that
        stage's sequences (SVD of item-pair PPMI); returns how they were initialised."""
        if index != 0 or self.recipe.item_init != "cooccurrence":
            return None
        info = init_item_embeddings(self.model, self.vocab, sequences.values(), window=self.recipe.item_init_window,
                                    seed=stage_seed(self.recipe, 0, "item_init"))
        return {"item_init": {**info, "method": "cooccurrence", "stage": stage.name}}

    def stage_data(self, stage: StageSpec, sequences: Mapping[str, Sequence[str]],
                   profiles: Mapping[str, Mapping[str, str]]) -> StageData:
        return StageData(self.fmt, stage_sequences(sequences), {u: dict(p) for u, p in profiles.items()},
                         self.recipe.attribute_dropout, stage.catalog_titles)

    def manifest(self, recipe: TrainingRecipe, dataset: Dataset, records: list[dict[str, Any]],
                 seconds: float, threads: int) -> dict[str, Any]:
        """The trained model's manifest: recipe, data, user groups, stage records, item init."""
        groups = recipe_groups(recipe, dataset)
        item_init: dict[str, Any] = {"method": "random"}
        for record in records:
            item_init = record.get("before", {}).get("item_init", item_init)
        return {
            "recipe": recipe.to_json(),
            "data": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_items": len(self.titles)},
            "groups": {"seed": recipe.split_seed, "pretrain": len(groups.pretrain),
                       "finetune": len(groups.finetune), "heldout": len(groups.heldout)},
            "stages": [dict(r) for r in records],
            "item_init": item_init,
            "parameters": parameter_count(self.model),
            "train_seconds": round(seconds, 2),
            "threads": threads,
        }

    def trained(self, manifest: dict[str, Any]) -> TrainedReference:
        self.model.eval()
        return TrainedReference(self.model, self.tokenizer, self.titles, self.recipe.max_history, manifest)


def train_reference(recipe: TrainingRecipe, dataset: Dataset, *, progress: bool = False,
                    threads: int | None = None) -> TrainedReference:
    """Train a fresh model as ``recipe`` says on ``dataset`` (no cache); deterministic for equal
    inputs (same thread count; default :func:`~audit.training.stages.default_threads`). Returns the
    model in eval mode with its manifest."""
    threads = default_threads() if threads is None else threads
    t_start = time.perf_counter()
    with torch_threads(threads):
        model = ReferenceModel(recipe, dataset)
        _, records = run_stages(recipe, model, dataset, progress=progress)
    return model.trained(model.manifest(recipe, dataset, records, time.perf_counter() - t_start, threads))
