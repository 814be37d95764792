"""Stage trainers, looked up by name (``StageSpec.trainer``).

A trainer is a function::

    train_stage(trainable: Trainable, data: TrainingData, stage: StageSpec, seed: int, progress: bool) -> dict

that updates ``trainable.module`` in place and returns a JSON-able summary (at least ``steps``,
``seconds``, ``final_loss``). Trainers see a model only through
:class:`audit.training.protocol.Trainable`, so one trainer serves every trainable model.

Every built-in trainer is named here by a lazy ``"module:function"`` target (nothing is imported
until a stage uses it): ``plain`` (below), ``dp`` (:mod:`privacy.dp`) and ``federated``
(:mod:`privacy.federated`). Third-party packages add theirs through the ``recaudit.trainers``
entry-point group.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from audit.progress import progress_log
from audit.registry import Registry
from audit.training.protocol import trainable_parameters

if TYPE_CHECKING:
    from audit.training.data import TrainingData
    from audit.training.protocol import Trainable
    from audit.training.recipe import StageSpec

TrainStage = Callable[["Trainable", "TrainingData", "StageSpec", int, bool], dict]

TRAINERS: Registry[TrainStage] = Registry("trainer", "recaudit.trainers")
TRAINERS.register("plain", "audit.training.trainers:train_plain",
                  "AdamW over every example of the stage, linear warm-up and decay, gradient clipping at 1")
TRAINERS.register("dp", "privacy.dp:train_dp_stage", "DP-SGD with Opacus, user-level (Poisson over users)")
TRAINERS.register("federated", "privacy.federated:train_federated_stage",
                  "FedAvg over simulated Flower clients (Ray), optional central DP")


def lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` (fraction) of the steps, then linear decay to 0."""
    warm = max(1, int(round(warmup * total_steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return f


def train_plain(trainable: "Trainable", data: "TrainingData", stage: "StageSpec", seed: int,
                progress: bool) -> dict[str, Any]:
    """Plain training: ``stage.epochs`` passes over a fresh draw of the stage's examples
    (:meth:`TrainingData.epoch_examples`), AdamW, gradient clipping at 1.0."""
    import torch
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = trainable.module
    params = trainable_parameters(trainable)
    opt = torch.optim.AdamW(trainable.parameter_groups(stage.weight_decay), lr=stage.lr, betas=(0.9, 0.98))
    first = data.epoch_examples(rng)
    steps_per_epoch = data.n_batches(len(first), stage.batch_size)
    total = steps_per_epoch * stage.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, stage.warmup))
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    step, tokens, last_losses = 0, 0, []
    bar = tqdm(total=total, desc=f"train[{stage.name}]", unit="step", disable=not progress, leave=False)
    log = None if progress else progress_log(f"train[{stage.name}]", "step", total)
    examples = first
    for epoch in range(stage.epochs):
        if epoch > 0:
            examples = data.epoch_examples(rng)
        epoch_losses = []
        for input_ids, targets in data.batches(examples, stage.batch_size, rng):
            if step >= total:
                break
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=stage.bf16):
                loss = trainable.loss(input_ids, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            tokens += int((targets != -100).sum())
            epoch_losses.append(float(loss.detach()))
            bar.update(1)
            if log is not None:
                log.send(step)
            if step % 20 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(epoch_losses[-20:]):.3f}")
        last_losses = epoch_losses
    bar.close()
    model.eval()
    return {"trainer": "plain", "epochs": stage.epochs, "steps": step, "target_tokens": tokens,
            "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2),
            "final_loss": float(np.mean(last_losses)) if last_losses else math.nan,
            "examples_per_epoch": len(first)}
