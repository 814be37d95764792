"""Data read exactly as written, through the real console script: a CSV whose order is missing or
contradicts itself exits 2 with one line naming the file and the first offending user and line;
``order: file`` and the ``duplicates`` rule are declared choices, reported in report.json's dataset
entry and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.audit import runner_testkit as kit


def write_data(directory: Path, *, timestamps: bool = True, repeats: int = 0) -> None:
    """12 users x 6 of 20 items, rows shuffled (the file is not in time order); ``repeats`` users
    see their first item again at the end of their history."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 13):
        items = rng.choice(20, size=6, replace=False) + 1
        rows += [(f"u{u}", f"i{i}", 1000 * u + t) for t, i in enumerate(items)]
        if u <= repeats:
            rows.append((f"u{u}", f"i{items[0]}", 1000 * u + 99))
    order = rng.permutation(len(rows))
    directory.mkdir(parents=True, exist_ok=True)
    head = "user_id,item_id,timestamp\n" if timestamps else "user_id,item_id\n"
    (directory / "interactions.csv").write_text(head + "".join(
        f"{u},{i},{t}\n" if timestamps else f"{u},{i}\n" for u, i, t in (rows[k] for k in order)))
    (directory / "items.csv").write_text("item_id,title\n" + "".join(f"i{i},Film {i}\n" for i in range(1, 21)))


def run(tmp_path: Path, dataset: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    suite = kit.utility_suite(gates=[])
    suite["dataset"] = {"name": "csv", "interactions": "data/interactions.csv", "items": "data/items.csv",
                        "users": 6, **dataset}
    path = kit.write_suite(tmp_path / "s", suite)
    script = Path(sys.executable).with_name("recaudit")
    env = {**os.environ, "RECAUDIT_HOME": str(tmp_path / "home")}
    return subprocess.run([str(script), "run", str(path), "--out", str(tmp_path / "r"), "--quiet"], env=env,
                          cwd=tmp_path / "s", capture_output=True, text=True, timeout=300)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recaudit: error: "), done.stderr
    return lines[0]


def report(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "r" / "report.json").read_text())


def test_no_timestamp_column_exits_2_and_order_file_opts_in(tmp_path: Path) -> None:
    write_data(tmp_path / "s" / "data", timestamps=False)
    done = run(tmp_path, {})
    assert done.returncode == 2
    line = one_error_line(done)
    assert "interactions.csv: no timestamp column" in line and "order: file" in line
    done = run(tmp_path, {"order": "file"})
    assert done.returncode == 0, done.stderr
    entry = report(tmp_path)["dataset"]
    assert entry["order"] == "file" and entry["spec"]["order"] == "file"
    assert "taken in file order (`order: file`)" in (tmp_path / "r" / "summary.md").read_text()


def test_order_file_with_timestamps_that_go_back_exits_2_naming_the_user_and_line(tmp_path: Path) -> None:
    write_data(tmp_path / "s" / "data")  # a shuffled file: its timestamps go back within users
    done = run(tmp_path, {"order": "file"})
    assert done.returncode == 2
    line = one_error_line(done)
    assert "order: file takes each user's rows in file order, but column 'timestamp' goes back in time" in line
    lines = (tmp_path / "s" / "data" / "interactions.csv").read_text().splitlines()
    user, where = line.split("user '")[1].split("'")[0], int(line.split(" on line ")[1].split(" ")[0])
    assert lines[where - 1].startswith(user + ","), "the line named is that user's row in the file"
    assert run(tmp_path, {}).returncode == 0, "ordered by its timestamps (the default) the file loads"
    assert report(tmp_path)["dataset"]["order"] == "timestamp"


def test_a_missing_timestamp_value_exits_2_with_its_line(tmp_path: Path) -> None:
    data = tmp_path / "s" / "data"
    write_data(data)
    lines = (data / "interactions.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","
    (data / "interactions.csv").write_text("\n".join(lines) + "\n")
    done = run(tmp_path, {})
    assert done.returncode == 2
    line = one_error_line(done)
    assert f"first on line 6, user '{lines[5].split(',')[0]}'" in line and "order: file" in line


def test_repeated_pairs_are_dropped_and_reported_or_refused(tmp_path: Path) -> None:
    write_data(tmp_path / "s" / "data", repeats=3)
    done = run(tmp_path, {})
    assert done.returncode == 0, done.stderr
    entry = report(tmp_path)["dataset"]
    assert entry["duplicates"] == {"rule": "first", "repeated": 3, "dropped": 3}
    assert entry["n_interactions"] == 72
    assert "3 interaction(s) repeat a user-item pair (`duplicates: first`: 3 dropped)" in \
        (tmp_path / "r" / "summary.md").read_text()
    first_fingerprint = entry["fingerprint"]
    assert run(tmp_path, {"duplicates": "keep"}).returncode == 0
    kept = report(tmp_path)["dataset"]
    assert kept["n_interactions"] == 75 and kept["fingerprint"] != first_fingerprint
    done = run(tmp_path, {"duplicates": "error"})
    assert done.returncode == 2
    line = one_error_line(done)
    assert "more than once (line " in line and "3 repeated interaction(s) of 3 user-item pair(s)" in line

