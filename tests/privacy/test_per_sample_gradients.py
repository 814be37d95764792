"""Opacus on the reference model: per-sample gradients are exact, batched and usable.

Checks from the issue: with noise 0 and a huge clipping norm, Opacus's summed per-sample
gradients equal the non-private gradients (to 1e-5); every ``grad_sample`` has the batch
dimension; parameters change after a step. Plus the known pitfalls: GPT-2's own
``position_ids`` have batch size 1; tied input/output embeddings; the Conv1D grad sampler
against a slow, obvious per-example reference.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModule
from torch.utils.data import DataLoader, TensorDataset

from audit.reference.model import forward_logits
from audit.reference.trainable import per_sequence_loss
from tests.privacy.conftest import one_window_batch, stage_data

BATCH = 8


@pytest.fixture()
def batch(tiny_reference, tiny_dataset):
    return one_window_batch(stage_data(tiny_reference, tiny_dataset), BATCH)


def _plain_grads(model, ids, tgt) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    per_sequence_loss(model, ids, tgt).sum().backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _per_sample(model, ids, tgt) -> dict[str, torch.Tensor]:
    gsm = GradSampleModule(model, loss_reduction="sum")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_sequence_loss(model, ids, tgt).sum().backward()
        return {n: p.grad_sample.detach().clone() for n, p in model.named_parameters()}
    finally:
        gsm._close()


@pytest.mark.parametrize("fixture", ["tiny_reference", "tiny_untied_reference"])
def test_summed_per_sample_gradients_equal_the_plain_gradient(fixture, request, tiny_dataset):
    ref = request.getfixturevalue(fixture)
    ids, tgt = one_window_batch(stage_data(ref, tiny_dataset), BATCH)
    model = copy.deepcopy(ref.model).train()
    plain = _plain_grads(model, ids, tgt)
    samples = _per_sample(copy.deepcopy(ref.model).train(), ids, tgt)
    assert set(samples) == set(plain)
    for name, g in plain.items():
        assert samples[name].shape == (BATCH, *g.shape), name
        torch.testing.assert_close(samples[name].sum(0), g, atol=1e-5, rtol=1e-4, msg=name)


def test_tied_embedding_gets_both_uses(tiny_reference, batch):
    """wte is the input embedding and the output layer: its per-sample gradient must hold
    both contributions, once (the parameter is listed once)."""
    model = copy.deepcopy(tiny_reference.model).train()
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    ids, tgt = batch
    # the output-layer part alone: gradient of the loss wrt lm_head's use of the weight
    hidden = model.transformer(input_ids=ids, position_ids=torch.arange(ids.shape[1]).expand_as(ids)).last_hidden_state
    out_w = model.lm_head.weight.detach().clone().requires_grad_(True)
    logits = hidden.detach() @ out_w.T
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=-100, reduction="none").view(tgt.shape)
    mask = (tgt != -100).float()
    ((ce * mask).sum(1) / mask.sum(1)).sum().backward()
    samples = _per_sample(model, ids, tgt)
    total = samples["transformer.wte.weight"].sum(0)
    assert out_w.grad.abs().sum() > 0
    assert not torch.allclose(total, out_w.grad, atol=1e-6), "input-embedding part missing"


def test_gpt2_default_position_ids_break_per_sample_gradients(tiny_reference, batch):
    """The pitfall: GPT-2 builds position ids of batch size 1, so Opacus sees one row for wpe.
    The reference forward path passes them expanded, giving one gradient per sample."""
    ids, _ = batch
    model = copy.deepcopy(tiny_reference.model).train()
    gsm = GradSampleModule(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(input_ids=ids, use_cache=False).logits.sum().backward()
        assert model.transformer.wpe.weight.grad_sample.shape[0] == 1  # GPT-2's own path: wrong
        gsm.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forward_logits(model, input_ids=ids).sum().backward()
        assert model.transformer.wpe.weight.grad_sample.shape[0] == BATCH
    finally:
        gsm._close()


def test_conv1d_grad_sampler_matches_one_backward_per_example(tiny_reference, batch):
    """The einsum Conv1D sampler against the obvious reference: one backward per example."""
    ids, tgt = batch
    model = copy.deepcopy(tiny_reference.model).train()
    conv_names = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert conv_names
    samples = _per_sample(copy.deepcopy(model), ids, tgt)
    for i in range(BATCH):
        one = _plain_grads(model, ids[i:i + 1], tgt[i:i + 1])
        for name in conv_names:
            for suffix in (".weight", ".bias"):
                torch.testing.assert_close(samples[name + suffix][i], one[name + suffix], atol=1e-5, rtol=1e-4)


def test_dp_step_without_noise_and_clipping_is_the_plain_step(tiny_reference, batch):
    """noise 0, huge C: the DP optimiser's gradient is the plain mean gradient (batch = expected
    batch), every grad_sample has the batch dimension, and a step changes the parameters."""
    ids, tgt = batch
    plain_model = copy.deepcopy(tiny_reference.model).train()
    plain_model.zero_grad()
    per_sequence_loss(plain_model, ids, tgt).mean().backward()
    expected = {n: p.grad.detach().clone() for n, p in plain_model.named_parameters()}

    model = copy.deepcopy(tiny_reference.model).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.arange(4 * BATCH)), batch_size=BATCH)  # expected batch = BATCH
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        gsm, dp_opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=0.0,
                                             max_grad_norm=1e6, poisson_sampling=True)
        per_sequence_loss(model, ids, tgt).mean().backward()
    try:
        for name, p in model.named_parameters():
            assert p.grad_sample is not None and p.grad_sample.shape[0] == BATCH, name
        dp_opt.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)
            assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    finally:
        gsm._close()


def test_per_sequence_loss_is_each_rows_own_mean_token_loss(tiny_reference, batch):
    """Each user's loss depends on that user's sequence only (the DP sensitivity argument),
    and equals the mean cross-entropy over its targets computed from the full logits."""
    ids, tgt = batch
    model = copy.deepcopy(tiny_reference.model).eval()
    with torch.no_grad():
        together = per_sequence_loss(model, ids, tgt)
        alone = torch.cat([per_sequence_loss(model, ids[i:i + 1], tgt[i:i + 1]) for i in range(BATCH)])
        logits = forward_logits(model, input_ids=ids)
        full = [torch.nn.functional.cross_entropy(logits[i][tgt[i] != -100], tgt[i][tgt[i] != -100])
                for i in range(BATCH)]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together, torch.stack(full), atol=1e-5, rtol=1e-5)
