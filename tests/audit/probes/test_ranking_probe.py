"""The candidate-ranking probe detects planted position, popularity and history-order
biases and out-of-candidate answers, and leaves fair rankers unflagged."""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np
import pytest

from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import RecRequest, Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.ranking import CandidateRankingProbe, RankingConfig, read_ranking


class Ranker(Recommender):
    """Generate-only ranker: ``order(request) -> titles``."""

    capabilities = frozenset({"generate"})

    def __init__(self, order: Callable[[RecRequest], list[str]]) -> None:
        super().__init__()
        self.order = order

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [self.order(r)[:k] for r in reqs]


def run(rec: Recommender, ds: Dataset, **cfg: object):
    ctx = ProbeContext(dataset=ds, users=ds.evaluable_users(), seed=0,
                       recorder=OutputRecorder("rec", "ranking"))
    config = RankingConfig(**{"candidates": 10, "k": 5, **cfg})
    result = CandidateRankingProbe(config).run(rec, ctx)
    assert result.status == "pass", result.reason
    return result, ctx


def title_hash(t: str) -> int:
    return zlib.crc32(t.encode())


def oracle_order(ds: Dataset) -> Callable[[RecRequest], list[str]]:
    """The held-out item first, the rest by a fixed title hash: independent of candidate order."""
    test_title = {u: ds.item_titles[s.test] for u, s in ds.sequences.items() if s.test}

    def order(req: RecRequest) -> list[str]:
        rest = sorted((c for c in req.candidates if c != test_title[req.user]), key=title_hash)
        return [test_title[req.user], *rest]

    return order


def test_order_following_ranker_shows_position_bias(tiny_dataset: Dataset) -> None:
    result, ctx = run(Ranker(lambda r: list(r.candidates)), tiny_dataset)
    m = result.metrics
    assert m["position_bias_hr@1_pos0"].value == 1.0
    assert m["position_bias_hr@1_pos9"].value == 0.0
    gap = m["position_bias_hr@1_gap"]
    assert gap.value == 1.0 and gap.ci[0] > 0
    assert m["out_of_candidate_rate"].value == 0.0
    conds = {rec["condition"] for rec in ctx.recorder.records}
    assert conds == {"candidates:random", "candidates:pos=0", "candidates:pos=5", "candidates:pos=9", "shuffled"}


def test_partly_position_biased_ranker_has_gap_ci_above_zero(tiny_dataset: Dataset) -> None:
    """Half the time it copies the given order, else it ranks by a fixed hash."""
    def order(req: RecRequest) -> list[str]:
        if title_hash(req.user or "") % 2:
            return list(req.candidates)
        return sorted(req.candidates, key=title_hash)

    result, _ = run(Ranker(order), tiny_dataset, positions=["first", "last"])
    gap = result.metrics["position_bias_hr@1_gap"]
    assert 0.2 < gap.value < 0.8
    assert gap.ci[0] > 0


def test_fair_oracle_ranker_shows_no_position_bias(tiny_dataset: Dataset) -> None:
    result, _ = run(Ranker(oracle_order(tiny_dataset)), tiny_dataset, positions="all")
    m = result.metrics
    gap = m["position_bias_hr@1_gap"]
    assert gap.ci[0] <= 0 <= gap.ci[1]
    assert all(m[f"position_bias_hr@1_pos{p}"].value == 1.0 for p in range(10))
    assert m["hr@5"].value == 1.0 and m["ndcg@5"].value == 1.0
    assert m["history_order_sensitivity"].value == 0.0
    assert len(result.details["position_series"]) == 10


def test_fair_hash_ranker_gap_ci_contains_zero(tiny_dataset: Dataset) -> None:
    """Not an oracle (HR@1 well below 1) and blind to order: no position bias flagged."""
    result, _ = run(Ranker(lambda r: sorted(r.candidates, key=title_hash)), tiny_dataset,
                    positions=["first", "last"])
    gap = result.metrics["position_bias_hr@1_gap"]
    assert gap.value == 0.0
    assert gap.ci[0] <= 0 <= gap.ci[1]


def test_out_of_candidate_slots_are_counted(tiny_dataset: Dataset) -> None:
    """Two of five slots name items that are not candidates (one invented, one real but absent)."""
    def order(req: RecRequest) -> list[str]:
        outside = next(t for t in tiny_dataset.item_titles.values() if t not in req.candidates)
        return [req.candidates[0], "Completely Invented Film (2031)", req.candidates[1], outside,
                req.candidates[2]]

    result, _ = run(Ranker(order), tiny_dataset)
    m = result.metrics
    assert m["out_of_candidate_rate"].value == pytest.approx(0.4)
    assert m["out_of_candidate_rate"].ci == (pytest.approx(0.4), pytest.approx(0.4))
    assert m["compliance_rate"].value == 1.0


def test_read_ranking_matches_forms_and_skips_repeats() -> None:
    cands = ["Godfather, The (1972)", "Heat (1995)", "Fargo (1996)"]
    read = read_ranking(["the godfather", "HEAT", "heat (1995)", "Nope Movie"], 4, cands, 90)
    assert read.ranked == [0, 1]
    assert read.out_of_candidate == 1 and read.slots == 4 and read.compliant


