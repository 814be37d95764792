"""The ``dp`` trainer and variant on a tiny reference model: user-level accounting within the
target, empty Poisson batches, a clean model afterwards, reproducibility, and the recipe."""

from __future__ import annotations

import math

import copy
import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from audit.reference.trainable import ReferenceTrainable
from opacus.accountants import RDPAccountant

from audit.config import validate_config
from audit.errors import ConfigError
from audit.training.recipe import StageSpec
from audit.variants import BuildContext
from privacy.accounting import dp_sgd_epsilon
from privacy.dp import DPConfig, DPVariant, noise_only_step, train_dp_stage
from privacy.federated import FederatedConfig, FederatedVariant
from tests.privacy.conftest import stage_data, tiny_recipe


def _stage(epochs: int = 2, batch_size: int = 4, bf16: bool = False, **options) -> StageSpec:
    """A dp stage; RDP accounting unless asked (PRV's calibration takes seconds)."""
    opts = {"epsilon": 4.0, "accountant": "rdp", **options}
    return StageSpec(name="finetune", users="finetune", trainer="dp", epochs=epochs, lr=1e-3,
                     batch_size=batch_size, catalog_titles=False, bf16=bf16, options=tuple(opts.items()))


def _train(ref, dataset, stage, seed=0):
    model = copy.deepcopy(ref.model)
    summary = train_dp_stage(ReferenceTrainable(model, ref.tokenizer), stage_data(ref, dataset), stage, seed, False)
    return model, summary


def test_user_level_account_stays_within_the_target(tiny_reference, tiny_dataset):
    model, summary = _train(tiny_reference, tiny_dataset, _stage(epochs=2, batch_size=4, accountant="prv"))
    acc = summary["privacy"]
    assert acc["accountant"] == "prv"
    n_users = len(tiny_dataset.user_ids())
    assert acc["unit"] == "user" and acc["n_private"] == n_users
    assert acc["epsilon"] <= acc["target_epsilon"] == 4.0
    # default delta: at most 1 / (10 n), rounded down to a power of ten
    assert acc["delta"] <= 1 / (10 * n_users) and math.log10(acc["delta"]) == pytest.approx(round(math.log10(acc["delta"])))
    assert acc["sample_rate"] == pytest.approx(4 / n_users)
    assert summary["steps"] == acc["steps"] == 2 * n_users // 4
    assert acc["epsilon"] == pytest.approx(
        dp_sgd_epsilon(acc["noise_multiplier"], acc["sample_rate"], acc["steps"], acc["delta"], acc["accountant"]))
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, dict(tiny_reference.model.named_parameters())[n])]
    assert changed, "DP training left every parameter unchanged"
    # Opacus's hooks and per-sample buffers are gone: the model is an ordinary model again
    assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert not model.training


def test_empty_poisson_batches_take_a_noise_only_step_the_accountant_counts(tiny_reference, tiny_dataset):
    """Expected batch 1 of 40 users: about (39/40)^40 = 36% of Poisson batches are empty."""
    _, summary = _train(tiny_reference, tiny_dataset, _stage(epochs=1, batch_size=1, epsilon=8.0))
    n_users = len(tiny_dataset.user_ids())
    assert summary["empty_batches"] > 0
    assert summary["steps"] == summary["privacy"]["steps"] == n_users
    acc = summary["privacy"]
    assert acc["epsilon"] == pytest.approx(
        dp_sgd_epsilon(acc["noise_multiplier"], acc["sample_rate"], n_users, acc["delta"], acc["accountant"]))


