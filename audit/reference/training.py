"""Train the reference model from a recipe: tokenizer, network, stages, manifest.

Each stage trains on the leave-one-out *train* part of its users' sequences (never
the validation or test item), after the recipe's sequence transforms for that stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.data.dataset import Dataset, UserGroups
from audit.errors import ConfigError
from audit.reference.examples import StageData, stage_sequences
from audit.reference.item_init import init_item_embeddings
from audit.reference.model import make_model, parameter_count
from audit.reference.prompts import PromptFormat, profile_text
from audit.reference.recipe import StageSpec, TrainingRecipe
from audit.reference.tokenizer import ItemVocab, train_tokenizer
from audit.reference.trainable import ReferenceTrainable
from audit.reference.trainers import TRAINERS

#: most CPU threads used while training (the default config is sized for 2 cores)
TRAIN_THREADS = 2


def default_threads() -> int:
    """``TRAIN_THREADS``, or fewer when the process was limited to fewer threads."""
    return max(1, min(TRAIN_THREADS, torch.get_num_threads()))


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


def stage_users(spec: StageSpec, groups: UserGroups, dataset: Dataset) -> list[str]:
    if spec.users == "all":
        return dataset.user_ids()
    return list(getattr(groups, spec.users))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stage_training_sequences(recipe: Any, index: int, stage: StageSpec, groups: UserGroups, dataset: Dataset,
                             ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], list[dict[str, Any]]]:
    """The ``train`` sequences and profiles of stage ``index``'s users after the recipe's sequence
    transforms for that stage (each seeded by recipe, stage and position), with the transforms'
    manifests. Any recipe with ``sequence_transforms`` and ``seed`` (reference or LoRA) works."""
    users = stage_users(stage, groups, dataset)
    seqs = {u: list(dataset.sequences[u].train) for u in users if u in dataset.sequences}
    profiles = {u: dict(dataset.user_profiles.get(u, {})) for u in seqs}
    transforms = []
    for t_index, transform in enumerate(recipe.sequence_transforms):
        if not transform.applies_to(stage.name, recipe):
            continue
        rng = np.random.default_rng(stage_seed(recipe, index, f"transform{t_index}"))
        seqs, profiles, manifest = transform.apply(seqs, profiles, dataset, rng)
        transforms.append({**transform.to_json(), "manifest": manifest})
    titles = dataset.item_titles
    unknown = sorted({i for s in seqs.values() for i in s if i not in titles})
    if unknown:
        raise ValueError(f"stage {stage.name!r}: sequences hold items outside the catalog, e.g. {unknown[:3]}")
    return seqs, profiles, transforms


def stage_seed(recipe: Any, index: int, what: str) -> int:
    h = hashlib.sha256(f"{recipe.seed}/{index}/{what}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def train_reference(recipe: TrainingRecipe, dataset: Dataset, *, progress: bool = False,
                    threads: int | None = None) -> TrainedReference:
    """Train a fresh model as ``recipe`` says on ``dataset``; deterministic for equal inputs
    (same thread count; default :func:`default_threads`). Returns the model in eval mode
    with its manifest."""
    threads = default_threads() if threads is None else threads
    t_start = time.perf_counter()
    with torch_threads(threads):
        titles = dict(dataset.item_titles)
        tokenizer = train_tokenizer(tokenizer_corpus(dataset), list(titles), recipe.text_vocab_size)
        vocab = ItemVocab(tokenizer, titles)
        fmt = PromptFormat(vocab, recipe.max_history)
        check_positions(recipe, fmt, list(dataset.user_profiles.values()))
        model = make_model(recipe.model, len(tokenizer), bos_id=fmt.bos, eos_id=fmt.eos, pad_id=fmt.pad,
                           seed=recipe.seed)
        groups = dataset.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share,
                                     heldout=recipe.heldout_share)
        stages_out = []
        item_init: dict[str, Any] = {"method": "random"}
        for index, stage in enumerate(recipe.stages):
            seqs, profiles, transforms = stage_training_sequences(recipe, index, stage, groups, dataset)
            if index == 0 and recipe.item_init == "cooccurrence":
                item_init = init_item_embeddings(model, vocab, seqs.values(), window=recipe.item_init_window,
                                                 seed=stage_seed(recipe, 0, "item_init"))
                item_init.update(method="cooccurrence", stage=stage.name)
            data = StageData(fmt, stage_sequences(seqs), profiles, recipe.attribute_dropout, stage.catalog_titles)
            trainer = TRAINERS.get(stage.trainer)
            summary = trainer(ReferenceTrainable(model, tokenizer), data, stage, stage_seed(recipe, index, "train"), progress)
            stages_out.append({"name": stage.name, "users_group": stage.users, "n_users": len(seqs),
                               "users": sorted(seqs), "transforms": transforms, "summary": summary})
        model.eval()
    manifest = {
        "recipe": recipe.to_json(),
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_items": len(titles)},
        "groups": {"seed": recipe.split_seed, "pretrain": len(groups.pretrain),
                   "finetune": len(groups.finetune), "heldout": len(groups.heldout)},
        "stages": stages_out,
        "item_init": item_init,
        "parameters": parameter_count(model),
        "train_seconds": round(time.perf_counter() - t_start, 2),
        "threads": threads,
    }
    return TrainedReference(model, tokenizer, titles, recipe.max_history, manifest)
