"""LoRA's defaults on causal LMs other than Llama: tiny random GPT-NeoX, GPT-2 (Conv1D layers) and
Qwen2 models LoRA-tuned through ``recaudit run`` with no ``target_modules`` and no ``layers``
given (the default 8 layers on a 2-layer model), and the errors for options given wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audit.cli import main
from audit.errors import ConfigError
from audit.llm.lora import DEFAULT_TARGETS, LoraOptions, attach_lora, read_adapter, resolve_options
from tests.audit.runner_testkit import write_suite

#: each architecture's attention and MLP projections, in module order (what the default resolves to)
PROJECTIONS = {
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "qwen2": DEFAULT_TARGETS,
}


def tiny_config(arch: str, tokenizer):
    """A 2-layer, 32-wide random config of ``arch`` over ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPTNeoXConfig, Qwen2Config

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if arch == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=2, n_head=2, **ids)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=512, **ids)
    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, **ids)


@pytest.fixture(scope="module", params=sorted(PROJECTIONS))
def arch_dir(request: pytest.FixtureRequest, tiny_llama_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(architecture, a safetensors directory of a tiny random model of it with the tiny Llama's
    tokenizer and chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = request.param
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer))
    directory = tmp_path_factory.mktemp(f"tiny-{arch}")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return arch, directory


def test_lora_defaults_tune_each_architecture_through_recaudit_run(arch_dir, tiny_dataset, recaudit_home: Path,
                                                                   tmp_path: Path) -> None:
    arch, model_dir = arch_dir
    suite = {"name": f"lora-{arch}", "dataset": {"users": 6, "seed": 0},
             "recommenders": {"llm+lora": {"adapter": "hf", "path": str(model_dir), "history": 5,
                                           "variant": {"lora": {"epochs": 1, "r": 4, "lr": 5e-3, "targets": 2}}}},
             "probes": {"utility": {"k": [5], "negatives": 5}}}
    path = write_suite(tmp_path / "suite", suite, dataset=tiny_dataset)
    assert main(["run", str(path), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    [entry] = [p.parent for p in (recaudit_home / "models" / "lora").glob("*/manifest.json")]
    manifest = json.loads((entry / "manifest.json").read_text())
    # the recipe (and so the cache key) records the concrete names and layer count the defaults resolved to
    assert manifest["recipe"]["lora"]["target_modules"] == list(PROJECTIONS[arch])
    assert manifest["recipe"]["lora"]["layers"] == 2
    state = read_adapter(entry)
    targeted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state}
    assert targeted == set(PROJECTIONS[arch])
    # LoRA's B matrices start at zero: training moved them
    moved = [k for k, v in state.items() if "lora_B" in k and v.abs().max() > 0]
    assert len(moved) == len([k for k in state if "lora_B" in k]) > 0
    assert manifest["stages"][0]["summary"]["steps"] > 0


def test_per_example_loss_of_each_architecture_gives_one_gradient_per_example(arch_dir) -> None:
    """The ``dp`` trainer's loss: each example's loss depends on its own input only."""
    from transformers import AutoModelForCausalLM

    from audit.llm.trainable import LoraTrainable
    from audit.training.data import IGNORE

    arch, model_dir = arch_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainable = LoraTrainable(attach_lora(model, LoraOptions(r=2)))
    ids = torch.randint(5, 100, (3, 12))
    targets = torch.full_like(ids, IGNORE)
    targets[:, 8:11] = ids[:, 9:12]
    per = trainable.per_example_loss(ids, targets)
    assert per.shape == (3,) and torch.isfinite(per).all()
    torch.testing.assert_close(per.mean(), trainable.loss(ids, targets), rtol=1e-5, atol=1e-5)
    b = next(p for n, p in trainable.named_trainable() if "lora_B" in n)
    grad = torch.autograd.grad(per[0], b)[0]
    assert grad.abs().sum() > 0  # the LoRA weights are in the loss's graph
    changed = ids.clone()
    changed[1:, :] = torch.randint(5, 100, (2, 12))
    torch.testing.assert_close(trainable.per_example_loss(changed, targets)[0], per[0])


def test_explicit_options_that_do_not_fit_are_config_errors_defaults_fit(arch_dir) -> None:
    from transformers import AutoModelForCausalLM

    arch, model_dir = arch_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    resolved = resolve_options(model, LoraOptions())
    assert resolved.target_modules == PROJECTIONS[arch] and resolved.layers == 2
    assert resolve_options(model, resolved) == resolved
    assert resolve_options(model, LoraOptions(layers=None)).layers is None
    assert resolve_options(model, LoraOptions(layers=1)).layers == 1
    with pytest.raises(ConfigError, match="layers=3 but the model has 2 layers"):
        resolve_options(model, LoraOptions(layers=3))
    wrong = "c_attn" if arch != "gpt2" else "q_proj"
    with pytest.raises(ConfigError, match=rf"\['{wrong}'\] do not exist.*{PROJECTIONS[arch][0]}"):
        attach_lora(model, LoraOptions(target_modules=(wrong,)))
    # a given name may be a suffix of a module's path (GPT-2's MLP c_proj only, not its attention's)
    if arch == "gpt2":
        peft_model = attach_lora(model, LoraOptions(target_modules=("mlp.c_proj",), layers=None))
        assert {n.split(".lora_")[0] for n, _ in peft_model.named_parameters() if "lora_" in n} \
            == {f"base_model.model.transformer.h.{i}.mlp.c_proj" for i in (0, 1)}


def test_dp_lora_defaults_train_each_architecture(arch_dir, tiny_dataset, tmp_path: Path) -> None:
    """The ``dp`` trainer (Opacus per-example gradients of the LoRA weights) on the defaults."""
    from tests.audit.llm.tiny_llama import build_hf

    arch, model_dir = arch_dir
    rec = build_hf(model_dir, tiny_dataset, tmp_path, [{"lora": {"r": 2, "targets": 2}},
                                                       {"dp": {"epsilon": 8.0, "epochs": 1, "batch_size": 8}}])
    summary = rec.manifest["stages"][0]["summary"]
    assert summary["trainer"] == "dp" and summary["steps"] > 0 and summary["privacy"]["epsilon"] > 0
    state = read_adapter(Path(rec.info["lora_dir"]))
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state} == set(PROJECTIONS[arch])
    assert all(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)
