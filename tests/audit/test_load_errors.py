"""Mistakes in a suite file end at load, before any job runs, with exit 2 and one line per problem
naming what to fix: python targets that do not import, misspelt keys at any depth."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit import runner_testkit as kit
from audit.cli import main
from audit.data.dataset import Dataset

BROKEN_MODULE = "import numpy\nraise RuntimeError('planted failure while importing')\n"
MISSING_DEP_MODULE = "import no_such_dependency_xyz\n\ndef popular(requests, k):\n    return []\n"


def run_cli(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


@pytest.mark.parametrize("target, message", [
    ("myrecz:popular", "cannot import module 'myrecz'"),
    ("myrecs.popular", "expected 'module:function'"),
    ("myrecs:populr", "module 'myrecs' has no attribute 'populr'"),
    ("brokenrecs:popular", "importing 'brokenrecs' raised RuntimeError: planted failure while importing"),
    ("needsdep:popular", "importing 'needsdep' raised ModuleNotFoundError: No module named "
                         "'no_such_dependency_xyz' (a module it imports is missing)"),
])
def test_python_target_that_does_not_load_exits_2_before_any_job(tmp_path: Path, tiny_dataset: Dataset,
                                                                  recaudit_home: Path, target: str, message: str,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "s"))  # sys.path restored after the test
    spec = kit.utility_suite()
    spec["recommenders"]["mine"] = {"adapter": "python", "generate": target}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    (tmp_path / "s" / "myrecs.py").write_text("def popular(requests, k):\n    return []\n")
    (tmp_path / "s" / "brokenrecs.py").write_text(BROKEN_MODULE)
    (tmp_path / "s" / "needsdep.py").write_text(MISSING_DEP_MODULE)
    monkeypatch.chdir(tmp_path / "s")  # suite dir == cwd: the searched directory is listed once
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("recaudit: error: recommenders.mine: python adapter generate")
    assert message in lines[0] and target in lines[0]
    assert lines[0].count(str((tmp_path / "s").resolve())) <= 1
    assert not (tmp_path / "r").exists(), "no job ran, no report was written"


def test_missing_module_lists_the_searched_directory_once(tmp_path: Path, tiny_dataset: Dataset,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spec = kit.utility_suite()
    spec["recommenders"]["mine"] = {"adapter": "python", "generate": "myrecz:popular"}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    monkeypatch.chdir(tmp_path / "s")
    monkeypatch.syspath_prepend(str(tmp_path / "s"))
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    assert f"searched {(tmp_path / 's').resolve()} and sys.path" in err


def write_raw_suite(tmp_path: Path, tiny_dataset: Dataset, text: str) -> Path:
    """``text`` (the suite's keys as YAML, without ``dataset:``) with the tiny data set as CSV."""
    path = kit.write_suite(tmp_path / "s", {"name": "x"}, dataset=tiny_dataset)
    dataset_line = "dataset: " + __import__("json").dumps(kit.write_csv_dataset(tiny_dataset, tmp_path / "s" / "data"))
    path.write_text(dataset_line + "\n" + text)
    return path


def test_misspelt_gate_key_lists_the_gate_keys_and_suggests_the_right_one(tmp_path: Path, tiny_dataset: Dataset,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_raw_suite(tmp_path, tiny_dataset, (
        "name: x\nrecommenders: {oracle: {adapter: python, generate: 'recaudit_testrecs:oracle'}}\n"
        "probes: {utility: {k: [5], negatives: 10}}\n"
        "gates:\n  - {probe: utility, metric: hr@5, op: '>=', treshold: 0.1}\n"))
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1, "the missing 'threshold' is the misspelt key, not a second problem"
    assert "unknown option 'gates.0.treshold'" in lines[0] and "did you mean 'threshold'?" in lines[0]
    allowed = lines[0].split("(allowed: ")[1].split(")")[0].split(", ")
    assert "threshold" in allowed and "metric" in allowed and "recommenders" not in allowed


def test_misspelt_top_level_key_is_one_line_without_the_parsed_suite(tmp_path: Path, tiny_dataset: Dataset,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_raw_suite(tmp_path, tiny_dataset, (
        "name: x\nrecomenders: {oracle: {adapter: python, generate: 'recaudit_testrecs:oracle'}}\n"
        "probes: {utility: {k: [5], negatives: 10}}\n"))
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and "unknown option 'recomenders'" in lines[0]
    assert "did you mean 'recommenders'?" in lines[0]
    assert "{" not in lines[0] and "oracle" not in lines[0], "no dumped mapping"


def test_several_problems_give_one_line_each(tmp_path: Path, tiny_dataset: Dataset,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_raw_suite(tmp_path, tiny_dataset, (
        "name: x\nseed: many\ncolour: red\nrecommenders: {oracle: {adapter: python, generate: 'recaudit_testrecs:oracle'}}\n"
        "probes: {utility: {k: [5], negatives: 10}}\n"))
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 2 and all(line.startswith("recaudit: error: ") for line in lines)
    assert any("unknown option 'colour'" in line for line in lines)
    assert any("seed: Input should be a valid integer" in line and "(got 'many')" in line for line in lines)


def test_long_values_are_shortened_in_messages() -> None:
    from audit.config import SHOWN_VALUE_CHARS, short

    assert short("x" * 500).endswith("...") and len(short("x" * 500)) == SHOWN_VALUE_CHARS
    assert short(3) == "3"


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id,rating,rating\n1,1,4,5\n", "the header (line 1) names 'rating' more than once"),
    ("user_id,item_id,rating,timestamp\n1,1,4,100\n1,2\n", "line 3 has 2 field(s), the header has 4"),
])
def test_a_csv_not_readable_as_written_exits_2(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                               content: str, message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = kit.write_suite(tmp_path / "s", kit.utility_suite(), dataset=tiny_dataset)
    (tmp_path / "s" / "data" / "interactions.csv").write_text(content)
    code, err = run_cli(path, tmp_path / "r", capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and message in lines[0] and "interactions file" in lines[0]
