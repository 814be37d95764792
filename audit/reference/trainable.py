"""The reference GPT-2 as a :class:`~audit.training.protocol.Trainable`: every weight trains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.errors import ConfigError
from audit.reference.model import lm_loss_at_targets


class ReferenceTrainable:
    """All weights of the reference network; AdamW decays matrices except position embeddings.

    ``model`` and ``tokenizer`` stay public for the reference-only stage cache, which checks for
    them with :func:`reference_parts`; ``dp`` and ``federated`` use the protocol like any
    trainable with those features (``federated`` exchanges every weight)."""

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
        from privacy.per_sample import per_sequence_loss

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


def reference_parts(trainable: Any, trainer: str) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """The reference network and tokenizer for a trainer that works on them only (ConfigError otherwise)."""
    if trainer not in getattr(trainable, "features", frozenset()) or not isinstance(trainable, ReferenceTrainable):
        raise ConfigError(f"trainer {trainer!r} supports the reference model only so far; this model supports "
                          f"the trainers {sorted(getattr(trainable, 'features', ()))}")
    return trainable.model, trainable.tokenizer
