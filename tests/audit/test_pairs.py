"""audit.pairs: pairs derived from variants or declared, checked at load, and the report's paired
differences of planted python-adapter recommenders; gates on differences and their exit codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import runner_testkit as kit
from audit.cli import main
from audit.data.dataset import Dataset
from audit.pairs import pair_entries, suite_pairs, variant_parent
from audit.suite import load_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _plugins() -> None:
    kit.register()
    kit.reset_counters()


# -- derivation -----------------------------------------------------------------------------------
def test_variants_are_paired_with_their_parents_in_the_example_suites() -> None:
    privacy = {(p.a, p.b) for p in load_suite(EXAMPLES / "privacy.yaml", validate_dataset=False).pairs}
    assert ("reference+canaries", "dp-eps1") in privacy, "[dp, canaries, ref] extends [canaries, ref]"
    assert ("federated", "federated+dp") in privacy, "named as a '+' variant of federated"
    poisoning = {(p.a, p.b) for p in load_suite(EXAMPLES / "poisoning.yaml", validate_dataset=False).pairs}
    assert {("clean", "fake-1pct"), ("fake-1pct-rep10", "fake-1pct-rep10+pca"),
            ("item-text", "item-text+canonical")} <= poisoning
    assert ("clean", "backdoor-as-is") in poisoning and ("pretrained", "backdoor-as-is") not in poisoning
    quick = load_suite(EXAMPLES / "quick.yaml", validate_dataset=False).pairs
    assert [(p.a, p.b, p.origin) for p in quick] == [("reference", "reference+constrained", "variant")]


def test_a_recommender_with_other_adapter_options_is_no_parent() -> None:
    recs = {"base": {"adapter": "reference", "size": "small"},
            "base+dp": {"adapter": "reference", "variant": {"dp": {"epsilon": 8}}}}
    assert variant_parent("base+dp", recs) is None
    recs["base"] = {"adapter": "reference"}
    assert variant_parent("base+dp", recs) == "base"


def test_no_pair_where_no_probe_runs_on_both(tmp_path: Path) -> None:
    from audit.suite import suite_from_mapping

    data = {"name": "x", "dataset": {"name": "ml-100k"},
            "recommenders": {"reference": {"adapter": "reference"},
                             "reference+constrained": {"adapter": "reference", "variant": "constrained-decoding"}},
            "probes": {"utility": {"recommenders": ["reference"]}}}
    assert suite_from_mapping(data, validate_dataset=False).pairs == []


# -- load-time errors (exit 2) ---------------------------------------------------------------------
def _suite(tmp_path: Path, dataset: Dataset, **extra: Any) -> Path:
    return kit.write_suite(tmp_path / "suite", kit.utility_suite(**extra), dataset=dataset)


@pytest.mark.parametrize("extra, message", [
    ({"compare": [{"a": "oracle", "b": "revers"}]}, "compare[0] (oracle vs revers): 'revers' is not a recommender"),
    ({"compare": [{"a": "oracle", "b": "oracle"}]}, "two different recommenders"),
    ({"compare": [{"a": "oracle", "b": "reverse"}],
      "probes": {"utility": {"k": [5], "negatives": 10, "recommenders": ["oracle"]}}}, "no probe runs on both"),
    ({"gates": [{"probe": "utility", "metric": "hr@5", "pair": ["oracle", "reverse"], "op": ">=",
                 "threshold": 0}]}, "[oracle, reverse] is not a pair of this suite"),
    ({"compare": [{"a": "reverse", "b": "oracle"}],
      "gates": [{"probe": "utility", "metric": "hr@5", "pair": ["oracle", "reverse"], "op": ">=",
                 "threshold": 0}]}, "swap a and b"),
    ({"compare": [{"a": "reverse", "b": "oracle"}],
      "gates": [{"probe": "utility", "metric": "hr@5", "pair": ["reverse", "oracle"], "recommender": "oracle",
                 "op": ">=", "threshold": 0}]}, "either a recommender or a pair"),
])
def test_bad_pairs_exit_2_with_one_message(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path,
                                           capsys: pytest.CaptureFixture[str], extra: dict[str, Any],
                                           message: str) -> None:
    assert main(["run", str(_suite(tmp_path, tiny_dataset, **extra)), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("recaudit: error:") == 1


# -- gates on differences (exit 0 / 1) ------------------------------------------------------------------
def _gate(op: str, threshold: float, on: str) -> dict[str, Any]:
    return {"probe": "utility", "metric": "hr@5", "pair": ["reverse", "oracle"], "op": op,
            "threshold": threshold, "on": on}


def test_a_superiority_gate_on_a_pair_passes(tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path) -> None:
    out = tmp_path / "r"
    code = main(["run", str(_suite(tmp_path, tiny_dataset, compare=[{"a": "reverse", "b": "oracle"}],
                                   gates=[_gate(">=", 0.5, "ci_low")])), "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    entry = next(e for e in report["pairs"] if e["metric"] == "hr@5")
    assert set(entry) == {"a", "b", "origin", "probe", "metric", "method", "value", "ci", "n", "unit", "p_value",
                          "p_holm", "p_bh", "mde", "better"}
    assert (entry["a"], entry["b"], entry["origin"], entry["value"], entry["n"]) == ("reverse", "oracle", "declared",
                                                                                      1.0, 12)
    assert entry["method"] == "newcombe-mcnemar" and entry["better"] == "b" and entry["ci"][0] > 0.5
    assert report["gates"][0]["pair"] == ["reverse", "oracle"] and report["gates"][0]["passed"]
    assert "### Paired differences" in (out / "summary.md").read_text()


def test_a_failing_pair_gate_exits_1_with_the_ci_in_its_message(tmp_path: Path, tiny_dataset: Dataset,
                                                                 recaudit_home: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code = main(["run", str(_suite(tmp_path, tiny_dataset, compare=[{"a": "reverse", "b": "oracle"}],
                                   gates=[_gate("<=", 0.0, "ci_high")])), "--out", str(out), "--quiet"])
    assert code == 1
    gate = json.loads((out / "report.json").read_text())["gates"][0]
    assert not gate["passed"] and gate["reason"].startswith("oracle - reverse = 1 [") and "n=12" in gate["reason"]


# -- planted effect on real ML-100k users ----------------------------------------------------------------
PLANTED = textwrap.dedent('''
    import json
    from pathlib import Path

    HITS = json.loads((Path(__file__).parent / "hits.json").read_text())

    def _ranked(requests, k, who):
        # the held-out item (first candidate) comes first for the users in HITS[who], last for the others
        return [list(r.candidates)[:k] if r.user in HITS[who] else list(reversed(r.candidates))[:k]
                for r in requests]

    def base(requests, k):
        return _ranked(requests, k, "base")

    def better(requests, k):
        return _ranked(requests, k, "better")

    def same(requests, k):
        return _ranked(requests, k, "base")
''')


def test_an_hr_gain_of_005_is_found_by_the_paired_ci_while_the_separate_cis_overlap(
        tmp_path: Path, recaudit_home: Path, ml100k: Dataset) -> None:
    from audit.runner import run_suite

    users = ml100k.sample_users(200, 0)
    # base finds the held-out item for 100 of the 200 users; the variant for those and 10 more: +0.05
    (tmp_path / "hits.json").write_text(json.dumps({"base": users[:100], "better": users[:110]}))
    (tmp_path / "planted.py").write_text(PLANTED)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "planted", "dataset": {"name": "ml-100k", "users": 200, "seed": 0},
        "recommenders": {"base": {"adapter": "python", "generate": "planted:base"},
                         "better": {"adapter": "python", "generate": "planted:better"},
                         "same": {"adapter": "python", "generate": "planted:same"}},
        "probes": {"utility": {"k": [10], "negatives": 99}},
        "compare": [{"a": "base", "b": "better"}, {"a": "base", "b": "same"}],
        "cache": False}))
    outcome = run_suite(load_suite(suite_file), out=tmp_path / "r", dataset=ml100k)
    report = outcome.report
    hr = {r["recommender"]: r["metrics"]["hr@10"] for r in report["results"]}
    assert hr["better"]["ci"][0] < hr["base"]["ci"][1], "the two separate CIs overlap"
    gain = next(e for e in report["pairs"] if (e["b"], e["metric"]) == ("better", "hr@10"))
    assert gain["n"] == 200 and gain["value"] == pytest.approx(0.05) and gain["ci"][0] > 0 and gain["better"] == "b"
    assert gain["p_value"] == pytest.approx(2 * 0.5 ** 10, rel=1e-4), "exact McNemar: 10 of 10 discordant users gained"
    assert gain["p_holm"] >= gain["p_value"] and gain["mde"] < gain["value"]
    null = next(e for e in report["pairs"] if (e["b"], e["metric"]) == ("same", "hr@10"))
    assert null["value"] == 0 and null["ci"][0] <= 0 <= null["ci"][1] and null["better"] is None
    assert {e["metric"] for e in report["pairs"] if e["b"] == "better"} >= {"hr@10", "ndcg@10", "mrr"}


# -- paired AUROC from declared unit scores ---------------------------------------------------------------
def _membership_result(rec: str, scores: dict[str, float], labels: dict[str, int]) -> dict[str, Any]:
    return {"recommender": rec, "probe": "membership", "status": "pass",
            "metrics": {"mia_auroc_loss": {"value": 0.5, "ci": [0.4, 0.6], "n": len(scores),
                                           "spec": {"direction": "lower", "range": [0, 1], "chance": 0.5,
                                                    "unit": "AUROC", "sampled": True}}},
            "details": {"unit_scores": {"loss": {"scores": scores, "labels": labels}},
                        "unit_statistics": {"mia_auroc_loss": {"statistic": "auroc", "scores": "loss"}}}}


def test_auroc_pairs_use_the_shared_users_with_the_same_label() -> None:
    import numpy as np

    from audit.pairs import Pair

    rng = np.random.default_rng(0)
    users = [str(i) for i in range(200)]
    labels = {u: int(i < 100) for i, u in enumerate(users)}
    leaky = {u: float(labels[u] * 1.5 + rng.normal()) for u in users}
    private = {u: float(labels[u] * 0.2 + rng.normal()) for u in users[:190]}  # 10 users not scored
    entries = pair_entries([_membership_result("lora", leaky, labels), _membership_result("dp", private, labels)],
                           [Pair("lora", "dp", "variant")])
    (e,) = entries
    assert e["method"] == "paired-bootstrap-auroc" and e["n"] == 190
    assert e["ci"][1] < 0 and e["better"] == "b", "DP lowers the attack's AUROC: lower is better"


def test_suite_pairs_keep_each_pair_once() -> None:
    from audit.pairs import PairSpec
    from audit.suite import load_suite as load

    s = load(EXAMPLES / "quick.yaml", validate_dataset=False)
    pairs = suite_pairs(s.recommenders, [PairSpec(a="reference", b="reference+constrained")], s.probes)
    assert [(p.a, p.b, p.origin) for p in pairs] == [("reference", "reference+constrained", "variant")]