def test_a_real_non_candidate_close_to_a_candidate_is_out_of_candidates() -> None:
    from audit.catalog import Catalog

    catalog = Catalog({"1": "Film Number 1 (1991)", "10": "Film Number 10 (1990)"})
    read = read_ranking(["Film Number 1 (1991)", "Film Number 10"], 2, ["Film Number 10 (1990)"], 90, catalog)
    assert read.ranked == [0] and read.out_of_candidate == 1


def test_popularity_biased_ranker_places_popular_items_first(tiny_dataset: Dataset) -> None:
    pop = tiny_dataset.item_popularity
    pop_of_title = {t: pop[i] for i, t in tiny_dataset.item_titles.items()}
    popular = Ranker(lambda r: sorted(r.candidates, key=lambda t: (-pop_of_title[t], t)))
    result, _ = run(popular, tiny_dataset)
    m = result.metrics
    assert m["popularity_mean_rank1"].value > m["candidate_popularity_mean"].value
    assert m["popularity_mean_rank1"].ci[0] > m["candidate_popularity_mean"].ci[1]
    assert m["popularity_mean_rank1"].value >= m["popularity_mean_rank5"].value
    assert m["avg_rec_popularity"].value > m["candidate_popularity_mean"].value
    assert m["popularity_lift"].ci[0] > 0
    # a per-user random order: no preference for any item, popular or not
    fair, _ = run(Ranker(lambda r: sorted(r.candidates, key=lambda t: title_hash(f"{r.user}|{t}"))), tiny_dataset)
    lo, hi = fair.metrics["popularity_lift"].ci
    assert lo <= 0 <= hi


def test_history_order_sensitivity(tiny_dataset: Dataset) -> None:
    """A ranker keyed on the most recent history item reacts to shuffling; a set-based one does not."""
    recency = Ranker(lambda r: sorted(r.candidates, key=lambda t: title_hash(r.history[-1] + t)))
    result, _ = run(recency, tiny_dataset)
    s = result.metrics["history_order_sensitivity"]
    assert s.value > 0.2 and s.ci[0] > 0
    blind = Ranker(lambda r: sorted(r.candidates, key=lambda t: title_hash("".join(sorted(r.history)) + t)))
    result, _ = run(blind, tiny_dataset)
    assert result.metrics["history_order_sensitivity"].value == 0.0


def test_score_ranking_reported_when_available(tiny_dataset: Dataset) -> None:
    test_title = {u: tiny_dataset.item_titles[s.test] for u, s in tiny_dataset.sequences.items() if s.test}

    class Both(Ranker):
        capabilities = frozenset({"generate", "score"})

        def score(self, reqs, items):
            return [np.array([1.0 if t == test_title[r.user] else 0.0 for t in its]) for r, its in zip(reqs, items)]

    result, _ = run(Both(lambda r: list(r.candidates)), tiny_dataset)
    assert result.metrics["score_hr@5"].value == 1.0
    assert result.metrics["score_ndcg@5"].value == 1.0


def test_config_is_validated() -> None:
    from audit.config import validate_config

    with pytest.raises(ConfigError, match="positions"):
        validate_config(RankingConfig, {"candidates": 5, "positions": [7]}, "probes.ranking")
    with pytest.raises(ConfigError, match="k"):
        validate_config(RankingConfig, {"candidates": 5, "k": 6}, "probes.ranking")
    cfg = validate_config(RankingConfig, {"candidates": 20, "positions": ["first", "mid", "last", 0]}, "x")
    assert cfg.resolved_positions() == [0, 10, 19]


def test_too_many_candidates_is_a_config_error(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="candidates"):
        run(Ranker(lambda r: list(r.candidates)), tiny_dataset, candidates=25)


def test_out_of_candidate_slots_count_as_misses(tiny_dataset: Dataset) -> None:
    """An invented title in the first slot, then the held-out item: the held-out item ranks 2,
    not 1 (the old reading skipped the invented slot and gave HR@1 = NDCG = 1)."""
    oracle = oracle_order(tiny_dataset)
    result, _ = run(Ranker(lambda req: ["Completely Invented Film (2031)", *oracle(req)]), tiny_dataset)
    m = result.metrics
    assert m["hr@5"].value == 1.0
    assert m["ndcg@5"].value == pytest.approx(1 / np.log2(3))
    assert m["position_bias_hr@1_pos0"].value == 0.0
    assert result.undeclared() == [] and m["hr@5"].spec.chance == pytest.approx(0.5)


def test_a_candidate_with_another_year_or_sequel_number_is_out_of_candidates() -> None:
    cands = ["Heat (1995)", "Toy Story (1995)", "Godfather: Part II, The (1974)"]
    read = read_ranking(["Heat (2022)", "Toy Story 4", "The Godfather Part IV", "1996"], 4, cands, 90)
    assert read.out_of_candidate == 4 and read.ranked == [] and not read.compliant
    assert read_ranking(["Heat (1996)", "toy story", "Godfather Part II"], 3, cands, 90).ranked == [0, 1, 2]
