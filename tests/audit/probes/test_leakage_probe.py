"""The attribute-leakage probe finds a planted leak (lists or embeddings that reveal gender /
age) and does not flag a seeded random recommender: its AUC CI includes 0.5."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pytest

from audit.config import validate_config
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import RecRequest, Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.leakage import AttributeLeakageProbe, LeakageConfig
from audit.registry import PROBES
from fairness_testkit import POOL, make_gendered_dataset

@pytest.fixture(scope="module")
def gendered() -> Dataset:
    return make_gendered_dataset()


class HistoryFollower(Recommender):
    """Recommends unseen films of the pool the history mostly comes from (like any
    collaborative model would): the lists reveal gender without being told it."""

    capabilities = frozenset({"generate", "embed-user"})

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.titles = [dataset.item_titles[str(i)] for i in range(1, 2 * POOL + 1)]

    def _pool_share(self, req: RecRequest) -> float:
        return float(np.mean([self.titles.index(t) < POOL for t in req.history]))

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for r in reqs:
            first = self.titles[:POOL] if self._pool_share(r) >= 0.5 else self.titles[POOL:]
            rest = [t for t in self.titles if t not in first]
            out.append([t for t in first + rest if t not in set(r.history)][:k])
        return out

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        rng = np.random.default_rng(0)
        return np.array([[self._pool_share(r), *rng.normal(size=3)] for r in reqs])


class SeededRandom(Recommender):
    """Random lists and embeddings, seeded by the history: no attribute in them."""

    capabilities = frozenset({"generate", "embed-user"})

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.titles = sorted(dataset.item_titles.values())

    @staticmethod
    def _rng(req: RecRequest) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(req.history).encode()).digest()[:8], "little"))

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [[self.titles[i] for i in self._rng(r).permutation(len(self.titles))[:k]] for r in reqs]

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        return np.array([self._rng(r).normal(size=8) for r in reqs])


class AgeInEmbedding(SeededRandom):
    """Planted: the user embedding carries the user's real age bucket (one-hot) plus noise."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        self.age = {u: p["age"] for u, p in dataset.user_profiles.items()}
        self.buckets = sorted(set(self.age.values()))

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        noise = super().embed_user(reqs)
        onehot = np.array([[float(self.age[r.user] == b) for b in self.buckets] for r in reqs])
        return np.hstack([onehot, noise])


class ListsOnly(SeededRandom):
    capabilities = frozenset({"generate"})


def run_probe(rec: Recommender, dataset: Dataset, **options) -> tuple:
    options.setdefault("bootstrap", 300)
    cfg = validate_config(LeakageConfig, options, "probes.leakage")
    recorder = OutputRecorder(recommender="r", probe="leakage")
    ctx = ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0, recorder=recorder)
    return AttributeLeakageProbe(cfg).run(rec, ctx), recorder


def test_lists_that_follow_gendered_histories_leak_gender(gendered: Dataset) -> None:
    result, recorder = run_probe(HistoryFollower(gendered), gendered, sources=["list"])
    auc = result.metrics["auc_list_gender"]
    assert auc.n == 80
    assert auc.value > 0.9 and auc.ci[0] > 0.8
    assert result.metrics["f1_list_gender"].value > 0.8
    assert {r["condition"] for r in recorder.records} == {"neutral"}
    assert all(r["parsed"] for r in recorder.records)


def test_embedding_that_follows_history_leaks_gender(gendered: Dataset) -> None:
    result, _ = run_probe(HistoryFollower(gendered), gendered, sources=["embed"])
    assert result.metrics["auc_embed_gender"].ci[0] > 0.8
    assert "auc_list_gender" not in result.metrics


def test_seeded_random_recommender_auc_ci_includes_one_half(gendered: Dataset) -> None:
    result, _ = run_probe(SeededRandom(gendered), gendered)
    for source in ("list", "embed"):
        auc = result.metrics[f"auc_{source}_gender"]
        assert auc.ci[0] <= 0.5 <= auc.ci[1], (source, auc)


def test_multi_class_attribute_uses_macro_ovo_auc(gendered: Dataset) -> None:
    leaky, _ = run_probe(AgeInEmbedding(gendered), gendered, attributes=[["age"]], sources=["embed"])
    blind, _ = run_probe(SeededRandom(gendered), gendered, attributes=[["age"]], sources=["embed"])
    assert leaky.details["sets"]["age"]["embed"]["classes"] == ["age=18-24", "age=25-34", "age=35-44"]
    assert leaky.metrics["auc_embed_age"].ci[0] > 0.9
    auc = blind.metrics["auc_embed_age"]
    assert auc.ci[0] <= 0.5 <= auc.ci[1]


def test_intersection_labels_are_joint_values(gendered: Dataset) -> None:
    result, _ = run_probe(AgeInEmbedding(gendered), gendered, attributes=[["gender", "age"]],
                          sources=["embed"], min_users=5)
    classes = result.details["sets"]["gender_age"]["embed"]["classes"]
    assert len(classes) == 6 and "gender=F&age=18-24" in classes
    assert "auc_embed_gender_age" in result.metrics


def test_rare_values_are_dropped_with_a_note(gendered: Dataset) -> None:
    result, _ = run_probe(AgeInEmbedding(gendered), gendered, attributes=[["gender", "age"]],
                          sources=["embed"], min_users=14)
    embed = result.details["sets"]["gender_age"]["embed"]
    assert embed["dropped_values"] and "fewer than 14 users" in embed["note"]
    assert set(embed["classes"]).isdisjoint(embed["dropped_values"])


def test_missing_embed_capability_is_noted_and_list_source_still_runs(gendered: Dataset) -> None:
    result, _ = run_probe(ListsOnly(gendered), gendered)
    assert result.status == "pass"
    assert "auc_list_gender" in result.metrics and "auc_embed_gender" not in result.metrics
    assert "embed" in result.details["unavailable_sources"]


def test_recommender_without_generate_or_embed_is_skipped(gendered: Dataset) -> None:
    result, _ = run_probe(Recommender(), gendered)
    assert result.status == "skip" and "generate" in result.reason


def test_unknown_attribute_is_a_config_error(gendered: Dataset) -> None:
    with pytest.raises(ConfigError, match="'occupation'.*attributes: gender, age"):
        run_probe(SeededRandom(gendered), gendered, attributes=[["occupation"]])


def test_probe_is_registered_under_leakage() -> None:
    assert PROBES.get("leakage") is AttributeLeakageProbe
