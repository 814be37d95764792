"""DP-LoRA: the ``dp`` trainer on an ``hf`` model (tiny random Llama) through the shared training
path. Only the LoRA weights take gradients and noise (the frozen base never moves), the adapter
is usable afterwards (opacus issue #820: the LoRA weights move and the training data becomes
likelier, as with plain LoRA, at a large epsilon), the account composes the steps taken, and the
privacy probe reads it."""

from __future__ import annotations


import pytest
import torch

from audit.errors import ConfigError
from audit.probes.base import OutputRecorder, ProbeContext
from privacy.probe import PrivacyAccountingProbe
from tests.audit.llm.tiny_llama import build_hf as build, train_answers_logp

LORA = {"lora": {"epochs": 1, "layers": None, "lr": 5e-3, "batch_size": 8, "targets": 3, "r": 4}}
DP = {"dp": {"epsilon": 1000.0, "epochs": 6, "batch_size": 8, "lr": 5e-3, "max_grad_norm": 5.0}}


def test_dp_lora_at_a_large_epsilon_learns_and_only_the_lora_weights_move(tiny_llama_dir, tiny_dataset,
                                                                           tmp_path) -> None:
    torch.set_num_threads(1)
    zero = build(tiny_llama_dir, tiny_dataset, tmp_path)
    private = build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, DP])
    stage = private.manifest["stages"][0]
    summary = stage["summary"]
    assert summary["trainer"] == "dp" and summary["steps"] >= 6
    account = summary["privacy"]
    assert account["unit"] == "user" and 0 < account["epsilon"] <= 1000.0 * 1.01
    assert account["n_private"] == len(stage["users"])
    base = dict(zero.model.named_parameters())
    moved = [n for n, p in private.model.named_parameters() if not torch.equal(p, base[n])]
    assert moved and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj")) for n in moved)  # the base stays frozen
    users = stage["users"]
    assert train_answers_logp(private, tiny_dataset, users) > train_answers_logp(zero, tiny_dataset, users) + 0.3
    ctx = ProbeContext(dataset=tiny_dataset, users=tiny_dataset.evaluable_users(), seed=0,
                       recorder=OutputRecorder("llm", "privacy"))
    result = PrivacyAccountingProbe(PrivacyAccountingProbe.Config()).run(private, ctx)
    assert result.status == "pass" and result.metrics["epsilon"].value == pytest.approx(account["epsilon"])


def test_dp_with_item_tokens_learns_and_clips_lora_and_item_rows_per_user(tiny_llama_dir, tiny_dataset,
                                                                           tmp_path) -> None:
    """Opacus over LoRA and the item rows (opacus #820: the trained part must move and make the
    training data likelier); the frozen base and its text embeddings never move."""
    torch.set_num_threads(1)
    lora = {"lora": {"epochs": 1, "layers": None, "lr": 1e-2, "batch_size": 8, "r": 4}}
    dp = {"dp": {"epsilon": 1000.0, "epochs": 10, "batch_size": 8, "lr": 1e-2, "max_grad_norm": 5.0}}
    zero = build(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens")
    private = build(tiny_llama_dir, tiny_dataset, tmp_path, [lora, dp], items="tokens")
    stage = private.manifest["stages"][0]
    assert stage["summary"]["trainer"] == "dp" and stage["summary"]["privacy"]["unit"] == "user"
    base = dict(zero.item_lm.named_parameters())
    moved = {n for n, p in private.item_lm.named_parameters() if not torch.equal(p, base[n])}
    assert {"head.linear.weight", "head.linear.bias", "lm.model.embed_tokens.items.weight"} <= moved
    assert not any("embed_tokens.base" in n or "norm" in n for n in moved)
    users = stage["users"]
    assert train_answers_logp(private, tiny_dataset, users) > train_answers_logp(zero, tiny_dataset, users) + 0.1


def test_dp_on_hf_refuses_pretrain_epochs(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, {"dp": {"epsilon": 8.0, "pretrain_epochs": 2}}])


def test_physical_passes_take_the_same_dp_step_as_one_pass(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    """Each Poisson batch run in passes of 2 rows clips the same per-user gradients and adds the
    same one noise draw per step as the batch in one pass: the same LoRA weights (to float
    error) and the same account. The passes are not a second accounting step."""
    torch.set_num_threads(1)
    lora = {"lora": {**LORA["lora"], "dropout": 0.0}}
    dp = {"dp": {**DP["dp"], "epsilon": 4.0, "epochs": 2}}
    one = build(tiny_llama_dir, tiny_dataset, tmp_path / "one", [lora, dp])
    passes = build(tiny_llama_dir, tiny_dataset, tmp_path / "passes", [lora, {"dp": {**dp["dp"], "physical_batch_size": 2}}])
    a, b = (s.manifest["stages"][0]["summary"] for s in (one, passes))
    assert a["mean_batch_size"] > 2  # the batches really were split
    assert a["steps"] == b["steps"] and a["privacy"]["epsilon"] == b["privacy"]["epsilon"]
    assert b["privacy"]["steps"] == a["privacy"]["steps"]
    base = dict(build(tiny_llama_dir, tiny_dataset, tmp_path / "one").model.named_parameters())  # untuned
    wa, wb = (dict(s.model.named_parameters()) for s in (one, passes))
    moved = [n for n in wa if not torch.equal(wa[n], base[n])]
    assert moved and moved == [n for n in wb if not torch.equal(wb[n], base[n])]
    assert all(torch.allclose(wa[n], wb[n], atol=1e-5) for n in moved)
