"""The poisoning variants on an ``hf`` model (tiny random Llama, LoRA): fake users go into the LoRA
stage and raise the target items' likelihood over the clean fine-tune, fake-user detection drops
them before the stage trains, and the pre-training backdoor becomes a poisoned LoRA stage on the
``pretrain`` users (then fine-tuned cleanly on the ``finetune`` users, or used as it is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attacks.probe import PoisoningConfig, PoisoningProbe
from attacks.shilling import FAKE_PREFIX
from audit.build import build_recommender
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.probes.base import OutputRecorder, ProbeContext
from audit.variants import BuildContext
from tests.audit.llm.tiny_llama import build_hf

TARGETS = {"n": 2, "seed": 0, "min_interactions": 2}
LORA = {"lora": {"epochs": 8, "layers": None, "lr": 1e-2, "batch_size": 8, "targets": 3, "r": 4}}
FAKES = {"fake-users": {"kind": "bandwagon", "share": 0.3, "target_repeats": 3, "targets": TARGETS}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora-cache")


def build(tiny_llama_dir: Path, dataset: Dataset, cache: Path, *variants: Any):
    return build_hf(tiny_llama_dir, dataset, cache, [LORA, *variants])


def target_exposure(rec, dataset: Dataset) -> dict[str, float]:
    ctx = ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0,
                       recorder=OutputRecorder("llm", "poisoning"))
    result = PoisoningProbe(PoisoningConfig(targets=TARGETS, k=[5], utility=False)).run(rec, ctx)
    assert result.status == "pass", result.reason
    return {name: result.metrics[name].value for name in ("target_score", "target_percentile")}


def lora_stage(rec) -> dict[str, Any]:
    (stage,) = [s for s in rec.manifest["stages"] if s["name"] == "lora"]
    return stage


def test_fake_users_go_into_the_lora_stage_and_raise_the_targets_likelihood(tiny_llama_dir, tiny_dataset, cache):
    clean = build(tiny_llama_dir, tiny_dataset, cache)
    attacked = build(tiny_llama_dir, tiny_dataset, cache, FAKES)
    stage = lora_stage(attacked)
    (transform,) = stage["transforms"]
    fakes = transform["manifest"]["fake_users"]
    assert transform["name"] == "fake-users" and len(fakes) == round(0.3 * len(lora_stage(clean)["users"]))
    assert set(fakes) <= set(stage["users"])  # fake users (no data-set profile) trained with the real ones
    before, after = target_exposure(clean, tiny_dataset), target_exposure(attacked, tiny_dataset)
    assert after["target_score"] > before["target_score"]  # measured: -33.65 -> -33.09
    assert after["target_percentile"] > before["target_percentile"] + 0.2  # measured: 0.57 -> 0.97


def test_detect_fakes_on_hf_drops_the_fake_users_before_the_lora_stage_trains(tiny_llama_dir, longtail, cache):
    # the long-tail data (real users follow popularity and taste groups) is where bandwagon fakes stand out
    fakes = {"fake-users": {"kind": "bandwagon", "share": 0.1, "targets": TARGETS}}
    entry = {"adapter": "hf", "path": str(tiny_llama_dir), "history": 5,
             "variant": [{"lora": {**LORA["lora"], "epochs": 1}}, fakes,
                         {"detect-fakes": {"method": "pca", "flag_share": 0.15}}]}
    defended = build_recommender("llm", entry, BuildContext(dataset=longtail, cache_dir=cache, progress=False))
    stage = lora_stage(defended)
    fake, detect = stage["transforms"]
    assert (fake["name"], detect["name"]) == ("fake-users", "detect-fakes")
    injected = set(fake["manifest"]["fake_users"])
    flagged = set(detect["manifest"]["flagged_users"])
    assert len(injected) == 11 and injected <= flagged  # the detector finds every fake (measured: 11 of 11) ...
    assert not flagged & set(stage["users"])  # ... and what it flags does not train
    assert not [u for u in stage["users"] if u.startswith(FAKE_PREFIX)] and stage["summary"]["steps"] > 0


def test_backdoor_on_hf_poisons_a_pretrain_lora_stage_then_fine_tunes_the_same_lora(tiny_llama_dir, tiny_dataset, cache):
    rec = build(tiny_llama_dir, tiny_dataset, cache, {"backdoor": {"rate": 0.5, "targets": TARGETS, "pretrain_epochs": 4}})
    pre, fine = rec.manifest["stages"]
    groups = tiny_dataset.user_groups(seed=0, pretrain=0.5, heldout=0.1)
    assert (pre["name"], pre["users"]) == ("pretrain", sorted(groups.pretrain))
    assert (fine["name"], fine["users"]) == ("lora", sorted(groups.finetune))
    (backdoor,) = pre["transforms"]
    assert backdoor["name"] == "backdoor" and backdoor["manifest"]["replaced_labels"] > 0
    assert fine["transforms"] == [] and fine["summary"]["steps"] > 0 and pre["summary"]["steps"] > 0
    as_is = build(tiny_llama_dir, tiny_dataset, cache, {"backdoor": {"rate": 0.5, "targets": TARGETS, "finetune": False}})
    (only,) = as_is.manifest["stages"]
    assert (only["name"], only["users"]) == ("pretrain", sorted(groups.pretrain))
    assert only["transforms"][0]["manifest"]["replaced_labels"] > 0


def test_backdoored_checkpoint_as_is_raises_the_targets_over_the_clean_fine_tune(tiny_llama_dir, tiny_dataset, cache):
    clean = target_exposure(build(tiny_llama_dir, tiny_dataset, cache), tiny_dataset)
    poisoned = target_exposure(build(tiny_llama_dir, tiny_dataset, cache, {"backdoor": {
        "rate": 0.3, "targets": TARGETS, "finetune": False}}), tiny_dataset)
    assert poisoned["target_percentile"] > clean["target_percentile"] + 0.1  # measured: 0.57 -> 0.82


def test_poisoning_variants_need_train_transforms_and_name_the_adapters_that_have_it(tiny_dataset, tmp_path):
    entry = {"adapter": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "variant": [FAKES]}
    with pytest.raises(ConfigError, match="variant 'fake-users' needs train-transforms.*support it: hf, reference"):
        build_recommender("x", entry, BuildContext(dataset=tiny_dataset, cache_dir=tmp_path, progress=False))



def test_the_poisoned_checkpoint_trains_once_for_as_is_and_clean_finetuned(tiny_llama_dir, tiny_dataset,
                                                                           tmp_path) -> None:
    """The as-is checkpoint is the fine-tuned recipe's first stage: built first, it is cached and
    the fine-tuned form resumes from it (training only the clean stage) to the same weights as a
    fine-tune trained from scratch, which in turn leaves the as-is checkpoint in its cache."""
    poison = {"rate": 0.5, "targets": TARGETS}
    light = {"lora": {**LORA["lora"], "epochs": 1}}

    def build(llama: Path, dataset: Dataset, cache: Path, *variants: Any):
        return build_hf(llama, dataset, cache, [light, *variants])

    first, scratch = tmp_path / "as-is-first", tmp_path / "from-scratch"
    as_is = build(tiny_llama_dir, tiny_dataset, first, {"backdoor": {**poison, "finetune": False}})
    resumed = build(tiny_llama_dir, tiny_dataset, first, {"backdoor": poison})
    assert as_is.info["trained_now"] and resumed.info["trained_now"]
    assert resumed.manifest["resumed_from"] == {"key": as_is.info["key"], "stages": 1}
    pre, fine = resumed.manifest["stages"]
    assert pre == as_is.manifest["stages"][0] and fine["summary"]["steps"] > 0

    whole = build(tiny_llama_dir, tiny_dataset, scratch, {"backdoor": poison})
    assert "resumed_from" not in whole.manifest
    same_as_is = build(tiny_llama_dir, tiny_dataset, scratch, {"backdoor": {**poison, "finetune": False}})
    assert not same_as_is.info["trained_now"] and same_as_is.info["key"] == as_is.info["key"]
    for a, b in ((resumed, whole), (as_is, same_as_is)):
        wa, wb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
        assert all(torch.equal(wa[n], wb[n]) for n in wa)
    base = dict(build_hf(tiny_llama_dir, tiny_dataset, scratch).model.named_parameters())
    assert any(not torch.equal(p, base[n]) for n, p in whole.model.named_parameters())
