"""Loading the data set a suite names into a :class:`~audit.data.dataset.Dataset`.

The suite's ``dataset:`` spec and the names (:data:`DATASETS`) live in :mod:`audit.data.spec`
(re-exported here); fetching into the cache in :mod:`audit.data.fetch`.

Loaded data sets are memoised per process (keyed by the files' identity), so asking again is
instant; the returned :class:`Dataset` is shared, treat its frames as read-only.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Protocol

from audit.config import validate_config
from audit.data.csv_loader import load_csv_dataset
from audit.data.dataset import Dataset
from audit.data.fetch import FetchResult, fetch_dataset
from audit.data.spec import CSV, CSV_DESCRIPTION, DATASETS, CsvColumns, DatasetSpec
from audit.errors import ConfigError
from audit.paths import dataset_dir, recaudit_home

__all__ = ["DATASETS", "DatasetSpec", "FetchResult", "clear_memo", "fetch_dataset", "load_dataset",
           "load_dataset_from_spec"]


class DatasetKind(Protocol):
    """What a DATASETS entry provides: a name, a description, and loading from a spec."""

    name: str
    description: str
    fetchable: bool

    def load(self, spec: "DatasetSpec", base_dir: Path, home: str | os.PathLike[str] | None) -> Dataset: ...


class CsvDatasetKind:
    """The user's own CSV files, named in the suite (nothing to fetch)."""

    fetchable = False
    name = CSV
    description = CSV_DESCRIPTION

    def load(self, spec: "DatasetSpec", base_dir: Path, home: str | os.PathLike[str] | None) -> Dataset:
        if spec.interactions is None or spec.items is None:  # DatasetSpec guarantees both
            raise ConfigError("dataset: name: csv needs interactions and items")
        return load_csv_dataset(
            interactions=_resolve(spec.interactions, base_dir), items=_resolve(spec.items, base_dir),
            users=None if spec.users_file is None else _resolve(spec.users_file, base_dir),
            columns=spec.columns or CsvColumns(), delimiter=spec.delimiter, name=spec.label or CSV,
            order=spec.order, duplicates=spec.duplicates)


#: the ``csv`` entry of :data:`DATASETS`
CSV_DATASET = CsvDatasetKind()


def load_dataset_from_spec(spec: DatasetSpec | Mapping[str, Any], base_dir: str | os.PathLike[str], *,
                           home: str | os.PathLike[str] | None = None) -> Dataset:
    """Load the data set a suite names; ``base_dir`` is the suite file's directory (for CSV paths).

    Raises ConfigError (bad spec, CSV problems), UnknownNameError, DatasetMissingError (not fetched:
    the message names ``recaudit fetch NAME``), ChecksumError (cache changed since the fetch)."""
    if not isinstance(spec, DatasetSpec):
        spec = validate_config(DatasetSpec, dict(spec), "dataset")
    base = Path(base_dir).expanduser().resolve()
    key = _memo_key(spec, base, home)
    if key is not None and key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    dataset = DATASETS.get(spec.name).load(spec, base, home)
    if key is not None:
        _MEMO[key] = dataset
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return dataset


def load_dataset(name_or_spec: str | DatasetSpec | Mapping[str, Any], home: str | os.PathLike[str] | None = None,
                 *, base_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set by name (``"ml-100k"``, from the cache) or from a spec (mapping or DatasetSpec).

    Relative CSV paths resolve against ``base_dir`` (default: the current directory)."""
    if isinstance(name_or_spec, str):
        spec = validate_config(DatasetSpec, {"name": name_or_spec}, "dataset")
    elif isinstance(name_or_spec, DatasetSpec):
        spec = name_or_spec
    else:
        spec = validate_config(DatasetSpec, dict(name_or_spec), "dataset")
    return load_dataset_from_spec(spec, base_dir if base_dir is not None else Path.cwd(), home=home)


def clear_memo() -> None:
    """Forget the per-process memo of loaded data sets."""
    _MEMO.clear()


_MEMO_SIZE = 4
_MEMO: "OrderedDict[tuple, Dataset]" = OrderedDict()


def _memo_key(spec: DatasetSpec, base: Path, home: str | os.PathLike[str] | None) -> tuple | None:
    """Identity of the inputs: the files' paths, sizes and mtimes (None when something is missing,
    so the loader raises its own clear error)."""
    if spec.name == CSV:
        paths = [_resolve(p, base) for p in (spec.interactions, spec.items, spec.users_file) if p is not None]
    else:
        paths = [dataset_dir(spec.name, home) / "SOURCE.json"]
    try:
        stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    except OSError:
        return None
    spec_json = json.dumps(spec.model_dump(exclude={"users", "seed"}), sort_keys=True, default=str)
    return (str(recaudit_home(home)), spec_json, stats)


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p
