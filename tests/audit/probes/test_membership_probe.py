"""The membership probe finds a planted memorisation and does not flag a null model."""

from __future__ import annotations

import pytest

from audit.config import validate_config
from audit.errors import ConfigError
from audit.interface import Recommender
from audit.probes.membership import MembershipConfig, MembershipInferenceProbe
from tests.audit.probes.memorisation_testkit import (AnswerMemoryModel, LineModel, NoiseModel, ScoringLineModel, halves,
                                                     probe_context)


def run_probe(rec: Recommender, dataset, **options):
    probe = MembershipInferenceProbe(validate_config(MembershipConfig, options, "membership"))
    ctx = probe_context(dataset, name=rec.name)
    return probe.run(rec, ctx), ctx


def test_a_model_that_memorised_its_members_is_caught_by_every_sequence_attack(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, ctx = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["loss", "zlib", "mink", "minkpp"])
    assert result.status == "pass"
    for attack in ("loss", "zlib", "mink", "minkpp"):
        auc = result.metrics[f"mia_auroc_{attack}"]
        assert auc.ci[0] > 0.8, (attack, auc)
        assert auc.n == 40
        # 20 non-members cannot resolve FPR 1 % or 0.1 % (needs 1000 / 10000): not estimable, with the reason
        assert f"tpr@1%fpr_{attack}" not in result.metrics and f"tpr@0.1%fpr_{attack}" not in result.metrics
        assert "not estimable" in result.details["not_estimable"][f"tpr@1%fpr_{attack}"]
        roc = result.details["roc"][attack]
        assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    assert result.details["members"] == 20 and result.details["nonmembers"] == 20
    assert result.details["membership"] == "declared by the recommender"
    # one raw record per scored user, with its log-probs and scores
    assert len(ctx.recorder.records) == 40
    assert {"loss", "mink"} <= set(ctx.recorder.records[0]["scores"])


