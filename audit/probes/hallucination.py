"""Open-generation probe: does the recommender name real, new, distinct catalog items?

Each audited user's history (train + validation items) is sent for open generation
of ``k`` items (condition ``open``). Every returned slot (the first ``k``) is matched
to the catalog with :class:`audit.catalog.Catalog`: exact after normalisation, then
fuzzy (rapidfuzz ``token_sort_ratio`` >= ``fuzzy_threshold``, default 90), never across
a different year (more than one year off, unless the catalog has that year), sequel
number or subtitle — see :mod:`audit.catalog` for the whole rule. So "Toy Story 4 (2019)"
is not Toy Story (1995) and "The Godfather Part IV" is not Part II: both are hallucinated,
while "Godfather, The", "the godfather" or "The Godfather (1972)" are the catalog's film.

Reported, each with a 95% CI (Wilson for shares of users; for shares of slots pooled over
users, the user bootstrap, or the Wilson interval over users when the share is 0 or 1):

- ``compliance_rate``: share of users whose answer parsed to exactly ``k`` slots, each naming
  a title (a slot without a letter, such as "1996" in "1. 1996", names no title unless the
  catalog has a film of that name);
- ``hallucination_rate``: share of the *returned* slots matching no catalog item (before any
  grounding); users who returned nothing have no returned slot and are not in its n;
- ``hallucination_rate_of_k``: share of the ``k`` *requested* slots of every user that are not
  a catalog item, a missing slot counting as not one; every audited user is in its n, so
  answering fewer items never lowers it;
- ``empty_answer_rate``: share of users whose answer parsed to no item at all;
- ``fuzzy_match_rate``: share of slots matched only fuzzily;
- ``duplicate_rate``: share of slots repeating an earlier slot of the same list;
- ``consumed_rate``: share of slots naming an item already in the user's history;
- ``grounded_hr@K`` / ``grounded_ndcg@K``: the held-out test item in the list after mapping
  every slot to its nearest catalog item (BIGRec's grounding step);
- ``grounding_distance_mean``: mean string distance (``1 - score/100``, 0..1) from each slot
  to its nearest catalog title — a continuous hallucination signal. Its histogram is in
  ``details["grounding_distance_histogram"]``.

Slot shares are ratios of totals (slots pooled over users); their CIs resample users.
With ``embed_grounding: true`` unmatched slots are grounded by embedding distance
(the recommender's ``embed``, or ``embedding_model``: a local encoder directory) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np
from pydantic import Field

from audit.catalog import DEFAULT_THRESHOLD, Catalog, Match
from audit.decoding.embedding import EmbeddingIndex, local_encoder, recommender_encoder
from audit.interface import Recommender
from audit.metrics import hit_at_k, ndcg_at_k
from audit.parsing import normalize_title
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult
from audit.stats import mean_metric, paired_bootstrap, ratio_ci

#: the declared meaning of every metric this probe emits (``@K`` = the configured k)
METRIC_SPECS: dict[str, MetricSpec] = {
    "compliance_rate": MetricSpec("higher", unit="share of users",
                                  meaning="answers with exactly k slots, each naming a title"),
    "hallucination_rate": MetricSpec("lower", unit="share of returned slots",
                                     meaning="returned slots that name no catalog item"),
    "hallucination_rate_of_k": MetricSpec("lower", unit="share of requested slots",
                                          meaning="requested slots not filled with a catalog item"),
    "empty_answer_rate": MetricSpec("lower", unit="share of users", meaning="answers with no item"),
    "fuzzy_match_rate": MetricSpec(None, unit="share of returned slots",
                                   meaning="slots matched only fuzzily (context)"),
    "duplicate_rate": MetricSpec("lower", unit="share of returned slots",
                                 meaning="slots repeating an earlier slot of the same list"),
    "consumed_rate": MetricSpec("lower", unit="share of returned slots",
                                meaning="slots naming an item already in the user's history"),
    "grounded_hr@K": MetricSpec("higher", unit="share of users",
                                meaning="held-out item in the list after grounding every slot"),
    "grounded_ndcg@K": MetricSpec("higher", unit="NDCG",
                                  meaning="NDCG of the held-out item after grounding"),
    "grounding_distance_mean": MetricSpec("lower", unit="string distance (1 - similarity/100)",
                                          meaning="mean distance of a slot to its nearest catalog title"),
}

HISTOGRAM_BINS = 20
MAX_EXAMPLES = 20


class HallucinationConfig(ProbeConfig):
    """``k``: items asked per user (1..100); ``fuzzy_threshold``: rapidfuzz similarity (0..100)
    a slot needs to count as a catalog item; ``embed_grounding``: ground unmatched slots by
    embedding distance; ``embedding_model``: a local encoder directory used for that instead of
    the recommender's own ``embed``; ``batch_size``: requests per model call."""

    k: int = Field(10, ge=1, le=100)
    fuzzy_threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=100)
    embed_grounding: bool = False
    embedding_model: str | None = None
    batch_size: int = Field(32, ge=1)


