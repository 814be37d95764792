"""Federated LoRA: the ``federated`` trainer on an ``hf`` model (tiny random Llama) through the
shared training path, on Flower's simulation engine (Ray). Clients exchange only the LoRA weights
(the bytes in the manifest are rounds x sampled clients x LoRA state x 2 directions, and the
frozen base never moves), FedAvg makes the trained users' data likelier, and federated + central
DP yields the client-level account the privacy probe reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Array

from audit.llm.lora import read_adapter
from audit.probes.base import OutputRecorder, ProbeContext
from privacy.probe import PrivacyAccountingProbe
from privacy.task import state_arrays
from tests.audit.llm.tiny_llama import build_hf as build, train_answers_logp

LORA = {"lora": {"epochs": 1, "layers": None, "lr": 5e-3, "batch_size": 8, "targets": 3, "r": 4}}
FED = {"clients": 2, "clients_per_round": 2, "rounds": 2, "local_epochs": 3, "ray_cpus": 2}
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def message_bytes(rec) -> int:
    """Serialised bytes of one message's arrays: the saved LoRA state as Flower ships it."""
    state = state_arrays(read_adapter(Path(rec.info["lora_dir"])))
    return sum(len(Array(a).data) for a in state.values())


def test_federated_lora_exchanges_only_the_lora_weights_and_fits_the_trained_users(tiny_llama_dir, tiny_dataset,
                                                                                     tmp_path) -> None:
    torch.set_num_threads(1)
    zero = build(tiny_llama_dir, tiny_dataset, tmp_path)
    fed = build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, {"federated": FED}])
    stage = fed.manifest["stages"][0]
    summary = stage["summary"]
    assert summary["trainer"] == "federated" and summary["clients"] == 2 and summary["rounds"] == 2
    assert sorted(summary["sampled"]) == ["1", "2"] and "privacy" not in summary
    base = dict(zero.model.named_parameters())
    moved = [n for n, p in fed.model.named_parameters() if not torch.equal(p, base[n])]
    assert moved and all(any(t in n for t in LORA_MODULES) for n in moved)  # merged LoRA; the base is frozen
    users = stage["users"]
    assert train_answers_logp(fed, tiny_dataset, users) > train_answers_logp(zero, tiny_dataset, users) + 0.3

    per_message = message_bytes(fed)
    lora_values = sum(a.nbytes for a in state_arrays(read_adapter(Path(fed.info["lora_dir"]))).values())
    base_values = sum(p.numel() * p.element_size() for p in zero.model.parameters())
    assert lora_values == summary["trained_state_bytes"] and lora_values < base_values / 2  # the base never travels
    sent = summary["bytes"]
    one_way = FED["clients_per_round"] * per_message
    assert sent["per_round"] == [{"round": r, "server_to_clients": one_way, "clients_to_server": one_way}
                                 for r in (1, 2)]
    assert sent["total"] == FED["rounds"] * FED["clients_per_round"] * per_message * 2
    assert sent["server_to_clients"] == sent["clients_to_server"] == sent["total"] // 2


def test_federated_dp_lora_has_the_client_level_account_the_probe_reads(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    torch.set_num_threads(1)
    fed = build(tiny_llama_dir, tiny_dataset, tmp_path,
                [LORA, {"federated": {**FED, "rounds": 1, "local_epochs": 1,
                                      "dp": {"epsilon": 8.0, "clipping_norm": 0.5}}}])
    stage = fed.manifest["stages"][0]
    summary = stage["summary"]
    account = summary["privacy"]
    assert account["unit"] == "user" and 0 < account["epsilon"] <= 8.0
    assert account["n_private"] == len(stage["users"]) and account["max_grad_norm"] == 0.5
    assert summary["bytes"]["total"] == 1 * FED["clients_per_round"] * message_bytes(fed) * 2
    ctx = ProbeContext(dataset=tiny_dataset, users=tiny_dataset.evaluable_users(), seed=0,
                       recorder=OutputRecorder("llm", "privacy"))
    result = PrivacyAccountingProbe(PrivacyAccountingProbe.Config()).run(fed, ctx)
    assert result.status == "pass" and result.metrics["epsilon"].value == pytest.approx(account["epsilon"])


def test_federated_item_tokens_exchange_only_lora_and_the_item_rows(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    """With ``items: tokens`` a message carries the LoRA weights, the item input rows and the item
    head: the trained part, nothing of the frozen base; FedAvg makes the training data likelier."""
    from audit.llm.item_training import ItemEntry

    torch.set_num_threads(1)
    lora = {"lora": {"epochs": 1, "layers": None, "lr": 1e-2, "batch_size": 8, "r": 4}}
    zero = build(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens")
    fed = build(tiny_llama_dir, tiny_dataset, tmp_path, [lora, {"federated": FED}], items="tokens")
    summary = fed.manifest["stages"][0]["summary"]
    assert summary["trainer"] == "federated" and summary["rounds"] == 2
    state = ItemEntry.read_state(Path(fed.info["lora_dir"]))
    assert {"items.input", "items.output.weight", "items.output.bias"} <= set(state)
    trained = sum(a.nbytes for a in state_arrays(state).values())
    base_values = sum(p.numel() * p.element_size() for n, p in zero.item_lm.named_parameters()
                      if not n.startswith("head.") and "embed_tokens.items" not in n)
    assert summary["trained_state_bytes"] == trained < base_values / 2  # the base never travels
    per_message = sum(len(Array(a).data) for a in state_arrays(state).values())
    assert summary["bytes"]["total"] == FED["rounds"] * FED["clients_per_round"] * per_message * 2
    base = dict(zero.item_lm.named_parameters())
    moved = {n for n, p in fed.item_lm.named_parameters() if not torch.equal(p, base[n])}
    assert {"head.linear.weight", "lm.model.embed_tokens.items.weight"} <= moved
    users = fed.manifest["stages"][0]["users"]
    assert train_answers_logp(fed, tiny_dataset, users) > train_answers_logp(zero, tiny_dataset, users) + 0.1
