"""The Ray executor gives the same report as the local one: on an in-process Ray instance (1 CPU)
and on a head started as a separate process (`ray start --head`), which it joins by address.
About 10-25 s each here, mostly Ray start-up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

import runner_testkit as kit
from audit.data.dataset import Dataset
from audit.runner import run_suite_file

COMPARED = ("recommender", "probe", "probe_name", "status", "metrics", "details", "reason", "headline", "key")


def test_ray_executor_report_equals_local(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    pytest.importorskip("ray")
    spec = kit.utility_suite(gates=[{"probe": "utility", "metric": "hr@5", "op": ">=", "threshold": 0.5}])
    spec["recommenders"]["crashy"] = {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:crash"}
    local = run_suite_file(kit.write_suite(tmp_path / "local", spec, dataset=tiny_dataset),
                           out=tmp_path / "local" / "report", no_cache=True)
    spec["executor"] = {"type": "ray", "num_cpus": 1}
    remote = run_suite_file(kit.write_suite(tmp_path / "ray", spec, dataset=tiny_dataset),
                            out=tmp_path / "ray" / "report", no_cache=True)

    def comparable(report: dict) -> list[dict]:
        rows = [{k: r.get(k) for k in COMPARED} for r in report["results"]]
        for row in rows:  # tracebacks name the process's frames; the message must match
            row["details"] = {k: v for k, v in row["details"].items() if k != "traceback"}
        return rows

    assert [r["status"] for r in remote.report["results"]] == ["pass", "pass", "error"]
    assert comparable(remote.report) == comparable(local.report)
    assert remote.report["gates"] == local.report["gates"]
    assert (tmp_path / "ray" / "report" / "outputs.jsonl").read_text() == \
        (tmp_path / "local" / "report" / "outputs.jsonl").read_text()
    assert not any(j.cached for j in remote.jobs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A Ray head started as a separate process (``ray start --head --block``); stopped after
    by ending that process (which stops the node it started), never by ``ray stop`` (that would
    end every Ray on the machine)."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("the `ray` command is not installed beside this Python")
    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    tests_dir = str(Path(__file__).resolve().parent)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, tests_dir, os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    log = (tmp_path / "ray-head.log").open("w")
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "ray-head.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not open its port in 90 s")
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the head and the node it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_executor_on_a_separately_started_head_equals_local(tmp_path: Path, tiny_dataset: Dataset,
                                                                 recaudit_home: Path, ray_head: str) -> None:
    import ray

    spec = kit.utility_suite(gates=[{"probe": "utility", "metric": "hr@5", "op": ">=", "threshold": 0.5}])
    local = run_suite_file(kit.write_suite(tmp_path / "local", spec, dataset=tiny_dataset),
                           out=tmp_path / "local" / "report", no_cache=True)
    spec["executor"] = {"type": "ray", "address": ray_head}
    remote = run_suite_file(kit.write_suite(tmp_path / "ray", spec, dataset=tiny_dataset),
                            out=tmp_path / "ray" / "report", no_cache=True)
    assert not ray.is_initialized()  # the executor disconnected from the cluster it joined

    def comparable(report: dict) -> list[dict]:
        return [{k: r.get(k) for k in COMPARED} for r in report["results"]]

    assert [r["status"] for r in remote.report["results"]] == ["pass", "pass"]
    assert comparable(remote.report) == comparable(local.report)
    assert remote.report["gates"] == local.report["gates"]
    assert (tmp_path / "ray" / "report" / "outputs.jsonl").read_text() == \
        (tmp_path / "local" / "report" / "outputs.jsonl").read_text()