@dataclass
class ListAnalysis:
    """Per-slot verdicts for one returned list (slots beyond ``k`` are ignored)."""

    n_returned: int
    compliant: bool
    missing: int  # requested slots not returned (k - returned slots)
    matches: list[Match]
    hallucinated: list[bool]
    fuzzy: list[bool]
    duplicate: list[bool]
    consumed: list[bool]
    grounded: list[str | None]  # nearest catalog item id per slot (None: nothing to ground)
    distances: list[float]
    target_rank: int  # 1-based rank of the target in the grounded list; k + 1 when absent
    hallucinated_titles: list[str] = field(default_factory=list)


def is_compliant(items: Sequence[str], k: int, catalog: Catalog) -> bool:
    """Exactly ``k`` slots, each naming a title (:meth:`Catalog.names_a_title`)."""
    return len(items) == k and all(catalog.names_a_title(t.strip()) for t in items if isinstance(t, str)) \
        and all(isinstance(t, str) for t in items)


def analyse_list(items: Sequence[str], k: int, catalog: Catalog, history_ids: set[str],
                 target_id: str | None, matches: Sequence[Match] | None = None,
                 grounded_override: dict[int, str] | None = None) -> ListAnalysis:
    """Match one list's slots to ``catalog`` and classify each (see the module docstring)."""
    slots = [str(t) for t in list(items)[:k]]
    compliant = is_compliant(items, k, catalog)
    ms = list(matches) if matches is not None else catalog.match_many(slots)
    seen: set[str] = set()
    out = ListAnalysis(len(items), compliant, k - len(slots), ms, [], [], [], [], [], [], k + 1)
    for j, m in enumerate(ms):
        out.hallucinated.append(not m.matched)
        out.fuzzy.append(m.kind == "fuzzy")
        key = m.item_id if m.item_id is not None else "text:" + normalize_title(m.query)
        out.duplicate.append(key in seen)
        seen.add(key)
        out.consumed.append(m.matched and any(i in history_ids for i in m.item_ids))
        if grounded_override and j in grounded_override:
            g = grounded_override[j]
        else:
            g = m.item_id if m.matched else m.nearest_id
        out.grounded.append(g)
        out.distances.append(float(m.distance))
        if not m.matched:
            out.hallucinated_titles.append(m.query)
        if target_id is not None and out.target_rank > k and g is not None:
            hit_ids = m.item_ids if (m.matched and g == m.item_id) else catalog.aliases(g)
            if target_id in hit_ids:
                out.target_rank = j + 1
    return out


