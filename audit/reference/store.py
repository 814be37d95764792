"""Saving and loading trained reference models, and the train-or-load cache.

A model directory holds ``config.json`` + ``model.safetensors`` (``save_pretrained(
safe_serialization=True)``), ``tokenizer.json``, ``catalog.json`` (item id -> title, max
history) and ``manifest.json`` (recipe, users trained, transform manifests, training
summary, parameter count). Nothing is unpickled: weights load with ``use_safetensors=True``
and ``local_files_only=True``.

The cache lives at ``<cache_dir>/reference/<key>``, key = hash(recipe, data fingerprint,
code version). A directory counts as a model only when ``manifest.json`` says
``"complete": true``; it is written under a temporary name and renamed into place, so an
interrupted training or save never leaves a half model under the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from audit.cache import publish_directory
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.reference.recipe import TrainingRecipe, cache_key
from audit.reference.tokenizer import load_tokenizer, save_tokenizer
from audit.reference.training import TrainedReference, train_reference

#: the reference modules whose code determines the trained weights (inference code is not among them)
TRAINING_MODULES = ("tokenizer", "prompts", "model", "recipe", "examples", "item_init", "trainers", "training")

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "catalog.json", "manifest.json")


def code_version(extra_modules: tuple[str, ...] = ()) -> str:
    """SHA-256 (16 hex) of the reference training code (:data:`TRAINING_MODULES`) and of
    ``extra_modules``' files (e.g. the module of a registered trainer): changing the code
    that trains invalidates cached models."""
    import importlib

    h = hashlib.sha256()
    here = Path(__file__).parent
    files = [here / f"{name}.py" for name in TRAINING_MODULES]
    for name in extra_modules:
        mod = importlib.import_module(name)
        if getattr(mod, "__file__", None):
            files.append(Path(mod.__file__))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def recipe_code_version_modules(recipe: Any) -> str:
    """Code version of the trainers and transforms a recipe (reference or LoRA) uses, outside
    :mod:`audit.reference` (whose training code :func:`code_version` always covers)."""
    return code_version(_recipe_modules(recipe))


def recipe_code_version(recipe: TrainingRecipe) -> str:
    """Code version covering the reference package and every trainer and transform the recipe uses."""
    return code_version(_recipe_modules(recipe))


def _recipe_modules(recipe: Any) -> tuple[str, ...]:
    from audit.reference.trainers import TRAINERS

    modules = set()
    for stage in recipe.stages:
        modules.add(getattr(TRAINERS.get(stage.trainer), "__module__", ""))
    for t in recipe.sequence_transforms:
        modules.add(type(t).__module__)
    modules.discard("")
    modules = {m for m in modules if not m.startswith("audit.reference.")}
    return tuple(sorted(modules))


def recipe_key(recipe: TrainingRecipe, dataset: Dataset) -> str:
    return cache_key(recipe, dataset.fingerprint, recipe_code_version(recipe))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file progress bars while saving/loading (restored after)."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def is_complete(directory: Path) -> bool:
    """True when ``directory`` holds every model file and a manifest marked complete."""
    directory = Path(directory)
    if not all((directory / f).is_file() for f in MODEL_FILES):
        return False
    try:
        return bool(json.loads((directory / "manifest.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def save(trained: TrainedReference, directory: Path) -> None:
    """Write the model files into ``directory`` (created; the manifest is written last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        trained.model.save_pretrained(directory, safe_serialization=True)
    save_tokenizer(trained.tokenizer, directory)
    (directory / "catalog.json").write_text(json.dumps(
        {"max_history": trained.max_history, "titles": trained.titles}, ensure_ascii=False))
    manifest = {**trained.manifest, "complete": True}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))


def save_atomic(trained: TrainedReference, directory: Path) -> Path:
    """Save into a temporary sibling directory, then rename it to ``directory``. If another
    process finished the same key first, keep theirs and drop ours."""
    return publish_directory(directory, lambda tmp: save(trained, tmp), is_complete)


def load(directory: Path) -> TrainedReference:
    """Load a saved model directory (safetensors weights, tokenizer.json; local files only)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"reference model directory {str(directory)!r} does not exist")
    missing = [f for f in MODEL_FILES if not (directory / f).is_file()]
    if missing:
        raise ConfigError(f"{str(directory)!r} is not a saved reference model: missing {', '.join(missing)}")
    with _quiet_transformers():
        model = GPT2LMHeadModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
    model.eval()
    tokenizer = load_tokenizer(directory)
    catalog = json.loads((directory / "catalog.json").read_text())
    manifest = json.loads((directory / "manifest.json").read_text())
    return TrainedReference(model, tokenizer, dict(catalog["titles"]), int(catalog["max_history"]), manifest)


def train_or_load(recipe: TrainingRecipe, dataset: Dataset, cache_dir: Path, *, progress: bool = False,
                  threads: int | None = None, on_train: Callable[[str], Any] | None = None,
                  ) -> tuple[TrainedReference, Path, bool]:
    """Load the model for (recipe, dataset) from ``cache_dir/reference/<key>``, training and
    saving it first when absent. Returns (model, its directory, whether it was trained now)."""
    key = recipe_key(recipe, dataset)
    directory = Path(cache_dir) / "reference" / key
    if is_complete(directory):
        return load(directory), directory, False
    if on_train is not None:
        on_train(key)
    t0 = time.perf_counter()
    trained = train_reference(recipe, dataset, progress=progress, threads=threads)
    trained.manifest["key"] = key
    trained.manifest["build_seconds"] = round(time.perf_counter() - t0, 2)
    save_atomic(trained, directory)
    return load(directory), directory, True
