"""`recaudit dashboard` as a user starts it: the real console script, its real Streamlit child on a
free port, a browser's websocket handshake on /_stcore/stream, then SIGTERM as a service manager or
`kill` stops it (issue 30, point 8)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from report_fixtures import write_fixture_reports

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

START_TIMEOUT_S = 120  # generous: a cold Streamlit import on a busy machine
STOP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Stopped:
    child: int
    child_alive_after_stop: bool
    parent_code: int
    stderr: str


@pytest.fixture(scope="module")
def stopped_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    """Start `recaudit dashboard REPORTS --port P`, wait until it answers HTTP, send SIGTERM to the
    recaudit process (not to its child), and record what became of the Streamlit child."""
    tmp = tmp_path_factory.mktemp("dashboard-process")
    reports = write_fixture_reports(tmp / "reports")
    port = _free_port()
    script = Path(sys.executable).with_name("recaudit")
    env = {**os.environ, "STREAMLIT_SERVER_HEADLESS": "true", "PYTHONUNBUFFERED": "1",
           "PYTHONWARNINGS": "default"}  # Python's warnings shown once each, as a user's shell would
    out, err = (tmp / "stdout.log").open("w"), (tmp / "stderr.log").open("w")
    parent = subprocess.Popen([str(script), "dashboard", str(reports), "--port", str(port)],
                              stdout=out, stderr=err, env=env)
    child = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert parent.poll() is None, f"recaudit dashboard exited: {(tmp / 'stderr.log').read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the dashboard did not answer HTTP"
            time.sleep(0.3)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], open_timeout=30) as ws:
            assert ws.subprotocol == "streamlit"  # the handshake a browser tab makes
        children = _children(parent.pid)
        assert len(children) == 1, f"expected one Streamlit child of recaudit, found {children}"
        child = children[0]
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield Stopped(child, _alive(child), code, (tmp / "stderr.log").read_text())
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):  # never leave a server behind, whatever the test found
            os.kill(child, signal.SIGKILL)
        out.close()
        err.close()


def test_sigterm_to_recaudit_dashboard_stops_its_streamlit_child(stopped_dashboard: Stopped) -> None:
    assert not stopped_dashboard.child_alive_after_stop, \
        f"the Streamlit child (pid {stopped_dashboard.child}) kept running after recaudit got SIGTERM"
    assert stopped_dashboard.parent_code == 0


def test_the_stop_is_reported_in_one_line(stopped_dashboard: Stopped) -> None:
    lines = [line for line in stopped_dashboard.stderr.splitlines() if line.startswith("recaudit dashboard: stopped")]
    assert lines == [f"recaudit dashboard: stopped by SIGTERM; the Streamlit server "
                     f"(pid {stopped_dashboard.child}) exited"]


def test_a_started_dashboard_prints_no_websockets_or_uvicorn_warning(stopped_dashboard: Stopped) -> None:
    """Streamlit warns at every start when the installed websockets and uvicorn can abort the
    /_stcore/stream handshake (websockets >= 17 with uvicorn < 0.52); pyproject.toml keeps the pair
    apart, so nothing but Uvicorn's start line and recaudit's stop line reaches stderr."""
    lines = [line for line in stopped_dashboard.stderr.splitlines() if line.strip()]
    noisy = [line for line in lines
             if any(word in line.lower() for word in ("warning", "deprecat", "handshake", "upgrade", "websockets"))]
    assert noisy == []
    assert len(lines) == 2 and "Uvicorn server started on 127.0.0.1:" in lines[0], lines
