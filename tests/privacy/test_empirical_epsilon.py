"""The empirical epsilon lower bound (one-run and Clopper-Pearson, from canaries each inserted
into the private fine-tune data with probability 1/2) never exceeds the accounted epsilon of
DP training -- and the same audit does detect an undefended model's memorisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audit.memorisation.canaries import CanaryTransform, canary_manifests
from audit.memorisation.epsilon import audit_epsilon
from audit.reference.examples import StageData
from audit.reference.training import TrainedReference, train_reference
from audit.variants import BuildContext
from privacy.dp import DPConfig, DPVariant
from privacy.finetune import FinetuneConfig, FinetuneVariant
from audit.reference.trainable import per_sequence_loss
from privacy.probe import privacy_accounts
from tests.privacy.conftest import tiny_recipe

CANARIES = CanaryTransform(repetitions=(1,), per_repetition=1, length=8, audit_canaries=200, stages=("finetune",))


def canary_scores(ref: TrainedReference) -> tuple[np.ndarray, np.ndarray]:
    """Minus each audit canary's mean token loss (higher = guessed "included"), and the truth."""
    audit = canary_manifests(ref.manifest)[0]["audit"]
    examples = [ref.fmt.window_example(c["items"][:-1], c["items"][-1], {}) for c in audit]
    ids, tgt = StageData(ref.fmt, {}, {}, 0.0, False).collate(examples)
    with torch.no_grad():
        loss = per_sequence_loss(ref.model.eval(), ids, tgt).numpy()
    return -loss, np.array([bool(c["included"]) for c in audit])


def _train(variant, tiny_dataset, tmp_path) -> TrainedReference:
    recipe = dataclasses.replace(tiny_recipe(epochs=3), sequence_transforms=(CANARIES,))
    return train_reference(variant.modify_recipe(recipe, BuildContext(tiny_dataset, tmp_path)), tiny_dataset, threads=1)


@pytest.fixture(scope="module")
def dp_model(tiny_dataset, tmp_path_factory) -> TrainedReference:
    variant = DPVariant(DPConfig(epsilon=1.0, epochs=5, batch_size=16, accountant="rdp"))
    with pytest.MonkeyPatch.context() as mp:  # nothing of this test writes outside its own directories
        mp.setenv("RECAUDIT_HOME", str(tmp_path_factory.mktemp("home")))
        return _train(variant, tiny_dataset, tmp_path_factory.mktemp("dp"))


def test_lower_bound_never_exceeds_the_accounted_epsilon(dp_model, recaudit_home):
    (account,) = privacy_accounts({"manifest": dp_model.manifest})
    assert account["unit"] == "user" and account["epsilon"] <= 1.0
    scores, included = canary_scores(dp_model)
    for selection in ("split", "bonferroni"):
        bound = audit_epsilon(scores, included, delta=account["delta"], selection=selection)
        assert bound.one_run <= account["epsilon"]
        assert bound.clopper_pearson <= account["epsilon"]


def test_the_same_audit_detects_an_undefended_finetune(dp_model, tiny_dataset, tmp_path, recaudit_home):
    """Power check: plain fine-tuning for many epochs memorises the included canaries, and the
    one-run bound then exceeds what DP at epsilon 1 allows."""
    plain = _train(FinetuneVariant(FinetuneConfig(epochs=40)), tiny_dataset, tmp_path)
    scores, included = canary_scores(plain)
    bound = audit_epsilon(scores, included, delta=0.0)
    (account,) = privacy_accounts({"manifest": dp_model.manifest})
    assert bound.one_run > account["epsilon"]
