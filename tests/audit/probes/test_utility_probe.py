"""The utility probe ranks the held-out item correctly: oracle, anti-oracle, random and
constant scorers land where they must, and generate-only ranking agrees with scoring."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from audit.data.dataset import Dataset
from audit.interface import RecRequest, Recommender
from audit.metrics import TargetRank, hit_at_k, ndcg_at_k, rank_of_target, target_rank
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.utility import UtilityConfig, UtilityProbe


class TargetKnowingScorer(Recommender):
    """Scores the true held-out item ``sign`` * 1 and everything else 0."""

    capabilities = frozenset({"score"})

    def __init__(self, dataset: Dataset, sign: float) -> None:
        super().__init__()
        self.test_title = {u: dataset.item_titles[s.test] for u, s in dataset.sequences.items() if s.test}
        self.sign = sign

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.array([self.sign if t == self.test_title[r.user] else 0.0 for t in its])
                for r, its in zip(reqs, items)]


class SeededRandomScorer(Recommender):
    capabilities = frozenset({"score"})

    def score(self, reqs, items):
        rng = np.random.default_rng(7)
        return [rng.random(len(its)) for its in items]


class ConstantScorer(Recommender):
    capabilities = frozenset({"score"})

    def score(self, reqs, items):
        return [np.zeros(len(its)) for its in items]


class OracleRanker(Recommender):
    """Generate-only: returns the candidates with the held-out item first."""

    capabilities = frozenset({"generate"})

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.test_title = {u: dataset.item_titles[s.test] for u, s in dataset.sequences.items() if s.test}

    def generate(self, reqs, k):
        out = []
        for r in reqs:
            t = self.test_title[r.user]
            out.append(([t] + [c for c in r.candidates if c != t])[:k])
        return out


def run_utility(rec: Recommender, dataset: Dataset, **config) -> tuple:
    recorder = OutputRecorder("r", "utility")
    ctx = ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0, recorder=recorder)
    probe = UtilityProbe(UtilityConfig(negatives=9, k=[1, 5], **config))
    return probe.run(rec, ctx), recorder


def test_rank_of_a_tied_target_is_its_expected_rank_under_random_tie_order():
    assert target_rank(np.array([1.0, 0.0, 0.0])) == TargetRank(1, 0)
    assert target_rank(np.array([0.0, 0.0, 0.0])) == TargetRank(1, 2)
    assert rank_of_target(np.array([0.0, 0.0, 0.0])) == 2.0  # 1 + greater + ties / 2
    assert rank_of_target(np.array([0.5, 0.9, 0.5, 0.1])) == 2.5
    assert target_rank(np.array([np.nan, 0.0, 0.0])) == TargetRank(3, 0), "an unscorable target ranks last"


def test_hit_and_ndcg_definitions():
    assert hit_at_k(np.array([1, 10, 11]), 10).tolist() == [1.0, 1.0, 0.0]
    assert ndcg_at_k(np.array([1, 3, 11]), 10) == pytest.approx([1.0, 0.5, 0.0])


def test_oracle_scores_perfectly_and_anti_oracle_scores_zero(tiny_dataset):
    good, recorder = run_utility(TargetKnowingScorer(tiny_dataset, 1.0), tiny_dataset)
    bad, _ = run_utility(TargetKnowingScorer(tiny_dataset, -1.0), tiny_dataset)
    n = len(tiny_dataset.evaluable_users())
    assert good.metrics["hr@1"].value == 1.0 and good.metrics["hr@1"].n == n
    assert good.metrics["mrr"].value == 1.0
    assert bad.metrics["hr@5"].value == 0.0
    assert len(recorder.records) == n and {"user", "condition", "prompt", "raw", "parsed"} <= set(recorder.records[0])


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_constant_scorer_scores_exactly_its_declared_chance_level(tiny_dataset, sampling):
    res, _ = run_utility(ConstantScorer(), tiny_dataset, sampling=sampling)
    for name in ("hr@1", "hr@5", "ndcg@5", "mrr"):
        m = res.metrics[name]
        assert m.value == pytest.approx(m.spec.chance, abs=1e-12), name
    assert res.metrics["hr@5"].value == pytest.approx(0.5)  # 5 of 10 candidates
    assert res.details["tied_share"] == 1.0


def test_popularity_baseline_follows_the_same_tie_rule_as_the_model(tiny_dataset):
    """A model scoring by training popularity gets exactly the popularity baseline's figures."""
    pop = tiny_dataset.item_popularity
    by_title = {}
    for i, t in tiny_dataset.item_titles.items():
        by_title[t] = max(by_title.get(t, 0), pop.get(i, 0))

    class PopularityScorer(Recommender):
        capabilities = frozenset({"score"})

        def score(self, reqs, items):
            return [np.array([float(by_title[t]) for t in its]) for its in items]

    if len(set(tiny_dataset.item_titles.values())) != len(tiny_dataset.item_titles):
        pytest.skip("duplicate titles: title scores differ from item popularity")
    res, _ = run_utility(PopularityScorer(), tiny_dataset)
    for name in ("hr@1", "hr@5", "ndcg@5", "mrr"):
        assert res.metrics[name].value == pytest.approx(res.metrics[f"popularity_{name}"].value), name


