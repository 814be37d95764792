"""The CLI's cheap paths import no model library: ``--help``, ``list`` and every config error run in
a fresh interpreter and report which packages they loaded. A property, not a timing
(``benchmarks/bench_cli_startup.py`` measures the time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.errors import UnknownNameError
from audit.registry import ADAPTERS, PROBES
from audit.suite import suite_from_mapping

ROOT = Path(__file__).resolve().parents[2]

#: never imported to print help, list what is registered or reject a suite file
HEAVY = frozenset({"torch", "transformers", "opacus", "flwr", "ray", "sklearn", "scipy", "streamlit", "peft",
                   "accelerate"})
#: not imported either while a suite's names and top-level keys are checked (no adapter or probe
#: module is imported for those)
NAME_CHECK_HEAVY = HEAVY | {"pandas"}

CHILD = """
import contextlib, io, json, sys
import audit.cli
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    code = audit.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "output": out.getvalue()[-3000:],
                  "packages": sorted({name.split(".")[0] for name in sys.modules})}))
"""

HEAD = "name: startup\ndataset: {name: ml-100k, users: 10}\n"
SUITES = {
    "malformed-yaml": ("name: startup\nprobes: {utility: {k: 10}\n", "invalid YAML"),
    "unknown-adapter": (HEAD + "recommenders:\n  r: {adapter: refrence}\nprobes:\n  utility: {}\n",
                        "Unknown adapter 'refrence'. Did you mean 'reference'"),
    "unknown-variant": (HEAD + "recommenders:\n  r: {adapter: reference, variant: grunding}\nprobes:\n  utility: {}\n",
                        "Unknown variant 'grunding'. Did you mean 'grounding'"),
    "unknown-probe": (HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utilty: {}\n",
                      "Unknown probe 'utilty'. Did you mean 'utility'"),
    "unknown-executor": (HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utility: {}\n"
                                "executor: {type: rey}\n", "Unknown executor 'rey'"),
    "misspelt-key": (HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utility: {}\ngate: []\n",
                     "unknown option 'gate'"),
}


def run_cli(args: list[str], home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["RECAUDIT_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_no_model_library(tmp_path: Path) -> None:
    got = run_cli(["--help"], tmp_path)
    assert got["code"] == 0 and "usage: recaudit" in got["output"]
    assert sorted(set(got["packages"]) & NAME_CHECK_HEAVY) == []


@pytest.mark.parametrize("case", sorted(SUITES))
def test_a_config_error_is_reported_before_any_model_library_is_imported(case: str, tmp_path: Path) -> None:
    text, message = SUITES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    got = run_cli(["run", str(path)], tmp_path)
    assert got["code"] == 2 and message in got["output"], got["output"]
    assert sorted(set(got["packages"]) & NAME_CHECK_HEAVY) == []


def test_a_missing_suite_file_is_reported_before_any_model_library_is_imported(tmp_path: Path) -> None:
    got = run_cli(["run", str(tmp_path / "no-such-suite.yaml")], tmp_path)
    assert got["code"] == 2 and "suite file not found" in got["output"]
    assert sorted(set(got["packages"]) & NAME_CHECK_HEAVY) == []


def test_a_misspelt_probe_option_imports_the_modules_declaring_options_but_no_model_library(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utility: {kk: 10}\n")
    got = run_cli(["run", str(path)], tmp_path)
    assert got["code"] == 2 and "'kk'" in got["output"], got["output"]
    assert sorted(set(got["packages"]) & HEAVY) == []


def test_list_imports_no_model_library(tmp_path: Path) -> None:
    got = run_cli(["list"], tmp_path)
    assert got["code"] == 0 and "variants each adapter supports" in got["output"], got["output"]
    assert sorted(set(got["packages"]) & HEAVY) == []


def test_every_name_is_checked_before_any_registered_module_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown probe is reported even when the suite's adapter cannot be imported at all: the
    names are checked first, without importing what they name."""
    monkeypatch.setitem(ADAPTERS._entries, "unimportable", "no_such_module_anywhere:Adapter")
    monkeypatch.setitem(ADAPTERS._descriptions, "unimportable", "")
    monkeypatch.setitem(PROBES._entries, "unimportable-probe", "no_such_module_anywhere:Probe")
    data = {"name": "s", "dataset": {"name": "ml-100k"}, "recommenders": {"r": {"adapter": "unimportable"}},
            "probes": {"utilty": {}, "unimportable-probe": {}}}
    with pytest.raises(UnknownNameError, match=r"probes\.utilty: Unknown probe 'utilty'\. Did you mean 'utility'"):
        suite_from_mapping(data)
