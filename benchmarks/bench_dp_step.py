"""DP-SGD step time over non-private step time on the reference model (target <= 2.5x).

The network is the reference model at a preset size (``--preset default``: the adapter's
default, bf16 autocast as its recipe says; tokenizer trained on ML-100k, item tokens for the
whole catalog); the batches are real fine-tune windows: one random window per private user,
``--batch`` users per step (what a DP step sees). Weights are freshly initialised: step
time does not depend on their values.

Three step kinds on the very same batches, interleaved step by step so they see the same
machine load (the cores are shared):

- ``plain``: what the ``plain`` trainer does (``lm_loss_at_targets``, backward, clip 1.0, AdamW);
- ``plain-per-seq``: the DP trainer's loss (each sequence's own mean, full logits) without
  Opacus, to separate the loss path from the per-sample-gradient cost;
- ``dp``: the DP trainer's step: Opacus hooks (Conv1D grad sampler registered by
  ``privacy.grad_samplers``), per-sample clipping, noise, AdamW.

Prints median step times (ms), the ratio dp / plain, and dp / plain-per-seq.
Run: ``.venv/bin/python benchmarks/bench_dp_step.py [--preset default --batch 64 --steps 20 --threads 2]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import torch
from opacus import PrivacyEngine
from private_setup import private_finetune_setup  # type: ignore[import-not-found]
from torch.utils.data import DataLoader, TensorDataset

from audit.reference.examples import StageData
from audit.reference.model import lm_loss_at_targets, parameter_count
from audit.reference.presets import PRESETS
from audit.reference.trainable import per_sequence_loss


def build(threads: int, preset: str = "default"):
    torch.set_num_threads(threads)
    setup = private_finetune_setup(preset)
    return setup.model, setup.data, setup.recipe


def batches(data: StageData, batch: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    users = data.users
    out = []
    for _ in range(n):
        picked = rng.choice(len(users), size=batch, replace=False)
        exs = []
        for i in picked:
            w = data.user_examples(users[i], rng)
            exs.append(w[int(rng.integers(len(w)))])
        out.append(data.collate(exs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    args = ap.parse_args()
    base, data, recipe = build(args.threads, args.preset)
    bf16 = recipe.stages[0].bf16
    print(f"reference model ({args.preset}): {parameter_count(base):,} parameters, vocab {base.config.vocab_size}, "
          f"bf16 autocast {bf16}, batch {args.batch} users, threads {args.threads}")
    work = batches(data, args.batch, args.steps + args.warmup, seed=0)
    print(f"mean sequence length {np.mean([b[0].shape[1] for b in work]):.1f} tokens")

    plain = copy.deepcopy(base).train()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    perseq = copy.deepcopy(base).train()
    perseq_opt = torch.optim.AdamW(perseq.parameters(), lr=1e-3)
    dp_model = copy.deepcopy(base).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="prv")
        loader = DataLoader(TensorDataset(torch.arange(len(data.users))), batch_size=args.batch)
        _gsm, dp_opt, _ = engine.make_private(
            module=dp_model, optimizer=torch.optim.AdamW(dp_model.parameters(), lr=1e-3), data_loader=loader,
            noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(0))

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def clipped_step(model, opt, loss_fn):
        """One non-private step: loss, backward, clip 1.0, AdamW (what the plain trainer does)."""
        def step(ids, tgt):
            with autocast():
                loss = loss_fn(model, ids, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return step

    step_plain = clipped_step(plain, plain_opt, lm_loss_at_targets)
    step_perseq = clipped_step(perseq, perseq_opt, lambda m, ids, tgt: per_sequence_loss(m, ids, tgt).mean())

    def step_dp(ids, tgt):
        with autocast():
            loss = per_sequence_loss(dp_model, ids, tgt).mean()
        loss.backward()
        dp_opt.step()
        dp_opt.zero_grad(set_to_none=True)

    kinds = {"plain": step_plain, "plain-per-seq": step_perseq, "dp": step_dp}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (ids, tgt) in enumerate(work):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for k in order:
                t0 = time.perf_counter()
                kinds[k](ids, tgt)
                if i >= args.warmup:
                    times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>14}: median {v:8.1f} ms/step over {len(times[k])} steps")
    print(f"ratio dp / plain         = {med['dp'] / med['plain']:.2f}x (target <= 2.5x)")
    print(f"ratio dp / plain-per-seq = {med['dp'] / med['plain-per-seq']:.2f}x")


if __name__ == "__main__":
    main()
