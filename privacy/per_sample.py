"""Per-sample gradients of the reference model under Opacus.

- transformers' GPT-2 uses ``Conv1D`` (``y = x @ W + b`` with ``W`` of shape (in, out))
  instead of ``nn.Linear``; Opacus has no grad sampler for it and would fall back to the
  slower functorch path. :func:`conv1d_grad_sample` is the einsum one, registered on import.
- the per-user loss: each sequence's own mean token cross-entropy (nats per target token).
  :func:`audit.reference.model.lm_loss` averages over all target tokens of the batch, so one
  user's gradient would depend on the other users' token counts, which breaks the
  sensitivity argument of DP-SGD; :func:`per_sequence_loss` does not.
- position ids: :func:`audit.reference.model.forward_logits` passes ``position_ids``
  expanded to the batch (GPT-2 would build them with batch size 1 and Opacus would then
  see one activation row for ``wpe`` instead of one per sample).
- tied input/output embeddings: the ``wte`` weight gets per-sample gradients from both the
  embedding and ``lm_head``; Opacus accumulates both into one ``grad_sample`` (tested).
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn
from transformers.pytorch_utils import Conv1D

from audit.reference.model import forward_hidden
from audit.training.data import IGNORE, target_positions



@register_grad_sampler(Conv1D)
def conv1d_grad_sample(layer: Conv1D, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a transformers ``Conv1D``: weight (B, in, out), bias (B, out)."""
    acts = activations[0].to(backprops.dtype)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", acts, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...k->nk", backprops)
    return out


def per_sequence_loss(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Shape (B,): each sequence's mean cross-entropy over its own target tokens (nats).

    Output logits are computed only at (row-wise gathered) target positions, keeping the
    batch dimension first for Opacus. A sequence without targets gets 0 (a zero gradient)."""
    hidden = forward_hidden(model, input_ids=input_ids)
    positions, tgt = target_positions(targets)
    picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = model.lm_head(picked)
    b, width, vocab = logits.shape
    ce = nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=IGNORE,
                                     reduction="none").view(b, width)
    mask = (tgt != IGNORE).to(ce.dtype)
    return (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
