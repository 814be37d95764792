"""A tiny random GPT-2 with a tokenizer trained here on the tiny catalog's text (no hub),
loaded through the real ``hf`` adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audit.data.dataset import Dataset
from audit.training.stages import torch_threads
from audit.variants import BuildContext


def build_random_lm(directory: Path, dataset: Dataset) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = [f"{i}. {t}" for i, t in enumerate(dataset.item_titles.values(), 1)]
    corpus += ["A viewer watched these movies, oldest first:", "Recommend movies one per line"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def random_lm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Path:
    return build_random_lm(tmp_path_factory.mktemp("random-lm"), tiny_dataset)


@pytest.fixture()
def build_ctx(tiny_dataset: Dataset, tmp_path: Path) -> BuildContext:
    return BuildContext(dataset=tiny_dataset, cache_dir=tmp_path, seed=0, progress=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models decode far faster on one thread than on two contended ones."""
    with torch_threads(1):
        yield
