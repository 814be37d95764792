"""The python adapter: targets resolve from the suite dir / cwd, bad targets are ConfigErrors,
output that breaks the contract is an OutputContractError naming the callable and what it returned,
and it works through build_recommender."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from audit.adapters.python import PythonAdapter, PythonConfig
from audit.build import build_recommender
from audit.config import validate_config
from audit.errors import EXIT_RUNTIME, CapabilityMissing, ConfigError, OutputContractError
from audit.interface import RecRequest
from audit.variants import BuildContext

REQS = [RecRequest(history=("A (1990)", "B (1991)"), user="1"), RecRequest(history=("C (1992)",), user="2")]
_counter = itertools.count()

RECS_SOURCE = '''
import numpy as np

def generate(requests, k, prefix="Rec"):
    return [[f"{prefix} {len(r.history)}-{i}" for i in range(k)] for r in requests]

def score(requests, items, bonus=0.0):
    return [np.arange(len(it), dtype=float)[::-1] + bonus for it in items]

def generate_only_requests(requests):
    return []

def wrong_count(requests, k):
    return [["only one list"]]

def non_strings(requests, k):
    return [[1, None, "ok", b"bytes"] for _ in requests]

def too_long(requests, k):
    return [[f"t{i}" for i in range(k + 5)] for _ in requests]

def not_a_list(requests, k):
    return 42

def bad_scores(requests, items):
    return [[1.0]]

def a_string(requests, k):
    return "Toy Story (1995)"

def flat_list(requests, k):
    return ["Toy Story (1995)" for _ in requests]

def numpy_strings(requests, k):
    return [list(np.array(["A (1990)", "B (1991)"])) for _ in requests]

def scores_2d(requests, items):
    return [np.zeros((len(it), 1)) for it in items]

def scores_text(requests, items):
    return [["high"] * len(it) for it in items]

def scores_too_few_rows(requests, items):
    return [np.zeros(len(items[0]))]

def boom(requests, k):
    raise RuntimeError("user code failed")

VALUE = 3
'''


@pytest.fixture()
def recs_pkg(tmp_path: Path) -> tuple[Path, str]:
    """A package ``<name>/recs.py`` in a temp 'suite directory'; returns (dir, package name)."""
    name = f"mypkg_{next(_counter)}_{abs(hash(str(tmp_path))) % 10**6}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "recs.py").write_text(textwrap.dedent(RECS_SOURCE))
    return tmp_path, name


def ctx_for(dataset, suite_dir: Path | None, tmp_path: Path) -> BuildContext:
    return BuildContext(dataset=dataset, cache_dir=tmp_path / "cache", suite_dir=suite_dir)


def build(cfg: dict, ctx: BuildContext | None) -> PythonAdapter:
    return PythonAdapter.build(validate_config(PythonConfig, cfg, "test"), ctx)


def test_target_resolves_relative_to_suite_dir(recs_pkg, tiny_dataset, tmp_path, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(tmp_path.parent)  # cwd elsewhere: only the suite dir can find it
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build({"generate": f"{pkg}.recs:generate", "score": f"{pkg}.recs:score"},
                ctx_for(tiny_dataset, suite_dir, tmp_path))
    assert rec.capabilities == frozenset({"generate", "score"})
    assert rec.generate(REQS, 2) == [["Rec 2-0", "Rec 2-1"], ["Rec 1-0", "Rec 1-1"]]
    scores = rec.score(REQS, [["x", "y", "z"], ["w"]])
    np.testing.assert_array_equal(scores[0], [2.0, 1.0, 0.0])
    assert scores[0].dtype == np.float64


def test_target_resolves_relative_to_cwd_and_as_a_file(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert build({"generate": f"{pkg}.recs:generate"}, None).generate(REQS[:1], 1) == [["Rec 2-0"]]
    by_file = build({"generate": f"{pkg}/recs.py:generate"}, None)
    assert by_file.generate(REQS[:1], 1) == [["Rec 2-0"]]


def test_capabilities_follow_what_is_given(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    only_score = build({"score": f"{pkg}.recs:score"}, None)
    assert only_score.capabilities == frozenset({"score"})
    with pytest.raises(CapabilityMissing):
        only_score.generate(REQS, 3)
    assert build({"generate": f"{pkg}.recs:generate"}, None).capabilities == frozenset({"generate"})


def test_options_are_passed_as_keywords(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build({"generate": f"{pkg}.recs:generate", "options": {"prefix": "Opt"}}, None)
    assert rec.generate(REQS[:1], 1) == [["Opt 2-0"]]
    with pytest.raises(ConfigError, match=r"option\(s\) colour"):
        build({"generate": f"{pkg}.recs:generate", "options": {"colour": "red"}}, None)


@pytest.mark.parametrize("target, message", [
    ("no_such_module_xyz.recs:generate", "cannot import module 'no_such_module_xyz.recs'"),
    ("{pkg}.recs:missing", "has no attribute 'missing'"),
    ("{pkg}.recs:VALUE", "not a function"),
    ("{pkg}.recs:generate_only_requests", "cannot be called as generate"),
    ("{pkg}.recs", "expected 'module:function'"),
    ("missing_file.py:generate", "file 'missing_file.py' not found"),
])
def test_bad_targets_are_config_errors_naming_the_target(recs_pkg, monkeypatch, target, message) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = target.format(pkg=pkg)
    with pytest.raises(ConfigError) as err:
        build({"generate": target}, None)
    assert message in str(err.value) and target in str(err.value)


def test_nothing_given_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="give 'generate' and/or 'score'"):
        build({}, None)


@pytest.mark.parametrize("function, message", [
    ("not_a_list", "returned no list (int 42)"),
    ("a_string", "returned no list (str 'Toy Story (1995)')"),
    ("wrong_count", "returned 1 list(s) for 2 request(s)"),
    ("flat_list", "returned a str for request 0 (str 'Toy Story (1995)')"),
    ("non_strings", "returned a int item in the list for request 0"),
])
def test_generate_breaking_the_contract_is_a_runtime_error_naming_the_callable(recs_pkg, monkeypatch, function,
                                                                               message) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build({"generate": f"{pkg}.recs:{function}"}, None)
    with pytest.raises(OutputContractError) as err:
        rec.generate(REQS, 3)
    assert err.value.exit_code == EXIT_RUNTIME
    assert f"python adapter generate '{pkg}.recs:{function}' {message}" in str(err.value)
    assert "expected a list of 2 list(s) of str" in str(err.value)


def test_str_subclasses_are_accepted_as_plain_str(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    out = build({"generate": f"{pkg}.recs:numpy_strings"}, None).generate(REQS, 2)
    assert out == [["A (1990)", "B (1991)"]] * 2 and all(type(x) is str for x in out[0])


def test_long_lists_are_cut_to_k_with_the_full_list_in_raw(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build({"generate": f"{pkg}.recs:too_long"}, None)
    gen = rec.generate_detailed(REQS[:1], 2)[0]
    assert gen.items == ("t0", "t1") and gen.raw.count('"t') == 7
    assert rec.info["truncated_lists"] == 1


@pytest.mark.parametrize("function, message", [
    ("bad_scores", "returned 1 row(s) for 2 candidate list(s)"),
    ("scores_too_few_rows", "returned 1 row(s) for 2 candidate list(s)"),
    ("scores_2d", "returned shape (2, 1) for list 0 of 2 candidate(s)"),
    ("scores_text", "returned non-numbers for list 0"),
])
def test_score_of_the_wrong_shape_is_a_runtime_error_naming_the_callable(recs_pkg, monkeypatch, function,
                                                                         message) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build({"score": f"{pkg}.recs:{function}"}, None)
    with pytest.raises(OutputContractError) as err:
        rec.score(REQS, [["a", "b"], ["c"]])
    assert f"python adapter score '{pkg}.recs:{function}' {message}" in str(err.value)


def test_exceptions_in_user_code_propagate(recs_pkg, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.chdir(suite_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(RuntimeError, match="user code failed"):
        build({"generate": f"{pkg}.recs:boom"}, None).generate(REQS, 1)


def test_builds_through_the_registry(recs_pkg, tiny_dataset, tmp_path, monkeypatch) -> None:
    suite_dir, pkg = recs_pkg
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = build_recommender("mine", {"adapter": "python", "generate": f"{pkg}.recs:generate"},
                            ctx_for(tiny_dataset, suite_dir, tmp_path))
    assert rec.name == "mine" and rec.info["adapter"] == "python"
    assert rec.generate(REQS[:1], 1) == [["Rec 2-0"]]
    with pytest.raises(ConfigError, match="unknown option 'generat'"):
        build_recommender("bad", {"adapter": "python", "generat": "x:y"}, ctx_for(tiny_dataset, None, tmp_path))


def test_direct_construction_from_callables() -> None:
    rec = PythonAdapter(lambda reqs, k: [["X"] * k for _ in reqs], name="lam")
    assert rec.generate(REQS, 2) == [["X", "X"], ["X", "X"]]
    gen = rec.generate_detailed(REQS[:1], 1)[0]
    assert gen.raw == '["X"]'
    assert json.loads(gen.prompt)["history_id"] == REQS[0].history_id, "the prompt names the history by its id"
    assert "A (1990)" not in gen.prompt, "the titles are recorded once per file, not in every prompt"


def test_a_run_on_a_generate_returning_a_string_exits_3_naming_it(tmp_path, tiny_dataset, recaudit_home, capsys,
                                                                  monkeypatch) -> None:
    from tests.audit import runner_testkit as kit
    from audit.cli import main

    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = kit.utility_suite()
    spec["probes"] = {"hallucination": {"k": 5}}
    spec["recommenders"] = {"stringy": {"adapter": "python", "generate": "stringrecs:popular"}}
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    (tmp_path / "s" / "stringrecs.py").write_text("def popular(requests, k):\n    return 'Film Number 1'\n")
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "1 job error(s)" in out
    report = (tmp_path / "r" / "report.json").read_text()
    assert "OutputContractError: python adapter generate 'stringrecs:popular' returned no list (str " in report