def test_random_scorer_lands_at_chance_within_its_ci(tiny_dataset):
    res, _ = run_utility(SeededRandomScorer(), tiny_dataset)
    m = res.metrics["hr@5"]
    assert m.ci[0] <= 0.5 <= m.ci[1]
    assert m.ci[0] < m.value < m.ci[1]


def test_generate_only_ranking_matches_scoring(tiny_dataset):
    res, _ = run_utility(OracleRanker(tiny_dataset), tiny_dataset)
    assert res.details["ranking"] == "generate"
    assert res.metrics["hr@1"].value == 1.0


def test_popularity_baseline_is_reported_beside_the_model(tiny_dataset):
    res, _ = run_utility(ConstantScorer(), tiny_dataset)
    assert {"popularity_hr@1", "popularity_hr@5", "popularity_mrr"} <= set(res.metrics)
    assert 0.0 <= res.metrics["popularity_hr@5"].value <= 1.0


def test_recommender_without_score_or_generate_is_skipped(tiny_dataset):
    res, _ = run_utility(Recommender(), tiny_dataset)
    assert res.status == "skip" and "neither" in res.reason


def test_generated_rank_respects_year_and_sequel() -> None:
    """The old generate path stripped years: a same-title remake counted as the held-out item."""
    from audit.probes.utility import generated_rank

    cands = ["Sabrina (1954)", "Sabrina (1995)", "Heat (1995)", "Toy Story (1995)"]
    assert generated_rank(["Sabrina (1995)", "Sabrina (1954)"], cands) == (2, 0)
    # ambiguous between the remakes: not a hit; Heat is placed, the held-out item ties with the
    # two candidates no slot names, after the list's two slots
    assert generated_rank(["Sabrina", "Heat"], cands) == (3, 2)
    assert generated_rank(["sabrina (1954)"], cands) == (1, 0)
    toy = ["Toy Story (1995)", "Heat (1995)"]
    assert generated_rank(["Toy Story 4 (2019)", "Toy Story (2019)", "Heat"], toy) == (4, 0)
    assert generated_rank(["Heat", "toy story"], toy) == (2, 0)
    assert generated_rank([], cands) == (1, 3), "an empty answer ranks every candidate alike: chance"


def test_utility_metrics_are_declared_with_chance_levels(tiny_dataset):
    res, _ = run_utility(ConstantScorer(), tiny_dataset)
    m = res.metrics
    assert res.undeclared() == []
    assert m["hr@5"].spec.direction == "higher" and m["hr@5"].spec.chance == pytest.approx(0.5)
    assert m["popularity_hr@5"].spec.direction is None
    assert len(m["hr@5"].per_unit) == m["hr@5"].n
