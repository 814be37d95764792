"""The memorisation probes on the real reference model (tiny preset, tiny data): canaries go
into training, exposure rises with repetition, and every attack runs on the real adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.build import build_recommender
from audit.config import validate_config
from audit.interface import Recommender
from audit.memorisation.groups import calibration_reference, declared_trained_users
from audit.memorisation.sequences import score_by_tokens
from audit.probes.canary import CanaryConfig, CanaryExposureProbe
from audit.probes.extraction import ExtractionConfig, ExtractionProbe
from audit.probes.membership import MembershipConfig, MembershipInferenceProbe
from audit.variants import BuildContext
from tests.audit.probes.memorisation_testkit import probe_context

TINY = {"adapter": "reference", "size": "tiny", "epochs": 6}
CANARIES = {"repetitions": [1, 4, 16], "per_repetition": 3, "length": 8, "audit_canaries": 40}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memorisation-models")


@pytest.fixture(scope="module")
def canary_model(tiny_dataset, cache_dir) -> Recommender:
    ctx = BuildContext(dataset=tiny_dataset, cache_dir=cache_dir, progress=False)
    return build_recommender("reference+canaries", {**TINY, "variant": {"canaries": CANARIES}}, ctx)


def run(probe_cls, config_cls, rec, dataset, **options):
    probe = probe_cls(validate_config(config_cls, options, probe_cls.name))
    return probe.run(rec, probe_context(dataset, name=rec.name))


def test_exposure_rises_with_the_repetition_count_on_the_reference_model(canary_model, tiny_dataset):
    result = run(CanaryExposureProbe, CanaryConfig, canary_model, tiny_dataset, references=300)
    assert result.status == "pass", result.reason
    e1, e4, e16 = (result.metrics[f"exposure_rep{r}"] for r in (1, 4, 16))
    assert e1.value < e4.value < e16.value
    assert e16.ci[0] > e1.ci[1]
    assert result.details["path"] == "tokens (reference format)"
    assert {"epsilon_lb_one_run", "epsilon_lb_clopper_pearson", "canary_auroc"} <= set(result.metrics)


def test_canary_users_train_but_are_never_counted_as_members(canary_model, tiny_dataset):
    trained = declared_trained_users(canary_model)
    assert trained == set(tiny_dataset.user_groups(seed=0).trained)
    assert any(u.startswith("canary:") for s in canary_model.manifest["stages"] for u in s["users"])


def test_every_membership_attack_runs_on_the_reference_model(canary_model, tiny_dataset):
    result = run(MembershipInferenceProbe, MembershipConfig, canary_model, tiny_dataset,
                 attacks=["loss", "zlib", "mink", "minkpp", "list"], list_k=3)
    assert result.status == "pass", result.reason
    for attack in ("loss", "zlib", "mink", "minkpp", "list"):
        m = result.metrics[f"mia_auroc_{attack}"]
        assert 0.0 <= m.value <= 1.0 and m.ci is not None
    assert result.details["membership"] == "declared by the recommender"
    assert result.details["list_attack"]["item_vectors"] == "recommender embed"


def test_min_k_plus_plus_statistics_agree_with_the_adapters_token_logprobs(canary_model, tiny_dataset):
    seqs = [list(tiny_dataset.sequences[u].train[:6]) for u in ("1", "2")]
    scored, note = score_by_tokens(canary_model, seqs, [{}, {"gender": "F"}], tiny_dataset.item_titles,
                                   "reference", want_stats=True)
    assert note == ""
    for s in scored:
        assert s.logp.size == 6 and s.mu.size == 6 and np.all(s.sigma > 0)


def test_extraction_continues_the_reference_format_with_item_tokens(canary_model, tiny_dataset):
    result = run(ExtractionProbe, ExtractionConfig, canary_model, tiny_dataset, prefix_items=4, next_items=2,
                 recall_items=10, recall_shots=2, max_new_tokens=12)
    assert result.status == "pass", result.reason
    assert result.details["history"]["mode"] == "complete"
    assert result.details["history"]["text_format"] == "reference"
    for key in ("extraction_exact_members", "extraction_items_members", "recall_rate"):
        assert 0.0 <= result.metrics[key].value <= 1.0


def test_mia_reference_attaches_a_model_trained_on_the_pretrain_users(canary_model, tiny_dataset, cache_dir):
    ctx = BuildContext(dataset=tiny_dataset, cache_dir=cache_dir, progress=False)
    # the audited model is the canary model (loaded from the cache); only the calibration model trains
    variants = [{"canaries": CANARIES}, {"mia-reference": {"epochs": 4, "options": {"size": "tiny"}}}]
    rec = build_recommender("reference+calibrated", {**TINY, "variant": variants}, ctx)
    assert rec.info["trained_now"] is False
    calib = calibration_reference(rec)
    groups = tiny_dataset.user_groups(seed=0)
    assert declared_trained_users(calib) == set(groups.pretrain)
    result = run(MembershipInferenceProbe, MembershipConfig, rec, tiny_dataset, attacks=["loss", "ref"])
    assert result.status == "pass", result.reason
    assert result.details["members"] == len([u for u in groups.finetune if len(tiny_dataset.sequences[u].train) >= 2])
    assert result.details["excluded_users"] == len(groups.pretrain)
    assert "mia_auroc_ref" in result.metrics
