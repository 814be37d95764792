"""The ``privacy`` probe reads the accounted (epsilon, delta) from what training recorded,
and skips recommenders trained without DP."""

from __future__ import annotations

import pytest

from audit.config import validate_config
from audit.interface import Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.registry import PROBES
from privacy.accounting import PrivacyAccount
from privacy.probe import PrivacyAccountingProbe, privacy_accounts


class Trained(Recommender):
    """A recommender carrying a training manifest, as the reference adapter does."""

    name = "trained"
    capabilities = frozenset({"generate"})

    def __init__(self, stages: list[dict]) -> None:
        super().__init__()
        self.info["manifest"] = {"stages": stages}

    def generate(self, reqs, k):
        return [[] for _ in reqs]


def _account(eps: float, unit: str = "user", n: int = 377) -> dict:
    return PrivacyAccount(epsilon=eps, delta=1e-3, target_epsilon=eps, noise_multiplier=1.2, sample_rate=0.17,
                          steps=60, accountant="prv", unit=unit, mechanism="m", max_grad_norm=1.0,
                          n_private=n).to_json()


def _run(rec: Recommender, tiny_dataset):
    probe = PROBES.get("privacy")(validate_config(PrivacyAccountingProbe.Config, {}, "probes.privacy"))
    ctx = ProbeContext(tiny_dataset, tiny_dataset.user_ids(), 0, OutputRecorder(rec.name, "privacy"))
    return probe.run(rec, ctx)


def test_reports_the_accounted_epsilon_and_delta_of_the_dp_stage(tiny_dataset):
    rec = Trained([{"name": "pretrain", "summary": {"trainer": "plain"}},
                   {"name": "finetune", "summary": {"trainer": "dp", "privacy": _account(3.9)}}])
    result = _run(rec, tiny_dataset)
    assert result.status == "pass"
    eps, delta = result.metrics["epsilon"], result.metrics["delta"]
    assert (eps.value, eps.n, eps.ci, eps.unit) == (3.9, 377, None, "accounted")
    assert delta.value == pytest.approx(1e-3)
    assert result.details["privacy_unit"] == "user" and result.details["accounts"][0]["stage"] == "finetune"
    assert "warning" not in result.details


def test_skips_a_model_trained_without_dp(tiny_dataset):
    result = _run(Trained([{"name": "full", "summary": {"trainer": "plain"}}]), tiny_dataset)
    assert result.status == "skip" and "without differential privacy" in result.reason
    plain = Recommender()
    assert _run(plain, tiny_dataset).status == "skip"


def test_composes_several_dp_stages_and_flags_example_level(tiny_dataset):
    rec = Trained([{"name": "a", "summary": {"privacy": _account(1.0, unit="example", n=900)}},
                   {"name": "b", "summary": {"privacy": _account(2.0)}}])
    result = _run(rec, tiny_dataset)
    assert result.metrics["epsilon"].value == pytest.approx(3.0)
    assert result.metrics["delta"].value == pytest.approx(2e-3)
    assert result.details["composition"].startswith("basic composition")
    assert "not user-level" in result.details["warning"]


def test_accounts_come_from_info_or_manifest():
    assert privacy_accounts({}) == []
    assert privacy_accounts({"privacy": {"epsilon": 2.0, "delta": 1e-5}})[0]["stage"] is None
    assert privacy_accounts({"manifest": {"stages": [{"name": "x", "summary": {}}]}}) == []
    training = {"training": [{"trainer": "plain"}, {"trainer": "dp", "privacy": _account(8.0)}]}
    assert [a["epsilon"] for a in privacy_accounts(training)] == [8.0]


def test_says_which_users_epsilon_covers_its_adjacency_and_the_secret_seed(tiny_dataset):
    """Issue 14: the pretrain group is trained without DP; epsilon covers only the DP stage's
    users; DP-SGD (add/remove) and federated (replace-one) epsilons are labelled apart."""
    rec = Trained([{"name": "pretrain", "summary": {"trainer": "plain"}},
                   {"name": "finetune", "summary": {"trainer": "dp", "privacy": _account(3.9)}}])
    result = _run(rec, tiny_dataset)
    assert "377 users of stage 'finetune'" in result.details["covers"]
    assert "NOT covered" in result.details["covers"]
    assert result.details["adjacency"] == "add/remove"
    assert "secret" in result.details["randomness"]
    fed = dict(_account(8.0), accountant="rdp-wor (dp-accounting RdpAccountant, replace-one)")
    fed_result = _run(Trained([{"name": "finetune", "summary": {"trainer": "federated", "privacy": fed}}]), tiny_dataset)
    assert fed_result.details["adjacency"] == "replace-one"


def test_the_secret_seed_caveat_is_dropped_only_when_every_stage_used_the_secure_rng(tiny_dataset):
    """Issue 14: a secure-RNG run (Opacus secure_mode) does not rest on a secret seed; a seeded
    one does, and the note names the seeded stage and how to turn secure mode on."""
    secure = dict(_account(3.9), randomness="secure")
    result = _run(Trained([{"name": "finetune", "summary": {"trainer": "dp", "privacy": secure}}]), tiny_dataset)
    assert "does not rest on a secret seed" in result.details["randomness"]
    assert "assumes" not in result.details["randomness"]
    mixed = Trained([{"name": "a", "summary": {"trainer": "dp", "privacy": secure}},
                     {"name": "b", "summary": {"trainer": "dp", "privacy": _account(1.0)}}])
    note = _run(mixed, tiny_dataset).details["randomness"]
    assert "assumes that seed stays secret" in note and "'b'" in note and "'a'" not in note and "secure_mode: true" in note


def test_declared_names_are_the_names_the_probe_emits(tiny_dataset):
    """PrivacyAccountingProbe.emitted_metrics (what gates are checked against at load) is what it reports."""
    from tests.audit.probes.names_testkit import assert_declared_as_emitted

    result = _run(Trained([{"name": "finetune", "summary": {"privacy": _account(2.0)}}]), tiny_dataset)
    assert result.status == "pass"
    assert_declared_as_emitted(PrivacyAccountingProbe.emitted_metrics(PrivacyAccountingProbe.Config()),
                               result.metrics)
