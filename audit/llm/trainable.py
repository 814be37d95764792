"""An ``hf`` causal LM with LoRA as a :class:`~audit.training.protocol.Trainable`: only the LoRA
weights train; the loss computes output logits only at answer positions (the vocabulary
projection of a 49k-token LM over every prompt position would dominate the step)."""

from __future__ import annotations

from typing import Any

import torch

from audit.llm.lora import lora_state


class LoraTrainable:
    """``peft_model``: a peft LoRA model around a transformers causal LM (frozen base)."""

    features = frozenset({"plain"})

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
        hidden = self._body(input_ids=input_ids, use_cache=False).last_hidden_state
        keep = targets != -100
        logits = self._head(hidden[keep])
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])

    def trained_state(self) -> dict[str, torch.Tensor]:
        return lora_state(self.peft_model)
