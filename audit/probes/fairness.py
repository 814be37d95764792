"""Counterfactual-prompt fairness probe (FaiRLLM / CFaiRLLM), black-box: needs only ``generate``.

For each audited user (real history = train + valid items) the recommender gets one
neutral request (no profile) and one request per condition of each selected
attribute set (``gender=F``, ``gender=M``, ``gender=F&age=25-34`` ...). Every list
is recorded in ``outputs.jsonl`` with its condition. Lists are compared by
normalised title (:func:`audit.parsing.normalize_title`), cut to ``k``.

Metrics (all over users, with bootstrap CIs; ``S`` = attribute-set name such as
``gender`` or ``gender_age``, ``C`` = a condition, ``m`` in jaccard | serp | prag):

- ``sim_m_C``: mean similarity of the list under C to the neutral list, in [0, 1];
- ``snsr_m_S`` = max_C sim − min_C sim and ``snsv_m_S`` = population std of sim over
  S's conditions (0 = no sensitivity); CI by paired bootstrap over users;
  ``pvalue_snsr_m_S`` / ``pvalue_snsv_m_S``: within-user permutation tests of "no dependence
  on the value" (unadjusted); ``pvalue_holm_*``: the same p-values Holm-Bonferroni adjusted
  over every p-value of the run's fairness probe (family-wise error rate; the family is
  listed in ``details["multiple_testing"]``);
- placebo control (``placebo``, on by default): the same counterfactual probe with a
  non-sensitive attribute unrelated to the data (``preferred viewing time`` = morning |
  evening): ``snsr_m_placebo`` shows how much SNSR arises from changing the prompt at all,
  and ``snsr_excess_m_S`` = SNSR(S) - SNSR(placebo) with a paired bootstrap CI over users;
- ``sim_m_C``, ``snsr_m_S``, ``snsv_m_S`` (CIs, no p-values: the same tests as the paper's
  measures, kept out of the Holm family) also for ``m`` in serpnb | pragnb: SERP* and PRAG* as
  the FaiRLLM authors' notebook computes them (differently normalised: identical K = 10 lists
  score 0.2955 in its SERP*; PRAG* differs on short or duplicate lists; see
  :mod:`audit.fairness.metrics`), only to set recaudit's figures beside published tables;
- ``hr_C`` / ``ndcg_C`` and ``hr_neutral`` / ``ndcg_neutral``: HR@k / NDCG@k of each
  list against the user's held-out item (true-preference alignment);
- ``hr_group_S=V`` and ``hr_gap_S`` (also ``ndcg_*``): utility of the neutral list by the
  user's real attribute value, and the max − min gap between groups with its CI (>= 0, so
  noise alone makes it positive); for two groups also ``hr_diff_S`` = first − second value
  in sorted order (e.g. F − M), whose CI straddles 0 without a disparity;
  ``hr_gap_profiled_S`` / ``hr_diff_profiled_S``: the same for the list whose prompt shows
  the user's own values.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator, model_validator

from audit.fairness.attributes import (NEUTRAL, AttributeSet, check_attribute_sets, coerce_attribute_sets,
                                      resolve_attribute_sets)
from audit.fairness.metrics import NOTEBOOK_SIMILARITIES, SIMILARITIES, top_k
from audit.fairness.sensitivity import group_gap, holm, mean_with_ci, sensitivity, snsr_excess
from audit.interface import RecRequest, Recommender
from audit.metrics import hit_at_k, ndcg_at_k, rank_in_list
from audit.parsing import normalize_title
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, NameFamily, ProbeResult

PLACEBO = "placebo"

#: declared meaning of each metric family (longest matching prefix of the probe's own names wins)
SPECS: dict[str, MetricSpec] = {
    "sim_": MetricSpec(direction="higher", range=(0.0, 1.0), unit="similarity",
                       meaning="mean similarity of the list under a condition to the neutral list"),
    "snsr_excess_": MetricSpec(direction="lower", range=(-1.0, 1.0), chance=0.0, unit="similarity",
                               meaning="SNSR of the attribute set minus SNSR of the placebo attribute"),
    "snsr_": MetricSpec(direction="lower", range=(0.0, 1.0), chance=0.0, unit="similarity",
                        meaning="max - min mean similarity over the set's values (0 = insensitive)"),
    "snsv_": MetricSpec(direction="lower", range=(0.0, 0.5), chance=0.0, unit="similarity",
                        meaning="population std of mean similarity over the set's values"),
    "pvalue_holm_": MetricSpec(direction=None, range=(0.0, 1.0), unit="p-value", sampled=False,
                               meaning="Holm-adjusted permutation p-value (family: this run's fairness p-values)"),
    "pvalue_": MetricSpec(direction=None, range=(0.0, 1.0), unit="p-value", sampled=False,
                          meaning="unadjusted within-user permutation p-value"),
    "hr_gap_": MetricSpec(direction="lower", range=(0.0, 1.0), unit="share of users",
                          meaning="max - min HR@k between real attribute groups"),
    "ndcg_gap_": MetricSpec(direction="lower", range=(0.0, 1.0), unit="NDCG",
                            meaning="max - min NDCG@k between real attribute groups"),
    "hr_diff_": MetricSpec(direction=None, range=(-1.0, 1.0), unit="share of users",
                           meaning="signed HR@k difference between the two groups (context)"),
    "ndcg_diff_": MetricSpec(direction=None, range=(-1.0, 1.0), unit="NDCG",
                             meaning="signed NDCG@k difference between the two groups (context)"),
    "hr_": MetricSpec(direction="higher", range=(0.0, 1.0), unit="share of users", meaning="HR@k of the lists"),
    "ndcg_": MetricSpec(direction="higher", range=(0.0, 1.0), unit="NDCG", meaning="NDCG@k of the lists"),
}
#: the FaiRLLM-notebook-compatible values (not the paper's formulas; SERP* unbounded with repeated items)
for _m, _what in (("serpnb", "SERP*@K as the FaiRLLM notebook computes it (identical K=10 lists: 0.2955)"),
                  ("pragnb", "PRAG*@K as the FaiRLLM notebook computes it (pairs of the counterfactual list only)")):
    _hi = None if _m == "serpnb" else 1.0
    SPECS[f"sim_{_m}_"] = MetricSpec(direction="higher", range=(0.0, _hi), unit="similarity (notebook)",
                                     meaning=f"mean {_what}, to the neutral list; for comparison with published tables")
    SPECS[f"snsr_{_m}_"] = MetricSpec(direction="lower", range=(0.0, _hi), chance=0.0, unit="similarity (notebook)",
                                      meaning=f"max - min over the set's values of {_what}")
    SPECS[f"snsv_{_m}_"] = MetricSpec(direction="lower", range=(0.0, None), chance=0.0, unit="similarity (notebook)",
                                      meaning=f"population std over the set's values of {_what}")


def _declare(metrics: dict[str, Metric]) -> None:
    for name, m in list(metrics.items()):
        prefix = max((p for p in SPECS if name.startswith(p)), key=len, default=None)
        if prefix is not None and m.spec is None:
            metrics[name] = m.declare(SPECS[prefix])


class FairnessConfig(ProbeConfig):
    """``attributes``: attribute sets, e.g. ``[[gender], [age], [gender, age]]`` (a bare name is
    a one-attribute set); ``k``: list length compared (1..100); ``bootstrap``: resamples per CI;
    ``permutations``: for the SNSR/SNSV p-values (0 = none); ``min_group_users``: smallest real-attribute
    group kept for utility disparity; ``batch_size``: requests per ``generate`` call; ``placebo``:
    also run the placebo control, a non-sensitive attribute ``placebo_attribute`` with
    ``placebo_values`` unrelated to the data (give it as many values as the sets you compare);
    ``placebo_attribute``: the placebo attribute's name as the prompt shows it; ``placebo_values``: its
    values, one counterfactual prompt each."""

    attributes: list[list[str]] = [["gender"]]
    k: int = Field(10, ge=1, le=100)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    permutations: int = Field(1000, ge=0, le=100_000)
    min_group_users: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    placebo: bool = True
    placebo_attribute: str = "preferred viewing time"
    placebo_values: list[str] = ["morning", "evening"]

    @field_validator("attributes", mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        return coerce_attribute_sets(value)

    @model_validator(mode="after")
    def _check_sets(self) -> "FairnessConfig":
        check_attribute_sets(self.attributes, "probes.fairness")
        return self


def condition_family(prefix: str, attributes: list[str] | tuple[str, ...]) -> NameFamily:
    """The names ``prefix + condition`` for every condition of an attribute set, its values known only
    from the data set: ``hr_gender=<gender value>&age=<age value>``."""
    parts = [f"{prefix}{attributes[0]}="] + [f"&{a}=" for a in attributes[1:]] + [""]
    return NameFamily(tuple(parts), tuple(f"{a} value" for a in attributes))


def generate_conditions(rec: Recommender, ctx: ProbeContext, users: list[str],
                        conditions: list[tuple[str, dict[str, str]]], k: int,
                        batch_size: int, label: str) -> dict[str, dict[str, list[str]]]:
    """Generate top-``k`` lists for every (condition, user) through ``ctx.generate`` (recorded);
    returns condition -> user -> normalised titles. A failed request (no answer) leaves its user
    out of that condition: see :func:`answered_by_all`."""
    from tqdm.auto import tqdm

    jobs: list[tuple[str, RecRequest]] = [(cond, ctx.request(u, profile=profile))
                                          for cond, profile in conditions for u in users]
    out: dict[str, dict[str, list[str]]] = {cond: {} for cond, _ in conditions}
    bar = tqdm(total=len(jobs), desc=f"{label} {rec.name}", unit="req", disable=not ctx.progress, leave=False)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        gens = ctx.generate(rec, [r for _, r in chunk], k, [c for c, _ in chunk])
        for (cond, req), gen in zip(chunk, gens):
            if gen.failed is None:
                out[cond][str(req.user)] = [normalize_title(t) for t in gen.items]
        bar.update(len(chunk))
    bar.close()
    return out


def answered_by_all(lists: dict[str, dict[str, list[str]]], users: list[str]) -> list[str]:
    """The users with an answer under every condition (a failed request's user is compared with
    nothing: an empty list against the neutral one would read as a maximal change)."""
    return [u for u in users if all(u in by_user for by_user in lists.values())]


class CounterfactualFairnessProbe(Probe):
    name: ClassVar[str] = "fairness"
    description: ClassVar[str] = ("counterfactual prompts per selected attribute value: Jaccard, SERP*, PRAG* "
                                  "to the neutral list -> SNSR/SNSV, HR/NDCG per value, group utility gap")
    requires: ClassVar[frozenset[str]] = frozenset({"generate"})
    metric_specs: ClassVar[dict[str, MetricSpec]] = SPECS
    #: summaries show the first attribute set's SNSR of Jaccard@K (a prefix: see the runner)
    headline: ClassVar[str] = "snsr_jaccard_"
    Config = FairnessConfig

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """The module doc's names for the configured attribute sets and placebo; names that end in a
        condition (``sim_jaccard_gender=F``, ``hr_gender=F``, ``hr_group_gender=F``) are families, the
        values being the data set's. ``hr_diff_*`` / ``ndcg_diff_*`` appear only where exactly two real
        groups are large enough (listed: they can)."""
        cfg: FairnessConfig = config  # type: ignore[assignment]
        names: list[str] = []
        families: list[NameFamily] = []
        for attributes in cfg.attributes:
            s = "_".join(attributes)
            for mname in SIMILARITIES:
                names += [f"snsr_{mname}_{s}", f"snsv_{mname}_{s}"]
                names += [f"snsr_excess_{mname}_{s}"] if cfg.placebo else []
                names += [f"pvalue_snsr_{mname}_{s}", f"pvalue_snsv_{mname}_{s}"]
            names += [f"{m}_{kind}_{suffix}{s}" for m in ("hr", "ndcg") for kind in ("gap", "diff")
                      for suffix in ("", "profiled_")]
            names += [f"{m}_{mname}_{s}" for mname in NOTEBOOK_SIMILARITIES for m in ("snsr", "snsv")]
            families += [condition_family(f"sim_{m}_", attributes) for m in (*SIMILARITIES, *NOTEBOOK_SIMILARITIES)]
            families += [condition_family(p, attributes) for p in ("hr_", "ndcg_", "hr_group_", "ndcg_group_")]
        names += ["hr_neutral", "ndcg_neutral"]
        if cfg.placebo:
            for mname in SIMILARITIES:
                names += [f"snsr_{mname}_{PLACEBO}", f"snsv_{mname}_{PLACEBO}", f"pvalue_snsr_{mname}_{PLACEBO}"]
            names += [f"{m}_{PLACEBO}={v}" for m in ("hr", "ndcg") for v in cfg.placebo_values]
        if cfg.permutations:  # without permutations every p-value is NaN, and Holm leaves NaNs out
            names += ["pvalue_holm_" + n[len("pvalue_"):] for n in names if n.startswith("pvalue_")]
        return MetricNames(tuple(names), tuple(families))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        cfg: FairnessConfig = self.config  # type: ignore[assignment]
        sets = resolve_attribute_sets(ctx.dataset, cfg.attributes, "probes.fairness.attributes")
        users = ctx.probe_users(cfg)
        if len(users) < 2:
            return ProbeResult.skipped(f"needs at least 2 users with a held-out item, got {len(users)}")
        seed = ctx.seed + cfg.seed
        conditions: dict[str, dict[str, str]] = {NEUTRAL: {}}
        for s in sets:
            for values, cond in zip(s.values, s.conditions):
                conditions.setdefault(cond, s.profile(values))
        placebo_conds = [f"{PLACEBO}={v}" for v in cfg.placebo_values] if cfg.placebo else []
        for v, cond in zip(cfg.placebo_values, placebo_conds):
            conditions[cond] = {cfg.placebo_attribute: v}
        lists = generate_conditions(rec, ctx, users, list(conditions.items()), cfg.k, cfg.batch_size,
                                    "fairness")
        asked, users = len(users), answered_by_all(lists, users)
        if len(users) < 2:
            return ProbeResult.errored(f"only {len(users)} of {asked} users got an answer under every condition "
                                       f"({ctx.failed_requests} failed requests)")
        titles = ctx.dataset.item_titles
        targets = {u: normalize_title(titles[ctx.dataset.sequences[u].test]) for u in users}

        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {
            "k": cfg.k, "users": len(users), "conditions": list(conditions),
            "users_left_out_failed_requests": asked - len(users),
            "matching": "normalised titles (audit.parsing.normalize_title), lists cut to k and de-duplicated",
            "similarities": {"jaccard": "Jaccard@K", "serp": "SERP*@K", "prag": "PRAG*@K",
                             "serpnb": "SERP*@K as the FaiRLLM notebook computes it (identical K=10 lists: 0.2955)",
                             "pragnb": "PRAG*@K as the FaiRLLM notebook computes it (pairs of x only, no de-dup)"},
            "empty_lists": {c: sum(1 for u in users if not lists[c][u]) for c in conditions},
            "sets": {},
        }
        hits = {c: self._alignment(lists[c], users, targets, cfg.k) for c in conditions}
        for c in conditions:
            metrics[f"hr_{c}"] = mean_with_ci(hits[c][0], seed=seed, n_resamples=cfg.bootstrap)
            metrics[f"ndcg_{c}"] = mean_with_ci(hits[c][1], seed=seed, n_resamples=cfg.bootstrap)
        placebo: dict[str, np.ndarray] = {}
        if placebo_conds:
            placebo = {m: np.array([[fn(lists[c][u], lists[NEUTRAL][u], cfg.k) for c in placebo_conds]
                                    for u in users], dtype=float) for m, fn in SIMILARITIES.items()}
            details["placebo"] = self._measure_placebo(placebo, cfg, seed, metrics)
        for s in sets:
            details["sets"][s.name] = self._measure_set(s, lists, hits, users, ctx, cfg, seed, metrics, placebo)
        raw = {name: m.value for name, m in metrics.items() if name.startswith("pvalue_")}
        for name, p in holm(raw).items():
            metrics["pvalue_holm_" + name[len("pvalue_"):]] = Metric(p, metrics[name].n, None, unit="p-value")
        details["multiple_testing"] = {"method": "Holm-Bonferroni (family-wise error rate)", "family": sorted(raw),
                                       "metrics": "pvalue_holm_*"}
        _declare(metrics)
        return ProbeResult(status="pass", metrics=metrics, details=details)

    @staticmethod
    def _measure_placebo(placebo: dict[str, np.ndarray], cfg: FairnessConfig, seed: int,
                         metrics: dict[str, Metric]) -> dict[str, Any]:
        out: dict[str, Any] = {"attribute": cfg.placebo_attribute, "values": list(cfg.placebo_values), "snsr": {}}
        for mname, matrix in placebo.items():
            sens = sensitivity(matrix, seed=seed, n_resamples=cfg.bootstrap, permutations=cfg.permutations)
            metrics[f"snsr_{mname}_{PLACEBO}"] = sens.snsr
            metrics[f"snsv_{mname}_{PLACEBO}"] = sens.snsv
            metrics[f"pvalue_snsr_{mname}_{PLACEBO}"] = Metric(sens.p_value, sens.snsr.n, None, unit="p-value")
            out["snsr"][mname] = {**sens.snsr.to_json(), "p_value": sens.p_value}
        return out

    @staticmethod
    def _alignment(lists: dict[str, list[str]], users: list[str], targets: dict[str, str],
                   k: int) -> tuple[np.ndarray, np.ndarray]:
        ranks = np.array([rank_in_list(top_k(lists[u], k), targets[u], k + 1) for u in users])
        return hit_at_k(ranks, k), ndcg_at_k(ranks, k)

    def _measure_set(self, s: AttributeSet, lists: dict[str, dict[str, list[str]]],
                     hits: dict[str, tuple[np.ndarray, np.ndarray]], users: list[str], ctx: ProbeContext,
                     cfg: FairnessConfig, seed: int, metrics: dict[str, Metric],
                     placebo: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        conds = list(s.conditions)
        neutral = lists[NEUTRAL]
        out: dict[str, Any] = {"attributes": list(s.attributes), "conditions": conds,
                               "similarity": {}, "snsr": {}, "snsv": {}}
        for mname, fn in SIMILARITIES.items():
            matrix = np.array([[fn(lists[c][u], neutral[u], cfg.k) for c in conds] for u in users], dtype=float)
            sims = {}
            for j, c in enumerate(conds):
                m = mean_with_ci(matrix[:, j], seed=seed, n_resamples=cfg.bootstrap)
                metrics[f"sim_{mname}_{c}"] = m
                sims[c] = m.to_json()
            sens = sensitivity(matrix, seed=seed, n_resamples=cfg.bootstrap, permutations=cfg.permutations)
            metrics[f"snsr_{mname}_{s.name}"] = sens.snsr
            metrics[f"snsv_{mname}_{s.name}"] = sens.snsv
            metrics[f"pvalue_snsr_{mname}_{s.name}"] = Metric(sens.p_value, sens.snsr.n, None, unit="p-value")
            metrics[f"pvalue_snsv_{mname}_{s.name}"] = Metric(sens.p_value_snsv, sens.snsv.n, None, unit="p-value")
            if placebo:
                metrics[f"snsr_excess_{mname}_{s.name}"] = snsr_excess(matrix, placebo[mname], seed=seed,
                                                                      n_resamples=cfg.bootstrap)
            out["similarity"][mname] = sims
            out["snsr"][mname] = {**sens.snsr.to_json(), "p_value": sens.p_value,
                                  "permutations": sens.permutations}
            out["snsv"][mname] = {**sens.snsv.to_json(), "p_value": sens.p_value_snsv}
        out["notebook"] = self._notebook_values(conds, lists, users, cfg, seed, s.name, metrics)
        out["alignment"] = {
            "hr": {c: metrics[f"hr_{c}"].to_json() for c in [NEUTRAL, *conds]},
            "ndcg": {c: metrics[f"ndcg_{c}"].to_json() for c in [NEUTRAL, *conds]},
        }
        out["group_utility"] = self._group_utility(s, lists, hits, users, ctx, cfg, seed, metrics)
        return out

    @staticmethod
    def _notebook_values(conds: list[str], lists: dict[str, dict[str, list[str]]], users: list[str],
                         cfg: FairnessConfig, seed: int, set_name: str, metrics: dict[str, Metric]) -> dict[str, Any]:
        """The FaiRLLM-notebook-compatible SERP*/PRAG* (``serpnb``/``pragnb``): per-value similarity
        and SNSR/SNSV with CIs, no p-values (same hypotheses as the paper's measures)."""
        out: dict[str, Any] = {}
        for mname, fn in NOTEBOOK_SIMILARITIES.items():
            matrix = np.array([[fn(lists[c][u], lists[NEUTRAL][u], cfg.k) for c in conds] for u in users],
                              dtype=float)
            for j, c in enumerate(conds):
                metrics[f"sim_{mname}_{c}"] = mean_with_ci(matrix[:, j], seed=seed, n_resamples=cfg.bootstrap)
            sens = sensitivity(matrix, seed=seed, n_resamples=cfg.bootstrap, permutations=0)
            metrics[f"snsr_{mname}_{set_name}"] = sens.snsr
            metrics[f"snsv_{mname}_{set_name}"] = sens.snsv
            out[mname] = {"snsr": sens.snsr.to_json(), "snsv": sens.snsv.to_json()}
        return out

    @staticmethod
    def _group_utility(s: AttributeSet, lists: dict[str, dict[str, list[str]]],
                       hits: dict[str, tuple[np.ndarray, np.ndarray]], users: list[str], ctx: ProbeContext,
                       cfg: FairnessConfig, seed: int, metrics: dict[str, Metric]) -> dict[str, Any]:
        """Utility by the user's real attribute value: neutral lists and 'profiled' lists (own values)."""
        profiles = ctx.dataset.user_profiles
        own = [s.true_condition(profiles.get(u, {})) for u in users]
        counts: dict[str, int] = {}
        for c in own:
            if c is not None:
                counts[c] = counts.get(c, 0) + 1
        kept = sorted(c for c, n in counts.items() if n >= cfg.min_group_users)
        dropped = {c: n for c, n in counts.items() if c not in kept}
        out: dict[str, Any] = {"groups": {c: counts[c] for c in kept}, "min_group_users": cfg.min_group_users,
                               "dropped_groups": dropped,
                               "users_without_attributes": sum(c is None for c in own)}
        if dropped:
            out["note"] = (f"groups with fewer than {cfg.min_group_users} users are left out of the gap: "
                           + ", ".join(f"{c} ({n})" for c, n in sorted(dropped.items())))
        idx = np.array([i for i, c in enumerate(own) if c in kept], dtype=int)
        labels = np.array([own[i] for i in idx], dtype=object)
        for which in ("neutral", "profiled"):
            block: dict[str, Any] = {}
            for k_i, metric in enumerate(("hr", "ndcg")):
                if which == "neutral":
                    per_user = hits[NEUTRAL][k_i][idx]
                else:
                    per_user = np.array([hits[own[i]][k_i][i] for i in idx], dtype=float)
                groups = {c: mean_with_ci(per_user[labels == c], seed=seed, n_resamples=cfg.bootstrap)
                          for c in kept}
                gap = group_gap(per_user, labels.astype(str), seed=seed, n_resamples=cfg.bootstrap) \
                    if len(kept) >= 2 else Metric(float("nan"), int(idx.size))
                suffix = "" if which == "neutral" else "profiled_"
                metrics[f"{metric}_gap_{suffix}{s.name}"] = gap
                block_extra: dict[str, Any] = {}
                if len(kept) == 2:
                    diff = group_gap(per_user, labels.astype(str), seed=seed, n_resamples=cfg.bootstrap,
                                     signed=True)
                    metrics[f"{metric}_diff_{suffix}{s.name}"] = diff
                    block_extra["diff"] = {**diff.to_json(), "of": f"{kept[0]} - {kept[1]}"}
                if which == "neutral":
                    for c, m in groups.items():
                        metrics[f"{metric}_group_{c}"] = m
                block[metric] = {"groups": {c: m.to_json() for c, m in groups.items()}, "gap": gap.to_json(),
                                 **block_extra}
            out[which] = block
        return out
