"""The words that explain "beyond the uncertainty" name the tests the code runs (issue 30, point 8):
the dashboard's caption, `recaudit compare`'s rule text and docs/reports.md, checked against the
method the real paired path picks for 0/1 and for other per-user values."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from audit.compare import ALPHA, PER_USER_RULE, SIGNIFICANCE_RULE, beyond_uncertainty, paired_difference
from audit.paired import METHODS
from dashboard.compare import SIGNIFICANCE_RULE as DASHBOARD_RULE

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reports.md"


def _records(a: np.ndarray, b: np.ndarray) -> tuple[dict, dict]:
    users = [f"u{i}" for i in range(len(a))]
    return ({"value": float(a.mean()), "ci": None, "per_unit": dict(zip(users, map(float, a)))},
            {"value": float(b.mean()), "ci": None, "per_unit": dict(zip(users, map(float, b)))})


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def methods_used() -> dict[str, str]:
    """The method the comparison's own paired path runs, per kind of per-user values."""
    rng = np.random.default_rng(0)
    hits_a, hits_b = (rng.random(200) < 0.3).astype(float), (rng.random(200) < 0.6).astype(float)
    ndcg_a = rng.random(200)
    ndcg_b = np.clip(ndcg_a + 0.2 + 0.05 * rng.standard_normal(200), 0, 1)
    used = {}
    for kind, (a, b) in {"0/1": (hits_a, hits_b), "other": (ndcg_a, ndcg_b)}.items():
        ra, rb = _records(a, b)
        paired = paired_difference(ra, rb)
        assert paired is not None and beyond_uncertainty(ra, rb) is True  # the paired rule decided
        used[kind] = paired.method
    assert used["0/1"] != used["other"]
    return used


def test_the_rule_texts_describe_each_method_the_paired_path_runs(methods_used: dict[str, str]) -> None:
    for method in methods_used.values():
        assert method in METHODS, f"the paired path ran {method!r}, which METHODS does not describe"
        for text in (PER_USER_RULE, SIGNIFICANCE_RULE, DASHBOARD_RULE):
            assert METHODS[method] in text
    assert f"p < {ALPHA:g}" in DASHBOARD_RULE


def test_the_texts_name_mcnemar_and_the_bootstrap_and_no_test_the_code_never_runs(methods_used) -> None:
    for text in (DASHBOARD_RULE, _flat(DOCS.read_text(encoding="utf-8"))):
        assert "McNemar's exact test" in text and "bootstrap CI of the mean per-user difference" in text
        assert not re.search(r"wilcoxon|signed-rank|sign test", text, re.IGNORECASE)


def test_docs_reports_md_states_the_per_user_rule_as_the_code_words_it(methods_used) -> None:
    assert _flat(PER_USER_RULE.split(": ", 1)[1]) in _flat(DOCS.read_text(encoding="utf-8"))
