"""An ``hf`` causal LM with LoRA as a :class:`~audit.training.protocol.Trainable`: only the LoRA
weights train; the loss computes output logits only at answer positions (the vocabulary
projection of a 49k-token LM over every prompt position would dominate the step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from audit.llm.lora import load_lora_state, lora_state
from audit.training.data import IGNORE, target_positions


def target_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head: Any) -> torch.Tensor:
    """Mean cross-entropy of ``head``'s logits at the target positions (``targets != -100``);
    ``head`` runs on those positions only."""
    keep = targets != IGNORE
    return torch.nn.functional.cross_entropy(head(hidden[keep]).float(), targets[keep])


def per_example_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head: Any) -> torch.Tensor:
    """Shape (B,): each row's mean cross-entropy over its target positions; ``head`` sees the
    gathered positions as (B, T, d), so Opacus hooks on it get one gradient per example."""
    positions, tgt = target_positions(targets)
    picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = head(picked).float()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE, reduction="none").view(tgt.shape)
    m = (tgt != IGNORE).to(ce.dtype)
    return (ce * m).sum(1) / m.sum(1).clamp(min=1.0)


class LoraTrainable:
    """``peft_model``: a peft LoRA model around a transformers causal LM (frozen base)."""

    features = frozenset({"plain", "dp", "federated"})

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model
        lm = peft_model.get_base_model()
        self._body = lm.base_model
        self._head = lm.get_output_embeddings()

    @property
    def module(self) -> torch.nn.Module:
        return self.peft_model

    def named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.peft_model.named_parameters() if p.requires_grad]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": [p for _, p in self.named_trainable()], "weight_decay": weight_decay}]

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over answer tokens of a right-padded batch (causal: no mask needed)."""
        device = next(self._head.parameters()).device
        input_ids, targets = input_ids.to(device), targets.to(device)
        return target_cross_entropy(self._body(input_ids=input_ids, use_cache=False).last_hidden_state, targets,
                                    self._head)

    def per_example_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape (B,): each example's mean cross-entropy over its answer tokens. The LoRA layers
        see (B, L, d) inputs, so Opacus hooks give one gradient per example; the frozen output
        projection runs on the gathered answer positions only."""
        device = next(self._head.parameters()).device
        input_ids, targets = input_ids.to(device), targets.to(device)
        return per_example_cross_entropy(self._body(input_ids=input_ids, use_cache=False).last_hidden_state,
                                         targets, self._head)

    def trained_state(self) -> dict[str, torch.Tensor]:
        return lora_state(self.peft_model)

    def load_trained_state(self, state: Mapping[str, Any]) -> None:
        """Set the LoRA weights from ``state`` (:meth:`trained_state`'s names; tensors or arrays);
        the frozen base is untouched."""
        load_lora_state(self.peft_model, {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
