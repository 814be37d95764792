"""Reading report directories, read-only and confined to one reports root.

Runs are found, never typed in: :meth:`ReportsRoot.discover` lists the root itself and
its sub-directories up to two levels deep that hold a ``report.json``; the UI only offers
those ids. Every path the dashboard opens goes through :meth:`ReportsRoot.confine`, which
resolves symlinks and refuses anything outside the root, so neither a crafted run id
(``../..``) nor a symlink planted in the reports directory can expose other files.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from audit.errors import ConfigError, RecauditError
from audit.report import validate_report_data, with_histories
from dashboard.model import Report, ReportFormatError, parse_report

REPORT_FILE = "report.json"
OUTPUTS_FILE = "outputs.jsonl"
SUMMARY_FILE = "summary.md"
JUNIT_FILE = "junit.xml"
RUN_FILES = frozenset({REPORT_FILE, OUTPUTS_FILE, SUMMARY_FILE, JUNIT_FILE})
MAX_DEPTH = 2  # the root, its children and grandchildren (reports/nightly/2024-05-01)
SKIP_DIRS = frozenset({"jobs", "__pycache__"})


class ReportAccessError(RecauditError, PermissionError):
    """A path outside the reports directory (or not a run file) was asked for."""


@dataclass(frozen=True)
class RunEntry:
    """One directory under the root that looks like a run.

    ``run_id`` is its path relative to the root (POSIX, ``.`` for the root itself);
    exactly one of ``report`` and ``error`` is set.
    """

    run_id: str
    path: Path
    report: Report | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None


class ReportsRoot:
    """The one directory the dashboard may read from (symlinks resolved)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        given = Path(path).expanduser()
        if not given.is_dir():
            raise ConfigError(f"reports directory {str(given)!r} does not exist or is not a directory; "
                              "pass --reports DIR or set RECAUDIT_REPORTS")
        self.path = given.resolve()

    def __repr__(self) -> str:
        return f"ReportsRoot({str(self.path)!r})"

    def confine(self, path: str | os.PathLike[str]) -> Path:
        """``path`` resolved (symlinks followed); raise ReportAccessError when it leaves the root."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.path):
            raise ReportAccessError(f"refusing to open {str(path)!r}: it resolves outside the reports "
                                    f"directory {str(self.path)!r}")
        return resolved

    def run_dir(self, run_id: str) -> Path:
        """The directory of run ``run_id`` (a relative id as listed by :meth:`discover`)."""
        if not isinstance(run_id, str) or not run_id:
            raise ReportAccessError("no run selected")
        rel = PurePosixPath(run_id)
        if rel.is_absolute() or "\\" in run_id or any(part == ".." for part in rel.parts):
            raise ReportAccessError(f"refusing run id {run_id!r}: runs are named by their path "
                                    "relative to the reports directory, without '..'")
        path = self.confine(self.path.joinpath(*rel.parts))
        if not path.is_dir():
            raise ReportAccessError(f"run {run_id!r} is not a directory under {str(self.path)!r}")
        return path

    def run_file(self, run_id: str, name: str) -> Path:
        """One of the report files (report.json, outputs.jsonl, summary.md, junit.xml) of a run."""
        if name not in RUN_FILES:
            raise ReportAccessError(f"refusing to open {name!r}: only {', '.join(sorted(RUN_FILES))} "
                                    "are read from a run")
        return self.confine(self.run_dir(run_id) / name)

    def _candidates(self, warnings: list[str]) -> Iterator[Path]:
        """The root and its sub-directories down to MAX_DEPTH, never leaving the root."""
        stack = [(self.path, 0)]
        while stack:
            d, depth = stack.pop()
            yield d
            if depth >= MAX_DEPTH:
                continue
            try:
                children = sorted(d.iterdir(), reverse=True)
            except OSError:
                continue
            for child in children:
                if child.name.startswith(".") or child.name in SKIP_DIRS or not child.is_dir():
                    continue
                if not child.resolve().is_relative_to(self.path):
                    rel = child.relative_to(self.path).as_posix()
                    warnings.append(f"skipped {rel!r}: it links outside the reports directory")
                    continue
                stack.append((child, depth + 1))

    def discover(self) -> tuple[list[RunEntry], list[str]]:
        """All runs under the root, sorted by id, and warnings about entries that were left out.

        A directory with a ``report.json`` is a run; its report is loaded and validated
        (a malformed one becomes an entry with ``error`` set). A directory, or report file,
        that resolves outside the root (a symlink) is left out with a warning.
        """
        runs: list[RunEntry] = []
        warnings: list[str] = []
        for d in self._candidates(warnings):
            rel = d.relative_to(self.path).as_posix()
            report_path = d / REPORT_FILE
            if not (report_path.exists() or report_path.is_symlink()):
                continue
            try:
                self.confine(d)
                self.confine(report_path)
            except ReportAccessError:
                warnings.append(f"skipped {rel!r}: it links outside the reports directory")
                continue
            try:
                runs.append(RunEntry(rel, d.resolve(), report=load_report(report_path)))
            except ReportFormatError as exc:
                runs.append(RunEntry(rel, d.resolve(), error=str(exc)))
        runs.sort(key=lambda r: r.run_id)
        return runs, warnings

    def load(self, run_id: str) -> Report:
        """The validated report of run ``run_id``."""
        return load_report(self.run_file(run_id, REPORT_FILE))

    def outputs(self, run_id: str, *, recommender: str | None = None, probe: str | None = None,
                user: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Records of the run's ``outputs.jsonl`` matching the filters, and the count of lines
        that could not be read (a half-written last line, say). A missing file gives ([], 0)."""
        path = self.run_file(run_id, OUTPUTS_FILE)
        if not path.is_file():
            return [], 0
        return read_outputs(path, recommender=recommender, probe=probe, user=user)

    def outputs_index(self, run_id: str) -> tuple[dict[tuple[str, str], list[str]], int]:
        """``{(recommender, probe): [users...]}`` of the run's ``outputs.jsonl`` (users in first-seen
        order) and the count of unreadable lines; ({}, 0) without the file."""
        path = self.run_file(run_id, OUTPUTS_FILE)
        if not path.is_file():
            return {}, 0
        stat = path.stat()
        return _outputs_index(str(path), stat.st_mtime_ns, stat.st_size)

    def text_file(self, run_id: str, name: str) -> str | None:
        """The text of ``summary.md`` or ``junit.xml``; None when the run has none."""
        path = self.run_file(run_id, name)
        if not path.is_file():
            return None
        return path.read_text(encoding="utf-8", errors="replace")


