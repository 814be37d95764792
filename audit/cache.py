"""Job result cache and atomic file writes.

A job (one recommender x one probe) is identified by a SHA-256 key over its
inputs: the data set fingerprint, the recommender's suite entry and its *identity*
(:func:`recommender_identity`: the SHA-256 of the module file of every ``python``
adapter callable, so editing the recommender's code changes the key; an ``openai``
endpoint's normalised base URL and model), the probe name and validated config, the run
seed and audited users, and the code version (a hash of the source files of the
``audit``, ``attacks`` and ``privacy`` packages).
Finished jobs are stored as ``<root>/<key>.json`` plus ``<root>/<key>.outputs.jsonl``
(the raw model outputs); the JSON file is written last and marks the entry complete.

Every file here is written atomically: to a temporary file in the same
directory, flushed, then ``os.replace``-d over the target.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from audit.paths import results_dir

#: packages whose source defines the "code version" of a cached result
CODE_PACKAGES: tuple[str, ...] = ("audit", "attacks", "privacy")


# -- atomic writes ------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj`` (numpy scalars/arrays, paths, sets, tuples; NaN/inf -> None)."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True),
                      parse_constant=lambda _c: None)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    return str(obj)


def dumps_json(data: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text (NaN/inf written as null)."""
    return json.dumps(to_jsonable(data), indent=indent, ensure_ascii=False, allow_nan=False)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, dumps_json(data) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(dumps_json(r, indent=None) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- keys ------------------------------------------------------------------------------
def code_version() -> str:
    """SHA-256 (16 hex chars) over the relative paths and contents of the source files of
    :data:`CODE_PACKAGES` (``.py``, ``.yaml``, ``.json``; caches excluded): the version of a
    cached job result (:func:`audit.training.identity.source_digest`)."""
    from audit.training.identity import source_digest

    return source_digest(CODE_PACKAGES)


def stable_hash(data: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``data`` (sorted keys)."""
    text = json.dumps(to_jsonable(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: entry keys of the ``python`` adapter that name a ``module:function`` callable
PYTHON_TARGET_KEYS: tuple[str, ...] = ("generate", "score")


def module_file(module: str, dirs: Iterable[Path]) -> Path | None:
    """The source file of ``module`` (dotted name or ``.py`` path) as the python adapter would
    find it: in ``dirs`` first, then on ``sys.path``; found without importing it. None if absent."""
    import sys

    if module.endswith(".py"):
        p = Path(module)
        cands = [p] if p.is_absolute() else [Path(d) / p for d in dirs]
        return next((c for c in cands if c.is_file()), None)
    rel = Path(*module.split("."))
    for d in [*map(Path, dirs), *(Path(x) for x in sys.path if x)]:
        for cand in (d / rel.with_suffix(".py"), d / rel / "__init__.py"):
            if cand.is_file():
                return cand
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and Path(spec.origin).is_file() else None


def recommender_identity(entry: Mapping[str, Any], dirs: Iterable[Path] = ()) -> dict[str, Any]:
    """What identifies a recommender beyond its suite entry (part of every job key):

    - ``python`` adapter: per callable target, the SHA-256 of its module file (or
      ``"<not found>"``), so a rerun after editing the recommender misses the cache;
    - ``openai`` adapter: the endpoint's base URL (trailing ``/`` removed) and model name.
    Other adapters: ``{}`` (their code is in the code version, their weights in their entry)."""
    dirs = [Path(d) for d in dirs] or [Path.cwd()]
    adapter = entry.get("adapter")
    if adapter == "python":
        out: dict[str, Any] = {}
        for role in PYTHON_TARGET_KEYS:
            target = entry.get(role)
            if not isinstance(target, str):
                continue
            module = target.partition(":")[0]
            path = module_file(module, dirs)
            out[role] = {"target": target,
                         "module_sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else "<not found>"}
        return out
    if adapter == "openai":
        return {"base_url": str(entry.get("base_url", "")).rstrip("/"), "model": str(entry.get("model", ""))}
    return {}


def job_key(*, dataset_fingerprint: str, recommender: str, entry: Mapping[str, Any], probe: str,
            probe_name: str, probe_config: Mapping[str, Any], seed: int, users: Iterable[str],
            version: str | None = None, identity: Mapping[str, Any] | None = None) -> str:
    """The cache key (64 hex chars) of one job's inputs (``identity``: :func:`recommender_identity`,
    computed from ``entry`` in the working directory when not given)."""
    return stable_hash({
        "dataset": dataset_fingerprint, "recommender": recommender, "entry": dict(entry),
        "identity": dict(identity) if identity is not None else recommender_identity(entry),
        "probe": probe, "probe_name": probe_name, "probe_config": dict(probe_config),
        "seed": int(seed), "users": hashlib.sha256("\n".join(users).encode()).hexdigest(),
        "code": version if version is not None else code_version(),
    })


# -- the cache ---------------------------------------------------------------------------
class ResultCache:
    """Finished job records under ``root`` (``$RECAUDIT_HOME/results`` by default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else results_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.json", self.root / f"{key}.outputs.jsonl"

    def load(self, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The stored ``(record, outputs)`` for ``key``, or None when absent or unreadable."""
        return load_job_files(*self._paths(key), key=key)

    def store(self, key: str, record: Mapping[str, Any], outputs: Iterable[Mapping[str, Any]]) -> None:
        """Store a finished job (outputs first, the record last)."""
        record_path, outputs_path = self._paths(key)
        atomic_write_jsonl(outputs_path, outputs)
        atomic_write_json(record_path, {**record, "key": key})


def load_job_files(record_path: Path, outputs_path: Path, *,
                   key: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """Read a job record + its outputs if both exist, parse, and carry ``key``; else None."""
    try:
        with open(record_path, encoding="utf-8") as fh:
            record = json.load(fh)
        if record.get("key") != key:
            return None
        outputs = read_jsonl(outputs_path)
    except (OSError, ValueError):
        return None
    return record, outputs

