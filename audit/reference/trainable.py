"""The reference GPT-2 as a :class:`~audit.training.protocol.Trainable`: every weight trains.

Its per-example loss (what DP-SGD clips) is :func:`per_sequence_loss`: each sequence's own mean
token cross-entropy. :func:`audit.reference.model.lm_loss` averages over all target tokens of the
batch, so one user's gradient would depend on the other users' token counts, which breaks the
sensitivity argument of DP-SGD; ``per_sequence_loss`` does not. It computes output logits only at
(row-wise gathered) target positions and keeps the batch dimension first in every module, and
:func:`audit.reference.model.forward_hidden` passes ``position_ids`` expanded to the batch (GPT-2
would build them with batch size 1 and a per-sample-gradient engine would then see one activation
row for ``wpe`` instead of one per sample). With tied input/output embeddings the ``wte`` weight
gets per-sample gradients from both the embedding and ``lm_head``, which Opacus accumulates
into one (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.reference.model import forward_hidden, lm_loss_at_targets
from audit.training.data import IGNORE, target_positions


class ReferenceTrainable:
    """All weights of the reference network; AdamW decays matrices except position embeddings.
    ``federated`` exchanges every weight; ``tokenizer`` travels with the model (its entries in the
    training cache are whole model directories)."""

    features = frozenset({"plain", "dp", "federated"})

    def __init__(self, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        named = list(self.model.named_parameters())
        no_decay = [p for n, p in named if p.ndim < 2 or "wpe" in n]
        decay = [p for n, p in named if not (p.ndim < 2 or "wpe" in n)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return lm_loss_at_targets(self.model, input_ids, targets)

    def per_example_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_sequence_loss(self.model, input_ids, targets)

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def load_trained_state(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (name -> tensor or array, every parameter) into the weights."""
        params = dict(self.model.named_parameters())
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or extra:
            raise ValueError(f"weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.as_tensor(np.asarray(state[name])).to(p.dtype).view_as(p))



def per_sequence_loss(model: GPT2LMHeadModel, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Shape (B,): each sequence's mean cross-entropy over its own target tokens (nats); a
    sequence without targets gets 0 (a zero gradient). See the module docstring."""
    hidden = forward_hidden(model, input_ids=input_ids)
    positions, tgt = target_positions(targets)
    picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = model.lm_head(picked)
    b, width, vocab = logits.shape
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=IGNORE,
                                           reduction="none").view(b, width)
    mask = (tgt != IGNORE).to(ce.dtype)
    return (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
