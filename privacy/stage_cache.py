"""Content-addressed cache of one training stage's result: the trainer ``cached``.

The reference model's cache key covers the whole recipe, so the DP (epsilon 1, 4, 8),
federated and plain fine-tuned variants would each retrain the identical public pretrain
stage. A stage whose trainer is ``cached`` (``options: {inner: plain}``) runs the ``inner``
trainer once and stores the weights it produced under a key over *everything the stage's
result depends on*: the model's weights and config before the stage, the tokenizer, the
stage settings (with the inner trainer's name), the stage's training data (sequences,
profiles, prompt format), the seed, the thread count, the reference package's source and the
torch/transformers versions. A later stage with equal inputs loads the weights instead of
training. Entries live under ``$RECAUDIT_HOME/models/stages/<key>`` (safetensors + summary
JSON), written to a temporary directory and renamed, so an interrupted run leaves nothing
that counts as an entry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_model, save_model
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.paths import models_dir
from audit.reference.examples import StageData
from audit.reference.trainable import reference_parts
from audit.reference.recipe import StageSpec
from audit.reference.trainers import TRAINERS

TRAINER_NAME = "cached"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"


def stages_dir() -> Path:
    """``$RECAUDIT_HOME/models/stages``."""
    return models_dir() / "stages"


@functools.lru_cache(maxsize=1)
def _reference_source_hash() -> str:
    import audit.reference as pkg

    h = hashlib.sha256()
    for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _data_hash(data: StageData) -> str:
    payload = {
        "sequences": sorted((u, list(s)) for u, s in data.sequences.items()),
        "profiles": sorted((u, sorted(p.items())) for u, p in data.profiles.items()),
        "attribute_dropout": data.attribute_dropout, "catalog_titles": data.catalog_titles,
        "max_history": data.fmt.max_history,
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def stage_key(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, data: StageData,
              stage: StageSpec, seed: int) -> str:
    """32 hex chars over every input of the stage (see the module docstring)."""
    inner = str(stage.option("inner", "plain"))
    spec = dataclasses.asdict(dataclasses.replace(stage, trainer=inner,
                                                  options=tuple(o for o in stage.options if o[0] != "inner")))
    payload = {
        "model_config": model.config.to_dict(), "weights": _state_hash(model),
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "stage": spec, "data": _data_hash(data), "seed": int(seed), "threads": torch.get_num_threads(),
        "reference_code": _reference_source_hash(), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def train_cached_stage(trainable: Any, data: StageData, stage: StageSpec, seed: int, progress: bool) -> dict[str, Any]:
    """Load this stage's result from the cache, or run ``options.inner`` and store it."""
    inner_name = str(stage.option("inner", "plain"))
    if inner_name == TRAINER_NAME:
        raise ValueError("the cached trainer cannot wrap itself")
    model, tokenizer = reference_parts(trainable, "plain")
    key = stage_key(model, tokenizer, data, stage, seed)
    entry = stages_dir() / key
    summary_path = entry / SUMMARY_FILE
    if summary_path.is_file():
        t0 = time.perf_counter()
        load_model(model, str(entry / WEIGHTS_FILE), strict=True)
        summary = json.loads(summary_path.read_text())
        model.eval()
        return {**summary, "cache": {"key": key, "hit": True,
                                     "load_seconds": round(time.perf_counter() - t0, 3)}}
    inner_stage = dataclasses.replace(stage, trainer=inner_name,
                                      options=tuple(o for o in stage.options if o[0] != "inner"))
    summary = TRAINERS.get(inner_name)(trainable, data, inner_stage, seed, progress)
    _store(entry, model, summary)
    return {**summary, "cache": {"key": key, "hit": False}}


def _store(entry: Path, model: GPT2LMHeadModel, summary: dict[str, Any]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_model(model, str(tmp / WEIGHTS_FILE))
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
        try:
            os.rename(tmp, entry)
        except OSError:  # another process stored the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


TRAINERS.register(TRAINER_NAME, "privacy.stage_cache:train_cached_stage",
                  "run options.inner once per identical stage input and reuse its weights")
