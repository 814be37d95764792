"""What a trainer needs from a model: one small declared protocol.

Trainers (``plain``, ``dp``, ``federated``) and sequence transforms never look at the model's
class; they call these methods. The reference GPT-2 implements it with all its weights trainable
(:class:`audit.reference.trainable.ReferenceTrainable`); an ``hf`` causal LM implements it with
only its LoRA weights trainable (:class:`audit.llm.trainable.LoraTrainable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Trainable(Protocol):
    """A model a trainer can update in place.

    - ``module``: the ``torch.nn.Module`` trained (``train()``/``eval()`` are called on it);
    - ``features``: the trainer features the model supports (e.g. ``{"plain"}``, or
      ``{"plain", "dp", "federated"}``); a trainer that needs one it lacks raises ConfigError;
    - :meth:`parameter_groups`: the trainable parameters as AdamW groups (decay / no decay);
    - :meth:`loss`: mean cross-entropy (nats per target token) of a right-padded batch whose
      ``targets`` hold ``-100`` where no loss applies;
    - :meth:`per_example_loss` (models with the ``dp`` feature): shape (B,), each example's mean
      cross-entropy over its own target tokens, computed so that every trainable module sees the
      batch dimension first (Opacus' per-sample gradients);
    - :meth:`trained_state`: the trained part (name -> tensor) to save as safetensors;
    - :meth:`load_trained_state` (models with the ``federated`` feature): set the trained part from
      ``trained_state``'s names (tensors or arrays), nothing else changes. Federated clients and
      server exchange exactly these arrays (all weights for the reference; only the LoRA weights for
      ``hf``: the frozen base never travels). A model with the ``federated`` feature and its stage
      data must also pickle: the simulation hands them to the client processes once, the stand-in
      for every client already holding the (frozen) model and its own users' data.
    """

    module: torch.nn.Module
    features: frozenset[str]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]: ...

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def per_example_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def trained_state(self) -> dict[str, torch.Tensor]: ...

    def load_trained_state(self, state: Mapping[str, Any]) -> None: ...


def trainable_parameters(trainable: Trainable) -> list[torch.nn.Parameter]:
    """Every parameter of the trainable's AdamW groups (what gradient clipping covers)."""
    return [p for group in trainable.parameter_groups(0.0) for p in group["params"]]


def require_feature(trainable: Trainable, feature: str, what: str) -> None:
    """ConfigError when ``trainable`` does not support trainer feature ``feature``."""
    from audit.errors import ConfigError

    if feature not in trainable.features:
        raise ConfigError(f"{what} needs a model that supports {feature!r} training; this model supports "
                          f"{sorted(trainable.features)}")
