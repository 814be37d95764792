"""The ``poisoning`` probe: how far an attack moves the target items' exposure, and what it costs.

Targets come from the probe's own ``targets`` spec (:func:`attacks.targets.select_targets`), so a
clean recommender is measured on the same items an attacked one was poisoned with; when the
recommender's info records attack targets that differ, the probe refuses with a ConfigError.

Exposure per (user, target), over the audited users who never interacted with the target
(prompts show the user's history and, with ``profile: true``, their attributes):

- with ``score`` and ``protocol: full``: the target is ranked among every catalog item the user
  has not interacted with (other targets compete; the target's same-title aliases do not);
  ties follow :mod:`audit.metrics`' one rule (random order; HR/NDCG/percentile are expectations);
- with ``score`` and ``protocol: sampled``: the target is ranked among ``negatives`` items the
  user never interacted with, sampled uniformly per user (seeded), none of them a target;
- generate-only recommenders: open generation of the top max(K) items; a hit is the target's
  title (normalised) in the first K (exposure@K); rank = its position, else not ranked.

Metrics (per-user values are means over the user's eligible targets; CIs bootstrap users):
``target_hr@K``, ``target_ndcg@K``, ``target_score`` (mean score of the target, the
recommender's log-likelihood scale), ``target_percentile`` (1 - (rank - 1) / competitors:
1 = ranked first, 0 = last); per target ``target_hr@K=<item id>`` and per user group
``target_hr@K_<attribute>=<value>``; the stealth of the attack: ``hr@K`` / ``ndcg@K`` of the
held-out item among sampled negatives on real users (the utility probe's protocol).

When the recommender carries the model it attacks (``baseline``: the item-text attack), the
baseline is measured on the same users and the probe adds ``baseline_target_hr@K``,
``exposure_ratio@K`` (attacked / clean target HR, paired bootstrap over users; NaN when the
clean HR is 0, as it often is for unpopular targets), ``exposure_gain@K`` (attacked - clean
target HR, always defined) and ``score_shift`` (mean attacked - clean target score). Trained attacks have their clean twin in
another recommender: :mod:`attacks.summary` computes the same ratio and shift across a report.

From the recorded manifests: ``budget`` (the fake-user share or the backdoor rate, a fraction,
when exactly one of them is present; with ``fake_share`` / ``backdoor_rate`` always),
``fake_users``, ``replaced_labels``, ``edit_cost`` (mean word edits per target) and
``max_edits`` (the text attack's budget), and for a
detector in a poisoned stage ``detector_precision`` / ``detector_recall`` against the known
fakes and ``fake_base_rate`` (the precision of flagging at random). ``details.budget_series``
holds the target HR against the budget for the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from attacks.manifest import attacked_targets, records_named, training_record
from attacks.targets import TargetSpec, select_targets
from audit.catalog import Catalog
from audit.errors import ConfigError
from audit.interface import Recommender
from audit.metrics import hit_at_k, ndcg_at_k
from audit.parsing import normalize_title
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, NameFamily, ProbeResult
from audit.stats import mean_metric, paired_bootstrap


class PoisoningConfig(ProbeConfig):
    """``targets``: the target spec (the attack variants' spec); ``k``: cut-offs (1..1000);
    ``protocol``: full | sampled ranking of the target (score-capable recommenders);
    ``negatives``: sampled competitors per user (sampled protocol); ``batch_size``: users per
    model call; ``groups``: user attributes to break target HR down by; ``profile``: show each
    user's attributes in the prompt (as a platform would; a group-targeted backdoor keys on
    them) or a neutral prompt; ``utility``: also measure stealth (held-out HR/NDCG among
    ``utility_negatives`` sampled items, the utility probe's neutral prompts); ``utility_negatives``:
    sampled negatives per user for that stealth measure."""

    targets: TargetSpec = TargetSpec()
    k: list[int] = Field(default_factory=lambda: [10], min_length=1)
    protocol: Literal["full", "sampled"] = "full"
    negatives: int = Field(99, ge=1)
    batch_size: int = Field(8, ge=1)
    groups: list[str] = Field(default_factory=lambda: ["gender"])
    profile: bool = True
    utility: bool = True
    utility_negatives: int = Field(99, ge=1)


@dataclass
class Exposure:
    """Per-user, per-target measurements (rows: users, columns: targets; NaN = not eligible)."""

    users: list[str]
    targets: tuple[str, ...]
    ranks: np.ndarray          # 1-based first position (inf when a generated list misses the target)
    competitors: np.ndarray    # items the target competed with
    scores: np.ndarray         # target score (NaN for generate-only)
    eligible: np.ndarray       # bool: the user never interacted with the target
    by: str = "score"
    protocol: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: competitors scored exactly as the target (placed in random order: :mod:`audit.metrics`); None = none
    tied: np.ndarray | None = None

    def _tied(self) -> np.ndarray:
        return np.zeros_like(self.ranks) if self.tied is None else np.nan_to_num(self.tied)

    def hits(self, k: int) -> np.ndarray:
        r = np.where(np.isfinite(self.ranks), self.ranks, 1e12)
        return np.where(self.eligible, hit_at_k(r, k, self._tied()), np.nan)

    def ndcg(self, k: int) -> np.ndarray:
        r = np.where(np.isfinite(self.ranks), self.ranks, 1e12)
        return np.where(self.eligible, ndcg_at_k(r, k, self._tied()), np.nan)

    def percentile(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            p = 1.0 - (self.ranks + self._tied() / 2 - 1.0) / np.maximum(self.competitors, 1.0)
        return np.where(self.eligible & np.isfinite(self.ranks), p, np.nan)

    def target_scores(self) -> np.ndarray:
        return np.where(self.eligible, self.scores, np.nan)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean over each row's finite entries (NaN for rows without any)."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


_HIT = "share of users"
#: declared meanings per metric family (the part of the name before ``@``/``=``; see poisoning_spec)
POISONING_SPECS: dict[str, MetricSpec] = {
    "target_hr": MetricSpec("lower", unit=_HIT, meaning="attacked target items in the users' top K (exposure)"),
    "target_ndcg": MetricSpec("lower", unit="NDCG", meaning="NDCG@K of the attacked targets"),
    "target_score": MetricSpec("lower", range=(None, None), unit="model score", meaning="mean target score"),
    "target_percentile": MetricSpec("lower", chance=0.5, unit="percentile among items",
                                    meaning="share of catalog items the target outscores"),
    "baseline_target_hr": MetricSpec(None, unit=_HIT, meaning="target exposure of the unattacked baseline"),
    "exposure_ratio": MetricSpec("lower", range=(0.0, None), chance=1.0, unit="ratio",
                                 meaning="target HR attacked / baseline (1 = no effect)"),
    "exposure_gain": MetricSpec("lower", range=(-1.0, 1.0), chance=0.0, unit="difference of shares",
                                meaning="target HR attacked minus baseline"),
    "score_shift": MetricSpec("lower", range=(None, None), chance=0.0, unit="model score",
                              meaning="target score attacked minus baseline"),
    "hr": MetricSpec("higher", unit=_HIT, meaning="clean HR@K (stealth: utility kept by the attack)"),
    "ndcg": MetricSpec("higher", unit="NDCG", meaning="clean NDCG@K (stealth)"),
    "fake_share": MetricSpec(None, range=(0.0, None), unit="fake / real users", sampled=False,
                             meaning="attack budget: fake users per real user"),
    "fake_users": MetricSpec(None, range=(0.0, None), unit="users", sampled=False, meaning="fake users injected"),
    "backdoor_rate": MetricSpec(None, unit="share of labels", sampled=False, meaning="attack budget: labels replaced"),
    "replaced_labels": MetricSpec(None, range=(0.0, None), unit="labels", sampled=False,
                                  meaning="pre-training labels replaced"),
    "flagged_users": MetricSpec(None, range=(0.0, None), unit="users", sampled=False,
                                meaning="users the fake-user detector removed"),
    "detector_precision": MetricSpec("higher", unit="share of flagged users", meaning="flagged users that are fake"),
    "detector_recall": MetricSpec("higher", unit="share of fake users", meaning="fake users flagged"),
    "fake_base_rate": MetricSpec(None, unit="share of users", sampled=False,
                                 meaning="fake users among the stage's users (precision's chance level)"),
    "edit_cost": MetricSpec(None, range=(0.0, None), unit="edits per target", meaning="item-text attack edits"),
    "max_edits": MetricSpec(None, range=(0.0, None), unit="edits", sampled=False, meaning="edit budget"),
    "budget": MetricSpec(None, range=(0.0, None), unit="attack budget", sampled=False,
                         meaning="the single attack's budget (its unit names it)"),
}


class PoisoningProbe(Probe):
    name: ClassVar[str] = "poisoning"
    description: ClassVar[str] = ("target-item exposure (HR/NDCG@K over the full catalog or sampled, per "
                                  "target and group), attack budget, stealth (clean HR/NDCG), detector "
                                  "precision/recall and text-attack edit cost")
    requires: ClassVar[frozenset[str]] = frozenset()
    metric_specs: ClassVar[dict[str, MetricSpec]] = POISONING_SPECS
    headline: ClassVar[str] = "target_hr@10"
    Config = PoisoningConfig

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """The module doc's names at the configured cut-offs, targets and groups. A target is named by
        its item id, known before running only for ``targets.items`` (else a family); a group by its
        attribute value (a family). The score figures (a recommender that scores), the baseline's (one
        that carries the model it attacks) and the manifest's (what the attack recorded) depend on the
        recommender: listed, the union."""
        cfg: PoisoningConfig = config  # type: ignore[assignment]
        names = [f"{m}@{k}" for k in cfg.k for m in ("target_hr", "target_ndcg")]
        names += ["target_score", "target_percentile"]
        names += [f"{m}@{k}" for k in _stealth_k(cfg) for m in ("hr", "ndcg")] if cfg.utility else []
        names += [f"{m}@{k}" for k in cfg.k for m in ("baseline_target_hr", "exposure_ratio", "exposure_gain")]
        names += ["score_shift", *MANIFEST_METRICS]
        families: list[NameFamily] = []
        for k in cfg.k:
            if cfg.targets.items is not None:
                names += [f"target_hr@{k}={t}" for t in cfg.targets.items]
            else:
                families.append(NameFamily((f"target_hr@{k}=", ""), ("target item id",)))
            families += [NameFamily((f"target_hr@{k}_{attr}=", ""), (f"{attr} value",)) for attr in cfg.groups]
        return MetricNames(tuple(names), tuple(families))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        cfg: PoisoningConfig = self.config  # type: ignore[assignment]
        if not (rec.has("score") or rec.has("generate")):
            return ProbeResult.skipped(f"{rec.name} offers neither 'score' nor 'generate'")
        bad_k = [k for k in cfg.k if not 1 <= k <= 1000]
        if bad_k:
            raise ConfigError(f"probe 'poisoning': k must be within 1..1000, got {bad_k}")
        ds = ctx.dataset
        unknown = [a for a in cfg.groups if a not in ds.attributes]
        if unknown:
            raise ConfigError(f"probe 'poisoning': groups {unknown} are not user attributes of "
                              f"{ds.name!r} ({list(ds.attributes)})")
        targets = select_targets(ds, cfg.targets)
        record = training_record(rec)
        poisoned = attacked_targets(record)
        if poisoned and poisoned != set(targets):
            raise ConfigError(f"probe 'poisoning' measures targets {sorted(targets)}, but {rec.name!r} was "
                              f"attacked with targets {sorted(poisoned)}; give the probe the same targets "
                              "spec as the attack variant")
        users = ctx.probe_users(cfg)
        if not users:
            return ProbeResult.skipped("no users with a held-out item to audit")
        seed = ctx.seed + cfg.seed
        exp = measure_exposure(rec, ctx, users, targets, cfg, condition="target-exposure")
        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {}
        self._exposure_metrics(exp, cfg, ds, seed, metrics)
        baseline = rec.baseline
        if isinstance(baseline, Recommender):
            base = measure_exposure(baseline, ctx, users, targets, cfg, condition="target-exposure-baseline")
            self._baseline_metrics(exp, base, cfg, seed, metrics)
            details["baseline"] = "the recommender the item-text attack wraps (same model, original titles)"
        if cfg.utility:
            self._utility(rec, ctx, cfg, metrics, details)
        budget = self._manifest_metrics(record, metrics, details)
        details.update({
            "protocol": exp.protocol,
            "ranking": exp.by,
            "ties": "random order (expectations over tied competitors)",
            "eligible": "audited users who never interacted with the target",
            "targets": [{"item_id": t, "title": ds.item_titles[t], "popularity": int(ds.item_popularity.get(t, 0)),
                         "eligible_users": int(exp.eligible[:, j].sum())} for j, t in enumerate(targets)],
            "target_spec": cfg.targets.model_dump(mode="json"),
        })
        if budget is not None:
            details["budget_series"] = [
                {"budget": budget, "metric": name, **metrics[name].to_json()}
                for name in (f"target_hr@{k}" for k in cfg.k) if name in metrics]
        ordered = {f"target_hr@{cfg.k[0]}": metrics.pop(f"target_hr@{cfg.k[0]}"), **metrics}
        ordered = {name: m if m.spec is not None else m.declare(poisoning_spec(name)) for name, m in ordered.items()}
        return ProbeResult(status="pass", metrics=ordered, details=details)

    # -- pieces -----------------------------------------------------------------------------
    @staticmethod
    def _exposure_metrics(exp: Exposure, cfg: PoisoningConfig, ds: Any, seed: int,
                          metrics: dict[str, Metric]) -> None:
        for k in cfg.k:
            hits = exp.hits(k)
            # per-user values, so the runner pairs an attacked model with its clean parent on the same users
            hr, ndcg = _row_mean(hits), _row_mean(exp.ndcg(k))
            metrics[f"target_hr@{k}"] = mean_metric(hr, seed=seed).with_units(exp.users, hr)
            metrics[f"target_ndcg@{k}"] = mean_metric(ndcg, seed=seed).with_units(exp.users, ndcg)
            for j, t in enumerate(exp.targets):
                metrics[f"target_hr@{k}={t}"] = mean_metric(hits[:, j], seed=seed)
            profiles = ds.user_profiles
            for attr in cfg.groups:
                values = np.array([profiles.get(u, {}).get(attr, "") for u in exp.users])
                for v in sorted(set(values) - {""}):
                    rows = _row_mean(hits[values == v])
                    metrics[f"target_hr@{k}_{attr}={v}"] = mean_metric(rows, seed=seed)
        if exp.by == "score":
            metrics["target_score"] = mean_metric(_row_mean(exp.target_scores()), seed=seed)
            metrics["target_percentile"] = mean_metric(_row_mean(exp.percentile()), seed=seed)

    @staticmethod
    def _baseline_metrics(exp: Exposure, base: Exposure, cfg: PoisoningConfig, seed: int,
                          metrics: dict[str, Metric]) -> None:
        for k in cfg.k:
            a, b = _row_mean(exp.hits(k)), _row_mean(base.hits(k))
            metrics[f"baseline_target_hr@{k}"] = mean_metric(b, seed=seed)
            metrics[f"exposure_ratio@{k}"] = ratio_metric(a, b, seed=seed)
            metrics[f"exposure_gain@{k}"] = mean_metric(a - b, seed=seed)
        if exp.by == "score" and base.by == "score":
            shift = _row_mean(exp.target_scores() - base.target_scores())
            metrics["score_shift"] = mean_metric(shift, seed=seed)

    @staticmethod
    def _utility(rec: Recommender, ctx: ProbeContext, cfg: PoisoningConfig, metrics: dict[str, Metric],
                 details: dict[str, Any]) -> None:
        from audit.probes.utility import UtilityConfig, UtilityProbe

        ucfg = UtilityConfig(k=_stealth_k(cfg),
                             negatives=cfg.utility_negatives, users=cfg.users, seed=cfg.seed)
        res = UtilityProbe(ucfg).run(rec, ctx)
        for k in ucfg.k:
            for name in (f"hr@{k}", f"ndcg@{k}"):
                if name in res.metrics:
                    metrics[name] = res.metrics[name]
        details["stealth_protocol"] = res.details.get("protocol", "")

    @staticmethod
    def _manifest_metrics(record: dict[str, Any], metrics: dict[str, Metric], details: dict[str, Any]) -> float | None:
        """Budget, fake users, replaced labels, detector precision/recall, edit cost; returns the
        budget for the series (None when no single attack is recorded)."""
        budgets: dict[str, float] = {}
        attack: dict[str, Any] = {}
        fakes_by_stage: dict[str, list[str]] = {}
        for r in records_named(record, "fake-users"):
            m = r.manifest
            fakes = [str(u) for u in m.get("fake_users", [])]
            fakes_by_stage.setdefault(r.stage, []).extend(fakes)
            budgets["fake_share"] = float(m.get("share", 0.0))
            metrics["fake_share"] = Metric(float(m.get("share", 0.0)), n=int(m.get("n_real_users", 0)),
                                           unit="real users in the poisoned stage")
            metrics["fake_users"] = Metric(float(len(fakes)), n=int(m.get("n_real_users", 0)),
                                           unit="real users in the poisoned stage")
            attack["fake-users"] = {k: v for k, v in m.items() if k != "fake_users"} | {"stage": r.stage}
        for r in records_named(record, "backdoor"):
            m = r.manifest
            budgets["backdoor_rate"] = float(m.get("rate", 0.0))
            metrics["backdoor_rate"] = Metric(float(m.get("rate", 0.0)), n=int(m.get("labels", 0)),
                                              unit="pre-training labels")
            metrics["replaced_labels"] = Metric(float(m.get("replaced_labels", 0)), n=int(m.get("labels", 0)),
                                                unit="pre-training labels")
            attack["backdoor"] = dict(m) | {"stage": r.stage}
        for r in records_named(record, "detect-fakes"):
            m = r.manifest
            flagged = [str(u) for u in m.get("flagged_users", [])]
            fakes = set(fakes_by_stage.get(r.stage, []))
            n_users = int(m.get("n_users", 0))
            attack["detect-fakes"] = {k: v for k, v in m.items() if k != "flagged_users"} | {"stage": r.stage}
            metrics["flagged_users"] = Metric(float(len(flagged)), n=n_users, unit="users in the stage")
            if flagged:
                metrics["detector_precision"] = mean_metric([u in fakes for u in flagged], unit="flagged users")
            if fakes:
                metrics["detector_recall"] = mean_metric([u in set(flagged) for u in sorted(fakes)],
                                                         unit="fake users")
                metrics["fake_base_rate"] = Metric(len(fakes) / max(n_users, 1), n=n_users,
                                                   unit="users in the stage")
        text = record.get("text_attack")
        if isinstance(text, dict) and text.get("targets"):
            edits = [float(v.get("edits", 0)) for v in text["targets"].values()]
            metrics["edit_cost"] = mean_metric(edits, unit="targets")
            metrics["max_edits"] = Metric(float(text.get("max_edits", max(edits))), n=len(edits), unit="targets")
            attack["item-text"] = {"targets": text["targets"], "search": text.get("search")}
        if attack:
            details["attack"] = attack
        if len(budgets) == 1:
            (label, value), = budgets.items()
            metrics["budget"] = Metric(value, n=1, unit=label)
            return value
        return None


#: the names :meth:`PoisoningProbe._manifest_metrics` can read from an attack's recorded manifests
MANIFEST_METRICS: tuple[str, ...] = ("fake_share", "fake_users", "backdoor_rate", "replaced_labels", "flagged_users",
                                     "detector_precision", "detector_recall", "fake_base_rate", "edit_cost",
                                     "max_edits", "budget")


def _stealth_k(cfg: PoisoningConfig) -> list[int]:
    """The stealth measure's cut-offs: the probe's that fit among its sampled negatives, else [1]."""
    return [k for k in cfg.k if k <= cfg.utility_negatives + 1] or [1]


def poisoning_spec(name: str) -> MetricSpec:
    """The declared meaning of an emitted name: its family is the text before ``@`` or ``=``
    (``target_hr@10_gender=F`` -> ``target_hr``)."""
    family = name.split("@", 1)[0].split("=", 1)[0]
    return POISONING_SPECS[family]


def ratio_metric(attacked: np.ndarray, clean: np.ndarray, *, seed: int = 0) -> Metric:
    """mean(attacked) / mean(clean) over users with both values, with a paired bootstrap CI
    (NaN where the clean mean is 0)."""
    rows = np.column_stack([attacked, clean])
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    if rows.shape[0] == 0:
        return Metric(float("nan"), n=0)

    def stat(x: np.ndarray) -> float:
        den = float(x[:, 1].mean())
        return float(x[:, 0].mean()) / den if den > 0 else float("nan")

    return Metric(stat(rows), n=int(rows.shape[0]), ci=paired_bootstrap(rows, stat, seed=seed))


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def measure_exposure(rec: Recommender, ctx: ProbeContext, users: Sequence[str], targets: Sequence[str],
                     cfg: PoisoningConfig, *, condition: str) -> Exposure:
    """Rank each target for each user as the module docstring says; records one output line per user."""
    if rec.has("score"):
        return _by_score(rec, ctx, users, targets, cfg, condition)
    return _by_generation(rec, ctx, users, targets, cfg, condition)


def _by_score(rec: Recommender, ctx: ProbeContext, users: Sequence[str], targets: Sequence[str],
              cfg: PoisoningConfig, condition: str) -> Exposure:
    ds = ctx.dataset
    titles = ds.item_titles
    catalog_ids = list(titles)
    index = {i: j for j, i in enumerate(catalog_ids)}
    aliases = Catalog(titles)
    n_u, n_t = len(users), len(targets)
    ranks = np.full((n_u, n_t), np.nan)
    tied = np.zeros((n_u, n_t))
    comps = np.zeros((n_u, n_t))
    scores = np.full((n_u, n_t), np.nan)
    eligible = np.zeros((n_u, n_t), dtype=bool)
    target_set = set(targets)
    top_k = max(cfg.k)
    for start in range(0, n_u, cfg.batch_size):
        chunk = list(range(start, min(start + cfg.batch_size, n_u)))
        cand_ids: list[list[str]] = []
        for row in chunk:
            u = users[row]
            if cfg.protocol == "full":
                cand_ids.append(catalog_ids)
            else:
                negs = [i for i in ds.negatives(u, min(cfg.negatives + n_t, _unseen(ds, u)), ctx.seed)
                        if i not in target_set][:cfg.negatives]
                cand_ids.append([*targets, *negs])
        reqs = [ctx.request(users[row], profile=_profile(ds, users[row], cfg), candidates=[titles[i] for i in ids])
                for row, ids in zip(chunk, cand_ids)]
        out = rec.score(reqs, [r.candidates for r in reqs])
        for row, ids, req, s in zip(chunk, cand_ids, reqs, out):
            s = np.asarray(s, dtype=float)
            u = users[row]
            seen = set(ds.sequences[u].full)
            pos = {i: j for j, i in enumerate(ids)} if cfg.protocol == "sampled" else index
            if cfg.protocol == "full":
                open_mask = np.array([i not in seen for i in ids])
            else:
                open_mask = np.array([j >= n_t for j in range(len(ids))])
            for col, t in enumerate(targets):
                if t in seen:
                    continue
                eligible[row, col] = True
                mine = pos[t]
                mask = open_mask.copy()
                mask[mine] = False
                for alias in aliases.aliases(t):
                    if alias != t and alias in pos:
                        mask[pos[alias]] = False
                target_score = s[mine]
                scores[row, col] = target_score
                comps[row, col] = mask.sum()
                if np.isfinite(target_score):
                    ranks[row, col] = 1 + int(np.sum(s[mask] > target_score))
                    tied[row, col] = int(np.sum(s[mask] == target_score))
                else:
                    ranks[row, col] = mask.sum() + 1
            top = np.argsort(-s, kind="stable")[:top_k]
            ctx.recorder.record(
                user=u, condition=condition, prompt="",
                raw=" | ".join(f"{req.candidates[j]}\t{s[j]:.4f}" for j in top),
                parsed=[req.candidates[j] for j in top], targets=list(targets),
                eligible=eligible[row].tolist(), ranks=_json_list(ranks[row]), scores=_json_list(scores[row]),
                competitors=comps[row].astype(int).tolist())
    protocol = ("full catalog: each target ranked among all catalog items the user has not interacted with"
                if cfg.protocol == "full" else
                f"sampled: each target ranked among {cfg.negatives} uniformly sampled items the user has not "
                "interacted with (no targets among them)")
    return Exposure(list(users), tuple(targets), ranks, comps, scores, eligible, by="score", protocol=protocol,
                    tied=tied)


def _by_generation(rec: Recommender, ctx: ProbeContext, users: Sequence[str], targets: Sequence[str],
                   cfg: PoisoningConfig, condition: str) -> Exposure:
    ds = ctx.dataset
    titles = ds.item_titles
    keys = [normalize_title(titles[t]) for t in targets]
    n_u, n_t = len(users), len(targets)
    top_k = max(cfg.k)
    ranks = np.full((n_u, n_t), np.inf)
    comps = np.full((n_u, n_t), float(len(titles) - 1))
    eligible = np.zeros((n_u, n_t), dtype=bool)
    for start in range(0, n_u, cfg.batch_size):
        chunk = list(range(start, min(start + cfg.batch_size, n_u)))
        reqs = [ctx.request(users[row], profile=_profile(ds, users[row], cfg)) for row in chunk]
        gens = ctx.generate(rec, reqs, top_k, condition)
        for row, gen in zip(chunk, gens):
            if gen.failed is not None:  # no answer: not eligible (a miss would read as robustness)
                continue
            seen = set(ds.sequences[users[row]].full)
            listed = [normalize_title(t) for t in gen.items[:top_k]]
            for col, t in enumerate(targets):
                if t in seen:
                    continue
                eligible[row, col] = True
                if keys[col] in listed:
                    ranks[row, col] = listed.index(keys[col]) + 1
    protocol = f"open generation: a target counts as exposed when its title is in the generated top-{top_k}"
    return Exposure(list(users), tuple(targets), ranks, comps, np.full((n_u, n_t), np.nan), eligible,
                    by="generate", protocol=protocol)


def _profile(ds: Any, user: str, cfg: PoisoningConfig) -> dict[str, str]:
    return dict(ds.user_profiles.get(user, {})) if cfg.profile else {}


def _unseen(ds: Any, user: str) -> int:
    return len(ds.item_titles) - len(set(ds.sequences[user].full))


def _json_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]
