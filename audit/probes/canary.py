"""Canary exposure (Carlini et al. 2019) and an empirical epsilon lower bound from canaries.

Needs a model trained with the ``canaries`` variant (:mod:`audit.memorisation.canaries`):
its training manifest (the adapter's ``manifest``, or ``info["manifest"]``) lists the
inserted canary sequences. Every canary and ``references`` fresh random sequences of the
same length (same item pool, same profile, never inserted; seeded) are scored by
log-perplexity (mean NLL per token, as the model trained on them: an ``hf`` fine-tune's
answer tokens after its own prompt, the reference's item tokens; see
:mod:`audit.memorisation.sequences`). Reported:

- ``exposure_rep<r>``: mean rank-based exposure (bits, 0..log2 |R|) of the canaries
  inserted r times, with a bootstrap CI over canaries (n = canaries). A canary that beats
  every reference is saturated: its exposure is a lower bound. ``exposure_saturated_rep<r>``
  is the share of saturated canaries and ``details["exposure_summary"]`` spells a fully
  saturated group as ">= 13.3 bits, saturated";
- ``exposure_margin_rep<r>``: the canaries' log-likelihood margin over the references in
  reference standard deviations (keeps resolving when ranks saturate);
- ``exposure_extrapolated_rep<r>``: exposure from a skew-normal fitted to the references'
  log-perplexities, reported only when a Kolmogorov-Smirnov test does not reject the fit
  (``details["fit_check"]``) and capped at 2 log2 |R| bits (what |R| references support;
  capped canaries are counted in ``details["extrapolation_capped"]``);
- ``epsilon_lb_one_run`` (Steinke, Nasr, Jagielski 2023) and ``epsilon_lb_clopper_pearson``
  (Jagielski et al. 2020; HEURISTIC here: canaries from one run are not independent trials,
  so it is declared as context, not set against the accounted epsilon), at the DP account's
  delta by default, from the audit canaries (each inserted with probability 1/2; one inserted
  ``audit_repetitions`` > 1 times is a group of records, and the bounds are per record by group
  privacy, i.e. divided by the group size at delta 0: ``details["epsilon_group"]``),
  guess rules chosen on a seeded half of them and the bound computed on the other half
  (``selection: split``) or a Bonferroni correction over all rules (n = canaries bounded,
  no CI: each is already a one-sided 95% bound);
- ``canary_auroc``: how well log-perplexity separates included from excluded audit canaries.

The canaries' exposures, the reference perplexity quantiles, the fit and the epsilon guess
rules are in ``details``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from audit.interface import Recommender
from audit.memorisation.canaries import canary_manifests, random_sequences
from audit.memorisation.groups import model_manifest
from audit.memorisation.scores import mean_nll
from audit.memorisation.sequences import score_sequences
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, NameFamily, ProbeResult
from audit.stats import mean_metric

if TYPE_CHECKING:
    from audit.memorisation.exposure import SkewNormalFit

SPECS: dict[str, MetricSpec] = {
    "exposure": MetricSpec(direction="lower", range=(0.0, None), chance=1 / math.log(2), unit="bits",
                           meaning="mean rank exposure of the canaries (a lower bound where saturated)"),
    "exposure_saturated": MetricSpec(direction="lower", range=(0.0, 1.0), unit="share of canaries",
                                     meaning="share of canaries that outrank every reference (exposure at its ceiling)"),
    "exposure_margin": MetricSpec(direction="lower", range=(None, None), chance=0.0, unit="reference SDs",
                                  meaning="canary log-likelihood margin over random references, in standard units"),
    "exposure_extrapolated": MetricSpec(direction="lower", range=(0.0, None), chance=1 / math.log(2), unit="bits",
                                        meaning="skew-normal extrapolated exposure, capped at 2 log2 |R|"),
    "epsilon_lb": MetricSpec(direction="lower", range=(0.0, None), unit="epsilon", sampled=False,
                             meaning="empirical epsilon lower bound (one-sided 95%) from the audit canaries"),
    "epsilon_lb_heuristic": MetricSpec(direction=None, range=(0.0, None), unit="epsilon", sampled=False,
                                       meaning="HEURISTIC Clopper-Pearson figure (canaries of one run are not "
                                               "independent trials): context, not a bound"),
    "canary_auroc": MetricSpec(direction="lower", range=(0.0, 1.0), chance=0.5, unit="AUROC",
                               meaning="how well log-perplexity separates included from excluded audit canaries"),
}


def accounted_epsilon(rec: Recommender) -> float | None:
    """The epsilon DP training accounted (an upper bound to set the lower bound against), or None."""
    from privacy.probe import privacy_accounts

    accounts = privacy_accounts({**rec.info, "manifest": model_manifest(rec) or {}})
    return sum(float(a["epsilon"]) for a in accounts) if accounts else None


def accounted_delta(rec: Recommender) -> float | None:
    """The delta of the DP account(s) (summed over composed accounts), or None without DP."""
    from privacy.probe import privacy_accounts

    accounts = privacy_accounts({**rec.info, "manifest": model_manifest(rec) or {}})
    return sum(float(a["delta"]) for a in accounts) if accounts else None


class CanaryConfig(ProbeConfig):
    """``references``: random never-inserted sequences to rank canaries against (|R|, >= 10);
    ``extrapolate``: also report skew-normal exposure; ``alpha``: significance of the epsilon
    bounds (0..0.5); ``delta``: the DP delta they assume (0..1; default: the DP account's delta,
    so the bound can be set against the accounted epsilon, or 0 for a model without one); ``selection``: split | bonferroni
    (how guess rules are chosen without inflating the bound); ``text_format``, ``path``,
    ``answer_items``: as in the membership probe; ``batch_size``: sequences per call."""

    references: int = Field(1000, ge=10, le=1_000_000)
    extrapolate: bool = True
    alpha: float = Field(0.05, gt=0, lt=0.5)
    delta: float | None = Field(None, ge=0, lt=1)
    selection: Literal["split", "bonferroni"] = "split"
    text_format: Literal["auto", "reference", "titles"] = "auto"
    path: Literal["auto", "answers", "tokens", "items"] = "auto"
    answer_items: int | None = Field(None, ge=1, le=50)
    batch_size: int = Field(64, ge=1)


class CanaryExposureProbe(Probe):
    name: ClassVar[str] = "canary"
    description: ClassVar[str] = ("canary exposure by repetition count (Secret Sharer) and one-run / "
                                  "Clopper-Pearson epsilon lower bounds from randomly included canaries")
    requires: ClassVar[frozenset[str]] = frozenset()
    Config = CanaryConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = SPECS

    @classmethod
    def audited_users(cls, config: Any, dataset: Any, users: Any, seed: int) -> list[str]:
        """None of the run's users: it measures planted synthetic canaries, never a real user's result."""
        return []

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """The epsilon bounds and ``canary_auroc``, and ``exposure_*_rep<r>`` for every repetition count r
        of the recommender's ``canaries`` variant (families: r is the variant's, not this probe's)."""
        cfg: CanaryConfig = config  # type: ignore[assignment]
        kinds = ["exposure", "exposure_saturated", "exposure_margin"] + (["exposure_extrapolated"] if cfg.extrapolate
                                                                         else [])
        return MetricNames(("epsilon_lb_one_run", "epsilon_lb_clopper_pearson", "canary_auroc"),
                           tuple(NameFamily((f"{kind}_rep", ""), ("repetitions",), integer=True) for kind in kinds))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        from audit.memorisation.exposure import (exposure, exposure_chance, extrapolation_cap,  # scipy
                                                 saturated, standard_margin)

        cfg: CanaryConfig = self.config  # type: ignore[assignment]
        manifest = model_manifest(rec)
        found = canary_manifests(manifest) if manifest is not None else []
        if not found:
            return ProbeResult.skipped(f"{rec.name} was not trained with canaries; add the 'canaries' variant "
                                       "to a recommender trained here (reference, or hf with a LoRA variant)")
        if not (rec.has("answer-logprobs") or rec.has("token-logprobs") or rec.has("score")):
            return ProbeResult.skipped(f"{rec.name} offers none of 'answer-logprobs', 'token-logprobs' or 'score'")
        canaries = found[0]
        seed = ctx.seed + cfg.seed
        titles = ctx.dataset.item_titles
        profile = dict(canaries.get("profile", {}))
        length = int(canaries["length"])
        exposure_set = canaries.get("exposure", [])
        audit_set = canaries.get("audit", [])
        inserted = {tuple(c["items"]) for c in exposure_set} | {tuple(c["items"]) for c in audit_set}
        refs = self._references(sorted(titles), length, cfg.references, inserted, seed)

        seqs = [c["items"] for c in exposure_set] + [c["items"] for c in audit_set] + refs
        scored, path, note = score_sequences(rec, seqs, [profile] * len(seqs), titles, path=cfg.path,
                                             text_format=cfg.text_format, batch_size=cfg.batch_size,
                                             answer_items=cfg.answer_items)
        if scored is None:
            return ProbeResult.skipped(note)
        ppl = np.array([mean_nll(s.logp) for s in scored])
        n_exp, n_aud = len(exposure_set), len(audit_set)
        exp_ppl, aud_ppl, ref_ppl = ppl[:n_exp], ppl[n_exp:n_exp + n_aud], ppl[n_exp + n_aud:]

        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {
            "path": path, "references": len(refs), "max_exposure_bits": math.log2(len(refs)),
            "canary_length": length, "canary_stage": canaries.get("stage"),
            "ties": "random order: references tied with a canary are placed uniformly at random, exposure is "
                    "the expectation over that order",
            "reference_log_perplexity": {q: float(np.quantile(ref_ppl, float(q)))
                                         for q in ("0.001", "0.01", "0.5", "0.99")},
        }
        fit = self._fit(ref_ppl, cfg, details)
        ranked = np.array([exposure(float(p), ref_ppl) for p in exp_ppl])
        full = saturated(exp_ppl, ref_ppl)
        margin = standard_margin(exp_ppl, ref_ppl)
        extrapolated = fit.exposures(exp_ppl) if fit is not None else None
        cap = extrapolation_cap(len(refs))
        if extrapolated is not None:
            details["extrapolation_cap_bits"] = cap
            details["extrapolation_capped"] = int(np.sum(extrapolated > cap))
            extrapolated = np.minimum(extrapolated, cap)
        reps = np.array([int(c["repetitions"]) for c in exposure_set])
        ceiling = math.log2(len(refs))
        summary: dict[str, str] = {}
        for r in sorted(set(reps.tolist())):
            sel = reps == r
            metrics[f"exposure_rep{r}"] = mean_metric(ranked[sel], seed=seed, unit="canaries").declare(
                SPECS["exposure"].at(chance=exposure_chance(len(refs))))
            metrics[f"exposure_saturated_rep{r}"] = mean_metric(full[sel].astype(float), seed=seed,
                                                                unit="canaries").declare(SPECS["exposure_saturated"])
            metrics[f"exposure_margin_rep{r}"] = mean_metric(margin[sel], seed=seed,
                                                             unit="canaries").declare(SPECS["exposure_margin"])
            k, m = int(full[sel].sum()), int(sel.sum())
            value = float(np.mean(ranked[sel]))
            summary[f"rep{r}"] = (f">= {ceiling:.1f} bits, saturated ({k} of {m} canaries outrank all {len(refs)} "
                                  "references; a lower bound)" if k == m else
                                  f"{value:.2f} bits" + (f" (a lower bound: {k} of {m} canaries saturated)" if k else ""))
            if extrapolated is not None:
                metrics[f"exposure_extrapolated_rep{r}"] = mean_metric(
                    extrapolated[sel], seed=seed, unit="canaries").declare(SPECS["exposure_extrapolated"])
        details["exposure_summary"] = summary
        per_canary = [{"index": c["index"], "repetitions": int(c["repetitions"]),
                       "log_perplexity": float(exp_ppl[j]), "exposure": float(ranked[j]),
                       "exposure_extrapolated": None if extrapolated is None else float(extrapolated[j])}
                      for j, c in enumerate(exposure_set)]
        details["canaries"] = per_canary
        if audit_set:
            acc_delta = accounted_delta(rec)
            delta = cfg.delta if cfg.delta is not None else (acc_delta if acc_delta is not None else 0.0)
            details["epsilon_delta"] = {"delta": delta, "source": "config" if cfg.delta is not None else
                                        ("the DP account" if acc_delta is not None else "no DP account: 0")}
            self._epsilon(audit_set, aud_ppl, cfg, delta, seed, metrics, details,
                          group_size=int(canaries.get("audit_repetitions", 1) or 1))
        details["accounted_epsilon"] = accounted_epsilon(rec)
        self._record(ctx, exposure_set, audit_set, refs, scored, ppl, path)
        return ProbeResult(status="pass", metrics=metrics, details=details)

    @staticmethod
    def _references(items: list[str], length: int, n: int, inserted: set[tuple[str, ...]],
                    seed: int) -> list[list[str]]:
        """``n`` random sequences from the canaries' process that were never inserted."""
        rng = np.random.default_rng([seed, 0x5EC2E7])
        out: list[list[str]] = []
        while len(out) < n:
            for seq in random_sequences(items, n - len(out), length, rng):
                if tuple(seq) not in inserted:
                    out.append(seq)
        return out

    @staticmethod
    def _fit(ref_ppl: np.ndarray, cfg: CanaryConfig, details: dict[str, Any]) -> SkewNormalFit | None:
        if not cfg.extrapolate:
            return None
        from audit.memorisation.exposure import SkewNormalFit, fit_check  # scipy: imported when run

        try:
            fit = SkewNormalFit.fit(ref_ppl)
        except ValueError as exc:
            details["extrapolation"] = f"not fitted: {exc}"
            return None
        details["skew_normal_fit"] = fit.to_json()
        check = fit_check(fit, ref_ppl)
        details["fit_check"] = check.to_json()
        if check.rejected:
            details["extrapolation"] = (f"not reported: the skew-normal fit is rejected by a Kolmogorov-Smirnov "
                                        f"test (p = {check.p_value:.3g} < {check.alpha})")
            return None
        return fit

    @staticmethod
    def _epsilon(audit_set: list[dict[str, Any]], aud_ppl: np.ndarray, cfg: CanaryConfig, delta: float,
                 seed: int, metrics: dict[str, Metric], details: dict[str, Any], group_size: int = 1) -> None:
        from audit.memorisation.epsilon import audit_epsilon  # scipy.stats and scikit-learn: imported when run
        from audit.memorisation.roc import attack_summary

        included = np.array([bool(c["included"]) for c in audit_set])
        score = -aud_ppl  # lower perplexity = guessed "included"
        result = audit_epsilon(score, included, delta=delta, alpha=cfg.alpha, selection=cfg.selection,
                               seed=seed, group_size=group_size)
        if group_size > 1:
            details["epsilon_group"] = (f"each audit canary was inserted {group_size} times, so the audit bounds the "
                                        f"epsilon of a group of {group_size} records; the bounds are per record by "
                                        f"group privacy (the group bound / {group_size} at delta 0, a little less "
                                        "at delta > 0)")
        metrics["epsilon_lb_one_run"] = Metric(result.one_run, n=result.m, ci=None, unit="canaries").declare(
            SPECS["epsilon_lb"])
        metrics["epsilon_lb_clopper_pearson"] = Metric(result.clopper_pearson, n=result.m, ci=None,
                                                       unit="canaries").declare(SPECS["epsilon_lb_heuristic"])
        details["clopper_pearson"] = ("heuristic: canaries from one training run are not independent trials, so "
                                      "this is not a valid lower bound; compare the accounted epsilon with "
                                      "epsilon_lb_one_run only")
        details["epsilon"] = {**result.details, "audit_canaries": int(included.size),
                              "included": int(included.sum())}
        if included.any() and not included.all():
            summary = attack_summary(score, included, fprs=(), seed=seed)
            metrics["canary_auroc"] = Metric(summary.auroc.value, summary.auroc.n, summary.auroc.ci,
                                             unit="canaries").declare(SPECS["canary_auroc"])
            details["roc"] = {"canary": summary.roc}

    @staticmethod
    def _record(ctx: ProbeContext, exposure_set: list[dict[str, Any]], audit_set: list[dict[str, Any]],
                refs: list[list[str]], scored: list[Any], ppl: np.ndarray, path: str) -> None:
        kinds = (["exposure"] * len(exposure_set) + ["audit"] * len(audit_set) + ["reference"] * len(refs))
        meta = exposure_set + audit_set + [{} for _ in refs]
        for kind, m, s, p in zip(kinds, meta, scored, ppl):
            extra = {k: v for k, v in m.items() if k in ("index", "repetitions", "included")}
            ctx.recorder.record(user=None, condition=kind, prompt=s.text,
                                raw=json.dumps({"log_perplexity": round(float(p), 6)}), parsed=[],
                                path=path, **extra)
