"""Loading a local ``transformers`` causal LM, and the digests that name what was loaded.

Loading is strictly local: ``from_pretrained(dir, local_files_only=True)`` with
``use_safetensors=True`` (nothing is fetched from a hub, nothing is unpickled). A relative
directory resolves against the suite's directory, then the current working directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from audit.errors import ConfigError
from audit.interface import RecRequest

if TYPE_CHECKING:
    import torch

    from audit.llm.encoding import Encoding
    from audit.llm.model import CausalLM
    from audit.llm.training import BaseModelParts

#: the request and answer whose token ids enter the base identity (a change of encoding retrains)
PROBE_REQUEST = RecRequest(history=("Alpha (1990)", "Beta, The (1991)"), profile={"gender": "F"})
PROBE_ANSWER = ("Alpha (1990)", "Beta, The (1991)")


def model_dir(name: str | None, path: str | None, suite_dir: str | Path | None) -> Path:
    """The directory of a fetched model ``name`` (:func:`audit.llm.fetch.fetched_model_dir`), else of
    the local ``path`` (:func:`resolve_model_dir`)."""
    if name is not None:
        from audit.llm.fetch import fetched_model_dir

        return fetched_model_dir(name)
    return resolve_model_dir(str(path), suite_dir)


def resolve_model_dir(path: str, suite_dir: str | Path | None) -> Path:
    """``path`` as given if absolute; else against the suite directory, then the cwd."""
    p = Path(path).expanduser()
    tried = [p] if p.is_absolute() else [*([Path(suite_dir) / p] if suite_dir else []), Path.cwd() / p]
    for cand in tried:
        if cand.is_dir():
            return cand.resolve()
    raise ConfigError(f"hf adapter: model directory {path!r} not found "
                      f"(looked in: {', '.join(str(t) for t in tried)})")


def torch_device(name: str) -> "torch.device":
    """The torch device ``name`` names, checked to exist here."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"hf adapter: unknown device {name!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hf adapter: device {name!r} asked for, but CUDA is not available here")
    return device


def load_local(directory: Path, device: "torch.device", dtype: str) -> tuple[Any, Any]:
    """(model on ``device``, tokenizer) from a local directory with safetensors weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf adapter: cannot load a tokenizer from {directory} ({exc})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True,
            dtype=getattr(torch, dtype), use_kernels=False)  # no Hub kernels: loading stays local
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf adapter: {directory} is not a causal-LM directory with safetensors "
                          f"weights ({exc})") from None
    model.to(device)  # before any LoRA is attached (opacus issue #820)
    return model, tokenizer


def use_chat_template(tokenizer: Any, wanted: bool | None, where: Any) -> bool:
    """Whether prompts go through the tokenizer's chat template (``wanted``: None = when it has
    one, False = never, True = required)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if wanted and not has_template:
        raise ConfigError(f"hf adapter: chat_template: true, but the tokenizer in {where!r} "
                          "has no chat template; set chat_template: null to use plain prompts")
    return has_template and wanted is not False


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's vocabulary, special tokens and chat template."""
    payload = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                          "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                          "chat": getattr(tokenizer, "chat_template", None)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def model_identity(adapter: str, options: dict[str, Any], directory: Path, lora_key: str | None,
                   soft_prefix: "torch.Tensor | None") -> str:
    """SHA-256 of the adapter class, its options, the base weights' digest, the trained LoRA's
    cache key and the soft prefix's values."""
    import torch

    from audit.llm.fetch import weights_digest

    h = hashlib.sha256(json.dumps({"adapter": adapter, "options": options, "weights": weights_digest(directory),
                                   "lora": lora_key}, sort_keys=True, default=str).encode())
    if soft_prefix is not None:
        h.update(soft_prefix.detach().to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()


def base_parts(lm: "CausalLM", encoding: "Encoding", directory: Path | None, dtype: str,
               encode_prompt: Callable[[RecRequest], list[int]],
               encode_answer: Callable[[Sequence[str]], list[int]]) -> "BaseModelParts":
    """What the LoRA training path needs (:class:`audit.llm.training.BaseModelParts`): the model,
    how it writes prompts and answers, and its identity (weights, how a probe example encodes,
    tokenizer, chat form, prompt templates, dtype)."""
    from audit.llm.fetch import weights_digest
    from audit.llm.training import BaseModelParts

    ident = {"weights": weights_digest(directory) if directory is not None else "in-memory",
             "encoding": [encode_prompt(PROBE_REQUEST), encode_answer(list(PROBE_ANSWER))],
             "tokenizer": tokenizer_digest(lm.tokenizer), "chat": encoding.use_chat,
             "prompts": encoding.prompts.config.model_dump(mode="json"), "dtype": dtype}
    identity = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    return BaseModelParts(model=lm.module, encode_prompt=encode_prompt, encode_answer=encode_answer,
                          pad_id=lm.pad_id, identity=identity)


def first_not_none(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def max_positions(cfg: Any) -> int | None:
    """The model's context length (positions), None when its config does not say."""
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