def load_report(path: Path) -> Report:
    """Read and validate one ``report.json``; raise ReportFormatError naming the file and problem.

    Parsed reports are cached by (path, modification time, size), so a rewritten file is re-read.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise ReportFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return _load_report_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=128)
def _load_report_cached(path_str: str, _mtime_ns: int, _size: int) -> Report:
    path = Path(path_str)
    where = path_str
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportFormatError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise ReportFormatError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise ReportFormatError(f"{where}: the file is empty (the run may still be writing it)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportFormatError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}); the file may be half-written") from None
    _validate_with_report_schema(data, where)
    try:
        return parse_report(data)
    except ReportFormatError as exc:
        raise ReportFormatError(f"{where}: {exc}") from None


def _validate_with_report_schema(data: Any, where: str) -> None:
    """Check ``data`` against the report writer's JSON Schema (``audit.report``), the contract
    the dashboard shares with CI and ``recaudit compare``. Its ConfigError (which names the
    file and the first problem) becomes a ReportFormatError."""
    try:
        validate_report_data(data, where)
    except ConfigError as exc:
        raise ReportFormatError(str(exc)) from None


@functools.lru_cache(maxsize=16)
def _outputs_index(path_str: str, _mtime_ns: int, _size: int) -> tuple[dict[tuple[str, str], list[str]], int]:
    index: dict[tuple[str, str], dict[str, None]] = {}
    records, bad = read_outputs(Path(path_str), fields=("recommender", "probe", "user"))
    for rec in records:
        key = (str(rec.get("recommender")), str(rec.get("probe")))
        index.setdefault(key, {})[str(rec.get("user"))] = None
    return {k: list(v) for k, v in index.items()}, bad


def read_outputs(path: Path, *, recommender: str | None = None, probe: str | None = None,
                 user: str | None = None, fields: tuple[str, ...] | None = None
                 ) -> tuple[list[dict[str, Any]], int]:
    """Stream ``outputs.jsonl`` keeping the records that match every given filter (only the
    named ``fields`` of each when given). A record naming a ``history_id`` gets its ``history``
    from the first line that carries those titles (the file stores each history once).

    Returns the records and the number of unreadable lines (bad JSON or not an object).
    """
    bad = 0

    def parsed(fh: Any) -> Iterator[dict[str, Any]]:
        nonlocal bad
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            yield rec

    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for rec in with_histories(parsed(fh)):
            if recommender is not None and rec.get("recommender") != recommender:
                continue
            if probe is not None and rec.get("probe") != probe:
                continue
            if user is not None and str(rec.get("user")) != user:
                continue
            records.append(rec if fields is None else {k: rec.get(k) for k in fields})
    return records, bad
