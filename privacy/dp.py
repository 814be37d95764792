"""DP-SGD fine-tuning with Opacus: the ``dp`` trainer and the ``dp`` variant.

The privacy unit is the **user**: the private data set is indexed by user, Opacus's
``DPDataLoader`` Poisson-samples users (each with probability ``batch_size / n_users`` per
step), and each sampled user contributes *one* training window (drawn at random from that
user's sliding windows), i.e. one clipped per-sample gradient per user per step. With
``unit: example`` the records are the windows of one fixed draw instead (example-level DP,
weaker, labelled as such in the account).

Noise is calibrated for the target epsilon by :func:`privacy.accounting.calibrate_dp_sgd`
with the PRV accountant, or with RDP where PRV's grid is too large or it fails; the epsilon reported is what the
accountant composed over the steps actually taken. Empty Poisson batches skip the forward
pass but still take a noise-only optimiser step, so the accountant's step count matches the
calibration. The public part (the reference's pretrain stage, an LLM's base checkpoint) is
trained plainly; catalog title rows are not part of the DP stage.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from audit.config import StrictConfig, validate_config
from audit.errors import ConfigError
from audit.progress import progress_log
from audit.training.protocol import require_feature
from audit.training.recipe import StageSpec
from audit.training.trainers import lr_lambda
from audit.variants import BuildContext, Variant
from privacy.accounting import PrivacyAccount, calibrate_dp_sgd, default_delta
from privacy.finetune import private_finetune_recipe, stage_changes

if TYPE_CHECKING:
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader

    from audit.training.data import TrainingData

Unit = Literal["user", "example"]


class DPOptions(StrictConfig):
    """Options of the ``dp`` trainer (``StageSpec.options``; they enter the cache key).

    ``epsilon``: target epsilon (> 0); ``delta``: None = 1 / (10 n_private) rounded down to a
    power of ten; ``max_grad_norm``: per-user clipping norm C (L2); ``accountant``: ``prv``
    (RDP fallback) or ``rdp``; ``unit``: ``user`` or ``example``; ``secure_mode``: Opacus'
    secure RNG (Poisson sampling and noise from ``torchcsprng``'s /dev/urandom generator, noise
    hardened against floating-point attacks): the guarantee then does not assume a secret seed,
    and runs are no longer reproducible. Off by default (seeded, reproducible; the account says
    so); needs the ``torchcsprng`` package, refused with a ConfigError without it.
    ``physical_batch_size``: rows per forward/backward pass (None = each Poisson batch in one
    pass). The sampled batch, its per-user clipping and its one noise draw are unchanged (Opacus
    accumulates the clipped per-sample gradients over the passes), so the account is too; smaller
    passes bound memory and padding (8 on SmolLM2 on CPU: the DP step per example then costs about
    what the plain step does, against 1.7x at passes of ~61)."""

    epsilon: float = Field(gt=0)
    delta: float | None = Field(default=None, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    accountant: Literal["prv", "rdp"] = "prv"
    unit: Unit = "user"
    secure_mode: bool = False
    physical_batch_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _secure_rng_is_installed(self) -> "DPOptions":
        if self.secure_mode:
            require_secure_rng()
        return self


def require_secure_rng() -> None:
    """Raise (a ValueError, reported as a config error) unless Opacus' secure mode can run:
    Opacus 1.6 draws secure noise and Poisson samples from ``torchcsprng``."""
    try:
        import torchcsprng  # noqa: F401
    except ImportError:
        raise ValueError("secure_mode needs the 'torchcsprng' package (Opacus draws secure noise and Poisson "
                         "samples from its /dev/urandom generator), which is not installed; install a torchcsprng "
                         "built for this torch, or drop secure_mode (the run is then seeded and its guarantee "
                         "assumes the seed stays secret)") from None


class DPConfig(DPOptions):
    """The ``dp`` variant: :class:`DPOptions` plus the fine-tune stage's ``epochs`` (passes
    over the private users: ``epochs / sample rate`` steps), expected ``batch_size`` (users
    per step), peak ``lr`` (AdamW) and the public ``pretrain_epochs`` (None = the recipe's).
    Defaults (10 epochs of 128 users at 5e-3) were chosen on ML-100k's 377 private users:
    larger batches buy more signal per unit of noise than more steps do."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=5e-3, gt=0)
    pretrain_epochs: int | None = Field(default=None, ge=1)


class DPVariant(Variant):
    """Fine-tune a public pretrained model on the private users with DP-SGD: the reference (public
    pretrain stage, private fine-tune stage) or an ``hf`` LLM (its checkpoint is the public part;
    its LoRA stage is private)."""

    requires: ClassVar[frozenset[str]] = frozenset({"train-private"})

    name = "dp"
    Config = DPConfig
    trains = True

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        cfg: DPConfig = self.config  # type: ignore[assignment]
        options = cfg.model_dump(include=set(DPOptions.model_fields))
        if not cfg.secure_mode:  # seeded runs keep their cache keys
            options.pop("secure_mode")
        if cfg.physical_batch_size is None:
            options.pop("physical_batch_size")
        return private_finetune_recipe(
            recipe, variant=self.name, pretrain_epochs=cfg.pretrain_epochs,
            **stage_changes(trainer="dp", epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            catalog_titles=False, options=tuple(options.items())))


# -- the trainer ---------------------------------------------------------------------------
def _records(data: TrainingData, unit: Unit, rng: np.random.Generator) -> tuple[list[str], list[Any] | None]:
    """Users with at least one window, and (example-level only) one fixed draw of windows."""
    users = [u for u in data.users if len(data.sequences[u]) >= 2]
    if unit == "user":
        return users, None
    return users, [ex for u in users for ex in data.user_examples(u, rng)]


def _one_window(data: TrainingData, user: str, rng: np.random.Generator) -> Any:
    windows = data.user_examples(user, rng)
    return windows[int(rng.integers(len(windows)))]


def make_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 opts: DPOptions, epochs: int, delta: float, noise_seed: int,
                 ) -> tuple[PrivacyEngine, Any, Any, Any, str, str]:
    """Opacus's ``make_private`` at the noise :func:`privacy.accounting.calibrate_dp_sgd` finds
    for the target (PRV, or RDP where PRV's grid is too large or it fails). Noise is drawn from a
    generator seeded with ``noise_seed``, or with ``opts.secure_mode`` from Opacus' secure RNG
    (no seed).

    Returns (engine, module, optimizer, loader, accountant used, fallback reason)."""
    import torch
    from opacus import PrivacyEngine

    from privacy import grad_samplers  # noqa: F401  (registers the Conv1D grad sampler)

    steps = epochs * len(loader)
    device = next(p.device for p in model.parameters() if p.requires_grad)  # noise is drawn where the weights are
    try:
        cal = calibrate_dp_sgd(opts.epsilon, delta, 1.0 / len(loader), steps, opts.accountant)
    except ConfigError as exc:
        raise ConfigError(f"dp: {exc} (steps = epochs x private users / batch size)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns that secure RNG is off (seeded runs)
        engine = PrivacyEngine(accountant=cal.accountant, secure_mode=opts.secure_mode)
        module, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=cal.noise_multiplier,
            max_grad_norm=opts.max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks",
            noise_generator=None if opts.secure_mode else torch.Generator(device).manual_seed(noise_seed))
    return engine, module, dp_opt, dp_loader, cal.accountant, cal.fallback_reason


