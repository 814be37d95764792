"""`recaudit dashboard` listens on loopback unless told otherwise (a real Streamlit process)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from audit.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4 dotted; IPv6 as ``tcp6:<hex>``)."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if table == "tcp" else f"tcp6:{addr}")
    return found


def test_print_command_binds_loopback_by_default_and_takes_host_and_port(capsys, tmp_path: Path) -> None:
    assert main(["dashboard", str(tmp_path), "--print-command"]) == 0
    words = capsys.readouterr().out.split()
    assert words[words.index("--server.address") + 1] == "127.0.0.1"
    assert words[words.index("--server.port") + 1] == "8501"
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0", "--port", "8600", "--print-command"]) == 0
    words = capsys.readouterr().out.split()
    assert words[words.index("--server.address") + 1] == "0.0.0.0"
    assert words[words.index("--server.port") + 1] == "8600"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc/net/tcp")
def test_the_dashboard_process_listens_on_loopback_only(capsys, tmp_path: Path) -> None:
    port = _free_port()
    assert main(["dashboard", str(tmp_path), "--port", str(port), "--print-command"]) == 0
    command = capsys.readouterr().out.split()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "STREAMLIT_SERVER_HEADLESS": "true"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _listening(port):
            assert proc.poll() is None, "streamlit exited"
            time.sleep(0.3)
        assert _listening(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
