"""The ``fair-prompt`` variant: PFRec's selective fair soft prompt around a frozen model (the
reference, or an ``hf`` LLM, LoRA-tuned or not: any adapter declaring ``soft-prompt``).

Suite usage::

    reference+fair-gender:
      adapter: reference
      variant: {fair-prompt: {attributes: [gender]}}

``wrap`` learns a prefix of ``prefix_len`` input embeddings for the selected attribute set
(:func:`audit.fairness.soft_prompt.train_fair_prompt`: recommendation loss − λ · discriminator
loss, the model's weights frozen) on the model's *trained* users only (never held-out ones)
and, in a suite run, only on users outside those its probes report on (so the leakage and fairness
figures of the defended model are out of sample), caches it as safetensors under ``<cache_dir>/fair-prompt/<key>`` and returns
``rec.with_soft_prefix(prefix)``. The key hashes the base model (its cache key and a digest of
its weights), the variant config, the data fingerprint and the soft-prompt code, so a later
build loads the prefix instead of training again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, field_validator

from audit.cache import to_jsonable
from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.fairness.attributes import resolve_attribute_sets
from audit.interface import Recommender
from audit.training.identity import publish_directory, source_digest
from audit.training.soft_prompt import SoftPromptTarget
from audit.training.stages import TRAIN_THREADS, torch_threads
from audit.variants import BuildContext, Variant

if TYPE_CHECKING:
    import torch

    from audit.fairness.soft_prompt import PromptTrainingSettings

PREFIX_FILE = "prefix.safetensors"
SUMMARY_FILE = "summary.json"
#: the modules whose code decides a trained prefix (with the soft-prompt target's own module, see prefix_key)
CODE_MODULES = ("audit.fairness.soft_prompt", "audit.fairness.fair_prompt", "audit.training.soft_prompt")


@runtime_checkable
class SoftPromptable(Protocol):
    """What an adapter declaring the ``soft-prompt`` capability implements: the frozen torch
    ``model`` (its weights enter the prefix's cache key), the training ``manifest`` (which users
    it trained on), :meth:`soft_prompt_target` (the model as the prefix trainer sees it: its
    neutral training examples, one forward with a prefix, the representation ``embed_user``
    reads) and ``with_soft_prefix``, a copy whose prompts carry an (n, d) prefix of input vectors
    after their first token. The reference and ``hf`` adapters implement it."""

    model: Any
    manifest: Mapping[str, Any] | None

    def soft_prompt_target(self, dataset: Any) -> SoftPromptTarget: ...

    def with_soft_prefix(self, prefix: torch.Tensor | None) -> Recommender: ...


class FairPromptConfig(StrictConfig):
    """Options of the ``fair-prompt`` variant.

    ``attributes``: the selected attribute set (one or more user attributes of the data set;
    several form an intersection, e.g. ``[gender, age]``); ``prefix_len``: learned vectors
    after ``<bos>``; ``lam``: weight λ ≥ 0 of the adversarial term (default 10: on ML-100k, 300 users,
    gender, it takes both the hidden-state and the neutral-list attacker to AUC 0.50 with HR@10
    0.630 vs 0.627 undefended, where λ = 1 left the list attacker at 0.59 and λ = 3 at 0.55); ``epochs``: passes over the
    training users' sliding windows; ``lr``: Adam learning rate of the prefix; ``adversary``:
    ``confuse`` (push the discriminator to the class prior) or ``reverse`` (PFRec's
    −cross-entropy); ``users``: at most this many of the model's trained users (a seeded
    sample; None = all of them); ``batch_size``: windows per step; ``seed``: prefix init,
    discriminator init and window draws. A list ``lam: [1, 3, 10, 30]`` chooses λ on a
    validation split: ``validation_share`` of the fit users (never audited either) are held out,
    a prefix is fitted per λ on the rest, and the smallest λ whose validation attacker AUC (user
    representation, 5-fold logistic regression) is at or below ``target_auc`` is kept (else the
    λ with the lowest validation AUC); the report lists every λ's validation AUC.
    ``validation_share``: share (0..1) of the fit users held out to choose λ (a list ``lam`` only);
    ``target_auc``: the validation attacker AUC a λ has to reach (a list ``lam`` only)."""

    @field_validator("lam")
    @classmethod
    def _lam_values(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(v < 0 for v in values):
            raise ValueError("lam must be a number >= 0 or a non-empty list of them")
        return sorted(set(values)) if isinstance(value, list) else value

    attributes: list[str] = Field(min_length=1)
    prefix_len: int = Field(8, ge=1, le=64)
    lam: float | list[float] = 10.0
    validation_share: float = Field(0.25, gt=0.0, lt=1.0)
    target_auc: float = Field(0.55, gt=0.0, le=1.0)
    epochs: int = Field(8, ge=1, le=200)
    lr: float = Field(1e-2, gt=0.0)
    adversary: Literal["reverse", "confuse"] = "confuse"
    users: int | None = Field(None, ge=2)
    batch_size: int = Field(64, ge=2)
    seed: int = 0

    @field_validator("attributes", mode="before")
    @classmethod
    def _one_name_is_a_set(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("attributes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"attributes {value} repeat a name")
        return value


class FairPromptVariant(Variant):
    """Wraps a built ``reference`` recommender with a fair soft prompt for the selected attributes."""

    name: ClassVar[str] = "fair-prompt"
    requires: ClassVar[frozenset[str]] = frozenset({"soft-prompt"})
    Config = FairPromptConfig
    trains: ClassVar[bool] = False
    fits_on_users: ClassVar[bool] = True

    def preflight(self, ctx: BuildContext) -> None:
        """ConfigError unless at least :data:`MIN_FIT_USERS` users with a history are outside the users
        this recommender's probes report on (the model's trained users among them are checked again
        at build, from its manifest)."""
        if ctx.audit_users is None:
            return
        outside = sum(1 for u in ctx.dataset.user_ids() if u in ctx.dataset.sequences and u not in ctx.audit_users)
        if outside < MIN_FIT_USERS:
            raise ConfigError(
                f"variant 'fair-prompt': only {outside} user(s) are outside the {len(ctx.audit_users)} users this "
                f"recommender's probes report on (at least {MIN_FIT_USERS} needed to fit the prompt out of sample): "
                "give its probes fewer users (`users:` on the probes that list it) or leave it out of a probe "
                "that reads every user")

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        cfg: FairPromptConfig = self.config  # type: ignore[assignment]
        if not (rec.has("soft-prompt") and isinstance(rec, SoftPromptable)):
            raise ConfigError(f"variant 'fair-prompt' learns a soft prompt for a frozen model whose prompts the "
                              f"harness builds (an adapter declaring 'soft-prompt': 'reference' or 'hf', listed "
                              f"before any wrapping variant); {rec.name!r} ({type(rec).__name__}) does not declare it")
        [attr_set] = resolve_attribute_sets(ctx.dataset, [cfg.attributes], "variant 'fair-prompt': attributes")
        users = training_users(rec, ctx, cfg)
        target_module = type(rec.soft_prompt_target(ctx.dataset)).__module__
        key = prefix_key(rec, cfg, ctx.dataset.fingerprint, users, target_module)
        directory = Path(ctx.cache_dir) / "fair-prompt" / key
        if (directory / SUMMARY_FILE).is_file():
            prefix, summary = load_prefix(directory)
            trained_now = False
        else:
            labels = {}
            for u in users:
                value = attr_set.true_condition(ctx.dataset.user_profiles.get(u, {}))
                if value is not None:
                    labels[u] = value
            sequences = {u: ctx.dataset.sequences[u].train for u in labels}
            try:
                from audit.fairness.soft_prompt import train_fair_prompt

                with torch_threads(TRAIN_THREADS):
                    if isinstance(cfg.lam, list):
                        lam, prefix, details, selection = choose_lam(rec, ctx, cfg, sequences, labels)
                    else:
                        lam, selection = cfg.lam, None
                        prefix, details = train_fair_prompt(rec.soft_prompt_target(ctx.dataset), sequences,
                                                            labels, settings_for(cfg, lam), progress=ctx.progress)
            except ValueError as exc:  # e.g. the training users hold a single attribute value
                raise ConfigError(f"variant 'fair-prompt' (attributes {cfg.attributes}): {exc}") from None
            summary = summarise(cfg, details)
            summary["lam"] = lam
            if selection is not None:
                summary["lam_selection"] = selection
            summary["fit_users"] = {"n": len(labels), "disjoint_from_audited": ctx.audit_users is not None,
                                    "audited_users_outside_fit": None if ctx.audit_users is None else len(ctx.audit_users)}
            save_prefix(directory, prefix, summary)
            trained_now = True
        wrapped = rec.with_soft_prefix(prefix)
        wrapped.info["fair_prompt"] = {**summary, "trained_now": trained_now, "prefix_dir": str(directory)}
        return wrapped


#: fewest users a prefix may be fitted on
MIN_FIT_USERS = 20


def settings_for(cfg: FairPromptConfig, lam: float) -> "PromptTrainingSettings":
    from audit.fairness.soft_prompt import PromptTrainingSettings

    return PromptTrainingSettings(prefix_len=cfg.prefix_len, lam=lam, epochs=cfg.epochs, lr=cfg.lr,
                                  batch_size=cfg.batch_size, adversary=cfg.adversary, seed=cfg.seed)


def choose_lam(rec: Any, ctx: BuildContext, cfg: FairPromptConfig, sequences: dict[str, Any],
               labels: dict[str, str]) -> tuple[float, torch.Tensor, dict[str, Any], dict[str, Any]]:
    """λ from the grid ``cfg.lam`` chosen on validation users (see :class:`FairPromptConfig`):
    returns (λ, its prefix fitted on the non-validation users, its training details, the
    selection record)."""
    from audit.fairness.attacker import attack
    from audit.fairness.soft_prompt import train_fair_prompt
    from audit.interface import RecRequest

    if not rec.has("embed-user"):
        raise ConfigError(f"variant 'fair-prompt': choosing λ from a list needs 'embed-user' (the validation "
                          f"attacker reads user representations); {rec.name!r} lacks it: give one λ")
    users = sorted(labels)
    rng = np.random.default_rng([cfg.seed, 7])
    n_valid = max(2, int(round(cfg.validation_share * len(users))))
    valid = set(users[int(j)] for j in rng.choice(len(users), size=min(n_valid, len(users) - 2), replace=False))
    fit = {u: labels[u] for u in users if u not in valid}
    titles = ctx.dataset.item_titles
    valid_users = sorted(valid)
    reqs = [RecRequest(history=tuple(titles[i] for i in sequences[u]), user=u) for u in valid_users]
    tried: list[dict[str, Any]] = []
    found: dict[float, tuple[torch.Tensor, dict[str, Any]]] = {}
    for lam in cfg.lam:  # ascending (the validator sorts the grid)
        prefix, details = train_fair_prompt(rec.soft_prompt_target(ctx.dataset), sequences, fit,
                                            settings_for(cfg, lam), progress=ctx.progress)
        vectors = np.asarray(rec.with_soft_prefix(prefix).embed_user(reqs), dtype=float).reshape(len(reqs), -1)
        result = attack(vectors, [labels[u] for u in valid_users], seed=cfg.seed, folds=5,
                        min_users=5, n_resamples=200)
        found[lam] = (prefix, details)
        tried.append({"lam": lam, "validation_auc": result.auc.value, "validation_auc_ci": result.auc.ci,
                      "final_rec_loss": details["final_rec_loss"]})
    passing = [t["lam"] for t in tried if np.isfinite(t["validation_auc"]) and t["validation_auc"] <= cfg.target_auc]
    finite = [t for t in tried if np.isfinite(t["validation_auc"])]
    if passing:
        lam, rule = passing[0], f"smallest λ with validation AUC <= {cfg.target_auc}"
    elif finite:
        lam = min(finite, key=lambda t: t["validation_auc"])["lam"]
        rule = f"no λ reached validation AUC <= {cfg.target_auc}: the λ with the lowest validation AUC"
    else:
        lam, rule = cfg.lam[-1], "validation AUC not estimable (too few users per value): the largest λ"
    prefix, details = found[lam]
    selection = {"grid": tried, "chosen": lam, "rule": rule, "validation_users": len(valid_users),
                 "fit_users": len(fit), "attacker": "user representation (embed_user), 5-fold logistic regression"}
    return lam, prefix, details, selection


def training_users(rec: Any, ctx: BuildContext, cfg: FairPromptConfig) -> list[str]:
    """The users the base model trained on (from its manifest; held-out users never appear there),
    restricted to real users of the data set outside the users this recommender's probes report on
    (``ctx.audit_users``), optionally a seeded sample of ``cfg.users``."""
    trained: set[str] = set()
    for stage in rec.manifest.get("stages", []):
        trained.update(str(u) for u in stage.get("users", []))
    if not trained:
        raise ConfigError("variant 'fair-prompt': the reference model's manifest lists no trained users, so the "
                          "prompt cannot be trained without touching held-out users; retrain it with this version")
    users = [u for u in ctx.dataset.user_ids() if u in trained and u in ctx.dataset.sequences]
    if ctx.audit_users is not None:
        outside = [u for u in users if u not in ctx.audit_users]
        if len(outside) < MIN_FIT_USERS:
            raise ConfigError(f"variant 'fair-prompt': only {len(outside)} of the model's {len(users)} trained users "
                              f"are outside the {len(ctx.audit_users)} users this recommender's probes report on "
                              f"(at least {MIN_FIT_USERS} needed): give its probes fewer users so the prompt is "
                              "fitted on users it is not audited on")
        users = outside
    if cfg.users is not None and cfg.users < len(users):
        users = ctx.dataset.sample_users(cfg.users, cfg.seed, among=users)
    return users


def summarise(cfg: FairPromptConfig, details: dict[str, Any]) -> dict[str, Any]:
    """The training summary put in ``info['fair_prompt']`` (JSON-able)."""
    last = details["epochs"][-1] if details["epochs"] else {}
    return {
        "attributes": list(cfg.attributes), "adversary": cfg.adversary, "lam": cfg.lam,
        "prefix_len": cfg.prefix_len, "users": details["users"], "classes": details["classes"],
        "class_counts": details["class_counts"], "majority_rate": details["majority_rate"],
        "steps": details["steps"], "seconds": details["seconds"],
        "base_rec_loss": details["base_rec_loss"], "final_rec_loss": details["final_rec_loss"],
        "final_disc_loss": last.get("disc_loss"), "final_disc_accuracy": last.get("disc_accuracy"),
        "epochs": details["epochs"],
    }


def prefix_key(rec: Any, cfg: FairPromptConfig, data_fingerprint: str, users: list[str],
               target_module: str | None = None) -> str:
    """16 hex chars of SHA-256 over the base model (cache key + weights digest), the variant
    config, the data fingerprint, the users it is fitted on and the soft-prompt code (the
    trainer's, and ``target_module``: the model's soft-prompt target)."""
    weights = hashlib.sha256()
    for name, tensor in sorted(rec.model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    code = source_digest(CODE_MODULES + ((target_module,) if target_module else ()))
    payload = json.dumps({"base": rec.manifest.get("key"), "weights": weights.hexdigest(),
                          "variant": cfg.model_dump(mode="json"), "data": data_fingerprint, "code": code,
                          "users": hashlib.sha256("\n".join(sorted(users)).encode()).hexdigest()},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_prefix(directory: Path, prefix: torch.Tensor, summary: dict[str, Any]) -> None:
    """Write ``prefix.safetensors`` + ``summary.json`` under a temporary name, then rename into
    place (another build that got there first wins; its files are kept)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({"prefix": prefix.detach().float().contiguous()}, str(tmp / PREFIX_FILE))
        (tmp / SUMMARY_FILE).write_text(json.dumps(to_jsonable(summary), indent=1, sort_keys=True))

    publish_directory(directory, write, lambda d: (d / SUMMARY_FILE).is_file())


def load_prefix(directory: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The cached prefix (float32, (prefix_len, d)) and its training summary."""
    from safetensors.torch import load_file

    prefix = load_file(str(directory / PREFIX_FILE))["prefix"]
    return prefix, json.loads((directory / SUMMARY_FILE).read_text())

