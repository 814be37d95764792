"""DP-LoRA step time over the plain LoRA step on the real SmolLM2-135M (issue target <= 1.5x).

The model is the fetched SmolLM2-135M-Instruct (``recaudit fetch smollm2-135m``) with the
``lora`` variant's defaults (r 8 on all attention and MLP projections of the last 8 of 30
layers); the batches are real training examples of ML-100k users (the recommender's own prompt
with a 10-item history -> the next 10 titles), ``--batch`` users per step, as the trainers see
them. Step kinds on the very same batches, interleaved step by step so they see the same load:

- ``plain``: what the ``plain`` trainer does on an ``hf`` model (``LoraTrainable.loss``: logits at
  answer positions only, backward, clip 1.0, AdamW);
- ``plain-per-example``: the DP trainer's loss (``per_example_loss``, each example's own mean)
  without Opacus, to separate the loss path from the per-sample-gradient cost;
- ``dp-hooks``: the ``dp`` trainer's step (Opacus hooks: per-sample LoRA gradients, per-user
  clipping, noise, AdamW);
- ``dp-ghost``: the same with Opacus' ghost clipping (``grad_sample_mode="ghost"``: per-sample
  gradient norms without instantiating per-sample gradients, then a second backward).

Prints median step times (s), the ratios against ``plain`` and the mean tokens per example.
Run: ``.venv/bin/python benchmarks/bench_dp_lora.py [--batch 8 --steps 5 --threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
import tempfile

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from torch.utils.data import DataLoader, TensorDataset

from audit.build import build_recommender
from audit.data.loaders import load_dataset
from audit.llm.examples import LLMStageData
from audit.llm.lora import LoraOptions, attach_lora
from audit.llm.trainable import LoraTrainable
from audit.variants import BuildContext


def lora_model(dataset, cache: Path):
    """A fresh SmolLM2 recommender with LoRA (variant defaults) attached; (trainable, base parts)."""
    rec = build_recommender("llm", {"adapter": "hf", "model": "smollm2-135m", "history": 10},
                            BuildContext(dataset=dataset, cache_dir=cache, seed=0, progress=False))
    parts = rec.base_parts()
    peft_model = attach_lora(parts.model, LoraOptions(), seed=0)
    peft_model.train()
    return LoraTrainable(peft_model), parts


def batches(data: LLMStageData, batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked = rng.choice(len(data.users), size=batch, replace=False)
        out.append(data.collate([data.user_examples(data.users[i], rng)[0] for i in picked]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="plain,plain-per-example,dp-hooks,dp-ghost")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ds = load_dataset("ml-100k")
    wanted = args.kinds.split(",")
    cache = Path(tempfile.mkdtemp(prefix="bench-dp-lora-"))
    models = {k: lora_model(ds, cache) for k in wanted}
    parts = next(iter(models.values()))[1]
    groups = ds.user_groups(seed=0, pretrain=0.5, heldout=0.1)
    seqs = {u: tuple(ds.sequences[u].train) for u in groups.finetune if u in ds.sequences}
    data = LLMStageData(seqs, {u: dict(ds.user_profiles.get(u, {})) for u in seqs}, dict(ds.item_titles),
                        parts.encode_prompt, parts.encode_answer, history=10, targets=10, examples_per_user=1,
                        attribute_dropout=0.5, pad_id=parts.pad_id)
    work = batches(data, args.batch, args.steps + args.warmup, seed=0)
    n_lora = sum(p.numel() for _, p in next(iter(models.values()))[0].named_trainable())
    print(f"SmolLM2-135M + LoRA: {n_lora:,} trainable parameters; batch {args.batch} users; threads "
          f"{args.threads}; mean example length {np.mean([int((b[0] != parts.pad_id).sum()) / b[0].shape[0] for b in work]):.0f} "
          f"tokens (padded {np.mean([b[0].shape[1] for b in work]):.0f})", flush=True)

    def plain_step(kind: str, per_example: bool):
        tr = models[kind][0]
        opt = torch.optim.AdamW(tr.parameter_groups(0.0), lr=1e-4)

        def step(ids, tgt):
            loss = tr.per_example_loss(ids, tgt).mean() if per_example else tr.loss(ids, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in tr.named_trainable()], 1.0)
            opt.step()
        return step

    def dp_step(kind: str, mode: str):
        tr = models[kind][0]
        loader = DataLoader(TensorDataset(torch.arange(len(data.users))), batch_size=args.batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="prv")
            extra = {"criterion": torch.nn.CrossEntropyLoss()} if mode == "ghost" else {}
            made = engine.make_private(module=tr.module, optimizer=torch.optim.AdamW(tr.parameter_groups(0.0), lr=1e-4),
                                       data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                                       poisson_sampling=True, grad_sample_mode=mode,
                                       noise_generator=torch.Generator().manual_seed(0), **extra)
        module, opt = made[0], made[1]

        def step(ids, tgt):
            per_ex = tr.per_example_loss(ids, tgt)
            if mode == "ghost":
                DPTensorFastGradientClipping(module, opt, per_ex, "mean").backward()
            else:
                per_ex.mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    makers = {"plain": lambda: plain_step("plain", False), "plain-per-example": lambda: plain_step("plain-per-example", True),
              "dp-hooks": lambda: dp_step("dp-hooks", "hooks"), "dp-ghost": lambda: dp_step("dp-ghost", "ghost")}
    steps = {k: makers[k]() for k in wanted}
    times: dict[str, list[float]] = {k: [] for k in wanted}
    t_all = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (ids, tgt) in enumerate(work):
            for k in (wanted if i % 2 == 0 else list(reversed(wanted))):
                t0 = time.perf_counter()
                steps[k](ids, tgt)
                if i >= args.warmup:
                    times[k].append(time.perf_counter() - t0)
            done = i + 1
            eta = (time.perf_counter() - t_all) / done * (len(work) - done)
            print(f"  step {done}/{len(work)}, ETA {eta:.0f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>18}: median {v:7.2f} s/step over {len(times[k])} steps "
              f"({args.batch / v:.2f} examples/s; all: {', '.join(f'{t:.2f}' for t in times[k])})")
    if "plain" in med:
        for k in med:
            if k != "plain":
                print(f"ratio {k} / plain = {med[k] / med['plain']:.2f}x" + (" (target <= 1.5x)" if k.startswith("dp") else ""))


if __name__ == "__main__":
    main()
