"""The ``hf`` model's leaf modules seen directly (tiny random Llama): the adapter is glue over
:class:`~audit.llm.model.CausalLM` and :class:`~audit.llm.encoding.Encoding`, and the adapter
modules import without the heavy libraries (a fast CLI reads their declared capabilities)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.config import validate_config
from audit.interface import RecRequest
from audit.llm import scoring
from audit.llm.decoding import newline_ids

HEAVY = ("torch", "transformers", "peft", "opacus")


def test_adapter_modules_import_without_torch_transformers_peft_or_opacus() -> None:
    code = ("import sys; import audit.adapters.hf, audit.adapters.reference, audit.adapters.openai, "
            f"audit.adapters.python; print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def llm(tiny_llama_dir: Path) -> HFAdapter:
    return HFAdapter.build(validate_config(HFConfig, {"path": str(tiny_llama_dir), "history": 3}, "t"))


def test_a_soft_prefix_copy_shares_model_and_encoding_and_checks_its_width(llm: HFAdapter) -> None:
    width = llm.lm.width
    prefixed = llm.with_soft_prefix(torch.zeros(2, width))
    assert prefixed.model is llm.model and prefixed.encoding is llm.encoding
    assert prefixed.lm.prefix_len == 2 and llm.lm.prefix_len == 0 and llm.soft_prefix is None
    with pytest.raises(ValueError, match=rf"\(n, {width}\)"):
        llm.with_soft_prefix(torch.zeros(2, width + 1))


def test_prompts_leave_room_for_the_prefix_and_the_reserved_tokens(llm: HFAdapter) -> None:
    enc = llm.encoding
    limit = llm.lm.max_positions
    text = " ".join(["word"] * limit)
    full = enc.prompt_ids(text)
    cut = enc.prompt_ids(text, reserve=10, prefix_len=5)
    assert len(full) > limit - 15 and len(cut) == limit - 15 and cut == full[len(full) - len(cut):]
    req = RecRequest(history=tuple(f"Film Number {i} (1990)" for i in range(1, 9)))
    assert enc.windowed(req).history == req.history[-3:]
    assert llm.score_prompt_ids(req) == enc.request_ids(req, llm.config.score_k, task="generate", reserve=64)


def test_answers_are_numbered_lines_of_continuations_then_the_end_token(llm: HFAdapter) -> None:
    enc, titles = llm.encoding, ["Film Number 3 (1993)", "Film Number 8 (1998)"]
    expected = (enc.marker_ids(1) + enc.continuation_ids(titles[0]) + enc.plain_ids("\n") + enc.marker_ids(2)
                + enc.continuation_ids(titles[1]) + [llm.tokenizer.eos_token_id])
    assert llm.answer_ids(titles) == expected
    assert any("\n" in llm.tokenizer.decode([i]) for i in newline_ids(llm.tokenizer))


def test_scoring_candidates_in_the_leaf_is_what_the_adapter_scores(llm: HFAdapter) -> None:
    req = RecRequest(history=("Film Number 3 (1993)",), profile={"gender": "F"})
    titles = ["Film Number 4 (1994)", "Film Number 12 (1992)", "Film Number 1 (1991)"]
    prompt = llm.score_prompt_ids(req) + llm.encoding.marker_ids(1)
    conts = [llm.encoding.continuation_ids(t) for t in titles]
    shared = scoring.score_candidates(llm.lm, prompt, conts, mode="shared", batch_size=2)
    np.testing.assert_array_equal(llm.score([req], [titles])[0], scoring.score_candidates(llm.lm, prompt, conts))
    np.testing.assert_allclose(shared, scoring.score_naive(llm.lm, prompt, conts), atol=1e-4, rtol=0)