def test_noise_only_step_moves_parameters_and_steps_the_accountant(tiny_reference):
    from opacus.optimizers import DPOptimizer

    model = copy.deepcopy(tiny_reference.model).train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0,
                      expected_batch_size=4)
    acc = RDPAccountant()
    opt.attach_step_hook(acc.get_optimizer_hook_fn(sample_rate=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noise_only_step(opt)
    assert acc.history == [(1.0, 0.1, 1)]
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_bf16_autocast_stage_trains_with_float32_weights(tiny_reference, tiny_dataset):
    """The reference presets train under CPU bf16 autocast; per-sample gradients then come in
    bf16 and Opacus clips and steps them in the parameters' float32."""
    model, summary = _train(tiny_reference, tiny_dataset, _stage(epochs=1, bf16=True))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert summary["privacy"]["epsilon"] <= 4.0 and np.isfinite(summary["final_loss"])


def test_example_level_dp_is_labelled_as_such(tiny_reference, tiny_dataset):
    _, summary = _train(tiny_reference, tiny_dataset, _stage(epochs=1, batch_size=8, unit="example"))
    acc = summary["privacy"]
    assert acc["unit"] == "example" and "example-level" in acc["note"]
    assert acc["n_private"] > len(tiny_dataset.user_ids())  # several windows per user
    assert acc["epsilon"] <= 4.0


def test_same_seed_same_weights(tiny_reference, tiny_dataset):
    a, _ = _train(tiny_reference, tiny_dataset, _stage(epochs=1), seed=3)
    b, _ = _train(tiny_reference, tiny_dataset, _stage(epochs=1), seed=3)
    c, _ = _train(tiny_reference, tiny_dataset, _stage(epochs=1), seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_batch_larger_than_the_private_users_is_a_config_error(tiny_reference, tiny_dataset):
    with pytest.raises(ConfigError, match="batch_size"):
        _train(tiny_reference, tiny_dataset, _stage(batch_size=1000))


def test_variant_builds_a_shared_public_pretrain_and_a_dp_finetune(tiny_dataset, tmp_path):
    cfg = validate_config(DPConfig, {"epsilon": 1, "epochs": 3, "batch_size": 16}, "test")
    recipe = DPVariant(cfg).modify_recipe(tiny_recipe(), BuildContext(tiny_dataset, tmp_path))
    pre, fine = recipe.stages
    assert (pre.name, pre.users, pre.trainer) == ("pretrain", "pretrain", "plain")
    assert (fine.name, fine.users, fine.trainer, fine.epochs, fine.batch_size) == ("finetune", "finetune", "dp", 3, 16)
    assert fine.option("epsilon") == 1.0 and fine.option("unit") == "user" and not fine.catalog_titles
    # different budgets, different cache keys; equal pretrain stages
    other = DPVariant(validate_config(DPConfig, {"epsilon": 8}, "test")).modify_recipe(
        tiny_recipe(), BuildContext(tiny_dataset, tmp_path))
    assert other.stages[0] == pre and other.to_json() != recipe.to_json()
    assert other.prefix(1) == recipe.prefix(1)  # one cache entry for the public pretrain stage


def test_variant_options_are_validated(tiny_dataset, tmp_path):
    for bad in ({"epsilon": 0}, {}, {"epsilon": 1, "unit": "household"}, {"epsilon": 1, "epsilonn": 2}):
        with pytest.raises(ConfigError):
            validate_config(DPConfig, bad, "recommenders.x: variant 'dp'")


def test_two_privacy_trainers_on_one_recommender_are_refused(tiny_dataset, tmp_path):
    ctx = BuildContext(tiny_dataset, tmp_path)
    recipe = DPVariant(DPConfig(epsilon=1)).modify_recipe(tiny_recipe(), ctx)
    with pytest.raises(ConfigError, match="one privacy variant"):
        FederatedVariant(FederatedConfig(clients=2, clients_per_round=1)).modify_recipe(recipe, ctx)


def test_secure_mode_without_torchcsprng_is_a_config_error_naming_the_package(monkeypatch):
    """Opacus 1.6's secure_mode needs torchcsprng: without it the option is refused at config time."""
    monkeypatch.setitem(sys.modules, "torchcsprng", None)  # import fails as when it is not installed
    with pytest.raises(ConfigError, match="secure_mode needs the 'torchcsprng' package"):
        validate_config(DPConfig, {"epsilon": 1, "secure_mode": True}, "recommenders.x: variant 'dp'")


def test_secure_mode_only_enters_the_cache_key_when_on(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcsprng", types.ModuleType("torchcsprng"))
    ctx = BuildContext(tiny_dataset, tmp_path)
    seeded = DPVariant(DPConfig(epsilon=1)).modify_recipe(tiny_recipe(), ctx).stages[1]
    secure = DPVariant(DPConfig(epsilon=1, secure_mode=True)).modify_recipe(tiny_recipe(), ctx).stages[1]
    assert seeded.option("secure_mode") is None and secure.option("secure_mode") is True


def test_secure_mode_draws_noise_and_sampling_from_the_secure_rng_not_the_seed(tiny_reference, tiny_dataset,
                                                                              monkeypatch):
    """With secure_mode Opacus takes its generator from torchcsprng and the run seed no longer
    decides the noise: two runs with one seed differ, and the account says "secure". torchcsprng
    has no build for this torch, so a stand-in module hands Opacus an os.urandom-seeded generator
    (the wiring under test is ours: secure_mode reaches PrivacyEngine and no seeded generator does)."""
    stand_in = types.ModuleType("torchcsprng")
    stand_in.create_random_device_generator = (  # type: ignore[attr-defined]
        lambda path: torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little")))
    monkeypatch.setitem(sys.modules, "torchcsprng", stand_in)
    a, summary = _train(tiny_reference, tiny_dataset, _stage(epochs=1, secure_mode=True), seed=3)
    b, _ = _train(tiny_reference, tiny_dataset, _stage(epochs=1, secure_mode=True), seed=3)
    assert summary["privacy"]["randomness"] == "secure"
    pa, pb = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b))
    assert not torch.equal(pa, pb)
    _, seeded = _train(tiny_reference, tiny_dataset, _stage(epochs=1), seed=3)
    assert seeded["privacy"]["randomness"] == "seeded"
