"""A tiny randomly initialised Llama-architecture model and tokenizer (SmolLM2's architecture,
d = 32, 2 layers), saved with safetensors in a temp directory: no download. A plain module so
tests can import it by a unique name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.conftest import make_tiny_dataset

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_llama(directory: Path, *, layers: int = 2) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from audit.prompts import default_prompts
    from audit.interface import RecRequest

    ds = make_tiny_dataset()
    titles = list(ds.item_titles.values())
    prompts = default_prompts()
    corpus = [prompts.render("generate", RecRequest(history=tuple(titles[i:i + 5]), profile={"gender": "F"}), 10).text
              for i in range(0, len(titles), 5)]
    corpus += [f"{i}. {t}\n" for i, t in enumerate(titles, 1)] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def train_answers_logp(rec, dataset, users: list[str]) -> float:
    """Mean log-likelihood, under ``rec.score``, of each user's last training item after the
    three items before it (how likely a fine-tune made its own training data)."""
    from audit.interface import RecRequest

    titles = dataset.item_titles
    reqs, items = [], []
    for u in users:
        seq = dataset.sequences[u].train
        reqs.append(RecRequest(history=tuple(titles[i] for i in seq[-4:-1]), user=u))
        items.append([titles[seq[-1]]])
    return float(np.mean([s[0] for s in rec.score(reqs, items)]))


def build_hf(llama_dir: Path, dataset, cache: Path, variant=None, **options):
    """The ``hf`` recommender on ``llama_dir`` (history 5, more adapter ``options``) with the
    suite-style ``variant`` spec."""
    from audit.build import build_recommender
    from audit.variants import BuildContext

    entry = {"adapter": "hf", "path": str(llama_dir), "history": 5, **options}
    if variant is not None:
        entry["variant"] = variant
    return build_recommender("llm", entry, BuildContext(dataset=dataset, cache_dir=cache, seed=0, progress=False))