def _accounted_epsilon(engine: PrivacyEngine, dp_opt: Any, delta: float, accountant: str,
                       fallback: str) -> tuple[float, str, str]:
    """The engine's epsilon; if PRV fails on the composed history, RDP on the same history."""
    try:
        eps = float(engine.get_epsilon(delta))
        if math.isfinite(eps):
            return eps, accountant, fallback
        raise ValueError(f"epsilon {eps}")
    except (ValueError, RuntimeError, OverflowError, FloatingPointError) as exc:
        if accountant == "rdp":
            raise
        from opacus.accountants import RDPAccountant

        rdp = RDPAccountant()
        rdp.history = list(engine.accountant.history)
        return float(rdp.get_epsilon(delta)), "rdp", f"prv failed when accounting: {exc}"


def noise_only_step(dp_optimizer: Any) -> None:
    """An optimiser step for an empty Poisson batch: no forward pass, zero-length per-sample
    gradients, so the step adds only noise and the accountant still counts it."""
    import torch

    for p in dp_optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    dp_optimizer.step()


def _clipped_noisy_step(trainable: Any, data: TrainingData, batch: list[Any], dp_optimizer: Any, bf16: bool,
                        physical_batch_size: int | None) -> float:
    """One DP-SGD step over a sampled batch, run in passes of at most ``physical_batch_size``
    rows: every pass but the last only clips and accumulates its per-sample gradients (Opacus'
    ``signal_skip_step``, as its ``BatchMemoryManager`` does); the last adds the one noise draw
    and steps. Returns the batch's mean loss (nats per target token)."""
    import torch

    size = physical_batch_size or len(batch)
    parts = [batch[i:i + size] for i in range(0, len(batch), size)]
    total = 0.0
    for j, part in enumerate(parts):
        input_ids, targets = data.collate(part)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = trainable.per_example_loss(input_ids, targets)
        loss.mean().backward()  # Opacus rescales each pass's per-sample gradients by its own size
        total += float(loss.detach().sum())
        if j < len(parts) - 1:
            dp_optimizer.signal_skip_step(do_skip=True)
            dp_optimizer.step()
            dp_optimizer.zero_grad(set_to_none=True)
    dp_optimizer.step()
    return total / len(batch)


