"""Attribute-leakage probe (PFRec's attacker): can a classifier tell a user's sensitive
attributes from what the recommender produces for a neutral prompt?

Feature sources, per audited user (the request shows history only, no profile):

- ``list``: the neutral top-``k`` list as a multi-hot bag of normalised titles; works
  for every black-box recommender; lists are recorded with condition ``neutral``;
- ``embed``: ``embed_user`` of the neutral request (e.g. the reference model's hidden
  state at the end of the prompt), when the recommender declares it.

For each selected attribute set the label is the user's real value (intersections
give joint labels such as ``gender=F&age=25-34``). The attacker
(:func:`audit.fairness.attacker.attack`) is cross-validated across users. Metrics:
``auc_<source>_<set>`` (binary: max(AUC, 1 − AUC); multi-class: macro one-vs-one AUC;
0.5 = nothing leaks) and ``f1_<source>_<set>`` (macro F1), with bootstrap CIs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from audit.fairness.attributes import (NEUTRAL, check_attribute_sets, coerce_attribute_sets,
                                      resolve_attribute_sets)
from audit.fairness.metrics import top_k
from audit.interface import Recommender
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.probes.fairness import generate_conditions
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult

Source = Literal["list", "embed"]


#: declared meanings (per attacker feature source and attribute set: ``auc_embed_gender``)
LEAKAGE_SPECS: dict[str, MetricSpec] = {
    "auc": MetricSpec("lower", chance=0.5, unit="AUROC (macro one-vs-rest for more than two values)",
                      meaning="how well an attacker recovers the attribute from the model's outputs"),
    "f1": MetricSpec("lower", unit="macro F1", meaning="attacker's macro F1 (chance depends on the class balance)"),
}


def leakage_spec(name: str) -> MetricSpec:
    """The declared meaning of an emitted name: its family is the text before the first ``_``."""
    return LEAKAGE_SPECS[name.split("_", 1)[0]]


class LeakageConfig(ProbeConfig):
    """``attributes``: attribute sets as in the fairness probe; ``sources``: which features to
    attack (``list`` needs generate, ``embed`` needs embed_user; a missing one is noted, not an
    error); ``k``: neutral list length; ``folds``: stratified CV folds; ``min_users``: smallest
    value kept as a class; ``c``: inverse L2 strength of the attackers; ``bootstrap``: resamples
    per CI; ``batch_size``: requests per model call; ``attackers``: logistic and/or mlp (each
    reported as ``auc_<attacker>_<source>_<set>``; ``auc_<source>_<set>`` is the strongest, the
    one with the higher AUC); ``repeats``: repeated cross-fittings per attacker (CI includes
    the attacker's training variance)."""

    attributes: list[list[str]] = [["gender"]]
    sources: list[Source] = ["list", "embed"]
    k: int = Field(10, ge=1, le=100)
    folds: int = Field(5, ge=2, le=20)
    min_users: int = Field(10, ge=2)
    c: float = Field(1.0, gt=0)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    batch_size: int = Field(64, ge=1)
    attackers: list[Literal["logistic", "mlp"]] = ["logistic", "mlp"]
    repeats: int = Field(3, ge=1, le=50)

    @field_validator("attributes", mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        return coerce_attribute_sets(value)

    @model_validator(mode="after")
    def _check(self) -> "LeakageConfig":
        check_attribute_sets(self.attributes, "probes.leakage")
        return self


class AttributeLeakageProbe(Probe):
    name: ClassVar[str] = "leakage"
    description: ClassVar[str] = ("attacker AUC/F1 predicting selected sensitive attributes from the user "
                                  "embedding or the neutral recommendation list")
    #: either capability is enough; run() says which source it could not use
    requires: ClassVar[frozenset[str]] = frozenset()
    Config = LeakageConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = LEAKAGE_SPECS

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """``auc_`` / ``f1_<source>_<set>`` (and ``auc_<attacker>_<source>_<set>`` with several attackers)
        for every configured source and set; a source the recommender cannot feed is left out of its
        run (listed: the union)."""
        cfg: LeakageConfig = config  # type: ignore[assignment]
        names: list[str] = []
        for attributes in cfg.attributes:
            s = "_".join(attributes)
            for source in cfg.sources:
                names += [f"auc_{source}_{s}", f"f1_{source}_{s}"]
                names += [f"auc_{a}_{source}_{s}" for a in cfg.attackers] if len(cfg.attackers) > 1 else []
        return MetricNames(tuple(names))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        from audit.fairness.attacker import attack, bag_of_items  # scikit-learn: imported when run

        cfg: LeakageConfig = self.config  # type: ignore[assignment]
        sets = resolve_attribute_sets(ctx.dataset, cfg.attributes, "probes.leakage.attributes")
        users = ctx.probe_users(cfg)
        needs = {"list": "generate", "embed": "embed-user"}
        usable = [s for s in dict.fromkeys(cfg.sources) if rec.has(needs[s])]
        unusable = {s: f"{rec.name} does not declare {needs[s]!r}" for s in cfg.sources if s not in usable}
        if not usable:
            return ProbeResult.skipped("; ".join(unusable.values()) + " (needed for sources "
                                       + ", ".join(cfg.sources) + ")")
        if len(users) < 2 * cfg.min_users:
            return ProbeResult.skipped(f"needs at least {2 * cfg.min_users} users, got {len(users)}")
        seed = ctx.seed + cfg.seed
        features: dict[str, Any] = {}
        asked = len(users)
        if "list" in usable:
            lists = generate_conditions(rec, ctx, users, [(NEUTRAL, {})], cfg.k, cfg.batch_size,
                                        "leakage")[NEUTRAL]
            users = [u for u in users if u in lists]  # a failed request's user is left out of every source
            if len(users) < 2 * cfg.min_users:
                return ProbeResult.errored(f"only {len(users)} of {asked} users got an answer "
                                           f"({ctx.failed_requests} failed requests); needs {2 * cfg.min_users}")
            features["list"] = bag_of_items([top_k(lists[u], cfg.k) for u in users])
        if "embed" in usable:
            features["embed"] = self._embeddings(rec, ctx, users, cfg.batch_size)
        profiles = ctx.dataset.user_profiles
        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {
            "users": len(users), "users_left_out_failed_requests": asked - len(users),
            "k": cfg.k, "sources": usable, "unavailable_sources": unusable,
            "attacker": (f"StandardScaler + {' / '.join(cfg.attackers)} (C={cfg.c}), stratified {cfg.folds}-fold CV "
                         f"across users repeated {cfg.repeats} times, out-of-fold probabilities; CI = envelope of "
                         "the repeats' bootstrap CIs over users; auc_<source>_<set> is the strongest attacker"),
            "feature_dims": {s: int(f.shape[1]) for s, f in features.items()},
            "sets": {},
        }
        for s in sets:
            labels = [s.true_condition(profiles.get(u, {})) for u in users]
            idx = np.array([i for i, lab in enumerate(labels) if lab is not None], dtype=int)
            set_details: dict[str, Any] = {"attributes": list(s.attributes),
                                           "users_without_attributes": int(len(users) - idx.size)}
            for source, x in features.items():
                results = {a: attack(x[idx], [labels[i] for i in idx], seed=seed, folds=cfg.folds,
                                     min_users=cfg.min_users, c=cfg.c, n_resamples=cfg.bootstrap, model=a,
                                     repeats=cfg.repeats) for a in cfg.attackers}
                finite = [a for a in cfg.attackers if np.isfinite(results[a].auc.value)]
                best = max(finite, key=lambda a: results[a].auc.value) if finite else cfg.attackers[0]
                res = results[best]
                metrics[f"auc_{source}_{s.name}"] = res.auc
                metrics[f"f1_{source}_{s.name}"] = res.f1
                if len(cfg.attackers) > 1:
                    for a, r in results.items():
                        metrics[f"auc_{a}_{source}_{s.name}"] = r.auc
                set_details[source] = {**res.to_json(), "strongest_attacker": best,
                                       "attackers": {a: r.to_json() for a, r in results.items()}}
            details["sets"][s.name] = set_details
        return ProbeResult(status="pass", metrics={n: m.declare(leakage_spec(n)) for n, m in metrics.items()},
                           details=details)

    @staticmethod
    def _embeddings(rec: Recommender, ctx: ProbeContext, users: list[str], batch_size: int) -> np.ndarray:
        parts = []
        for start in range(0, len(users), batch_size):
            reqs = [ctx.request(u) for u in users[start:start + batch_size]]
            parts.append(np.asarray(rec.embed_user(reqs), dtype=float).reshape(len(reqs), -1))
        return np.vstack(parts)
