"""LoRA (``peft``) on any local causal LM: options, attaching adapters, saving their weights.

Only the LoRA matrices train; the base model is frozen. By default LoRA goes on the model's own
attention and MLP projections, found the way peft's ``target_modules="all-linear"`` finds them
(every ``nn.Linear`` / ``Conv1D`` but the output head): Llama, Qwen2 and SmolLM2 give ``q_proj``
.. ``down_proj``, GPT-2 ``c_attn``, ``c_proj``, ``c_fc``, GPT-NeoX ``query_key_value``,
``dense``, ``dense_h_to_4h``, ``dense_4h_to_h``. ``layers`` restricts LoRA to the last N
transformer layers: backpropagation then stops below them, which on 2 CPU cores roughly doubles
training speed on SmolLM2 (see BENCHMARKS.md) at a small cost in capacity.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from audit.config import StrictConfig
from audit.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: what the default resolves to on a Llama-architecture model (SmolLM2), in this order
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the default ``layers``; a model with fewer layers gets LoRA on all of them
DEFAULT_LAYERS = 8
ADAPTER_FILE = "adapter.safetensors"


class LoraOptions(StrictConfig):
    """LoRA settings: rank ``r`` (1..256), scaling ``alpha``, ``dropout`` (0..1) on the LoRA input,
    ``target_modules`` (module names, or name suffixes such as ``mlp.c_proj``; None = the model's
    attention and MLP projections, :func:`projection_names`), ``layers``: LoRA on the last N
    layers (None = all; the default 8 becomes all layers on a smaller model, a given N larger
    than the model is an error). :func:`resolve_options` makes the defaults concrete for a model."""

    r: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] | None = None
    layers: int | None = Field(DEFAULT_LAYERS, ge=1)

    @field_validator("target_modules")
    @classmethod
    def _nonempty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("target_modules must name at least one module (or be left out for the "
                             "model's projections)")
        return None if v is None else tuple(v)


def _linear_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the model's ``nn.Linear`` and transformers ``Conv1D`` modules."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [(name, m) for name, m in model.named_modules() if name and isinstance(m, (torch.nn.Linear, Conv1D))]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last name parts of the model's ``nn.Linear`` / ``Conv1D`` modules (what LoRA
    can target), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, _ in _linear_modules(model)})


def projection_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The last name parts of the modules peft's ``target_modules="all-linear"`` selects in
    ``model`` (every linear / Conv1D module but the output head: the attention and MLP
    projections), in the order they first appear in ``model.named_modules()``."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    selected = _maybe_include_all_linear_layers(LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM"),
                                                model).target_modules
    names: dict[str, None] = {}
    for name, _ in model.named_modules():
        if name in selected:
            names.setdefault(name.rsplit(".", 1)[-1], None)
    if not names:
        raise ConfigError("lora: this model has no linear modules besides its output head to put LoRA on")
    return tuple(names)


def n_layers(model: torch.nn.Module) -> int:
    """The model's number of transformer layers (``num_hidden_layers``, GPT-2's ``n_layer``)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if not n:
        raise ConfigError("lora: cannot tell how many layers the model has (no num_hidden_layers in its config)")
    return int(n)


def resolve_options(model: torch.nn.Module, options: LoraOptions) -> LoraOptions:
    """``options`` for ``model`` with nothing left to the model: ``target_modules`` None becomes
    :func:`projection_names`, and the default ``layers`` (not given) becomes
    min(:data:`DEFAULT_LAYERS`, the model's layers). ConfigError for a given target module that
    does not exist (naming those that do) or a given ``layers`` above the model's layer count.
    Resolving resolved options returns them unchanged."""
    if options.target_modules is None:
        targets = projection_names(model)
    else:
        targets = options.target_modules
        modules = [name for name, _ in _linear_modules(model)]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in modules)]
        if missing:
            raise ConfigError(f"lora: target module(s) {missing} do not exist in this model; its linear modules "
                              f"are: {', '.join(linear_module_names(model))}")
    layers = options.layers
    if layers is not None and layers > n_layers(model):
        if "layers" in options.model_fields_set:
            raise ConfigError(f"lora: layers={layers} but the model has {n_layers(model)} layers")
        layers = n_layers(model)
    return LoraOptions(r=options.r, alpha=options.alpha, dropout=options.dropout, target_modules=targets,
                       layers=layers)


def attach_lora(model: torch.nn.Module, options: LoraOptions, seed: int = 0) -> Any:
    """Wrap ``model`` (already on its device: see opacus issue #820) in a peft LoRA model with
    ``options`` resolved for it (:func:`resolve_options`)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    options = resolve_options(model, options)
    assert options.target_modules is not None
    layers = None
    if options.layers is not None:
        total = n_layers(model)
        layers = list(range(total - options.layers, total))
    targeted = [m for name, m in _linear_modules(model)
                if any(name == t or name.endswith("." + t) for t in options.target_modules)]
    import torch

    torch.manual_seed(seed)
    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), layers_to_transform=layers,
                        # GPT-2's Conv1D stores its weight transposed (peft would switch this itself, warning)
                        fan_in_fan_out=bool(targeted) and all(isinstance(m, Conv1D) for m in targeted),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def lora_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The LoRA weights (peft's names), detached CPU float32 copies."""
    from peft import get_peft_model_state_dict

    import torch

    return {k: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in get_peft_model_state_dict(peft_model).items()}


def load_lora_state(peft_model: Any, state: dict[str, torch.Tensor]) -> None:
    """Load LoRA weights saved by :func:`lora_state`; every LoRA weight must be given."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit the model: unexpected {unexpected[:3]}")


def read_adapter(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / ADAPTER_FILE))
