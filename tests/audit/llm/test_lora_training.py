"""LoRA fine-tuning of an ``hf`` model on the shared training path, on a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.build import build_recommender
from audit.config import validate_config
from audit.errors import ConfigError
from audit.interface import RecRequest
from audit.llm.decoding import LinesWritten
from audit.suite import load_suite
from audit.variants import BuildContext
from tests.audit.llm.tiny_llama import train_answers_logp

LORA = {"lora": {"epochs": 4, "layers": None, "lr": 5e-3, "batch_size": 8, "targets": 3, "r": 4}}


def build(tiny_llama_dir: Path, dataset, cache: Path, variant=None, **options):
    entry = {"adapter": "hf", "path": str(tiny_llama_dir), "history": 5, **options}
    if variant is not None:
        entry["variant"] = variant
    return build_recommender("llm", entry, BuildContext(dataset=dataset, cache_dir=cache, seed=0, progress=False))


@pytest.fixture(scope="module")
def tuned(tiny_llama_dir: Path, tiny_dataset, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("lora-cache")
    return build(tiny_llama_dir, tiny_dataset, cache, LORA), cache


def test_lora_weights_move_base_stays_and_training_data_becomes_likelier(tuned, tiny_llama_dir, tiny_dataset,
                                                                        tmp_path) -> None:
    rec, _ = tuned
    zero = build(tiny_llama_dir, tiny_dataset, tmp_path)
    assert rec.info["trained_now"] is True and zero.manifest is None
    stage = rec.manifest["stages"][0]
    users = stage["users"]
    heldout = set(tiny_dataset.user_groups(seed=0, pretrain=0.5, heldout=0.1).heldout)
    assert users and not heldout & set(users)  # held-out users are never trained on
    summary = stage["summary"]
    assert summary["steps"] > 0 and summary["seconds"] > 0 and np.isfinite(summary["final_loss"])
    # LoRA moved the weights: the merged model differs from the base, on the LoRA'd matrices only
    base = dict(zero.model.named_parameters())
    moved = [n for n, p in rec.model.named_parameters() if not torch.equal(p, base[n])]
    assert moved and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj")) for n in moved)
    assert train_answers_logp(rec, tiny_dataset, users) > train_answers_logp(zero, tiny_dataset, users) + 0.5


def test_cached_fine_tune_reloads_identically(tuned, tiny_llama_dir, tiny_dataset) -> None:
    rec, cache = tuned
    again = build(tiny_llama_dir, tiny_dataset, cache, LORA)
    assert again.info["trained_now"] is False and again.info["key"] == rec.info["key"]
    req = [RecRequest(history=tuple(tiny_dataset.item_titles[i] for i in ("1", "2", "3")))]
    titles = list(tiny_dataset.item_titles.values())[:8]
    np.testing.assert_array_equal(again.score(req, [titles])[0], rec.score(req, [titles])[0])
    saved = Path(rec.info["lora_dir"])
    assert (saved / "adapter.safetensors").is_file()
    assert json.loads((saved / "manifest.json").read_text())["complete"] is True
    # another option is another adapter
    other = {"lora": {**LORA["lora"], "r": 2, "epochs": 1}}
    assert build(tiny_llama_dir, tiny_dataset, cache, other).info["key"] != rec.info["key"]


def test_shared_scoring_equals_one_forward_per_candidate(tuned, tiny_llama_dir, tiny_dataset) -> None:
    rec, _ = tuned
    naive = HFAdapter(rec.model, rec.tokenizer, validate_config(
        HFConfig, {"path": str(tiny_llama_dir), "history": 5, "score_mode": "naive"}, "t"), rec.prompts)
    req = [RecRequest(history=("Film Number 3 (1993)", "Film Number 8 (1998)"), profile={"gender": "F"})]
    titles = list(tiny_dataset.item_titles.values())
    shared = rec.score(req, [titles])[0]
    np.testing.assert_allclose(shared, naive.score(req, [titles])[0], atol=1e-4, rtol=0)
    rec.config = rec.config.model_copy(update={"score_batch_size": 5})
    np.testing.assert_allclose(rec.score(req, [titles])[0], shared, atol=1e-4, rtol=0)


def test_prompts_carry_only_the_history_window(tuned) -> None:
    rec, _ = tuned
    req = RecRequest(history=tuple(f"Film Number {i} (1990)" for i in range(1, 13)))
    text = rec.prompt_text(rec.render(req, 10))
    assert "Film Number 8 (1990)" in text and "Film Number 7 (1990)" not in text
    assert rec.info["history_window"] == 5


def test_generation_stops_once_k_lines_are_written() -> None:
    stop = LinesWritten(frozenset({7}), prompt_len=2, lines=2)
    ids = torch.tensor([[1, 7, 3, 7, 4], [1, 1, 7, 7, 2], [1, 1, 3, 3, 7]])
    # prompt columns are ignored: row 0 has one generated newline, row 1 two, row 2 one
    assert stop(ids, torch.zeros(3, 9)).tolist() == [False, True, False]


def test_bad_lora_options_name_what_to_fix(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"c_attn.*do not exist.*q_proj"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, {"lora": {"target_modules": ["c_attn"]}})
    with pytest.raises(ConfigError, match="layers=9"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, {"lora": {"layers": 9}})
    with pytest.raises(ConfigError, match="lr"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, {"lora": {"lr": -1}})
    assert not (tmp_path / "lora").exists() or not any((tmp_path / "lora").iterdir())


def test_variants_an_adapter_cannot_support_fail_at_load(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    for adapter, variant, needs in [("reference", "lora", "train-lora"),
                                    ("openai\n    base_url: http://127.0.0.1:9/v1\n    model: m",
                                     "federated: {clients: 8}", "train-federated"),
                                    ("openai\n    base_url: http://127.0.0.1:9/v1\n    model: m",
                                     "fair-prompt: {attributes: [gender]}", "soft-prompt")]:
        suite.write_text(f"name: s\ndataset: {{name: ml-100k}}\nrecommenders:\n  r:\n    adapter: {adapter}\n"
                         f"    variant: {{{variant}}}\nprobes:\n  utility: {{}}\n" if ":" in variant else
                         f"name: s\ndataset: {{name: ml-100k}}\nrecommenders:\n  r:\n    adapter: {adapter}\n"
                         f"    variant: {variant}\nprobes:\n  utility: {{}}\n")
        with pytest.raises(ConfigError, match=f"needs {needs}.*adapters that support it"):
            load_suite(suite, validate_dataset=False)


def test_missing_model_name_and_directory_are_config_errors(recaudit_home, tmp_path) -> None:
    with pytest.raises(ConfigError, match="recaudit fetch smollm2-135m"):
        HFAdapter.build(validate_config(HFConfig, {"model": "smollm2-135m"}, "t"))
    with pytest.raises(ConfigError, match="not found"):
        HFAdapter.build(validate_config(HFConfig, {"path": str(tmp_path / "nope")}, "t"))
    with pytest.raises(ConfigError, match="exactly one"):
        validate_config(HFConfig, {}, "t")
