"""Shared set-up of the privacy benchmarks: a freshly initialised reference model (tokenizer
trained on ML-100k, item tokens for the whole catalog) and the private (fine-tune) users'
training data, catalog rows off. Step and round times do not depend on the weights' values."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.data.dataset import Dataset
from audit.data.loaders import load_dataset
from audit.reference.examples import StageData
from audit.reference.model import make_model
from audit.reference.presets import PRESETS
from audit.reference.prompts import PromptFormat
from audit.reference.recipe import TrainingRecipe
from audit.reference.tokenizer import ItemVocab, train_tokenizer
from audit.reference.training import tokenizer_corpus


@dataclass
class PrivateSetup:
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    data: StageData  # the private users' windows
    recipe: TrainingRecipe  # the preset's
    dataset: Dataset  # ML-100k


def private_finetune_setup(preset: str = "default") -> PrivateSetup:
    """The reference model at ``preset`` (fresh weights) and the private users' data."""
    ds = load_dataset("ml-100k")
    recipe = PRESETS[preset]
    titles = dict(ds.item_titles)
    tok = train_tokenizer(tokenizer_corpus(ds), list(titles), recipe.text_vocab_size)
    fmt = PromptFormat(ItemVocab(tok, titles), recipe.max_history)
    model = make_model(recipe.model, len(tok), bos_id=fmt.bos, eos_id=fmt.eos, pad_id=fmt.pad, seed=0)
    groups = ds.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share, heldout=recipe.heldout_share)
    seqs = {u: ds.sequences[u].train for u in groups.finetune}
    data = StageData(fmt, seqs, {u: ds.user_profiles.get(u, {}) for u in seqs}, recipe.attribute_dropout, False)
    return PrivateSetup(model, tok, data, recipe, ds)
