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
