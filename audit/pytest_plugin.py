"""pytest entry point (``pytest11: recaudit``): run an audit suite inside a test.

Teams write::

    def test_audit(recaudit_run):
        recaudit_run("audits/quick.yaml")

and the test fails listing every failing gate (and every errored job). The fixture:

``recaudit_run(suite, out=None, *, allow_errors=False, no_cache=False, limit_users=None,
fail_on=(), junit=None, progress=False, home=None) -> audit.runner.RunOutcome``

- ``suite``: path of the suite file (str or Path), relative to pytest's working directory;
- ``out``: the report directory; default: ``--recaudit-out DIR`` (or the ``recaudit_out`` ini
  key) gives ``DIR/<test id>``, else the test's own ``tmp_path / "recaudit-report"``; a second
  call in the same test gets ``...-2``, and so on;
- ``allow_errors``: a job that ended in ``error`` does not fail the test (failing gates still do);
- the other keywords go to :func:`audit.runner.run_suite` (``fail_on``: extra gates as on the
  command line, ``"[REC:]PROBE.METRIC<=X"``; ``limit_users``: audit at most N users; ``junit``:
  also write JUnit XML there; ``home``: instead of ``$RECAUDIT_HOME``).

It returns the run's :class:`~audit.runner.RunOutcome` (``out``, ``report``, ``gates``, ``jobs``,
``exit_code``: 0, 1 gate failed, 3 a job errored). A suite error (unknown key, missing module)
raises :class:`audit.errors.ConfigError` in the test. Each report's directory is listed in the
"recaudit reports" section at the end of the session. The plugin module is loaded by every
pytest session in an environment where recaudit is installed, so it imports nothing heavy at
import time. Docs: docs/ci.md.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from audit.runner import RunOutcome

#: (test node id, report directory) of every recaudit_run call of the session, in call order
REPORTS_KEY = pytest.StashKey[list[tuple[str, Path]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("recaudit", "recaudit audits (the recaudit_run fixture)")
    group.addoption("--recaudit-out", metavar="DIR", default=None,
                    help="write each recaudit_run report to DIR/<test id> (relative to the directory "
                         "pytest was started in; default: the ini key recaudit_out, else the test's "
                         "tmp_path/recaudit-report)")
    parser.addini("recaudit_out", "directory for recaudit_run reports, as --recaudit-out "
                                  "(relative to the ini file's directory)", default="")


def reports_root(config: pytest.Config) -> Path | None:
    """Where ``--recaudit-out`` (else the ``recaudit_out`` ini key) puts reports, absolute; None
    when neither is set (reports go to each test's ``tmp_path``)."""
    option = config.getoption("recaudit_out", None)
    if option:
        return (Path(config.invocation_params.dir) / option).resolve()
    ini = str(config.getini("recaudit_out") or "")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return (base / ini).resolve()
    return None


def report_dir_name(nodeid: str, limit: int = 120) -> str:
    """A directory name for a test node id: ``tests/test_a.py::test_x[p]`` -> ``tests-test_a.py-test_x-p``
    (letters, digits, ``.``, ``_``, ``-``); longer than ``limit`` characters: cut, with a digest of the id."""
    name = re.sub(r"[^\w.-]+", "-", nodeid).strip("-.") or "test"
    if len(name) > limit:
        name = f"{name[:limit - 13]}-{hashlib.sha1(nodeid.encode()).hexdigest()[:12]}"
    return name


def run_suite_and_check_gates(path: str | Path, out: str | Path | None = None, *,
                              allow_errors: bool = False, **options: Any) -> "RunOutcome":
    """Run the suite at ``path`` (report into ``out``) and fail the current test when a gate
    fails or, unless ``allow_errors``, a job ended in ``error``. Returns the run outcome.

    ``options`` are passed to :func:`audit.runner.run_suite_file` (``no_cache``, ``limit_users``,
    ``fail_on``, ``junit``, ``progress``, ``home``).
    """
    from audit.runner import run_suite_file

    options.setdefault("progress", False)
    outcome = run_suite_file(Path(path), out=None if out is None else Path(out), **options)
    problems = [f"gate failed: {g.describe()}" for g in outcome.gates if not g.passed]
    if not allow_errors:
        problems += [f"job error: {r.recommender} x {r.probe}: {r.result.reason}"
                     for r in outcome.jobs if r.result.status == "error"]
    if problems:
        pytest.fail(f"recaudit suite {path} ({outcome.out}):\n  " + "\n  ".join(problems),
                    pytrace=False)
    return outcome


@pytest.fixture()
def recaudit_run(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., "RunOutcome"]:
    """``recaudit_run(suite, out=None, *, allow_errors=False, **options) -> RunOutcome``: run a
    suite and fail the test listing the failing gates (and errored jobs, unless ``allow_errors``).

    The report goes to ``out``; default ``DIR/<test id>`` with ``--recaudit-out DIR`` (or the
    ``recaudit_out`` ini key), else ``tmp_path / "recaudit-report"``; later calls in the same test
    add ``-2``, ``-3``. ``options``: :func:`audit.runner.run_suite` (``no_cache``, ``limit_users``,
    ``fail_on``, ``junit``, ``progress``, ``home``)."""
    root = reports_root(request.config)
    base = tmp_path / "recaudit-report" if root is None else root / report_dir_name(request.node.nodeid)
    written = request.config.stash.setdefault(REPORTS_KEY, [])
    calls = 0

    def run(path: str | Path, out: str | Path | None = None, *, allow_errors: bool = False,
            **options: Any) -> "RunOutcome":
        nonlocal calls
        calls += 1
        target = Path(out) if out is not None else base if calls == 1 else base.with_name(f"{base.name}-{calls}")
        try:
            return run_suite_and_check_gates(path, target, allow_errors=allow_errors, **options)
        finally:
            written.append((request.node.nodeid, target))

    return run


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List where every ``recaudit_run`` report of the session went."""
    written = config.stash.get(REPORTS_KEY, [])
    if not written:
        return
    terminalreporter.write_sep("-", "recaudit reports")
    for nodeid, out in written:
        state = "" if (out / "report.json").is_file() else "  (no report.json: the run stopped before writing it)"
        terminalreporter.write_line(f"{nodeid}: {out}{state}")
