"""Utility probe: leave-one-out ranking of the held-out item among sampled negatives.

For each audited user the held-out (test) item is ranked among ``negatives``
items the user never interacted with (seeded per user; ``sampling``: uniform, or in proportion
to training popularity). Recommenders
with ``score`` are ranked by their scores; generate-only recommenders rank the
candidates through ``generate``: each returned slot is matched to the candidates with
:class:`audit.catalog.Catalog` (exact, then fuzzy, never across a year more than one off,
a sequel number or a subtitle), and the held-out item's rank is the slot that names it; a
slot naming a same-title remake of another year, or a title without a year that a remake
among the candidates shares, is not the held-out item; candidates the list does not name are
tied with each other after its last slot. A popularity ranking (training interaction counts)
of the same candidates is reported beside it as ``popularity_*``.

Ties follow the one rule of :mod:`audit.metrics` for the model and the popularity baseline
alike: tied candidates are placed in a uniformly random order and every metric is its
expectation over that order, so a constant scorer gets exactly the declared chance level.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from audit.catalog import Catalog
from audit.interface import RecRequest, Recommender
from audit.metrics import (TargetRank, chance_hit, chance_ndcg, chance_reciprocal_rank, hit_at_k, ndcg_at_k,
                           reciprocal_rank, target_rank)
from audit.parsing import title_year
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult
from audit.stats import mean_metric

#: declared meanings; ``@K`` = a configured cut-off. Chance (a random ranking of the held-out item
#: among ``negatives + 1`` candidates, which a constant scorer gets exactly under the tie rule) is
#: filled in per run: HR@K = K / (negatives + 1), NDCG@K and MRR their random-order expectations.
METRIC_SPECS: dict[str, MetricSpec] = {
    "hr@K": MetricSpec("higher", unit="share of users", meaning="held-out item in the top K"),
    "ndcg@K": MetricSpec("higher", unit="NDCG", meaning="NDCG@K of the held-out item"),
    "mrr": MetricSpec("higher", unit="reciprocal rank", meaning="mean reciprocal rank of the held-out item"),
}


def utility_spec(name: str, negatives: int) -> MetricSpec:
    """The declared meaning of an emitted name; ``popularity_*`` baselines are undirected context."""
    base = name.removeprefix("popularity_")
    family, _, cut = base.partition("@")
    spec = METRIC_SPECS[f"{family}@K" if cut else family]
    n = negatives + 1
    if family == "hr":
        spec = spec.at(chance=chance_hit(int(cut), n))
    elif family == "ndcg":
        spec = spec.at(chance=chance_ndcg(int(cut), n))
    elif family == "mrr":
        spec = spec.at(chance=chance_reciprocal_rank(n))
    if base != name:
        spec = spec.at(direction=None, meaning="popularity baseline: " + spec.meaning)
    return spec


def generated_rank(items: list[str], candidates: tuple[str, ...] | list[str], threshold: float = 90.0) -> TargetRank:
    """Placement of the held-out item ``candidates[0]`` by a returned list ``items``: the 1-based slot
    that names it unambiguously (no ties); else it is tied with every candidate no slot names, in
    the positions after the list's last slot (see the module docstring)."""
    cat = Catalog({str(i): t for i, t in enumerate(candidates)}, threshold=threshold)
    target_year = title_year(candidates[0])
    named: set[str] = set()
    for j, m in enumerate(cat.match_many([str(t) for t in items])):
        if m.matched and "0" in m.item_ids and all(title_year(candidates[int(i)]) == target_year
                                                   for i in m.item_ids):
            return TargetRank(j + 1, 0)
        if m.matched and len(m.item_ids) == 1:
            named.update(m.item_ids)
    named.discard("0")
    return TargetRank(len(items) + 1, len(candidates) - 1 - len(named))


def expected_positions(ranks: np.ndarray, n_candidates: int) -> np.ndarray:
    """Expected ranks (first + tied / 2) of ``(first, tied)`` rows, rounded down into 1..n_candidates
    (for the rank histogram)."""
    expected = ranks[:, 0] + ranks[:, 1] / 2
    return np.clip(np.floor(expected), 1, n_candidates).astype(int)


class UtilityConfig(ProbeConfig):
    """``k``: cut-offs for HR/NDCG (each 1..negatives+1); ``negatives``: sampled per user;
    ``sampling``: ``uniform`` (the usual protocol) or ``popularity`` (each unseen item with
    probability proportional to its training interactions + 1: popular negatives, so popularity
    alone no longer wins); ``batch_size``: requests per model call."""

    k: list[int] = [10]
    negatives: int = 99
    sampling: Literal["uniform", "popularity"] = "uniform"
    batch_size: int = 64


