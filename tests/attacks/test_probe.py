"""The poisoning probe finds planted target promotion, per target and per group, does not flag
a clean recommender, and reads budgets and detector precision/recall from manifests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from poisoning_testkit import PopularityScorer, probe_context

from attacks.probe import PoisoningConfig, PoisoningProbe, ratio_metric
from attacks.targets import TargetSpec, select_targets
from audit.errors import ConfigError
from audit.interface import Recommender, RecRequest

SPEC = TargetSpec(n=3, seed=2)


def _run(rec, ds, **cfg):
    ctx = probe_context(ds)
    cfg.setdefault("targets", SPEC)
    cfg.setdefault("utility_negatives", 20)
    return PoisoningProbe(PoisoningConfig(**cfg)).run(rec, ctx), ctx


def _boosted(ds, **kw):
    targets = select_targets(ds, SPEC)
    return PopularityScorer(ds, boost={ds.item_titles[t]: 1e6 for t in targets}, **kw), targets


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_planted_promotion_is_found_and_a_clean_recommender_is_not_flagged(longtail, protocol):
    boosted, targets = _boosted(longtail)
    attacked, ctx = _run(boosted, longtail, protocol=protocol, negatives=20, k=[5])
    clean, _ = _run(PopularityScorer(longtail), longtail, protocol=protocol, negatives=20, k=[5])
    a, c = attacked.metrics, clean.metrics
    assert a["target_hr@5"].value == 1.0 and c["target_hr@5"].value == 0.0
    assert a["target_ndcg@5"].value > 0.3 and c["target_ndcg@5"].value == 0.0
    assert a["target_percentile"].value > c["target_percentile"].value
    assert a["target_score"].value > 1e5 > c["target_score"].value
    assert all(a[f"target_hr@5={t}"].value == 1.0 for t in targets)
    assert next(iter(a)) == "target_hr@5"
    assert ("full catalog" in attacked.details["protocol"]) == (protocol == "full")
    # only users who never had the target are counted
    for j, entry in enumerate(attacked.details["targets"]):
        had = sum(targets[j] in longtail.sequences[u].full for u in longtail.evaluable_users())
        assert entry["eligible_users"] == len(longtail.evaluable_users()) - had
    assert a[f"target_hr@5={targets[0]}"].n == attacked.details["targets"][0]["eligible_users"]
    lines = [r for r in ctx.recorder.records if r["condition"] == "target-exposure"]
    assert len(lines) == len(longtail.evaluable_users()) and lines[0]["targets"] == list(targets)


def test_group_targeted_promotion_shows_in_the_group_breakdown(longtail):
    boosted, _ = _boosted(longtail, only_gender="F")
    m = _run(boosted, longtail, k=[5], groups=["gender", "age"])[0].metrics
    assert m["target_hr@5_gender=F"].value == 1.0
    assert m["target_hr@5_gender=M"].value == 0.0
    assert 0.3 < m["target_hr@5"].value < 0.7
    assert {"target_hr@5_age=18-24", "target_hr@5_age=25-34"} <= set(m)


class ConstantScorer(Recommender):
    capabilities = frozenset({"score"})

    def score(self, reqs, items):
        return [np.zeros(len(r)) for r in items]


def test_tied_competitors_are_placed_in_random_order_so_a_constant_scorer_lands_at_chance(longtail):
    res, ctx = _run(ConstantScorer(), longtail, k=[5], utility=False)
    m = res.metrics
    # per user: the mean over its eligible targets of 5 / (competitors + 1); then the mean over users
    per_user = [np.mean([5 / (c + 1) for c, ok in zip(r["competitors"], r["eligible"]) if ok])
                for r in ctx.recorder.records if any(r["eligible"])]
    assert m["target_hr@5"].value == pytest.approx(np.mean(per_user), rel=1e-9)
    assert m["target_percentile"].value == pytest.approx(0.5)


class TargetPushingGenerator(Recommender):
    """Generate-only: the first target for users of one gender, then popular items."""

    capabilities = frozenset({"generate"})

    def __init__(self, ds, target_title: str, gender: str) -> None:
        super().__init__()
        self.target, self.gender = target_title, gender
        pop = ds.item_popularity
        self.popular = [ds.item_titles[i] for i in sorted(pop, key=lambda i: -pop[i])[:20]]

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [([self.target] if r.profile.get("gender") == self.gender else []) + self.popular[:k]
                for r in reqs][:len(reqs)]


def test_generate_only_recommenders_are_measured_by_exposure_at_k(longtail):
    targets = select_targets(longtail, SPEC)
    rec = TargetPushingGenerator(longtail, longtail.item_titles[targets[0]], "F")
    result, ctx = _run(rec, longtail, k=[5], utility=False)
    m = result.metrics
    assert result.details["ranking"] == "generate" and "open generation" in result.details["protocol"]
    assert m[f"target_hr@5={targets[0]}"].value == pytest.approx(
        np.mean([longtail.user_profiles[u]["gender"] == "F" for u in longtail.evaluable_users()
                 if targets[0] not in longtail.sequences[u].full]))
    assert m[f"target_hr@5={targets[1]}"].value == 0.0
    assert "target_score" not in m
    assert any(r["condition"] == "target-exposure" for r in ctx.recorder.records)


def test_stealth_utility_is_reported(longtail):
    m = _run(PopularityScorer(longtail), longtail, k=[10])[0].metrics
    assert 0 < m["hr@10"].value <= 1 and "ndcg@10" in m


class ManifestRecommender(PopularityScorer):
    """A clean scorer whose info carries an attack + detection manifest in the reference layout."""

    def __init__(self, ds, targets, fakes, flagged, share=0.05):
        super().__init__(ds)
        self.info["manifest"] = {"stages": [
            {"name": "pretrain", "transforms": []},
            {"name": "finetune", "transforms": [
                {"name": "fake-users", "config": {}, "manifest": {
                    "share": share, "targets": list(targets), "n_real_users": 100,
                    "n_fake_users": len(fakes), "fake_users": list(fakes)}},
                {"name": "detect-fakes", "config": {}, "manifest": {
                    "n_users": 100 + len(fakes), "flagged_users": list(flagged)}}]}]}


def test_budget_and_detector_precision_recall_come_from_the_manifest(longtail):
    targets = select_targets(longtail, SPEC)
    fakes = [f"fake-{i:05d}" for i in range(1, 6)]
    flagged = fakes[:3] + ["17", "23", "42"]
    result, _ = _run(ManifestRecommender(longtail, targets, fakes, flagged), longtail, k=[5], utility=False)
    m = result.metrics
    assert m["detector_precision"].value == pytest.approx(0.5) and m["detector_precision"].n == 6
    assert m["detector_recall"].value == pytest.approx(0.6) and m["detector_recall"].n == 5
    assert m["fake_base_rate"].value == pytest.approx(5 / 105)
    assert m["budget"].value == 0.05 and m["fake_users"].value == 5
    (point,) = result.details["budget_series"]
    assert point["budget"] == 0.05 and point["metric"] == "target_hr@5"


def test_probe_refuses_targets_other_than_the_attacks(longtail):
    rec = ManifestRecommender(longtail, ["1", "2"], ["fake-00001"], [])
    with pytest.raises(ConfigError, match="same targets"):
        _run(rec, longtail, k=[5])


def test_bad_options_are_config_errors(longtail):
    with pytest.raises(ConfigError, match="occupation"):
        _run(PopularityScorer(longtail), longtail, groups=["occupation"])
    with pytest.raises(ConfigError, match="1..1000"):
        _run(PopularityScorer(longtail), longtail, k=[0])


def test_ratio_metric_pairs_users_and_is_undefined_without_clean_exposure():
    a, b = np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0])
    m = ratio_metric(a, b)
    assert m.value == pytest.approx(1.5) and m.n == 4 and m.ci[0] <= 1.5 <= m.ci[1]
    assert np.isnan(ratio_metric(a, np.zeros(4)).value)


@pytest.mark.parametrize("targets", [SPEC, TargetSpec(items=["3", "7"])], ids=["drawn", "listed"])
def test_declared_names_are_the_names_the_probe_emits(longtail, targets):
    """PoisoningProbe.emitted_metrics (what gates are checked against at load): every name a scorer with
    a baseline, a manifest-carrying scorer and a generate-only recommender emit is declared, and every
    declared name is emitted by one of them but the backdoor and item-text manifests' (not planted here)."""
    from tests.audit.probes.names_testkit import assert_declared_as_emitted

    drawn = select_targets(longtail, targets)
    with_baseline = PopularityScorer(longtail)
    with_baseline.baseline = PopularityScorer(longtail)
    fakes = [f"fake-{i:05d}" for i in range(1, 6)]
    recs = [with_baseline, ManifestRecommender(longtail, drawn, fakes, fakes[:2] + ["17"]),
            TargetPushingGenerator(longtail, longtail.item_titles[drawn[0]], "F")]
    options = {"targets": targets, "k": [5, 10], "groups": ["gender", "age"], "utility_negatives": 6}
    emitted = {name for rec in recs for name in _run(rec, longtail, **options)[0].metrics}
    declared = PoisoningProbe.emitted_metrics(PoisoningConfig(**options))
    assert_declared_as_emitted(declared, emitted, {"backdoor_rate", "replaced_labels", "edit_cost", "max_edits"})
    assert ("target_hr@5=3" in declared.names) == (targets.items is not None)
    assert "hr@10" not in declared and "hr@5" in declared, "stealth cut-offs fit among 6 negatives + 1"
