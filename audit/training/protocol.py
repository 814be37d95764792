"""What the training path needs from a model: two small declared protocols.

- :class:`Trainable` is what a trainer (``plain``, ``dp``, ``federated``) updates: trainers and
  sequence transforms never look at the model's class, they call these methods. The reference
  GPT-2 implements it with all its weights trainable; an ``hf`` causal LM with only its LoRA
  weights trainable.
- :class:`TrainableModel` is what :func:`audit.training.stages.run_stages` drives: a model's
  :class:`Trainable`, its training examples for a stage (in its own prompt format and
  tokenizer), and its identity for the cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import torch

    from audit.training.data import TrainingData
    from audit.training.recipe import StageSpec


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
    - :meth:`load_trained_state`: set the trained part from ``trained_state``'s names (tensors or
      arrays), nothing else changes (resuming from a cached stage prefix). Federated clients and
      server exchange exactly these arrays (all weights for the reference; only the LoRA weights for
      ``hf``: the frozen base never travels). A model with the ``federated`` feature and its stage
      data must also pickle: the simulation hands them to the client processes once, the stand-in
      for every client already holding the (frozen) model and its own users' data.
    """

    module: "torch.nn.Module"
    features: frozenset[str]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]: ...

    def loss(self, input_ids: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor": ...

    def per_example_loss(self, input_ids: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor": ...

    def trained_state(self) -> dict[str, "torch.Tensor"]: ...

    def load_trained_state(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class TrainableModel(Protocol):
    """A model the one training path trains from a recipe.

    - ``identity``: digest of what the model starts from (base weights, tokenizer, prompt
      format), or None for a model built from scratch from the recipe and the data alone;
    - ``training_modules``: the modules whose code decides the trained part (they enter the
      code version of its cache key);
    - :meth:`trainable`: the :class:`Trainable` the stages update (the same object every call);
    - :meth:`before_stage`: called before stage ``index`` trains on ``sequences`` (user -> item
      ids); returns a JSON-able record kept with the stage (e.g. how item embeddings were
      initialised) or None; not called for stages resumed from a cached prefix;
    - :meth:`stage_data`: the stage's training examples in the model's own format.
    """

    identity: str | None
    training_modules: tuple[str, ...]

    def trainable(self) -> Trainable: ...

    def before_stage(self, index: int, stage: "StageSpec",
                     sequences: Mapping[str, Sequence[str]]) -> dict[str, Any] | None: ...

    def stage_data(self, stage: "StageSpec", sequences: Mapping[str, Sequence[str]],
                   profiles: Mapping[str, Mapping[str, str]]) -> "TrainingData": ...


def trainable_parameters(trainable: Trainable) -> list["torch.nn.Parameter"]:
    """Every parameter of the trainable's AdamW groups (what gradient clipping covers)."""
    return [p for group in trainable.parameter_groups(0.0) for p in group["params"]]


def require_feature(trainable: Trainable, feature: str, what: str) -> None:
    """ConfigError when ``trainable`` does not support trainer feature ``feature``."""
    from audit.errors import ConfigError

    if feature not in trainable.features:
        raise ConfigError(f"{what} needs a model that supports {feature!r} training; this model supports "
                          f"{sorted(trainable.features)}")
