"""Membership inference on users: can an attacker tell whether a user's history was trained on?

Members are users the recommender trained on, non-members users it never saw (see
:mod:`audit.memorisation.groups`; with the default reference recipe, the held-out users);
``member_stage`` restricts members to one training stage (e.g. the private ``finetune``
stage of the privacy variants). Both groups are drawn from the whole data set, not from
the run's user sample (a 300-user sample holds only ~30 held-out users); ``users`` caps
each group (seeded sample).

Each user's sequence is their leave-one-out *training* items (the part models train on),
the last ``max_items`` of them, with their profile. Attacks (scores: higher = member):

- ``loss``, ``zlib``, ``mink`` (Min-K%, share ``k``), ``minkpp`` (Min-K%++) from the
  sequence's log-probabilities (:mod:`audit.memorisation.sequences`: as the model trained on
  it: an ``hf`` fine-tune's answer tokens after its own prompt, the last ``answer_items``
  items being the answer; token log-probs in the model's own format; or per-item ``score`` for
  recommenders without token access);
- ``ref``: reference-calibrated loss, when a calibration model trained on disjoint users is
  attached (variant ``mia-reference``); its training users are removed from both groups;
- ``list``: Zhang et al. (CCS 2021)'s black-box list attack from ``generate`` alone
  (:mod:`audit.memorisation.list_attack`), trained on a shadow half of each group and
  measured on the other half.

Reported per attack: ``mia_auroc_<attack>``, ``tpr@1%fpr_<attack>`` and
``tpr@0.1%fpr_<attack>`` (95% bootstrap CIs over users; n = users scored) and the ROC
curve in ``details["roc"][attack]``; ``details["unit_scores"][attack]`` holds each user's score and
label and ``details["unit_statistics"]`` says which scores each AUROC / TPR@FPR is computed from, so
pairs of recommenders get a paired bootstrap over the same users (:mod:`audit.pairs`). A TPR@FPR is reported only where the n0 non-members
resolve it (n0 >= 10 / FPR); otherwise it is listed in ``details["not_estimable"]`` with
the reason. When the recommender does not declare its training users, membership is
assumed (the data set's default split) and the figures are renamed ``assumed_mia_auroc_*``
/ ``assumed_tpr@...`` and declared as context (no better direction): not findings. An attack the recommender cannot support is listed
in ``details["skipped"]`` with the reason. ``control: true`` runs the null audit instead:
"members" and "non-members" are two random halves of the non-members, so every AUROC
should be 0.5 within its CI.

The calibration model's scores are reused within a run when a recommender declares the same
:meth:`~audit.interface.Recommender.identity` and the sequences, profiles, titles and scoring
options are the same (several fine-tunes of one base, each calibrated by that base, score it
once); ``details["reference_scores"]`` says which.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from audit.catalog import Catalog
from audit.interface import RecRequest, Recommender
from audit.memorisation.groups import calibration_reference, declared_trained_users, membership_split, sample
from audit.memorisation.scores import loss_score, min_k, min_k_plus_plus, reference_calibrated, zlib_ratio
from audit.memorisation.sequences import ScoredSequence, resolve_answer_items, score_sequences
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult

ATTACKS: tuple[str, ...] = ("loss", "zlib", "mink", "minkpp", "ref", "list")
SEQUENCE_ATTACKS: tuple[str, ...] = ("loss", "zlib", "mink", "minkpp")
#: calibration scores by digest of (calibration identity, inputs), oldest first; at most
#: ``_REFERENCE_SCORES_KEPT`` kept (a run's calibration models; earlier ones are dropped)
_REFERENCE_SCORES: dict[str, list[ScoredSequence]] = {}
_REFERENCE_SCORES_KEPT = 4

SPECS: dict[str, MetricSpec] = {
    "mia_auroc": MetricSpec(direction="lower", range=(0.0, 1.0), chance=0.5, unit="AUROC", sampled=True,
                            meaning="membership-inference AUROC of the attack (0.5 = members indistinguishable)"),
    "assumed_mia_auroc": MetricSpec(direction=None, range=(0.0, 1.0), chance=0.5, unit="AUROC", sampled=True,
                                    meaning="membership-inference AUROC under ASSUMED membership (the recommender "
                                            "does not declare its training users): context, not a finding"),
    "tpr": MetricSpec(direction="lower", range=(0.0, 1.0), unit="share of members", sampled=True,
                      meaning="true-positive rate of the attack at the stated false-positive rate"),
    "assumed_tpr": MetricSpec(direction=None, range=(0.0, 1.0), unit="share of members", sampled=True,
                              meaning="TPR at the stated FPR under ASSUMED membership: context, not a finding"),
}


class MembershipConfig(ProbeConfig):
    """``users``: at most this many members and as many non-members (None = all);
    ``attacks``: which of loss, zlib, mink, minkpp, ref, list to run; ``k``: Min-K% share
    (0..1]; ``k_count``: tokens Min-K%/Min-K%++ keep: ``ceil`` (ceil(k n), at least one) or
    ``floor`` (int(k n), the authors' code; see audit.memorisation.scores); ``max_items``: last training items scored per user; ``text_format``: auto |
    reference | titles (see audit.memorisation.sequences); ``path``: auto | answers | tokens |
    items (the answer's log-probs after the model's own prompt, token log-probs of a rendered
    text, or per-item ``score``); ``answer_items``: the answers path's answer length (None = the
    model's fine-tune's, the calibration model scored alike; 1..50); ``max_positions``: positions scored per user on
    the items path; ``list_k``: recommendations per user for the list attack;
    ``shadow_share``: share of each group the list attack trains on (0..1); ``item_dim``:
    co-occurrence vector width for the list attack; ``fprs``: FPRs for TPR@FPR (0..1);
    ``control``: null audit on two halves of the non-members; ``member_stage``: audit only the
    users of this training stage as members (e.g. ``finetune``, the private data of the privacy
    variants; users of other stages are left out); ``batch_size``: texts per call."""

    attacks: list[str] = list(ATTACKS)
    k: float = Field(0.2, gt=0, le=1)
    k_count: Literal["ceil", "floor"] = "ceil"
    max_items: int = Field(50, ge=2)
    text_format: Literal["auto", "reference", "titles"] = "auto"
    path: Literal["auto", "answers", "tokens", "items"] = "auto"
    answer_items: int | None = Field(None, ge=1, le=50)
    max_positions: int = Field(20, ge=1)
    list_k: int = Field(10, ge=1, le=100)
    shadow_share: float = Field(0.5, gt=0, lt=1)
    item_dim: int = Field(32, ge=2, le=512)
    fprs: list[float] = [0.01, 0.001]
    control: bool = False
    member_stage: str | None = None
    batch_size: int = Field(64, ge=1)

    @field_validator("attacks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ATTACKS]
        if bad or not v:
            raise ValueError(f"unknown attack(s) {bad}; choose from {', '.join(ATTACKS)}")
        return v

    @field_validator("fprs")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("each FPR must be a share strictly between 0 and 1, e.g. 0.01")
        return v


class MembershipInferenceProbe(Probe):
    name: ClassVar[str] = "membership"
    description: ClassVar[str] = ("membership inference on users: loss, zlib, Min-K%, Min-K%++, "
                                  "reference-calibrated and black-box list attacks -> AUROC, TPR@low FPR")
    requires: ClassVar[frozenset[str]] = frozenset()
    Config = MembershipConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = SPECS

    @classmethod
    def audited_users(cls, config: Any, dataset: Any, users: Any, seed: int) -> list[str]:
        """None of the run's sampled users as such: its groups come from the model's training split
        (members are trained users, which is all a user-fitting variant such as the fair prompt fits
        on), so fitting on them measures a real effect of the variant, not an in-sample one."""
        return []

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """``mia_auroc_<attack>`` and ``tpr@<fpr>fpr_<attack>`` for every configured attack and FPR, and
        the same with ``assumed_`` before them (a recommender that does not declare its training users;
        never under ``control``). Which appear depends on the recommender (an attack it cannot support,
        a TPR its non-members cannot resolve): listed, the union."""
        from audit.memorisation.roc import fpr_label

        cfg: MembershipConfig = config  # type: ignore[assignment]
        own = [f"mia_auroc_{a}" for a in cfg.attacks] + [f"tpr@{fpr_label(f)}fpr_{a}" for a in cfg.attacks
                                                           for f in cfg.fprs]
        return MetricNames(tuple(own if cfg.control else own + [f"assumed_{n}" for n in own]))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        from audit.memorisation.roc import attack_summary, fpr_label  # scikit-learn: imported when run

        cfg: MembershipConfig = self.config  # type: ignore[assignment]
        ds = ctx.dataset
        seed = ctx.seed + cfg.seed
        calib = calibration_reference(rec)
        exclude = (declared_trained_users(calib) or set()) if calib is not None else set()
        split = membership_split(rec, ds, exclude=exclude, member_stage=cfg.member_stage)
        if cfg.control:
            half = sample(split.nonmembers, len(split.nonmembers) // 2, seed)
            members, nonmembers = half, [u for u in split.nonmembers if u not in set(half)]
        else:
            members, nonmembers = list(split.members), list(split.nonmembers)
        members, nonmembers = sample(members, cfg.users, seed), sample(nonmembers, cfg.users, seed + 1)
        if len(members) < 2 or len(nonmembers) < 2:
            return ProbeResult.skipped(f"need at least 2 members and 2 non-members, found {len(members)} "
                                       f"and {len(nonmembers)} ({split.source})")
        users = members + nonmembers
        labels = np.array([True] * len(members) + [False] * len(nonmembers))
        seqs = [list(ds.sequences[u].train[-cfg.max_items:]) for u in users]
        profiles = [ds.user_profiles.get(u, {}) for u in users]

        reference_source: str | None = None
        per_user: dict[str, np.ndarray] = {}  # attack -> score per user of ``users``
        skipped: dict[str, str] = {}
        wanted = set(cfg.attacks)
        answer_items = resolve_answer_items(rec, cfg.answer_items)  # the calibration model is scored alike
        scored, path, note = self._sequence_scores(rec, seqs, profiles, ctx, cfg, wanted, answer_items)
        if scored is None:
            for a in wanted & set(SEQUENCE_ATTACKS + ("ref",)):
                skipped[a] = note
        else:
            per_user.update(self._from_sequences(scored, cfg, wanted, skipped, note))
            if "ref" in wanted:
                reference_source = self._reference_scores(path, calib, scored, seqs, profiles, ctx, cfg, per_user,
                                                          skipped, answer_items)
            self._record(ctx, users, labels, scored, per_user, path)
        scores = {a: (v, labels) for a, v in per_user.items()}
        scored_users = {a: users for a in per_user}
        list_details: dict[str, object] = {}
        if "list" in wanted:
            found = self._list_scores(rec, members, nonmembers, ctx, cfg, seed, skipped, list_details)
            if found is not None:
                scores["list"], scored_users["list"] = found[:2], found[2]
        if not scores:
            return ProbeResult.skipped("no attack could run: " + "; ".join(f"{a}: {r}" for a, r in skipped.items()))

        metrics: dict[str, Metric] = {}
        roc: dict[str, dict[str, list[float]]] = {}
        counts: dict[str, dict[str, int]] = {}
        not_estimable: dict[str, str] = {}
        # membership the recommender did not declare is an assumption: its AUROC is context, not a finding
        assumed = split.assumed and not cfg.control
        prefix = "assumed_" if assumed else ""
        unit_scores: dict[str, dict[str, dict[str, float]]] = {}
        unit_statistics: dict[str, dict[str, object]] = {}
        for attack in [a for a in ATTACKS if a in scores]:
            s, y = scores[attack]
            summary = attack_summary(s, y, fprs=cfg.fprs, seed=seed)
            unit_scores[attack] = {"scores": {u: round(float(v), 6) for u, v in zip(scored_users[attack], s)},
                                   "labels": {u: int(bool(v)) for u, v in zip(scored_users[attack], y)}}
            metrics[f"{prefix}mia_auroc_{attack}"] = summary.auroc.declare(SPECS[f"{prefix}mia_auroc"])
            unit_statistics[f"{prefix}mia_auroc_{attack}"] = {"statistic": "auroc", "scores": attack}
            for f, m in summary.tpr.items():
                metrics[f"{prefix}tpr@{fpr_label(f)}fpr_{attack}"] = m.declare(SPECS[f"{prefix}tpr"])
                unit_statistics[f"{prefix}tpr@{fpr_label(f)}fpr_{attack}"] = {"statistic": "tpr", "fpr": f,
                                                                              "scores": attack}
            for f, reason in summary.not_estimable.items():
                not_estimable[f"tpr@{fpr_label(f)}fpr_{attack}"] = reason
            roc[attack] = summary.roc
            counts[attack] = {"members": summary.n_members, "nonmembers": summary.n_nonmembers}
        details = {
            "membership": split.source, "membership_assumed": assumed, "control": cfg.control, "path": path,
            "not_estimable": not_estimable,
            "members": len(members), "nonmembers": len(nonmembers),
            "excluded_users": split.excluded, "k": cfg.k, "k_count": cfg.k_count, "max_items": cfg.max_items,
            "users_per_attack": counts, "roc": roc, "skipped": skipped,
            "score_direction": "higher = member", "list_attack": list_details,
            "reference_scores": reference_source,
            # per-user scores (higher = member) and labels (1 = member) behind each AUROC / TPR@FPR, so a
            # pair of recommenders is compared on the same users by a paired bootstrap (audit.pairs)
            "unit_scores": unit_scores, "unit_statistics": unit_statistics,
            "fpr_resolution": "with n0 non-members an attack can only show FPRs in steps of 1/n0; TPR at an FPR "
                              "below 1/n0 is the TPR with no false positive at all",
        }
        return ProbeResult(status="pass", metrics=metrics, details=details)

    # -- sequence log-probabilities -------------------------------------------------------
    @staticmethod
    def _sequence_scores(rec: Recommender, seqs: list[list[str]], profiles: list[dict[str, str]],
                         ctx: ProbeContext, cfg: MembershipConfig, wanted: set[str], answer_items: int,
                         ) -> tuple[list[ScoredSequence] | None, str, str]:
        if not wanted & set(SEQUENCE_ATTACKS + ("ref",)):
            return None, "none", "not requested"
        return score_sequences(rec, seqs, profiles, ctx.dataset.item_titles, path=cfg.path,
                               text_format=cfg.text_format, want_stats="minkpp" in wanted,
                               max_positions=cfg.max_positions, batch_size=cfg.batch_size,
                               answer_items=answer_items)

    @staticmethod
    def _from_sequences(scored: list[ScoredSequence], cfg: MembershipConfig, wanted: set[str],
                        skipped: dict[str, str], note: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "loss" in wanted:
            out["loss"] = np.array([loss_score(s.logp) for s in scored])
        if "zlib" in wanted:
            out["zlib"] = np.array([zlib_ratio(s.logp, s.text) for s in scored])
        if "mink" in wanted:
            out["mink"] = np.array([min_k(s.logp, cfg.k, cfg.k_count) for s in scored])
        if "minkpp" in wanted:
            if all(s.mu is not None and s.sigma is not None for s in scored):
                out["minkpp"] = np.array([min_k_plus_plus(s.logp, s.mu, s.sigma, cfg.k, cfg.k_count) for s in scored])
            else:
                skipped["minkpp"] = note or "no next-token statistics"
        return out

    def _reference_scores(self, target_path: str, calib: Recommender | None, scored: list[ScoredSequence],
                          seqs: list[list[str]], profiles: list[dict[str, str]], ctx: ProbeContext,
                          cfg: MembershipConfig, scores: dict[str, np.ndarray], skipped: dict[str, str],
                          answer_items: int) -> str | None:
        """Fill ``scores["ref"]`` (or ``skipped["ref"]``); returns where the calibration model's
        scores came from ("computed" or "reused: ..."), None when it could not score. The
        calibration model is scored by the target's path (and answer length) so the two align."""
        if calib is None:
            skipped["ref"] = ("no calibration model attached; add the 'mia-reference' variant "
                              "(a reference model trained on disjoint users, or base: true for an hf "
                              "fine-tune's untuned base)")
            return None
        path = next((p for p in ("answers", "tokens") if target_path.startswith(p)), "items")
        key = _reference_key(calib, seqs, profiles, ctx.dataset.item_titles, path, cfg, answer_items)
        ref_scored = _REFERENCE_SCORES.get(key) if key is not None else None
        source = "reused: same calibration model identity and inputs earlier in this run"
        if ref_scored is None:
            source = "computed"
            ref_scored, _, note = score_sequences(calib, seqs, profiles, ctx.dataset.item_titles, path=path,
                                                  text_format=cfg.text_format, max_positions=cfg.max_positions,
                                                  batch_size=cfg.batch_size, answer_items=answer_items)
            if ref_scored is None:
                skipped["ref"] = f"calibration model: {note}"
                return None
            if key is not None:
                _REFERENCE_SCORES[key] = ref_scored
                while len(_REFERENCE_SCORES) > _REFERENCE_SCORES_KEPT:
                    _REFERENCE_SCORES.pop(next(iter(_REFERENCE_SCORES)))
        scores["ref"] = np.array([reference_calibrated(t.logp, r.logp) for t, r in zip(scored, ref_scored)])
        return source

    # -- the black-box list attack --------------------------------------------------------
    @staticmethod
    def _list_scores(rec: Recommender, members: list[str], nonmembers: list[str], ctx: ProbeContext,
                     cfg: MembershipConfig, seed: int, skipped: dict[str, str],
                     details: dict[str, object]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """P(member) of the target-split users, their labels and ids (None when it cannot run)."""
        from audit.memorisation import list_attack  # scikit-learn: imported when run

        if not rec.has("generate"):
            skipped["list"] = f"{rec.name} does not offer 'generate'"
            return None
        sm, sn, tm, tn = list_attack.shadow_split(members, nonmembers, shadow_share=cfg.shadow_share, seed=seed)
        if min(len(sm), len(sn), len(tm), len(tn)) < 2:
            skipped["list"] = "too few users for a shadow and a target split (need 2 of each)"
            return None
        ds = ctx.dataset
        titles = ds.item_titles
        users = sm + sn + tm + tn
        hist = {u: list(ds.sequences[u].train[-cfg.max_items:]) for u in users}
        reqs = [RecRequest(history=tuple(titles[i] for i in hist[u]), profile=ds.user_profiles.get(u, {}),
                           user=u) for u in users]
        member_set = set(members)
        gens = []
        for start in range(0, len(reqs), cfg.batch_size):
            part = reqs[start:start + cfg.batch_size]
            conds = ["member" if r.user in member_set else "nonmember" for r in part]
            gens.extend(ctx.generate(rec, part, cfg.list_k, conds, attack="list"))
        # a failed request (no answer) leaves its user out: an empty list is not the model's answer
        failed = {u for u, g in zip(users, gens) if g.failed is not None}
        sm, sn, tm, tn = ([u for u in group if u not in failed] for group in (sm, sn, tm, tn))
        if min(len(sm), len(sn), len(tm), len(tn)) < 2:
            skipped["list"] = f"too few answered users after {len(failed)} failed requests (need 2 per split)"
            return None
        catalog = Catalog(titles)
        recommended = {u: [m.item_id for m in catalog.match_many(list(g.items)) if m.item_id is not None]
                       for u, g in zip(users, gens) if u not in failed}
        if rec.has("embed"):
            ids = list(titles)
            vecs = np.asarray(rec.embed([titles[i] for i in ids]), dtype=float)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
            vectors = dict(zip(ids, vecs))
            source = "recommender embed"
        else:
            vectors = list_attack.cooccurrence_vectors([hist[u] for u in sm + sn], list(titles),
                                                       dim=cfg.item_dim, seed=seed)
            source = "co-occurrence SVD of shadow users"
        dim = len(next(iter(vectors.values()))) if vectors else cfg.item_dim

        def feats(group: list[str]) -> np.ndarray:
            return np.array([list_attack.list_features(hist[u], recommended[u], vectors, dim) for u in group])

        shadow_x = np.vstack([feats(sm), feats(sn)])
        shadow_y = np.array([1] * len(sm) + [0] * len(sn))
        target_x = np.vstack([feats(tm), feats(tn)])
        prob = list_attack.train_and_score(shadow_x, shadow_y, target_x, seed=seed)
        matched = sum(len(v) for v in recommended.values())
        details.update({"item_vectors": source, "shadow": {"members": len(sm), "nonmembers": len(sn)},
                        "target": {"members": len(tm), "nonmembers": len(tn)},
                        "catalog_matched_slots": matched, "slots": sum(len(g.items) for g in gens),
                        "users_left_out_failed_requests": len(failed)})
        return prob, np.array([True] * len(tm) + [False] * len(tn)), tm + tn

    # -- raw outputs ----------------------------------------------------------------------
    @staticmethod
    def _record(ctx: ProbeContext, users: list[str], labels: np.ndarray, scored: list[ScoredSequence],
                scores: dict[str, np.ndarray], path: str) -> None:
        for i, (u, s) in enumerate(zip(users, scored)):
            ctx.recorder.record(user=u, condition="member" if labels[i] else "nonmember", prompt=s.text,
                                raw=json.dumps({"logp": [round(float(x), 5) for x in s.logp]}),
                                parsed=[], scores={a: float(v[i]) for a, v in scores.items()}, path=path)


def _reference_key(calib: Recommender, seqs: list[list[str]], profiles: list[dict[str, str]],
                   titles: dict[str, str], path: str, cfg: MembershipConfig, answer_items: int) -> str | None:
    """Digest of everything the calibration scores depend on; None when ``calib`` declares no
    identity (its scores are then computed every time)."""
    import hashlib

    identity = calib.identity()
    if identity is None:
        return None
    payload = json.dumps({"identity": identity, "path": path, "answer_items": answer_items,
                          "text_format": cfg.text_format,
                          "max_positions": cfg.max_positions, "sequences": seqs,
                          "profiles": [dict(p) for p in profiles],
                          "titles": sorted((str(k), v) for k, v in titles.items())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
