"""The recaudit dashboard: a read-only Streamlit app over a directory of audit reports.

Start it with ``recaudit dashboard [REPORTS_DIR]``, which runs :func:`launch_command` as a child
process through :func:`run_server`: SIGTERM, SIGINT or SIGHUP to ``recaudit`` stop that child too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

APP_PATH = Path(__file__).resolve().parent / "app.py"
REPORTS_ENV = "RECAUDIT_REPORTS"
DEFAULT_REPORTS_DIR = "reports"
DEFAULT_STREAMLIT_ARGS = ("--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer")
#: how long the server may take to stop after a forwarded signal before it is killed
STOP_TIMEOUT_S = 15.0


def launch_command(reports_dir: str | os.PathLike[str], *,
                   streamlit_args: Sequence[str] = ()) -> list[str]:
    """The command that serves the dashboard over ``reports_dir`` (made absolute).

    ``streamlit_args`` go to ``streamlit run`` after the defaults (no usage statistics sent
    anywhere, viewer toolbar), e.g. ``["--server.port", "8600"]``; the reports directory goes
    to the app after ``--``.
    """
    reports = Path(reports_dir).expanduser().resolve()
    return [sys.executable, "-m", "streamlit", "run", str(APP_PATH), *DEFAULT_STREAMLIT_ARGS,
            *streamlit_args, "--", "--reports", str(reports)]


def reports_dir_from(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str:
    """The reports directory the app serves: ``--reports DIR`` in ``argv`` (the app's arguments
    after ``--``), else $RECAUDIT_REPORTS, else ``reports``. Other arguments are ignored."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--reports", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return known.reports or environ.get(REPORTS_ENV) or DEFAULT_REPORTS_DIR


def run_server(command: Sequence[str], *, stop_timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Run the dashboard server ``command`` (:func:`launch_command`) as a child and wait for it.

    SIGTERM and SIGINT to this process are forwarded to the child (SIGHUP as SIGTERM), which stops
    gracefully; a child still running ``stop_timeout_s`` after the first signal is killed. Then one
    line on stderr says how it stopped and 0 is returned, as ``recaudit serve`` does; without a
    signal the child's own exit code is returned. The handlers are installed only in the main
    thread, and restored afterwards.
    """
    received: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []

    def stop_child() -> None:
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGTERM if received[0] == _SIGHUP else received[0])

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        stop_child()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        procs.append(subprocess.Popen(list(command)))
        proc = procs[0]
        if received:  # a signal came before the child existed
            stop_child()
        deadline = None
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + stop_timeout_s
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if procs and procs[0].poll() is None:  # an exception, not a signal: never leave the server behind
            procs[0].kill()
            procs[0].wait()
    if not received:
        return code
    how = "exited" if code >= 0 else f"was ended by {signal.Signals(-code).name}"
    print(f"recaudit dashboard: stopped by {signal.Signals(received[0]).name}; the Streamlit server "
          f"(pid {proc.pid}) {how}" + (f" with code {code}" if code > 0 else ""), file=sys.stderr)
    return 0


_SIGHUP = getattr(signal, "SIGHUP", None)
_FORWARDED = [s for s in (signal.SIGTERM, signal.SIGINT, _SIGHUP) if s is not None]
