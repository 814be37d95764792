"""Every shipped example suite loads: its recommenders, variants, probes and gates validate at load
(without the models or data sets being fetched), so a broken example fails here, not after an hour."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.suite import load_suite

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_the_examples_folder_holds_the_llm_suites() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"llm.yaml", "llm-privacy.yaml", "llm-poisoning.yaml", "privacy.yaml", "poisoning.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_suite_validates_at_load(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECAUDIT_HOME", str(tmp_path))  # nothing fetched: loading must not need it
    suite = load_suite(path)
    assert suite.recommenders and suite.probes


ML100K_EXAMPLES = [p for p in EXAMPLES if "ml-100k" in p.read_text()]


@pytest.mark.parametrize("path", ML100K_EXAMPLES, ids=[p.stem for p in ML100K_EXAMPLES])
def test_example_suite_passes_the_runs_preflight_on_its_data(path: Path, ml100k, tmp_path: Path) -> None:
    """What a run checks once the data set is loaded, before any job: every user-fitting variant
    (the fair prompt) has users left outside those its recommender's probes report on."""
    from audit.executors import RunContext
    from audit.runner import audited_by_recommender, preflight, sample_users

    suite = load_suite(path)
    users = sample_users(suite, ml100k, None)
    ctx = RunContext(dataset=ml100k, users=users, seed=suite.seed, cache_dir=tmp_path, entries=suite.recommenders,
                     base_dir=suite.base_dir, audited=audited_by_recommender(suite, ml100k, users))
    preflight(suite, ctx)  # raises ConfigError naming the recommender otherwise
