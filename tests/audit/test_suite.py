"""Suite files: validation at load, clear errors with locations and suggestions, include, aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import runner_testkit as kit
from audit.errors import ConfigError, UnknownNameError
from audit.suite import load_suite


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


def base_suite(**overrides: Any) -> dict[str, Any]:
    suite = {
        "name": "s",
        "dataset": {"name": "ml-100k", "users": 5},
        "recommenders": {"echo": {"adapter": "test-echo"}},
        "probes": {"test-hit": {"k": 3}},
    }
    suite.update(overrides)
    return suite


def write(tmp_path: Path, data: Any, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_valid_suite_loads_with_validated_probe_config(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, base_suite()))
    assert suite.name == "s" and list(suite.recommenders) == ["echo"]
    (probe,) = suite.probes
    assert (probe.alias, probe.name, probe.config.k) == ("test-hit", "test-hit", 3)
    assert suite.users == 5 and suite.executor_type == "local" and suite.cache is True
    assert suite.base_dir == tmp_path.resolve()


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    text = "name: s\nrecommenders:\n  echo: {adapter: test-echo\nprobes: {}\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}:4:")
    assert "invalid YAML" in message


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = "name: s\nprobes:\n  test-hit: {}\n  test-hit: {k: 2}\n"
    with pytest.raises(ConfigError, match=r"suite.yaml:4:3: invalid YAML: duplicate key 'test-hit'"):
        load_suite(write(tmp_path, text))


def test_yaml_1_1_boolean_words_as_keys_stay_the_words_written(tmp_path: Path) -> None:
    from audit.suite import read_yaml

    path = tmp_path / "k.yaml"
    path.write_text("gate: {on: ci_low, yes: 1, Off: 2, 'no': 3, true: 4}\nflag: on\n")
    data = read_yaml(path)
    assert data["gate"] == {"on": "ci_low", "yes": 1, "Off": 2, "no": 3, True: 4}, "only true/false keys are booleans"
    assert data["flag"] is True, "values keep YAML's reading"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize("section, entry, expected", [
    ("probes", {"test-hti": {}}, "Unknown probe 'test-hti'. Did you mean 'test-hit'"),
    ("probes", {"alias": {"probe": "utilty"}}, "Unknown probe 'utilty'. Did you mean 'utility'"),
    ("recommenders", {"r": {"adapter": "refrence"}}, "Unknown adapter 'refrence'. Did you mean 'reference'"),
    ("recommenders", {"r": {"adapter": "test-echo", "variant": "grunding"}},
     "Unknown variant 'grunding'. Did you mean 'grounding'"),
    ("executor", {"type": "rey"}, "Unknown executor 'rey'. Did you mean 'ray'"),
])
def test_unknown_names_suggest_and_list_alternatives(tmp_path: Path, section: str, entry: dict, expected: str) -> None:
    with pytest.raises(UnknownNameError) as err:
        load_suite(write(tmp_path, base_suite(**{section: entry})), validate_dataset=False)
    assert expected in str(err.value)
    assert "Available:" in str(err.value)


def test_unknown_dataset_name_is_reported_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ml-100k"):
        load_suite(write(tmp_path, base_suite(dataset={"name": "ml-10k"})))


def test_unknown_top_level_key_lists_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'recomenders' \(allowed: .*recommenders"):
        load_suite(write(tmp_path, {**base_suite(), "recomenders": {}}))


def test_bad_probe_option_names_the_probe_and_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"probes.test-hit \(probe 'test-hit'\): unknown option 'kk'"):
        load_suite(write(tmp_path, base_suite(probes={"test-hit": {"kk": 3}})), validate_dataset=False)


def test_bad_adapter_option_is_reported_before_building(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"recommenders.echo \(adapter 'test-echo'\): unknown option 'revers'"):
        load_suite(write(tmp_path, base_suite(recommenders={"echo": {"adapter": "test-echo", "revers": 1}})),
                   validate_dataset=False)
    assert kit.EchoHistory.builds == 0


def test_training_variant_needs_a_trainable_adapter(tmp_path: Path) -> None:
    from audit.registry import VARIANTS
    from audit.variants import Variant

    class Retrain(Variant):
        name = "test-retrain"
        trains = True

    VARIANTS.register("test-retrain", Retrain, "test variant that changes training")
    suite = base_suite(recommenders={"echo": {"adapter": "test-echo", "variant": "test-retrain"}})
    with pytest.raises(ConfigError, match="variant 'test-retrain' needs train-stages, which adapter 'test-echo' does not declare; adapters that support it: reference"):
        load_suite(write(tmp_path, suite), validate_dataset=False)


@pytest.mark.parametrize("gate, expected", [
    ({"probe": "test-hti", "metric": "hit", "op": ">=", "threshold": 0.1},
     r"gates\[0\].*unknown probe 'test-hti'. Did you mean 'test-hit'"),
    ({"probe": "test-hit", "metric": "hit", "recommender": "ech", "op": ">=", "threshold": 0.1},
     r"gates\[0\].*unknown recommender 'ech'. Did you mean 'echo'"),
])
def test_gates_referring_to_unknown_names_fail_at_load(tmp_path: Path, gate: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_suite(write(tmp_path, base_suite(gates=[gate])), validate_dataset=False)


def test_gate_with_bad_operator_is_rejected(tmp_path: Path) -> None:
    gate = {"probe": "test-hit", "metric": "hit", "op": "=<", "threshold": 0.1}
    with pytest.raises(ConfigError, match=r"gates.0.op"):
        load_suite(write(tmp_path, base_suite(gates=[gate])), validate_dataset=False)


def test_alias_runs_one_probe_twice_with_different_options(tmp_path: Path) -> None:
    probes = {"test-hit": {"k": 3}, "hit_at_1": {"probe": "test-hit", "k": 1}}
    suite = load_suite(write(tmp_path, base_suite(probes=probes)), validate_dataset=False)
    assert [(p.alias, p.name, p.config.k) for p in suite.probes] == [("test-hit", "test-hit", 3),
                                                                      ("hit_at_1", "test-hit", 1)]


def test_probe_alias_with_a_dot_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dots"):
        load_suite(write(tmp_path, base_suite(probes={"hit.k1": {"probe": "test-hit"}})), validate_dataset=False)


def test_include_merges_and_local_keys_win(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    write(tmp_path / "shared", {
        "name": "base", "dataset": {"name": "ml-100k", "users": 50, "seed": 3},
        "recommenders": {"echo": {"adapter": "test-echo"}, "plain": {"adapter": "test-echo", "reverse": False}},
        "probes": {"test-hit": {"k": 3}}, "seed": 7,
    }, "base.yaml")
    local = {"include": "shared/base.yaml", "name": "child", "dataset": {"users": 5},
             "recommenders": {"plain": {"adapter": "test-echo"}}, "probes": {"hit1": {"probe": "test-hit", "k": 1}}}
    suite = load_suite(write(tmp_path, local))
    assert suite.name == "child" and suite.seed == 7
    assert suite.dataset == {"name": "ml-100k", "users": 5, "seed": 3}
    assert suite.recommenders == {"echo": {"adapter": "test-echo"}, "plain": {"adapter": "test-echo"}}
    assert [p.alias for p in suite.probes] == ["test-hit", "hit1"]


def test_circular_include_is_reported(tmp_path: Path) -> None:
    write(tmp_path, {"include": "b.yaml", "name": "a"}, "a.yaml")
    write(tmp_path, {"include": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="circular"):
        load_suite(tmp_path / "a.yaml")


def test_missing_include_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"include 'nope.yaml': file not found"):
        load_suite(write(tmp_path, {**base_suite(), "include": "nope.yaml"}))


def test_ray_executor_options_are_validated(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, base_suite(executor={"type": "ray", "num_cpus": 2})), validate_dataset=False)
    assert suite.executor_type == "ray" and suite.executor_config.num_cpus == 2
    with pytest.raises(ConfigError, match=r"executor \(type 'ray'\): unknown option 'cpus'"):
        load_suite(write(tmp_path, base_suite(executor={"type": "ray", "cpus": 2})), validate_dataset=False)
