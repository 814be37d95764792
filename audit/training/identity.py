"""One identity for every trained part: code version, cache key, atomic publish, prefix resume.

- :func:`source_digest` hashes the source of modules and packages (the one code hasher the
  job cache, the trained-part keys and the reference's source digest share);
- :func:`training_code_version`: the code that determines a trained part: this package, the
  model's own training modules and the modules of every trainer and sequence transform the
  recipe names (changing any of them retrains);
- :func:`trained_key`: 16 hex chars of SHA-256 over the recipe's JSON, the base model's
  identity (None for a model trained from scratch), the data fingerprint and that code version;
- :class:`TrainedPartCache`: ``<root>/<key>/`` entries in a model's own layout
  (:class:`EntryLayout`), written under a temporary name and renamed, so an interrupted run
  never leaves half a model; a multi-stage recipe publishes what the model is after each
  earlier stage under that prefix's own key and resumes from the longest prefix cached
  (a backdoored checkpoint used as it is and the same checkpoint fine-tuned share their first
  stage; every privacy variant of the reference shares its public pretrain stage).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence


if TYPE_CHECKING:
    from audit.data.dataset import Dataset
    from audit.training.protocol import Trainable, TrainableModel

SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json")


def _module_files(name: str) -> list[tuple[str, Path]]:
    """(relative name, path) of a module's file, or of every source file of a package."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"no module named {name!r}")
    if spec.submodule_search_locations:
        out = []
        for location in spec.submodule_search_locations:
            root = Path(location)
            for path in sorted(root.rglob("*")):
                if path.suffix in SOURCE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                    out.append((f"{name}/{path.relative_to(root).as_posix()}", path))
        return out
    if spec.origin is None or not Path(spec.origin).is_file():
        return []
    return [(f"{name}.py", Path(spec.origin))]


@functools.lru_cache(maxsize=64)
def source_digest(modules: tuple[str, ...]) -> str:
    """SHA-256 (16 hex chars) over the names and contents of the modules' source files (a
    package: all its ``.py``/``.yaml``/``.json`` files); read once per process."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        for rel, path in _module_files(name):
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def recipe_modules(recipe: Any) -> tuple[str, ...]:
    """The modules of the trainers and sequence transforms ``recipe`` uses."""
    from audit.training.trainers import TRAINERS

    modules = {getattr(TRAINERS.get(s.trainer), "__module__", "") for s in recipe.stages}
    modules |= {type(t).__module__ for t in recipe.sequence_transforms}
    modules.discard("")
    return tuple(sorted(modules))


def training_code_version(recipe: Any, model_modules: Sequence[str]) -> str:
    """The version of all the code that trains ``recipe`` (see the module docstring)."""
    return source_digest(("audit.training", *model_modules, *recipe_modules(recipe)))


def trained_key(recipe: Any, base: str | None, data_fingerprint: str, code: str) -> str:
    """16 hex chars of SHA-256 over the recipe JSON, the base identity, the data and the code version."""
    payload = json.dumps({"recipe": recipe.to_json(), "base": base, "data": data_fingerprint, "code": code},
                         sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_key(recipe: Any, model: "TrainableModel", dataset: "Dataset") -> str:
    """:func:`trained_key` of ``recipe`` trained into ``model`` on ``dataset``."""
    return trained_key(recipe, model.identity, dataset.fingerprint,
                       training_code_version(recipe, model.training_modules))


def publish_directory(directory: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Build a cache directory atomically: ``write(tmp)`` fills a temporary sibling, which is then
    renamed to ``directory``. An incomplete leftover at ``directory`` is replaced; if another process
    published a complete one first, theirs is kept and ours dropped. Nothing half-written remains."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        write(tmp)
        if directory.exists() and not is_complete(directory):
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not is_complete(directory):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


class EntryLayout(Protocol):
    """How one model kind writes and reads a cache entry (its trained part and manifest)."""

    def is_complete(self, directory: Path) -> bool: ...

    def write(self, directory: Path, trainable: "Trainable", manifest: Mapping[str, Any]) -> None: ...

    def read_state(self, directory: Path) -> Mapping[str, Any]: ...

    def read_manifest(self, directory: Path) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Resume:
    """Training picked up after the first ``stages`` stages, from a cached prefix: its trained
    state, its stage records and its cache key."""

    stages: int
    state: Mapping[str, Any]
    records: list[dict[str, Any]]
    key: str


class TrainedPartCache:
    """``<root>/<key>/`` entries of one model kind (see the module docstring)."""

    def __init__(self, root: Path, layout: EntryLayout) -> None:
        self.root = Path(root)
        self.layout = layout

    def directory(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return self.layout.is_complete(self.directory(key))

    def publish(self, key: str, trainable: "Trainable", manifest: Mapping[str, Any]) -> Path:
        """Write the entry under a temporary name and rename it into place (another process's
        complete entry under the same key is kept)."""
        return publish_directory(self.directory(key),
                                 lambda tmp: self.layout.write(tmp, trainable, {**manifest, "key": key}),
                                 self.layout.is_complete)

    def longest_prefix(self, recipe: Any, key_of: Callable[[Any], str]) -> Resume | None:
        """The longest complete cached prefix of ``recipe`` (fewer stages than all), if any."""
        for n in range(len(recipe.stages) - 1, 0, -1):
            prefix = recipe.prefix(n)
            if prefix is None:
                continue
            pkey = key_of(prefix)
            directory = self.directory(pkey)
            if self.layout.is_complete(directory):
                records = self.layout.read_manifest(directory)["stages"]
                return Resume(stages=n, state=self.layout.read_state(directory), records=records, key=pkey)
        return None


def train_cached(recipe: Any, model: "TrainableModel", dataset: "Dataset", cache: TrainedPartCache, *,
                 manifest: Callable[[Any, "Trainable", list[dict[str, Any]], float], dict[str, Any]],
                 progress: bool = False, announce: Callable[[str, Resume | None], None] | None = None,
                 ) -> tuple["Trainable", dict[str, Any], str]:
    """Train ``recipe`` into ``model`` (resuming from the longest cached prefix), publish every
    earlier stage's prefix and the result; returns (trainable, manifest, key).
    ``manifest(recipe, trainable, stage records, seconds)`` builds the model's manifest."""
    from audit.training.stages import run_stages

    def key_of(r: Any) -> str:
        return model_key(r, model, dataset)

    key = key_of(recipe)
    resume = cache.longest_prefix(recipe, key_of)
    if announce is not None:
        announce(key, resume)
    t_start = time.perf_counter()

    def publish_prefix(n: int, trainable: "Trainable", records: list[dict[str, Any]]) -> None:
        prefix = recipe.prefix(n)
        if prefix is not None:
            cache.publish(key_of(prefix), trainable, manifest(prefix, trainable, records,
                                                               time.perf_counter() - t_start))

    trainable, records = run_stages(recipe, model, dataset, progress=progress, resume=resume,
                                    after_stage=publish_prefix)
    out = manifest(recipe, trainable, records, time.perf_counter() - t_start)
    if resume is not None:
        out["resumed_from"] = {"key": resume.key, "stages": resume.stages}
    out["key"] = key
    cache.publish(key, trainable, out)
    return trainable, out, key

