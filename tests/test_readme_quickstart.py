"""The README's quick start, followed literally: its recs.py, audit.yaml and audit-v2.yaml written to a fresh
directory, its console commands run through the installed `recaudit` on real ML-100k, and every line of output
the README shows found in what the commands print (so its figures are what the code gives)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.paths import datasets_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECAUDIT = Path(sys.executable).with_name("recaudit")


def _block_after(text: str, marker: str, lang: str) -> str:
    """The first ```lang block after the first line containing ``marker``."""
    start = text.index(marker)
    found = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(text, start)
    assert found, f"README: no ```{lang} block after {marker!r}"
    return found.group(1)


def _console_blocks(text: str, start: str) -> list[str]:
    section = text[text.index(start):]
    section = section[: section.index("\n## ")]
    return re.findall(r"^```console\n(.*?)^```", section, re.S | re.M)


def _norm(line: str) -> str:
    return " ".join(line.split())


@pytest.mark.slow
def test_readme_quick_start_runs_as_written_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    work = tmp_path / "my-audit"
    work.mkdir()
    (work / "recs.py").write_text(_block_after(text, "`recs.py`", "python"), encoding="utf-8")
    (work / "audit.yaml").write_text(_block_after(text, "`audit.yaml`", "yaml"), encoding="utf-8")
    (work / "audit-v2.yaml").write_text(_block_after(text, "`audit-v2.yaml`", "yaml"), encoding="utf-8")
    # a fresh home (no cached results) that sees the ML-100k `make data` fetched
    home = tmp_path / "home"
    home.mkdir()
    data = datasets_dir()
    assert (data / "ml-100k").is_dir(), "ML-100k is not fetched: run `make data`"
    (home / "datasets").symlink_to(data, target_is_directory=True)
    env = {**os.environ, "RECAUDIT_HOME": str(home), "PATH": f"{RECAUDIT.parent}{os.pathsep}{os.environ['PATH']}"}

    blocks = _console_blocks(text, "## Audit your own recommender")
    assert len(blocks) == 2, "README: expected the run and the compare console blocks"
    for block in blocks:
        commands: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
        for command, shown in commands:
            command, _, comment = command.partition("#")
            expected = int(re.fullmatch(r"\s*exits (\d+)\s*", comment).group(1)) if comment else 0
            assert command.startswith("recaudit "), command
            done = subprocess.run([str(RECAUDIT), *command.split()[1:]], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=900)
            assert done.returncode == expected, (f"`{command}` exited {done.returncode}, the README says "
                                                 f"{expected}: {done.stderr[-2000:]}")
            printed = [_norm(x) for x in done.stdout.splitlines()]
            for line in shown:
                want = _norm(line.removesuffix("...")) if line.strip() != "..." else ""
                assert not want or any(p.startswith(want) for p in printed), (
                    f"README shows {line!r} after `{command}`, which no longer prints it; update README.md's "
                    f"quick start. It printed:\n{done.stdout[-3000:]}")
    assert (work / "reports" / "v1" / "report.json").is_file() and (work / "reports" / "v2" / "junit.xml").is_file()

    dash = subprocess.run([str(RECAUDIT), "dashboard", "reports", "--print-command"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert dash.returncode == 0 and "streamlit" in dash.stdout and str(work / "reports") in dash.stdout
