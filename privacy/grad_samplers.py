"""Opacus grad samplers for layers it does not ship one for.

transformers' GPT-2 uses ``Conv1D`` (``y = x @ W + b`` with ``W`` of shape (in, out)) instead of
``nn.Linear``; Opacus has no grad sampler for it and would fall back to the slower functorch
path. :func:`conv1d_grad_sample` is the einsum one, registered on import (:mod:`privacy.dp`
imports this module).
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn
from transformers.pytorch_utils import Conv1D



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

