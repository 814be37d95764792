"""The fair soft prompt on an ``hf`` model (tiny random Llama): a prefix of real token embeddings
is exactly those tokens inserted after the prompt's first token in scoring, generation and
``embed_user``; the fair-prompt variant trains a prefix on a LoRA-tuned model's trained users,
leaves the model's weights unchanged, and caches the prefix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audit.adapters.hf import HFAdapter
from audit.build import build_recommender
from audit.interface import RecRequest
from audit.llm import decoding, scoring
from audit.variants import BuildContext

LORA = {"lora": {"epochs": 1, "layers": None, "lr": 5e-3, "batch_size": 8, "targets": 2, "r": 4}}
FAIR = {"fair-prompt": {"attributes": ["gender"], "epochs": 2, "prefix_len": 3, "batch_size": 8, "lr": 0.05}}


def build(tiny_llama_dir: Path, dataset, cache: Path, variant=None):
    entry = {"adapter": "hf", "path": str(tiny_llama_dir), "history": 5, "max_new_tokens": 24}
    if variant is not None:
        entry["variant"] = variant
    return build_recommender("llm", entry, BuildContext(dataset=dataset, cache_dir=cache, seed=0, progress=False))


@pytest.fixture(scope="module")
def plain(tiny_llama_dir: Path, tiny_dataset, tmp_path_factory: pytest.TempPathFactory) -> HFAdapter:
    return build(tiny_llama_dir, tiny_dataset, tmp_path_factory.mktemp("plain"))  # type: ignore[return-value]


def inserted(ids: list[int], tokens: list[int]) -> list[int]:
    return [ids[0], *tokens, *ids[1:]]


def test_a_prefix_of_token_embeddings_equals_inserting_the_tokens(plain: HFAdapter, tiny_dataset) -> None:
    titles = tiny_dataset.item_titles
    tokens = plain.encoding.plain_ids(" movies")[:2] or [5]
    prefix = plain.model.get_input_embeddings().weight[tokens].detach()
    prefixed = plain.with_soft_prefix(prefix)
    assert plain.soft_prefix is None  # the copy, not the original, carries the prefix
    u = tiny_dataset.user_ids()[0]
    req = RecRequest(history=tuple(titles[i] for i in tiny_dataset.sequences[u].train[-5:]), user=u)
    prompt = plain.score_prompt_ids(req) + plain.encoding.marker_ids(1)
    conts = [plain.encoding.continuation_ids(t) for t in list(titles.values())[:6]]
    literal = scoring.score_naive(plain.lm, inserted(prompt, tokens), conts)
    np.testing.assert_allclose(scoring.score_shared(prefixed.lm, prompt, conts), literal, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scoring.score_naive(prefixed.lm, prompt, conts), literal, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(prefixed.embed_user([req]),
                               scoring.last_hidden(plain.lm, [inserted(plain.score_prompt_ids(req), tokens)],
                                                   batch_size=plain.config.batch_size),
                               rtol=1e-4, atol=1e-4)
    short = plain.score_prompt_ids(RecRequest(history=(titles[list(titles)[0]],)))
    ids = [plain.score_prompt_ids(req), short]  # different lengths: left padding differs per row
    bs = plain.config.batch_size
    assert decoding.generate_texts(prefixed.lm, ids, 8, batch_size=bs) == \
        decoding.generate_texts(plain.lm, [inserted(i, tokens) for i in ids], 8, batch_size=bs)
    assert not np.allclose(prefixed.embed_user([req]), plain.embed_user([req]))


def test_the_fair_prompt_trains_on_a_lora_tuned_llm_and_is_cached(tiny_llama_dir: Path, tiny_dataset,
                                                                   tmp_path: Path) -> None:
    base = build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA])
    weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    fair = build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, FAIR])
    info = fair.info["fair_prompt"]
    assert info["trained_now"] and info["steps"] > 0 and info["users"] > 0
    assert fair.soft_prefix is not None and fair.soft_prefix.shape == (3, base.model.config.hidden_size)
    for k, v in fair.model.state_dict().items():  # same LoRA-merged weights as the undefended model
        torch.testing.assert_close(v, weights[k])
    again = build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, FAIR])
    assert not again.info["fair_prompt"]["trained_now"]
    torch.testing.assert_close(again.soft_prefix, fair.soft_prefix)
    titles = tiny_dataset.item_titles
    req = RecRequest(history=tuple(list(titles.values())[:3]))
    assert fair.generate([req], 2) and not np.allclose(fair.embed_user([req]), base.embed_user([req]))