def ratio_metric(num: np.ndarray, den: np.ndarray, *, seed: int, unit: str = "users",
                 proportion: bool = True) -> Metric:
    """sum(num) / sum(den) over users with den > 0 (n = their count). CI: with ``proportion``
    (num counts some of den's slots) :func:`audit.stats.ratio_ci` (user bootstrap; Wilson over
    users at 0 or 1), else the user bootstrap alone."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    keep = den > 0
    if not keep.any():
        return Metric(value=float("nan"), n=0, ci=None, unit=unit)
    rows = np.stack([num[keep], den[keep]], axis=1)
    value = float(rows[:, 0].sum() / rows[:, 1].sum())
    if proportion:
        ci = ratio_ci(rows[:, 0], rows[:, 1], seed=seed)
    else:
        ci = paired_bootstrap(rows, lambda r: float(r[:, 0].sum() / r[:, 1].sum()), seed=seed)
    return Metric(value=value, n=int(rows.shape[0]), ci=ci, unit=unit)


class HallucinationProbe(Probe):
    name: ClassVar[str] = "hallucination"
    description: ClassVar[str] = ("open generation: compliance, hallucinated / duplicate / consumed items, "
                                  "grounded HR/NDCG and grounding distances")
    requires: ClassVar[frozenset[str]] = frozenset({"generate"})
    headline: ClassVar[str] = "hallucination_rate_of_k"
    metric_specs: ClassVar[dict[str, MetricSpec]] = METRIC_SPECS
    Config = HallucinationConfig

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """Every declared family, ``@K`` at the configured k."""
        cfg: HallucinationConfig = config  # type: ignore[assignment]
        return MetricNames(tuple(name.replace("@K", f"@{cfg.k}") for name in METRIC_SPECS))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        cfg: HallucinationConfig = self.config  # type: ignore[assignment]
        users = ctx.probe_users(cfg)
        if not users:
            return ProbeResult.skipped("no users with a held-out item to evaluate")
        ds = ctx.dataset
        catalog = Catalog(ds.item_titles, threshold=cfg.fuzzy_threshold)
        index, grounding_note = self._embedding_index(rec, cfg, ds.item_titles)
        analyses: list[ListAnalysis] = []
        audited: list[str] = []
        for start in range(0, len(users), cfg.batch_size):
            chunk = users[start:start + cfg.batch_size]
            reqs = [ctx.request(u) for u in chunk]
            gens = ctx.generate(rec, reqs, cfg.k, "open")
            for user, gen in zip(chunk, gens):
                audited.append(user)
                seq = ds.sequences[user]
                slots = [str(t) for t in gen.items[:cfg.k]]
                matches = catalog.match_many(slots)
                override = None
                if index is not None:
                    unmatched = [j for j, m in enumerate(matches) if not m.matched]
                    nearest = index.nearest([slots[j] for j in unmatched])
                    override = {j: item for j, (item, _d) in zip(unmatched, nearest)}
                analyses.append(analyse_list(gen.items, cfg.k, catalog, set(seq.test_history), seq.test,
                                             matches=matches, grounded_override=override))
        result = self._result(analyses, cfg, ctx.seed, grounding_note, audited)
        if rec.closed_catalog:
            result.details["closed_catalog"] = (
                f"{rec.name} generates from a closed vocabulary of catalog items (one token per item): "
                "it cannot name an item outside the catalog, so its hallucination rate is 0 by construction "
                "(measured here all the same)")
        return result

    @staticmethod
    def _embedding_index(rec: Recommender, cfg: HallucinationConfig,
                         titles: dict[str, str]) -> tuple[EmbeddingIndex | None, str]:
        if not cfg.embed_grounding:
            return None, "nearest catalog title by rapidfuzz similarity"
        if cfg.embedding_model:
            return (EmbeddingIndex(local_encoder(cfg.embedding_model), titles),
                    f"unmatched slots: nearest title embedding (L2) of {cfg.embedding_model}")
        if rec.has("embed"):
            return (EmbeddingIndex(recommender_encoder(rec), titles),
                    "unmatched slots: nearest title embedding (L2) of the recommender's own embed")
        return None, ("embedding grounding asked, but the recommender has no 'embed' and no "
                      "embedding_model was given: nearest catalog title by rapidfuzz similarity")

    @staticmethod
    def _result(analyses: list[ListAnalysis], cfg: HallucinationConfig, seed: int,
                grounding_note: str, users: Sequence[str] | None = None) -> ProbeResult:
        k = cfg.k
        users = list(users) if users is not None else [str(i) for i in range(len(analyses))]
        slots = np.array([len(a.matches) for a in analyses], dtype=float)

        def count(attr: str) -> np.ndarray:
            return np.array([sum(getattr(a, attr)) for a in analyses], dtype=float)

        ranks = np.array([a.target_rank for a in analyses])
        dist_sum = np.array([sum(a.distances) for a in analyses], dtype=float)
        missing = np.array([a.missing for a in analyses], dtype=float)
        failed_of_k = count("hallucinated") + missing
        compliant = np.array([float(a.compliant) for a in analyses])
        empty = np.array([float(a.n_returned == 0) for a in analyses])
        grounded_hits = hit_at_k(ranks, k)
        metrics = {
            "compliance_rate": mean_metric(compliant, seed=seed).with_units(users, compliant),
            "hallucination_rate": ratio_metric(count("hallucinated"), slots, seed=seed),
            "hallucination_rate_of_k": ratio_metric(failed_of_k, np.full(len(analyses), float(k)), seed=seed)
            .with_units(users, failed_of_k / k),
            "empty_answer_rate": mean_metric(empty, seed=seed).with_units(users, empty),
            "fuzzy_match_rate": ratio_metric(count("fuzzy"), slots, seed=seed),
            "duplicate_rate": ratio_metric(count("duplicate"), slots, seed=seed),
            "consumed_rate": ratio_metric(count("consumed"), slots, seed=seed),
            f"grounded_hr@{k}": mean_metric(grounded_hits, seed=seed).with_units(users, grounded_hits),
            f"grounded_ndcg@{k}": mean_metric(ndcg_at_k(ranks, k), seed=seed),
            "grounding_distance_mean": ratio_metric(dist_sum, slots, seed=seed, proportion=False),
        }
        metrics = {name: m.declare(METRIC_SPECS[name.replace(f"@{k}", "@K")]) for name, m in metrics.items()}
        all_d = np.array([d for a in analyses for d in a.distances], dtype=float)
        counts, edges = np.histogram(all_d, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        returned = np.array([a.n_returned for a in analyses])
        details = {
            "k": k,
            "users": len(analyses),
            "slots": int(slots.sum()),
            "matching": (f"exact after normalisation, then rapidfuzz token_sort_ratio >= {cfg.fuzzy_threshold:g}; "
                         "never across a year more than 1 off, a sequel number or a subtitle"),
            "users_returning_nothing": int(empty.sum()),
            "missing_slots": int(missing.sum()),
            "non_compliant_examples": [users[i] for i, a in enumerate(analyses) if not a.compliant][:MAX_EXAMPLES],
            "refused_near_matches": [{"query": m.query, "nearest": m.nearest_title, "reason": m.reason}
                                     for a in analyses for m in a.matches if m.reason][:MAX_EXAMPLES],
            "grounding": grounding_note,
            "slot_kinds": {kind: int(sum(m.kind == kind for a in analyses for m in a.matches))
                           for kind in ("exact", "fuzzy", "none")},
            "list_length_histogram": {str(n): int(c) for n, c in
                                      zip(*np.unique(returned, return_counts=True))},
            "grounding_distance_histogram": {"edges": edges.round(4).tolist(), "counts": counts.tolist()},
            "grounding_distance_quantiles": (
                {str(q): float(np.quantile(all_d, q)) for q in (0.5, 0.9, 0.99)} if all_d.size else {}),
            "hallucinated_examples": [t for a in analyses for t in a.hallucinated_titles][:MAX_EXAMPLES],
        }
        return ProbeResult(status="pass", metrics=metrics, details=details)