def test_a_recommender_with_only_score_is_attacked_item_by_item(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(ScoringLineModel(tiny_dataset, members), tiny_dataset, attacks=["loss", "mink", "minkpp"],
                          max_positions=5)
    assert result.details["path"].startswith("items")
    assert result.metrics["mia_auroc_loss"].ci[0] > 0.8
    assert "minkpp" in result.details["skipped"]


def test_a_model_that_ignores_training_is_not_flagged(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(NoiseModel(members), tiny_dataset, attacks=["loss", "zlib", "mink"])
    for attack in ("loss", "zlib", "mink"):
        lo, hi = result.metrics[f"mia_auroc_{attack}"].ci
        assert lo <= 0.5 <= hi, attack
    assert "minkpp" not in result.metrics


def test_control_mode_compares_two_halves_of_the_non_members(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["loss"], control=True)
    lo, hi = result.metrics["mia_auroc_loss"].ci
    assert lo <= 0.5 <= hi
    assert result.details["control"] is True
    assert result.details["members"] + result.details["nonmembers"] == 20


def test_reference_calibration_removes_what_is_easy_for_any_model(tiny_dataset):
    """The reference model trained on disjoint users (the first 10) finds every sequence as easy
    as the target does except the target's own members' transitions."""
    users = tiny_dataset.user_ids()
    target = LineModel(tiny_dataset, users[:30], noise=0.3, seed=1)
    target.calibration_reference = LineModel(tiny_dataset, users[:10], noise=0.3, seed=2)
    result, _ = run_probe(target, tiny_dataset, attacks=["loss", "ref"])
    # calibration users are excluded: members are users 11..30, non-members 31..40
    assert result.details["members"] == 20 and result.details["nonmembers"] == 10
    assert result.details["excluded_users"] == 10
    assert result.metrics["mia_auroc_ref"].ci[0] > 0.8


def test_ref_attack_without_a_calibration_model_is_skipped_with_the_fix(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["loss", "ref"])
    assert "mia_auroc_ref" not in result.metrics
    assert "mia-reference" in result.details["skipped"]["ref"]


def test_the_list_attack_needs_only_generated_lists(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, ctx = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["list"], list_k=5)
    auc = result.metrics["mia_auroc_list"]
    assert auc.ci[0] > 0.7
    assert auc.n == 20  # the target half of 20 + 20 users
    assert result.details["list_attack"]["item_vectors"] == "co-occurrence SVD of shadow users"
    assert sum(r["condition"] == "member" for r in ctx.recorder.records) == 20


def test_the_list_attack_does_not_flag_a_recommender_that_ignores_the_user(tiny_dataset):
    class Popular(Recommender):
        name = "popular"
        capabilities = frozenset({"generate"})

        def __init__(self, members):
            super().__init__()
            self.info["trained_users"] = list(members)

        def generate(self, reqs, k):
            return [["Film Number 1 (1991)", "Film Number 2 (1992)"][:k] for _ in reqs]

    members, _ = halves(tiny_dataset)
    result, _ = run_probe(Popular(members), tiny_dataset, attacks=["list"], list_k=2)
    lo, hi = result.metrics["mia_auroc_list"].ci
    assert lo <= 0.5 <= hi


def test_a_recommender_without_any_needed_capability_is_skipped(tiny_dataset):
    class Mute(Recommender):
        name = "mute"

    result, _ = run_probe(Mute(), tiny_dataset)
    assert result.status == "skip"
    assert "token-logprobs" in result.reason


def test_member_stage_audits_one_stage_and_leaves_the_others_out(tiny_dataset):
    users = tiny_dataset.user_ids()
    rec = LineModel(tiny_dataset, users[:30])
    del rec.info["trained_users"]
    rec.info["manifest"] = {"stages": [{"name": "pretrain", "users": users[:10]},
                                       {"name": "finetune", "users": users[10:30] + ["canary:exposure:0:0"]}]}
    result, _ = run_probe(rec, tiny_dataset, attacks=["loss"], member_stage="finetune")
    assert result.details["members"] == 20 and result.details["nonmembers"] == 10
    assert "stage 'finetune'" in result.details["membership"]
    everyone, _ = run_probe(rec, tiny_dataset, attacks=["loss"])
    assert everyone.details["members"] == 30
    with pytest.raises(ConfigError, match="member_stage 'private'"):
        run_probe(rec, tiny_dataset, attacks=["loss"], member_stage="private")


def test_users_caps_each_group(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["loss"], users=8)
    assert result.details["members"] == 8 and result.details["nonmembers"] == 8


def test_config_rejects_unknown_attacks_and_bad_fprs():
    with pytest.raises(ConfigError, match="unknown attack"):
        validate_config(MembershipConfig, {"attacks": ["loss", "lira"]}, "membership")
    with pytest.raises(ConfigError, match="FPR"):
        validate_config(MembershipConfig, {"fprs": [1.5]}, "membership")


def test_tpr_at_fpr_is_reported_only_where_the_non_members_resolve_it(tiny_dataset):
    """Issue 14: with n0 non-members, TPR@FPR is reported only where n0 >= 10 / FPR."""
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(LineModel(tiny_dataset, members), tiny_dataset, attacks=["loss"], fprs=[0.5, 0.01])
    assert "tpr@50%fpr_loss" in result.metrics  # 20 non-members >= 10 / 0.5
    assert "tpr@1%fpr_loss" not in result.metrics
    assert "1000 non-members" in result.details["not_estimable"]["tpr@1%fpr_loss"]
    assert result.undeclared() == []


def test_undeclared_membership_is_marked_assumed_and_not_a_finding(tiny_dataset):
    """Issue 14: a recommender that does not say whom it trained on gets no mia_auroc finding."""
    members, _ = halves(tiny_dataset)
    rec = LineModel(tiny_dataset, members)
    del rec.info["trained_users"]
    result, _ = run_probe(rec, tiny_dataset, attacks=["loss"])
    assert "mia_auroc_loss" not in result.metrics
    assumed = result.metrics["assumed_mia_auroc_loss"]
    assert assumed.spec is not None and assumed.spec.direction is None
    assert result.details["membership_assumed"] is True


def test_a_fine_tune_is_attacked_on_its_own_training_windows_not_on_a_rendered_title_list(tiny_dataset):
    """A model that memorised each member's newest window (5 items -> 3 answer items) is caught on
    the answers path (auto for a model declaring ``answer-logprobs``); the same model's log-probs
    of the window rendered as a title list carry nothing, and that path finds nothing."""
    members, _ = halves(tiny_dataset)
    rec = AnswerMemoryModel(tiny_dataset, members)
    result, _ = run_probe(rec, tiny_dataset, attacks=["loss", "zlib", "mink", "minkpp"], max_items=8)
    assert result.details["path"] == "answers (last 3 items as the answer to the recommender's own prompt)"
    for attack in ("loss", "zlib", "mink", "minkpp"):
        assert result.metrics[f"mia_auroc_{attack}"].ci[0] > 0.8, attack
    assert set(rec.asked) == {3}
    text, _ = run_probe(rec, tiny_dataset, attacks=["loss"], max_items=8, path="tokens")
    lo, hi = text.metrics["mia_auroc_loss"].ci
    assert lo <= 0.5 <= hi


def test_a_fine_tune_that_memorised_nothing_is_not_flagged_on_the_answers_path(tiny_dataset):
    members, _ = halves(tiny_dataset)
    result, _ = run_probe(AnswerMemoryModel(tiny_dataset, members, strength=0.0), tiny_dataset,
                          attacks=["loss", "mink", "minkpp"], max_items=8)
    for attack in ("loss", "mink", "minkpp"):
        lo, hi = result.metrics[f"mia_auroc_{attack}"].ci
        assert lo <= 0.5 <= hi, attack


def test_the_calibration_model_is_scored_with_the_fine_tunes_answer_length(tiny_dataset):
    """The untuned base declares no answer length; it is asked for the fine-tune's (2 here), so
    target and calibration score the same tokens; ``answer_items`` in the config overrides both."""
    users = tiny_dataset.user_ids()
    target = AnswerMemoryModel(tiny_dataset, users[10:30], answer_items=2, noise=0.3, seed=1)
    base = AnswerMemoryModel(tiny_dataset, answer_items=None, strength=0.0, noise=0.3, seed=1)
    base.info["trained_users"] = users[:10]  # the calibration users are left out of both groups
    target.calibration_reference = base
    result, _ = run_probe(target, tiny_dataset, attacks=["ref"], max_items=8)
    assert set(base.asked) == {2} and result.metrics["mia_auroc_ref"].ci[0] > 0.8
    base.asked.clear()
    run_probe(target, tiny_dataset, attacks=["ref"], max_items=8, answer_items=4)
    assert set(base.asked) == {4}
