"""Saving and loading trained reference models, and the train-or-load cache.

A model directory holds ``config.json`` + ``model.safetensors`` (``save_pretrained(
safe_serialization=True)``), ``tokenizer.json``, ``catalog.json`` (item id -> title, max
history) and ``manifest.json`` (recipe, users trained, transform manifests, training
summary, parameter count). Nothing is unpickled: weights load with ``use_safetensors=True``
and ``local_files_only=True``.

The cache lives at ``<cache_dir>/reference/<key>`` (:class:`audit.training.identity.TrainedPartCache`:
key = hash of the recipe, the data fingerprint and the training code version). A directory counts
as a model only when ``manifest.json`` says ``"complete": true``; it is written under a temporary
name and renamed into place, so an interrupted training or save never leaves a half model under the
key. A two-stage recipe also saves the model after its first stage under that prefix's own key
and resumes from it: every privacy variant trains the public pretrain stage once.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from audit.training.identity import publish_directory
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.reference.recipe import TrainingRecipe
from audit.reference.tokenizer import load_tokenizer, save_tokenizer
from audit.reference.trainable import ReferenceTrainable
from audit.reference.training import TRAINING_MODULES, ReferenceModel, TrainedReference
from audit.training.identity import TrainedPartCache, train_cached, trained_key, training_code_version
from audit.training.stages import default_threads, torch_threads

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "catalog.json", "manifest.json")


def recipe_key(recipe: TrainingRecipe, dataset: Dataset) -> str:
    """The cache key of ``recipe`` trained on ``dataset`` (no base model: the reference is built here)."""
    return trained_key(recipe, ReferenceModel.identity, dataset.fingerprint,
                       training_code_version(recipe, TRAINING_MODULES))


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


class ReferenceEntry:
    """A reference model directory as an entry of the training cache
    (:class:`~audit.training.identity.EntryLayout`)."""

    def __init__(self, titles: Mapping[str, str], max_history: int) -> None:
        self.titles, self.max_history = dict(titles), max_history

    def is_complete(self, directory: Path) -> bool:
        return is_complete(directory)

    def write(self, directory: Path, trainable: Any, manifest: Mapping[str, Any]) -> None:
        save(TrainedReference(trainable.model, trainable.tokenizer, self.titles, self.max_history, dict(manifest)),
             directory)

    def read_state(self, directory: Path) -> Mapping[str, Any]:
        trained = load(directory)
        return ReferenceTrainable(trained.model, trained.tokenizer).trained_state()

    def read_manifest(self, directory: Path) -> dict[str, Any]:
        return json.loads((Path(directory) / "manifest.json").read_text())


def train_or_load(recipe: TrainingRecipe, dataset: Dataset, cache_dir: Path, *, progress: bool = False,
                  threads: int | None = None, on_train: Callable[[str], Any] | None = None,
                  ) -> tuple[TrainedReference, Path, bool]:
    """Load the model for (recipe, dataset) from ``cache_dir/reference/<key>``, training and
    saving it first when absent (resuming from a cached stage prefix where one exists). Returns
    (model, its directory, whether it was trained now)."""
    key = recipe_key(recipe, dataset)
    cache = TrainedPartCache(Path(cache_dir) / "reference", ReferenceEntry(dataset.item_titles, recipe.max_history))
    if cache.has(key):
        return load(cache.directory(key)), cache.directory(key), False
    if on_train is not None:
        on_train(key)
    threads = default_threads() if threads is None else threads
    t0 = time.perf_counter()
    with torch_threads(threads):
        model = ReferenceModel(recipe, dataset)

        def manifest(r: TrainingRecipe, _trainable: Any, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
            return {**model.manifest(r, dataset, records, seconds, threads),
                    "build_seconds": round(time.perf_counter() - t0, 2)}

        train_cached(recipe, model, dataset, cache, manifest=manifest, progress=progress)
    return load(cache.directory(key)), cache.directory(key), True
