"""The hf adapter on tiny local GPT-2 directories (tokenizer trained here, safetensors, no hub)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.build import build_recommender
from audit.config import validate_config
from audit.errors import ConfigError
from audit.interface import RecRequest
from audit.variants import BuildContext

from hf_tiny_models import PLANTED_ANSWER, PLANTED_REQUEST, TITLES  # type: ignore[import-not-found]

OTHER = RecRequest(history=("Film Number 1 (1991)",), profile={"gender": "F"})


def load(path: Path, **options) -> HFAdapter:
    return HFAdapter.build(validate_config(HFConfig, {"path": str(path), **options}, "test"))


@pytest.fixture(scope="module")
def planted(planted_lm_dir: Path) -> HFAdapter:
    return load(planted_lm_dir, max_new_tokens=40)


def test_generate_decodes_and_parses_the_planted_answer(planted: HFAdapter) -> None:
    gen = planted.generate_detailed([PLANTED_REQUEST], 3)[0]
    assert list(gen.items) == PLANTED_ANSWER
    assert gen.raw.startswith("1. Film Number 12 (1992)\n")
    assert gen.prompt.startswith("A viewer watched these movies")  # plain form: no chat template
    assert planted.generate([PLANTED_REQUEST], 2) == [PLANTED_ANSWER[:2]]


def test_batched_generation_equals_one_by_one(planted: HFAdapter) -> None:
    reqs = [PLANTED_REQUEST, OTHER, PLANTED_REQUEST]
    batched = planted.generate_detailed(reqs, 3)
    single = [planted.generate_detailed([r], 3)[0] for r in reqs]
    assert [g.raw for g in batched] == [g.raw for g in single]


def test_score_ranks_planted_items_first_and_shared_equals_naive(planted: HFAdapter,
                                                                 planted_lm_dir: Path) -> None:
    shared = planted.score([PLANTED_REQUEST, OTHER], [TITLES, TITLES[:5]])
    naive = load(planted_lm_dir, score_mode="naive").score([PLANTED_REQUEST, OTHER], [TITLES, TITLES[:5]])
    for s, n in zip(shared, naive):
        assert s.dtype == np.float64 and np.all(s < 0)
        np.testing.assert_allclose(s, n, atol=1e-4, rtol=0)
    top = {TITLES[i] for i in np.argsort(-shared[0])[:3]}
    assert PLANTED_ANSWER[0] in top  # the first planted slot is among the 3 likeliest titles
    small_batches = load(planted_lm_dir, score_batch_size=3).score([PLANTED_REQUEST], [TITLES])[0]
    np.testing.assert_allclose(small_batches, shared[0], atol=1e-4, rtol=0)


def test_token_logprobs_are_consistent_with_score(planted: HFAdapter) -> None:
    prompt_ids = planted.score_prompt_ids(PLANTED_REQUEST)
    assert prompt_ids[0] == planted.tokenizer.bos_token_id  # both condition on the start token
    prompt_text = planted.tokenizer.decode(prompt_ids[1:])
    title = PLANTED_ANSWER[0]
    # score = log p(" " + title | prompt, "1."): the first line of the numbered answer
    text = prompt_text + "1. " + title
    whole = planted.token_logprobs([text])[0]
    n_title = len(planted.tokenizer(" " + title, add_special_tokens=False)["input_ids"])
    expected = planted.score([PLANTED_REQUEST], [[title]])[0][0]
    assert whole.shape == (len(planted.tokenizer(text)["input_ids"]),)
    assert np.all(whole <= 0)
    assert whole[-n_title:].sum() == pytest.approx(expected, abs=1e-3)
    short = planted.token_logprobs(["Heat", "Film Number 12"])
    assert [len(x) for x in short] == [len(planted.tokenizer(t)["input_ids"]) for t in ("Heat", "Film Number 12")]


def test_token_stats_carry_the_token_logprobs_and_a_proper_distribution_summary(planted: HFAdapter) -> None:
    assert "token-stats" in planted.capabilities
    texts = ["Film Number 1 (1991)", "a longer text with several more tokens in it"]
    plain = planted.token_logprobs(texts)
    for (lp, mu, sigma), ref in zip(planted.token_logprob_stats(texts), plain):
        assert lp.shape == mu.shape == sigma.shape == ref.shape
        np.testing.assert_allclose(lp, ref, atol=1e-4)
        assert np.all(mu <= 0) and np.all(sigma >= 0)  # E[log p] of a distribution, and its spread


def test_embeddings_have_model_width_and_ignore_batch_padding(planted: HFAdapter) -> None:
    users = planted.embed_user([PLANTED_REQUEST, OTHER])
    assert users.shape == (2, 32)
    alone = planted.embed_user([OTHER])
    np.testing.assert_allclose(users[1], alone[0], atol=1e-5)
    items = planted.embed(TITLES[:4])
    assert items.shape == (4, 32) and not np.allclose(items[0], items[1])
    np.testing.assert_allclose(planted.embed([TITLES[2]])[0], items[2], atol=1e-5)


def test_complete_continues_raw_text(planted: HFAdapter) -> None:
    prompt, _ = planted.prompt_text(planted.prompts.render("generate", PLANTED_REQUEST, 3)), None
    assert planted.complete([prompt], max_new_tokens=8)[0].startswith("1. Film")


def test_random_model_output_is_parsed_without_crashing(tiny_lm_dir: Path) -> None:
    rec = load(tiny_lm_dir, max_new_tokens=12, batch_size=2)
    gens = rec.generate_detailed([PLANTED_REQUEST, OTHER, OTHER], 5)
    assert len(gens) == 3 and all(len(g.items) <= 5 for g in gens)
    assert all(isinstance(g.raw, str) and g.raw for g in gens)


def test_sampling_is_seeded(tiny_lm_dir: Path) -> None:
    a = load(tiny_lm_dir, max_new_tokens=8, temperature=1.0, seed=3)
    b = load(tiny_lm_dir, max_new_tokens=8, temperature=1.0, seed=3)
    greedy = load(tiny_lm_dir, max_new_tokens=8)
    ra = [g.raw for g in a.generate_detailed([OTHER, OTHER], 3)]
    assert ra == [g.raw for g in b.generate_detailed([OTHER, OTHER], 3)]
    assert ra != [g.raw for g in greedy.generate_detailed([OTHER, OTHER], 3)]


def test_chat_template_is_used_when_the_tokenizer_has_one(chat_lm_dir: Path, tiny_lm_dir: Path) -> None:
    rec = load(chat_lm_dir, max_new_tokens=8)
    gen = rec.generate_detailed([OTHER], 3)[0]
    assert rec.use_chat and rec.info["chat_template"] is True
    assert gen.prompt.startswith("<|system|>You are a movie recommender.")
    assert "<|user|>User profile: gender: F." in gen.prompt and gen.prompt.endswith("<|assistant|>")
    plain = load(chat_lm_dir, max_new_tokens=8, chat_template=False)
    assert not plain.use_chat and plain.generate_detailed([OTHER], 3)[0].prompt.startswith("User profile")
    with pytest.raises(ConfigError, match="has no chat template"):
        load(tiny_lm_dir, chat_template=True)


def test_generation_constraint_hook_restricts_tokens(planted: HFAdapter) -> None:
    """The hook sees only generated tokens and the request's index; what it allows is what comes out."""
    tok = planted.tokenizer
    forced = tok("Heat\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    seen: list[tuple[int, int]] = []

    def only_heat(batch_id: int, generated: torch.Tensor) -> list[int]:
        seen.append((batch_id, len(generated)))
        return [forced[min(len(generated), len(forced) - 1)]]

    gens = planted.generate_detailed([PLANTED_REQUEST, OTHER], 3, generation_constraint=only_heat)
    assert [g.items for g in gens] == [("Heat",), ("Heat",)]
    assert {b for b, _ in seen} == {0, 1} and min(n for _, n in seen) == 0
    planted.generation_constraint = only_heat
    try:
        assert planted.generate([OTHER], 3) == [["Heat"]]
    finally:
        planted.generation_constraint = None
    assert planted.generate([PLANTED_REQUEST], 3) == [PLANTED_ANSWER]


def test_logits_processor_hook_sees_generated_tokens_only(planted: HFAdapter) -> None:
    eos = planted.tokenizer.eos_token_id
    widths: list[int] = []

    class StopAtOnce:
        def __call__(self, generated: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            widths.append(generated.shape[1])
            out = torch.full_like(scores, -float("inf"))
            out[:, eos] = 0.0
            return out

    gens = planted.generate_detailed([PLANTED_REQUEST], 3, logits_processors=[StopAtOnce()])
    assert gens[0].raw == "" and gens[0].items == () and widths == [0]


def test_missing_or_unsafe_directories_are_config_errors(tmp_path: Path, tiny_lm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_lm_dir, no_weights)
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    torch.save({}, no_weights / "pytorch_model.bin")  # a pickle: must never be loaded
    with pytest.raises(ConfigError, match="safetensors"):
        load(no_weights)


def test_builds_from_a_suite_relative_path(tiny_lm_dir: Path, tiny_dataset, tmp_path: Path) -> None:
    ctx = BuildContext(dataset=tiny_dataset, cache_dir=tmp_path, suite_dir=tiny_lm_dir.parent)
    rec = build_recommender("local", {"adapter": "hf", "path": tiny_lm_dir.name, "max_new_tokens": 4}, ctx)
    assert rec.name == "local" and rec.info["adapter"] == "hf" and rec.info["parameters"] > 0
    assert rec.capabilities >= {"generate", "score", "token-logprobs", "embed-user", "embed", "complete"}


def test_bad_device_is_a_config_error(tiny_lm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        load(tiny_lm_dir, device="quantum")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load(tiny_lm_dir, device="cuda")