def train_dp_stage(trainable: Any, data: TrainingData, stage: StageSpec, seed: int, progress: bool) -> dict[str, Any]:
    """DP-SGD (AdamW under Opacus) for ``stage.epochs`` passes over the private records at
    expected batch ``stage.batch_size``; returns the summary with the privacy account. Works on
    any :class:`~audit.training.protocol.Trainable` with the ``dp`` feature: the reference (every
    weight private) or an ``hf`` LoRA model (only the LoRA weights take gradients and noise)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    from privacy import grad_samplers  # noqa: F401  (registers the Conv1D grad sampler)

    require_feature(trainable, "dp", "the dp trainer")
    model = trainable.module

    opts = validate_config(DPOptions, dict(stage.options), f"stage {stage.name!r} (trainer 'dp')")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    users, windows = _records(data, opts.unit, rng)
    n_records = len(users) if windows is None else len(windows)
    delta = opts.delta if opts.delta is not None else default_delta(n_records)
    if stage.batch_size > n_records:
        raise ConfigError(f"dp: batch_size {stage.batch_size} exceeds the {n_records} private "
                          f"{opts.unit}s; lower it")
    loader = DataLoader(TensorDataset(torch.arange(n_records)), batch_size=stage.batch_size,
                        generator=torch.Generator().manual_seed(seed + 1))
    model.train()
    opt = torch.optim.AdamW(trainable.parameter_groups(stage.weight_decay), lr=stage.lr, betas=(0.9, 0.98))
    engine, module, dp_opt, dp_loader, accountant, fallback = make_private(
        model, opt, loader, opts, stage.epochs, delta, seed + 2)
    total = stage.epochs * len(dp_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, stage.warmup))
    t0, c0 = time.perf_counter(), time.process_time()
    steps = empty = sampled = 0
    losses: list[float] = []
    bar = tqdm(total=total, desc=f"dp[{stage.name}]", unit="step", disable=not progress, leave=False)
    log = None if progress else progress_log(f"dp[{stage.name}]", "step", total)  # lines in a CI log
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Full backward hook.*")
            for _epoch in range(stage.epochs):
                for (idx,) in dp_loader:
                    if len(idx) == 0:
                        noise_only_step(dp_opt)
                        empty += 1
                    else:
                        if windows is None:
                            batch = [_one_window(data, users[int(i)], rng) for i in idx]
                        else:
                            batch = [windows[int(i)] for i in idx]
                        losses.append(_clipped_noisy_step(trainable, data, batch, dp_opt, stage.bf16,
                                                          opts.physical_batch_size))
                        sampled += len(idx)
                    dp_opt.zero_grad(set_to_none=True)
                    sched.step()
                    steps += 1
                    bar.update(1)
                    if log is not None:
                        log.send(steps)
                    if steps % 20 == 0 and losses:
                        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        epsilon, accountant, fallback = _accounted_epsilon(engine, dp_opt, delta, accountant, fallback)
    finally:
        bar.close()
        module._close()  # remove Opacus hooks and per-sample gradient buffers
    model.eval()
    sample_rate = 1.0 / len(dp_loader)
    account = PrivacyAccount(
        epsilon=epsilon, delta=delta, target_epsilon=opts.epsilon, noise_multiplier=float(dp_opt.noise_multiplier),
        sample_rate=sample_rate, steps=steps, accountant=accountant, unit=opts.unit,
        mechanism="Poisson-subsampled Gaussian (DP-SGD, Opacus), add/remove one " + opts.unit,
        max_grad_norm=opts.max_grad_norm, n_private=n_records,
        randomness="secure" if opts.secure_mode else "seeded",
        note=fallback or ("one clipped gradient per sampled user per step" if opts.unit == "user"
                          else "example-level: one record = one training window"))
    tail = losses[-max(1, len(dp_loader)):]
    return {"trainer": "dp", "epochs": stage.epochs, "steps": steps, "empty_batches": empty,
            "mean_batch_size": sampled / max(1, steps - empty) if steps > empty else 0.0,
            "seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "final_loss": float(np.mean(tail)) if tail else math.nan, "privacy": account.to_json()}

