"""audit.metrics: HR/NDCG/MRR under the random-tie rule equal their expectation over every tie
order, each order scored by an independent implementation (trec_eval through pytrec_eval), and
a constant scorer gets exactly the chance level."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audit.metrics import (chance_hit, chance_ndcg, chance_reciprocal_rank, hit_at_k, ndcg_at_k, reciprocal_rank,
                           target_rank)

pytrec_eval = pytest.importorskip("pytrec_eval")
K = (1, 3, 5)


def trec_metrics(scores: np.ndarray) -> dict[str, float]:
    """trec_eval's P@k * k (= the hit with one relevant item), ndcg_cut_k and recip_rank of
    candidate 0 among ``scores`` (all distinct)."""
    qrel = {"q": {"d0": 1}}
    run = {"q": {f"d{i}": float(s) for i, s in enumerate(scores)}}
    ev = pytrec_eval.RelevanceEvaluator(qrel, {"recip_rank", *(f"P.{k}" for k in K), *(f"ndcg_cut.{k}" for k in K)})
    out = ev.evaluate(run)["q"]
    return {"mrr": out["recip_rank"], **{f"hr@{k}": out[f"P_{k}"] * k for k in K},
            **{f"ndcg@{k}": out[f"ndcg_cut_{k}"] for k in K}}


def over_tie_orders(scores: np.ndarray) -> dict[str, float]:
    """Mean of :func:`trec_metrics` over every order of the candidates tied with the target."""
    tied = [i for i in range(len(scores)) if scores[i] == scores[0]]
    totals: dict[str, float] = {}
    orders = list(itertools.permutations(range(len(tied))))
    for order in orders:
        s = scores.astype(float).copy()
        for i, o in zip(tied, order):
            s[i] = scores[0] + 1e-6 * o  # distinct, still below every higher score and above every lower one
        for name, v in trec_metrics(s).items():
            totals[name] = totals.get(name, 0.0) + v
    return {name: v / len(orders) for name, v in totals.items()}


def ours(scores: np.ndarray) -> dict[str, float]:
    first, tied = target_rank(scores, 0)
    return {"mrr": float(reciprocal_rank(first, tied)), **{f"hr@{k}": float(hit_at_k(first, k, tied)) for k in K},
            **{f"ndcg@{k}": float(ndcg_at_k(first, k, tied)) for k in K}}


CASES = [np.array(c, float) for c in (
    [3, 1, 2, 0, 5],                 # no ties: rank 3
    [1, 1, 1, 1, 1, 1],              # constant scorer
    [2, 3, 2, 2, 1, 0, 2, 5],        # two above, three tied others
    [0, 0, 4, 0, 4, 4, 4, 4, 0],     # five above, three tied: straddles k = 5
    [7, 7, 1, 1, 1],                 # one tied, both above everything
)]


@pytest.mark.parametrize("scores", CASES, ids=[str(i) for i in range(len(CASES))])
def test_tie_rule_equals_trec_eval_averaged_over_every_tie_order(scores: np.ndarray) -> None:
    expected = over_tie_orders(scores)
    got = ours(scores)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_random_scores_without_ties_match_trec_eval_exactly() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        s = rng.random(12)
        assert ours(s) == pytest.approx(trec_metrics(s), abs=1e-9)


@pytest.mark.parametrize("n", [2, 10, 100])
def test_a_constant_scorer_gets_exactly_the_chance_level(n: int) -> None:
    first, tied = target_rank(np.zeros(n), 0)
    for k in (1, 5, 10):
        assert float(hit_at_k(first, k, tied)) == pytest.approx(chance_hit(k, n))
        assert float(ndcg_at_k(first, k, tied)) == pytest.approx(chance_ndcg(k, n))
        # chance NDCG = mean over a uniform rank of the exact NDCG
        assert chance_ndcg(k, n) == pytest.approx(np.mean(ndcg_at_k(np.arange(1, n + 1), k)))
    assert float(reciprocal_rank(first, tied)) == pytest.approx(chance_reciprocal_rank(n))
    assert chance_reciprocal_rank(n) == pytest.approx(np.mean(1 / np.arange(1, n + 1)))


def test_pessimistic_rule_would_fail_the_chance_check() -> None:
    """The old rule (ties against the target) put a constant scorer at rank n: HR@10 = 0 among 100."""
    first, tied = target_rank(np.zeros(100), 0)
    assert float(hit_at_k(first + tied, 10)) == 0.0 != chance_hit(10, 100) == float(hit_at_k(first, 10, tied))
