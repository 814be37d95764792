"""The membership probe's per-user scores pair two recommenders on the same users: a model that
memorised its members against one that did not gives a paired AUROC difference below 0."""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from audit.config import validate_config
from audit.pairs import Pair, pair_entries
from audit.probes.membership import MembershipConfig, MembershipInferenceProbe
from tests.audit.probes.memorisation_testkit import LineModel, NoiseModel, halves, probe_context


def _result(rec, dataset) -> dict:
    probe = MembershipInferenceProbe(validate_config(MembershipConfig, {"attacks": ["loss", "mink"]}, "membership"))
    return {"recommender": rec.name, "probe": "membership", **probe.run(rec, probe_context(dataset, name=rec.name)).to_json()}


def test_unit_scores_reproduce_each_auroc(tiny_dataset) -> None:
    members, _ = halves(tiny_dataset)
    result = _result(LineModel(tiny_dataset, members), tiny_dataset)
    for metric, decl in result["details"]["unit_statistics"].items():
        units = result["details"]["unit_scores"][decl["scores"]]
        users = list(units["scores"])
        auc = roc_auc_score([units["labels"][u] for u in users], [units["scores"][u] for u in users])
        assert auc == pytest.approx(result["metrics"][metric]["value"], abs=1e-6), metric


def test_a_memorising_model_against_a_null_one_is_a_paired_auroc_drop(tiny_dataset) -> None:
    members, _ = halves(tiny_dataset)
    leaky, null = LineModel(tiny_dataset, members), NoiseModel(members)
    entries = pair_entries([_result(leaky, tiny_dataset), _result(null, tiny_dataset)],
                           [Pair(leaky.name, null.name, "declared")])
    loss = next(e for e in entries if e["metric"] == "mia_auroc_loss")
    assert loss["method"] == "paired-bootstrap-auroc" and loss["n"] == 40
    assert loss["ci"][1] < 0 and loss["better"] == "b", "lower AUROC is better: the null model leaks less"