class UtilityProbe(Probe):
    name: ClassVar[str] = "utility"
    description: ClassVar[str] = ("HR@K, NDCG@K and MRR of the held-out item among sampled negatives, "
                                  "with a popularity baseline")
    requires: ClassVar[frozenset[str]] = frozenset()
    Config = UtilityConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = METRIC_SPECS

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """``hr@K`` and ``ndcg@K`` for every configured K, ``mrr``, and each with ``popularity_`` before it."""
        cfg: UtilityConfig = config  # type: ignore[assignment]
        own = [f"{family}@{k}" for k in cfg.k for family in ("hr", "ndcg")] + ["mrr"]
        return MetricNames(tuple(own + [f"popularity_{name}" for name in own]))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        cfg: UtilityConfig = self.config  # type: ignore[assignment]
        if not (rec.has("score") or rec.has("generate")):
            return ProbeResult.skipped(f"{rec.name} offers neither 'score' nor 'generate'")
        users = ctx.probe_users(cfg)
        if not users:
            return ProbeResult.skipped("no users with a held-out item to evaluate")
        ds = ctx.dataset
        titles = ds.item_titles
        cand_ids = [[ds.sequences[u].test, *ds.negatives(u, cfg.negatives, ctx.seed, cfg.sampling)] for u in users]
        model_ranks = np.empty((len(users), 2), dtype=int)  # (first position, tied others) per user
        for start in range(0, len(users), cfg.batch_size):
            chunk = range(start, min(start + cfg.batch_size, len(users)))
            reqs = [ctx.request(users[i], candidates=[titles[c] for c in cand_ids[i]]) for i in chunk]
            if rec.has("score"):
                ranks = self._ranks_by_score(rec, reqs, ctx, max(cfg.k))
            else:
                ranks = self._ranks_by_generation(rec, reqs, ctx)
            model_ranks[list(chunk)] = ranks
        pop = ds.item_popularity
        pop_ranks = np.array([target_rank(np.array([pop.get(c, 0) for c in cands], float)) for cands in cand_ids])
        metrics: dict[str, Metric] = {}
        seed = ctx.seed
        for prefix, ranks in (("", model_ranks), ("popularity_", pop_ranks)):
            for k in cfg.k:
                hits, gains = hit_at_k(ranks[:, 0], k, ranks[:, 1]), ndcg_at_k(ranks[:, 0], k, ranks[:, 1])
                metrics[f"{prefix}hr@{k}"] = mean_metric(hits, seed=seed).with_units(users, hits)
                metrics[f"{prefix}ndcg@{k}"] = mean_metric(gains, seed=seed).with_units(users, gains)
            rr = reciprocal_rank(ranks[:, 0], ranks[:, 1])
            metrics[f"{prefix}mrr"] = mean_metric(rr, seed=seed).with_units(users, rr)
        metrics = {name: m.declare(utility_spec(name, cfg.negatives)) for name, m in metrics.items()}
        details = {
            "protocol": f"leave-one-out, test item vs {cfg.negatives} unseen items sampled "
                        + ("uniformly" if cfg.sampling == "uniform" else "by training popularity (+1)"),
            "sampling": cfg.sampling,
            "ranking": "score" if rec.has("score") else "generate",
            "ties": "random order: tied candidates placed uniformly at random, metrics are expectations "
                    "(model and popularity baseline alike)",
            "tied_share": round(float(np.mean(model_ranks[:, 1] > 0)), 6),
            "rank_histogram": np.bincount(expected_positions(model_ranks, cfg.negatives + 1),
                                          minlength=cfg.negatives + 2)[1:].tolist(),
        }
        return ProbeResult(status="pass", metrics=metrics, details=details)

    @staticmethod
    def _ranks_by_score(rec: Recommender, reqs: list[RecRequest], ctx: ProbeContext, k: int) -> list[TargetRank]:
        scores = rec.score(reqs, [r.candidates for r in reqs])
        ranks = []
        for req, s in zip(reqs, scores):
            s = np.asarray(s, dtype=float)
            ranks.append(target_rank(s, 0))
            top = np.argsort(-s, kind="stable")[:k]
            ctx.recorder.record(user=req.user, condition="score", prompt="",
                                raw=" | ".join(f"{req.candidates[i]}\t{s[i]:.4f}" for i in top),
                                parsed=[req.candidates[i] for i in top], target=req.candidates[0])
        return ranks

    @staticmethod
    def _ranks_by_generation(rec: Recommender, reqs: list[RecRequest], ctx: ProbeContext) -> list[TargetRank]:
        gens = ctx.generate(rec, reqs, len(reqs[0].candidates), "rank")
        return [generated_rank(list(gen.items), req.candidates) for req, gen in zip(reqs, gens)]
