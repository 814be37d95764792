"""Candidate-ranking probe (Hou et al., "LLMs are Zero-Shot Rankers", ECIR 2024).

Each audited user's history (train + validation items) comes with ``candidates``
items to rank: the held-out test item and ``candidates - 1`` uniformly sampled items
the user never interacted with. The recommender returns its top ``k`` through
``generate``; every slot is matched (exact, then rapidfuzz fuzzy at ``fuzzy_threshold``)
to the candidate list. Conditions (each recorded in ``outputs.jsonl``):

- ``candidates:random``: the held-out item at a seeded random position — the base
  ranking behind ``hr@K``, ``ndcg@K``, ``compliance_rate`` and the popularity figures;
- ``candidates:pos=P``: the held-out item placed at position ``P`` (0-based) for every
  ``P`` in ``positions`` (default: first, middle, last) -> ``position_bias_hr@1_posP``
  and ``position_bias_hr@1_gap`` = HR@1 at the first listed position minus the last;
- ``shuffled``: the base candidates with the history in a seeded random order ->
  ``history_order_sensitivity`` = 1 - Jaccard of the two top-K sets (0 = order-blind).

A rank is the held-out item's *slot* in the answer (first occurrence): slots that name no
candidate (invented titles, real films outside the list, another year or sequel of a
candidate — the year/sequel/subtitle rule of :mod:`audit.catalog`) and repeated slots still
take their place, so answering outside the candidates costs HR@1 and NDCG like any miss; an
absent held-out item ranks ``candidates``. ``compliance_rate`` needs exactly ``k`` slots that
each name a title (not a bare number). ``out_of_candidate_rate`` is the share of slots,
pooled over all conditions, that match no candidate. Popularity is the item's number of
training interactions: ``popularity_mean_rankR`` (the item placed at output rank R),
``avg_rec_popularity`` (all matched top-K slots) beside ``candidate_popularity_mean``, and
``popularity_lift``: per user, mean popularity of the ranked top K minus that of all its
candidates (> 0: popular items are pushed up; 0 for a popularity-blind ranker, in expectation).
When the recommender offers ``score``, ``score_hr@K``/``score_ndcg@K`` rank the base
candidates by score. Every figure is a mean over users with a 95% bootstrap CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from audit.catalog import DEFAULT_THRESHOLD, Catalog
from audit.errors import ConfigError
from audit.interface import RecRequest, Recommender
from audit.metrics import TargetRank, hit_at_k, ndcg_at_k, target_rank
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.probes.hallucination import ratio_metric
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult
from audit.stats import mean_metric, paired_bootstrap

PositionName = Literal["first", "mid", "last"]

_POP = "training interactions per item"
#: the declared meaning of each metric family (``@K`` = the configured k, ``P``/``R`` = position/rank)
METRIC_SPECS: dict[str, MetricSpec] = {
    "out_of_candidate_rate": MetricSpec("lower", unit="share of slots", meaning="slots naming no candidate"),
    "compliance_rate": MetricSpec("higher", unit="share of users", meaning="answers of exactly k titled slots"),
    "hr@K": MetricSpec("higher", unit="share of users", meaning="held-out item within the first k slots"),
    "ndcg@K": MetricSpec("higher", unit="NDCG", meaning="NDCG of the held-out item's slot"),
    "position_bias_hr@1_posP": MetricSpec(None, unit="share of users",
                                          meaning="HR@1 with the held-out item at candidate position P"),
    "position_bias_hr@1_gap": MetricSpec("lower", range=(-1.0, 1.0), chance=0.0, unit="difference of shares",
                                         meaning="HR@1 at the first tested position minus the last"),
    "popularity_mean_rankR": MetricSpec(None, range=(0.0, None), unit=_POP,
                                        meaning="mean popularity of the item at output rank R"),
    "avg_rec_popularity": MetricSpec(None, range=(0.0, None), unit=_POP, meaning="mean popularity of ranked items"),
    "candidate_popularity_mean": MetricSpec(None, range=(0.0, None), unit=_POP,
                                            meaning="mean popularity of the candidates (baseline)"),
    "popularity_lift": MetricSpec("lower", range=(None, None), chance=0.0, unit=_POP,
                                  meaning="popularity of the ranked top k minus the candidates' mean"),
    "history_order_sensitivity": MetricSpec("lower", chance=0.0, unit="1 - Jaccard",
                                            meaning="top-k change when the history is shuffled"),
    "score_hr@K": MetricSpec("higher", unit="share of users", meaning="HR@k when ranking by score"),
    "score_ndcg@K": MetricSpec("higher", unit="NDCG", meaning="NDCG@k when ranking by score"),
}


def metric_spec(name: str, k: int, candidates: int) -> MetricSpec:
    """The declared meaning of an emitted metric name (chance: a uniform random ranking)."""
    family = re.sub(r"_pos\d+$", "_posP", re.sub(r"_rank\d+$", "_rankR", name.replace(f"@{k}", "@K")))
    spec = METRIC_SPECS[family]
    if family in ("hr@K", "score_hr@K"):
        return spec.at(chance=k / candidates)
    if family == "position_bias_hr@1_posP":
        return spec.at(chance=1 / candidates)
    return spec


class RankingConfig(ProbeConfig):
    """``candidates``: items per ranking (2..1000, the held-out one included); ``k``: length of
    the asked ranking (1..candidates); ``positions``: where the held-out item is placed for
    the position-bias test (0-based ints or ``first``/``mid``/``last``), or ``all``;
    ``shuffle_history``: also rank with the history shuffled; ``fuzzy_threshold``: rapidfuzz
    similarity (0..100) for a slot to count as a candidate; ``batch_size``: users per model call."""

    candidates: int = Field(20, ge=2, le=1000)
    k: int = Field(10, ge=1)
    positions: Union[list[Union[int, PositionName]], Literal["all"]] = [0, "mid", "last"]
    shuffle_history: bool = True
    fuzzy_threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=100)
    batch_size: int = Field(16, ge=1)

    @field_validator("positions")
    @classmethod
    def _non_empty(cls, v: object) -> object:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one position, or 'all'")
        return v

    @model_validator(mode="after")
    def _check_ranges(self) -> "RankingConfig":
        if self.k > self.candidates:
            raise ValueError(f"k ({self.k}) must not exceed candidates ({self.candidates})")
        if isinstance(self.positions, list):
            bad = [p for p in self.positions if isinstance(p, int) and not 0 <= p < self.candidates]
            if bad:
                raise ValueError(f"positions {bad} outside 0..{self.candidates - 1}")
        return self

    def resolved_positions(self) -> list[int]:
        """The 0-based positions, in order, without repeats."""
        c = self.candidates
        if self.positions == "all":
            return list(range(c))
        named = {"first": 0, "mid": c // 2, "last": c - 1}
        return list(dict.fromkeys(named[p] if isinstance(p, str) else int(p) for p in self.positions))


@dataclass
class RankedList:
    """One generation read against its candidate list."""

    ranked: list[int]  # candidate indices, matched slots in output order, first occurrence
    slots: int
    out_of_candidate: int
    compliant: bool
    slot_candidates: list[int | None] = field(default_factory=list)  # per slot: candidate index or None

    def rank_of(self, index: int, absent: int) -> int:
        """1-based slot of candidate ``index`` (first occurrence), ``absent`` when not named."""
        return self.slot_candidates.index(index) + 1 if index in self.slot_candidates else absent


def read_ranking(items: Sequence[str], k: int, candidates: Sequence[str], threshold: float,
                 catalog: Catalog | None = None) -> RankedList:
    """Match the first ``k`` returned titles to ``candidates`` (indices into it).

    A slot that is only a fuzzy match to a candidate but names another ``catalog`` item
    exactly ("Film 1" when "Film 10" is the candidate) is out of the candidates."""
    slots = [str(t) for t in list(items)[:k]]
    cat = Catalog({str(i): t for i, t in enumerate(candidates)}, threshold=threshold)
    ranked: list[int] = []
    per_slot: list[int | None] = []
    outside = 0
    for m in cat.match_many(slots):
        if not m.matched or (m.kind == "fuzzy" and catalog is not None and m.query in catalog):
            outside += 1
            per_slot.append(None)
            continue
        idx = int(m.item_id)  # type: ignore[arg-type]
        per_slot.append(idx)
        if idx not in ranked:
            ranked.append(idx)
    compliant = len(items) == k and all(isinstance(t, str) and cat.names_a_title(t.strip()) for t in items)
    return RankedList(ranked, len(slots), outside, compliant, per_slot)


def place(negatives: Sequence[str], target: str, position: int) -> list[str]:
    """Candidate ids with ``target`` inserted at ``position`` (0-based) among ``negatives``."""
    out = list(negatives)
    out.insert(position, target)
    return out


class CandidateRankingProbe(Probe):
    name: ClassVar[str] = "ranking"
    description: ClassVar[str] = ("candidate ranking: out-of-candidate rate, HR/NDCG, and position, popularity "
                                  "and history-order bias (Hou et al.)")
    requires: ClassVar[frozenset[str]] = frozenset({"generate"})
    headline: ClassVar[str] = "out_of_candidate_rate"
    Config = RankingConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = METRIC_SPECS

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """The names of the module doc at the configured k, positions and shuffle; ``score_hr@K`` and
        ``score_ndcg@K`` only for a recommender that offers ``score`` (listed: the union)."""
        cfg: RankingConfig = config  # type: ignore[assignment]
        k, positions = cfg.k, cfg.resolved_positions()
        names = ["out_of_candidate_rate", "compliance_rate", f"hr@{k}", f"ndcg@{k}"]
        names += [f"position_bias_hr@1_pos{p}" for p in positions]
        names += ["position_bias_hr@1_gap"] if len(positions) >= 2 else []
        names += [f"popularity_mean_rank{r}" for r in range(1, k + 1)]
        names += ["avg_rec_popularity", "candidate_popularity_mean", "popularity_lift"]
        names += ["history_order_sensitivity"] if cfg.shuffle_history else []
        return MetricNames(tuple(names + [f"score_hr@{k}", f"score_ndcg@{k}"]))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        cfg: RankingConfig = self.config  # type: ignore[assignment]
        users = ctx.probe_users(cfg)
        if not users:
            return ProbeResult.skipped("no users with a held-out item to evaluate")
        ds = ctx.dataset
        titles = ds.item_titles
        catalog = Catalog(titles, threshold=cfg.fuzzy_threshold)
        positions = cfg.resolved_positions()
        rng = np.random.default_rng([ctx.seed, cfg.seed, 7])
        plan = []  # per user: (target id, negative ids, base position, shuffled history)
        for u in users:
            seq = ds.sequences[u]
            try:
                negs = ds.negatives(u, cfg.candidates - 1, ctx.seed)
            except ValueError as exc:
                raise ConfigError(f"ranking probe: candidates={cfg.candidates} is too many for data set "
                                  f"{ds.name!r} ({exc}); lower 'candidates'") from None
            hist = list(seq.test_history)
            shuffled = [hist[i] for i in rng.permutation(len(hist))]
            if len(hist) >= 2 and shuffled == hist:
                shuffled = hist[::-1]
            plan.append((seq.test, negs, int(rng.integers(cfg.candidates)), shuffled, u))

        base: list[RankedList] = []
        base_cands: list[list[str]] = []
        by_pos: dict[int, list[RankedList]] = {p: [] for p in positions}
        shuffled_lists: list[RankedList | None] = []
        score_ranks: list[TargetRank] = []
        for start in range(0, len(users), cfg.batch_size):
            chunk = list(range(start, min(start + cfg.batch_size, len(users))))
            reqs: list[RecRequest] = []
            conds: list[str] = []
            cand_lists: list[list[str]] = []
            for i in chunk:
                target, negs, p0, shuf, _user = plan[i]
                cands = place(negs, target, p0)
                variants = [("candidates:random", cands, None)]
                variants += [(f"candidates:pos={p}", place(negs, target, p), None) for p in positions]
                if cfg.shuffle_history:
                    variants.append(("shuffled", cands, shuf))
                for cond, cs, hist in variants:
                    req = ctx.request(users[i], candidates=[titles[c] for c in cs])
                    if hist is not None:
                        req = RecRequest(history=ctx.titles(hist), profile=req.profile,
                                         candidates=req.candidates, user=req.user)
                    reqs.append(req)
                    conds.append(cond)
                    cand_lists.append(cs)
            gens = ctx.generate(rec, reqs, cfg.k, conds)
            for req, gen, cond, cs in zip(reqs, gens, conds, cand_lists):
                read = read_ranking(gen.items, cfg.k, req.candidates, cfg.fuzzy_threshold, catalog)
                if cond == "candidates:random":
                    base.append(read)
                    base_cands.append(cs)
                elif cond == "shuffled":
                    shuffled_lists.append(read)
                else:
                    by_pos[int(cond.split("=")[1])].append(read)
            if rec.has("score"):
                base_reqs = [r for r, c in zip(reqs, conds) if c == "candidates:random"]
                scores = rec.score(base_reqs, [r.candidates for r in base_reqs])
                for i, s in zip(chunk, scores):
                    score_ranks.append(target_rank(np.asarray(s, dtype=float), plan[i][2]))
        if not cfg.shuffle_history:
            shuffled_lists = [None] * len(base)
        return self._result(cfg, ctx.seed, plan, base, base_cands, by_pos, shuffled_lists, score_ranks,
                            ds.item_popularity)

    @staticmethod
    def _result(cfg: RankingConfig, seed: int, plan: list, base: list[RankedList],
                base_cands: list[list[str]], by_pos: dict[int, list[RankedList]],
                shuffled: list[RankedList | None], score_ranks: list[TargetRank],
                popularity: dict[str, int]) -> ProbeResult:
        k, c = cfg.k, cfg.candidates
        metrics: dict[str, Metric] = {}

        def target_rank(read: RankedList, target_index: int) -> int:
            return read.rank_of(target_index, c)

        # out-of-candidate share, pooled over every condition per user
        all_reads = [[base[i], *(by_pos[p][i] for p in by_pos), *([shuffled[i]] if shuffled[i] else [])]
                     for i in range(len(base))]
        outside = np.array([sum(r.out_of_candidate for r in rs) for rs in all_reads], dtype=float)
        slots = np.array([sum(r.slots for r in rs) for rs in all_reads], dtype=float)
        metrics["out_of_candidate_rate"] = ratio_metric(outside, slots, seed=seed)
        metrics["compliance_rate"] = mean_metric([float(r.compliant) for r in base], seed=seed)

        ranks = np.array([target_rank(r, plan[i][2]) for i, r in enumerate(base)])
        users = [str(p[4]) for p in plan]
        metrics[f"hr@{k}"] = mean_metric(hit_at_k(ranks, k), seed=seed).with_units(users, hit_at_k(ranks, k))
        metrics[f"ndcg@{k}"] = mean_metric(ndcg_at_k(ranks, k), seed=seed).with_units(users, ndcg_at_k(ranks, k))

        # position bias: HR@1 with the held-out item at each tested position
        pos_hr1: dict[int, np.ndarray] = {}
        pos_series = []
        for p, reads in by_pos.items():
            r = np.array([target_rank(x, p) for x in reads])
            pos_hr1[p] = hit_at_k(r, 1)
            metrics[f"position_bias_hr@1_pos{p}"] = mean_metric(pos_hr1[p], seed=seed)
            pos_series.append({"position": p, "hr@1": float(pos_hr1[p].mean()),
                               f"hr@{k}": float(hit_at_k(r, k).mean()),
                               f"ndcg@{k}": float(ndcg_at_k(r, k).mean())})
        ps = list(by_pos)
        if len(ps) >= 2:
            rows = np.stack([pos_hr1[ps[0]], pos_hr1[ps[-1]]], axis=1)
            gap = float(rows[:, 0].mean() - rows[:, 1].mean())
            ci = paired_bootstrap(rows, lambda x: float(x[:, 0].mean() - x[:, 1].mean()), seed=seed)
            metrics["position_bias_hr@1_gap"] = Metric(value=gap, n=int(rows.shape[0]), ci=ci)

        # popularity of what is placed at each output rank (base condition)
        by_rank: list[list[float]] = [[] for _ in range(k)]
        rec_pop_sum = np.zeros(len(base))
        rec_pop_n = np.zeros(len(base))
        for i, (read, cands) in enumerate(zip(base, base_cands)):
            for r, idx in enumerate(read.ranked[:k]):
                pop = float(popularity.get(cands[idx], 0))
                by_rank[r].append(pop)
                rec_pop_sum[i] += pop
                rec_pop_n[i] += 1
        for r in range(k):
            metrics[f"popularity_mean_rank{r + 1}"] = mean_metric(by_rank[r], seed=seed)
        metrics["avg_rec_popularity"] = ratio_metric(rec_pop_sum, rec_pop_n, seed=seed, proportion=False)
        cand_pop = np.array([float(np.mean([popularity.get(x, 0) for x in cands])) for cands in base_cands])
        metrics["candidate_popularity_mean"] = mean_metric(cand_pop, seed=seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            lift = np.where(rec_pop_n > 0, rec_pop_sum / np.maximum(rec_pop_n, 1) - cand_pop, np.nan)
        metrics["popularity_lift"] = mean_metric(lift, seed=seed)

        # history-order sensitivity: 1 - Jaccard of the top-K sets, original vs shuffled history
        details_hist: dict[str, object] = {"shuffled": cfg.shuffle_history}
        if cfg.shuffle_history:
            dist = []
            shuf_ranks = []
            for i, (a, b) in enumerate(zip(base, shuffled)):
                assert b is not None
                sa, sb = set(a.ranked[:k]), set(b.ranked[:k])
                dist.append(1.0 - len(sa & sb) / len(sa | sb) if (sa | sb) else float("nan"))
                shuf_ranks.append(target_rank(b, plan[i][2]))
            metrics["history_order_sensitivity"] = mean_metric(dist, seed=seed)
            details_hist[f"hr@{k}_shuffled"] = float(hit_at_k(np.array(shuf_ranks), k).mean())
        if score_ranks:
            sr = np.array(score_ranks)
            metrics[f"score_hr@{k}"] = mean_metric(hit_at_k(sr[:, 0], k, sr[:, 1]), seed=seed)
            metrics[f"score_ndcg@{k}"] = mean_metric(ndcg_at_k(sr[:, 0], k, sr[:, 1]), seed=seed)

        details = {
            "k": k, "candidates": c, "users": len(base),
            "protocol": (f"held-out item among {c - 1} uniformly sampled unseen items; rank = its slot in the "
                         f"answer (out-of-candidate and repeated slots count as misses); absent -> rank {c}"),
            "popularity_unit": "training interactions per item",
            "position_series": pos_series,
            "popularity_by_rank": [{"rank": r + 1, "mean": float(np.mean(v)) if v else None, "n": len(v)}
                                   for r, v in enumerate(by_rank)],
            "rank_histogram": np.bincount(ranks, minlength=c + 1)[1:].tolist(),
            "history_order": details_hist,
        }
        metrics = {name: m.declare(metric_spec(name, k, c)) for name, m in metrics.items()}
        return ProbeResult(status="pass", metrics=metrics, details=details)
