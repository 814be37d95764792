"""The pytest plugin's report location: ``--recaudit-out DIR`` (and the ``recaudit_out`` ini key) put
each ``recaudit_run`` report at ``DIR/<test id>``, a second call in a test at ``...-2``; without them
the report stays in the test's ``tmp_path``; the session's end lists where every report went.
Each inner session runs in a subprocess, as a user's pytest does (an in-process run would re-import
numpy's C extensions once its sys.modules snapshot is restored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import runner_testkit as kit
from audit.data.dataset import Dataset
from audit.pytest_plugin import report_dir_name

pytest_plugins = ["pytester"]

PASSING = [{"probe": "utility", "metric": "hr@5", "recommender": "oracle", "op": ">=", "threshold": 0.9}]
FAILING = [{"probe": "utility", "metric": "hr@5", "recommender": "reverse", "op": ">=", "threshold": 0.9}]


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


def write_tests(pytester: pytest.Pytester, dataset: Dataset) -> tuple[Path, Path]:
    good = kit.write_suite(pytester.path / "good", kit.utility_suite(gates=PASSING), dataset=dataset)
    bad = kit.write_suite(pytester.path / "bad", kit.utility_suite(gates=FAILING), dataset=dataset)
    pytester.makepyfile(test_audits=f"""
        def test_good_twice(recaudit_run):
            first = recaudit_run(r"{good}")
            second = recaudit_run(r"{good}", limit_users=6)
            assert first.exit_code == 0 and second.exit_code == 0
            print("OUTS", first.out, second.out)

        def test_bad(recaudit_run):
            recaudit_run(r"{bad}")
    """)
    return good, bad


def audited_users(report_dir: Path) -> int:
    return int(json.loads((report_dir / "report.json").read_text())["dataset"]["sampled_users"])


def test_recaudit_out_puts_each_report_under_the_test_id(pytester: pytest.Pytester, tiny_dataset: Dataset,
                                                        recaudit_home: Path) -> None:
    write_tests(pytester, tiny_dataset)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--recaudit-out", "audit-reports")
    result.assert_outcomes(passed=1, failed=1)
    root = pytester.path / "audit-reports"
    good, good2, bad = (root / "test_audits.py-test_good_twice", root / "test_audits.py-test_good_twice-2",
                        root / "test_audits.py-test_bad")
    assert audited_users(good) == 12 and audited_users(good2) == 6  # the second call did not overwrite the first
    assert (bad / "report.json").is_file() and (bad / "junit.xml").is_file()  # a failing gate still leaves its report
    result.stdout.fnmatch_lines(["*gate failed: reverse:utility.hr@5 >= 0.9 (got 0)*",
                                 "*- recaudit reports -*",
                                 f"test_audits.py::test_good_twice: {good}",
                                 f"test_audits.py::test_good_twice: {good2}",
                                 f"test_audits.py::test_bad: {bad}"])


def test_without_the_option_reports_stay_in_the_tests_tmp_path(pytester: pytest.Pytester, tiny_dataset: Dataset,
                                                               recaudit_home: Path) -> None:
    write_tests(pytester, tiny_dataset)
    basetemp = pytester.path / "basetemp"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", f"--basetemp={basetemp}", "-k", "good")
    result.assert_outcomes(passed=1, deselected=1)
    first, second = (basetemp / "test_good_twice0" / "recaudit-report", basetemp / "test_good_twice0" / "recaudit-report-2")
    assert audited_users(first) == 12 and audited_users(second) == 6
    result.stdout.fnmatch_lines([f"*OUTS {first} {second}", "*- recaudit reports -*",
                                 f"test_audits.py::test_good_twice: {first}"])


def test_the_ini_key_is_relative_to_the_ini_file_and_the_option_wins(pytester: pytest.Pytester,
                                                                     tiny_dataset: Dataset, recaudit_home: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_tests(pytester, tiny_dataset)
    pytester.makeini("[pytest]\nrecaudit_out = from-ini\n")
    monkeypatch.chdir(pytester.mkdir("elsewhere"))  # pytest started in another directory than the ini file's
    tests = str(pytester.path / "test_audits.py")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "good", tests)
    result.assert_outcomes(passed=1, deselected=1)
    assert audited_users(pytester.path / "from-ini" / "test_audits.py-test_good_twice") == 12

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "good", "--recaudit-out", "from-option", tests)
    result.assert_outcomes(passed=1, deselected=1)
    # the option is relative to where pytest started, and wins over the ini key
    assert (pytester.path / "elsewhere" / "from-option" / "test_audits.py-test_good_twice" / "report.json").is_file()


def test_a_suite_error_is_listed_without_a_report(pytester: pytest.Pytester, recaudit_home: Path) -> None:
    broken = pytester.path / "broken.yaml"
    broken.write_text("name: x\ndataset: {name: ml-100k}\nrecomenders: {}\n")
    pytester.makepyfile(test_broken=f"""
        def test_broken(recaudit_run):
            recaudit_run(r"{broken}")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--recaudit-out", "r")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigError*recomenders*",
                                 "test_broken.py::test_broken: */r/test_broken.py-test_broken"
                                 "  (no report.json: the run stopped before writing it)"])


def test_report_dir_name_is_a_safe_unique_directory_name() -> None:
    assert report_dir_name("tests/test_a.py::test_x[model/a b]") == "tests-test_a.py-test_x-model-a-b"
    long_a, long_b = "t.py::test_" + "a" * 300 + "[1]", "t.py::test_" + "a" * 300 + "[2]"
    assert len(report_dir_name(long_a)) == 120 and report_dir_name(long_a) != report_dir_name(long_b)
