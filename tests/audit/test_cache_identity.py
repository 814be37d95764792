"""Caching never serves a stale answer: a python recommender's code and an openai endpoint's
identity are part of the job key; every reuse is announced."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import runner_testkit as kit
from audit.cache import job_key, recommender_identity
from audit.data.dataset import Dataset
from audit.runner import run_suite_file

V1 = "def generate(requests, k):\n    return [list(r.candidates)[:k] for r in requests]\n"
V2 = "def generate(requests, k):\n    return [list(reversed(r.candidates))[:k] for r in requests]\n"
MODULE = "recaudit_identity_rec"


def _suite(tmp_path: Path, dataset: Dataset, cache: bool) -> Path:
    suite = {"name": "identity", "dataset": {"users": 12, "seed": 0}, "cache": cache,
             "recommenders": {"mine": {"adapter": "python", "generate": f"{MODULE}:generate"}},
             "probes": {"utility": {"k": [5], "negatives": 10}}}
    return kit.write_suite(tmp_path, suite, dataset=dataset)


def _hr(outcome) -> float:
    return outcome.report["results"][0]["metrics"]["hr@5"]["value"]


def _fresh_import() -> None:
    """What a new `recaudit run` process does: import the user's module anew."""
    sys.modules.pop(MODULE, None)


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-shared-cache"])
def test_editing_a_python_recommender_invalidates_its_results(tmp_path: Path, tiny_dataset: Dataset,
                                                              recaudit_home: Path, cache: bool,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Run, edit the recommender's module, rerun into the same --out: the new code's numbers
    (the old key ignored the code, so the run directory or cache returned HR@5 = 1 again)."""
    path = _suite(tmp_path, tiny_dataset, cache)
    module = tmp_path / f"{MODULE}.py"
    module.write_text(V1)
    _fresh_import()
    first = run_suite_file(path, out=tmp_path / "out", dataset=tiny_dataset)
    assert _hr(first) == 1.0
    module.write_text(V2)
    _fresh_import()
    second = run_suite_file(path, out=tmp_path / "out", dataset=tiny_dataset)
    assert not second.jobs[0].cached and _hr(second) == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="audit"):
        third = run_suite_file(path, out=tmp_path / "out", dataset=tiny_dataset)
    assert third.jobs[0].cached and _hr(third) == 0.0, "unchanged code: reuse is right"
    assert any("reused 1 of 1 job(s)" in r.getMessage() and "mine x utility" in r.getMessage()
               for r in caplog.records), "a reuse is announced with what and why"
    _fresh_import()


def test_openai_identity_is_the_normalised_endpoint_and_model() -> None:
    a = {"adapter": "openai", "base_url": "http://h:8000/v1/", "model": "m1"}
    assert recommender_identity(a) == {"base_url": "http://h:8000/v1", "model": "m1"}
    key = dict(dataset_fingerprint="f", recommender="r", probe="p", probe_name="p", probe_config={},
               seed=0, users=["1"], version="v")
    assert job_key(entry=a, **key) != job_key(entry={**a, "model": "m2"}, **key)


def test_python_identity_is_the_module_digest(tmp_path: Path) -> None:
    (tmp_path / "recs_x.py").write_text(V1)
    entry = {"adapter": "python", "generate": "recs_x:generate"}
    one = recommender_identity(entry, [tmp_path])
    (tmp_path / "recs_x.py").write_text(V2)
    two = recommender_identity(entry, [tmp_path])
    assert one["generate"]["module_sha256"] != two["generate"]["module_sha256"]
    assert recommender_identity({"adapter": "python", "generate": "nowhere_xyz:f"}, [tmp_path]) == {
        "generate": {"target": "nowhere_xyz:f", "module_sha256": "<not found>"}}
    file_entry = {"adapter": "python", "generate": "recs_x.py:generate"}
    assert recommender_identity(file_entry, [tmp_path])["generate"]["module_sha256"] == two["generate"]["module_sha256"]
