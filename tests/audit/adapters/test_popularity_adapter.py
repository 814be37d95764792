"""audit.adapters.popularity: the popularity recommender ranks as the utility probe's popularity
baseline does, generates the most popular unconsumed titles, and stands in pairs and pair gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audit import runner_testkit as kit
from audit.adapters.popularity import PopularityAdapter
from audit.cli import main
from audit.data.dataset import Dataset
from audit.interface import RecRequest


def test_generate_ranks_by_training_count_and_skips_consumed_titles() -> None:
    rec = PopularityAdapter({"1": 5, "2": 9, "3": 9, "10": 1}, {"1": "A", "2": "B", "3": "C", "10": "D"}, "fp")
    assert rec.generate([RecRequest(history=())], 3) == [["B", "C", "A"]], "ties by natural item id"
    assert rec.generate([RecRequest(history=("B",))], 3) == [["C", "A", "D"]]
    scores = rec.score([RecRequest(history=())], [["D", "B", "not in catalog"]])[0]
    np.testing.assert_array_equal(scores, [1.0, 9.0, 0.0])


def test_a_title_shared_by_two_items_scores_as_the_more_popular() -> None:
    rec = PopularityAdapter({"1": 2, "2": 7}, {"1": "Same", "2": "Same"}, "fp")
    assert rec.score([RecRequest(history=())], [["Same"]])[0].tolist() == [7.0]
    assert rec.generate([RecRequest(history=())], 5) == [["Same"]]


def _metrics(report: dict[str, Any], recommender: str) -> dict[str, float]:
    res = next(r for r in report["results"] if r["recommender"] == recommender and r["probe"] == "utility")
    return {name: m["value"] for name, m in res["metrics"].items()}


def test_its_utility_equals_the_probes_popularity_baseline_and_it_pairs(tmp_path: Path, tiny_dataset: Dataset,
                                                                       recaudit_home: Path) -> None:
    suite = kit.utility_suite(gates=[{"probe": "utility", "metric": "hr@5", "pair": ["popularity", "reverse"],
                                      "op": ">=", "threshold": 0, "on": "ci_low"}],
                              compare=[{"a": "popularity", "b": "oracle"}, {"a": "popularity", "b": "reverse"}])
    suite["recommenders"]["popularity"] = {"adapter": "popularity"}
    out = tmp_path / "r"
    code = main(["run", str(kit.write_suite(tmp_path / "suite", suite, dataset=tiny_dataset)), "--out", str(out),
                 "--quiet"])
    assert code == 1, "reverse (HR@5 = 0) is no better than popularity: the pair gate fails"
    report = json.loads((out / "report.json").read_text())
    pop = _metrics(report, "popularity")
    assert pop["hr@5"] == pytest.approx(pop["popularity_hr@5"]) and pop["ndcg@5"] == pytest.approx(
        pop["popularity_ndcg@5"]), "one tie rule: the adapter is the probe's baseline on the same candidates"
    assert 0 < pop["hr@5"] < 1
    pairs = {(e["a"], e["b"]): e for e in report["pairs"] if e["metric"] == "hr@5"}
    assert pairs[("popularity", "oracle")]["value"] == pytest.approx(1 - pop["hr@5"])
    assert pairs[("popularity", "reverse")]["value"] == pytest.approx(-pop["hr@5"])
    assert not report["gates"][0]["passed"]
