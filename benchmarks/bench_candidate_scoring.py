"""Shared-prompt (KV-cache) candidate scoring vs one full forward per candidate.

Builds the reference model on ML-100k (loads it from the model cache; trains it first when
absent, ~2 min for ``--size default`` on 2 cores), then for ``--users`` users scores the test item
and 99 sampled negatives (100 candidates, ``<item_X> title<sep>`` each) three ways:

- ``cached``: :func:`audit.reference.inference.score_continuations` (prompt once, its KV cache
  repeated over the candidates, which run only their own tokens) - what the adapter uses;
- ``naive``: one full forward over prompt + candidate per candidate (the obvious reference);
- ``batched``: one padded batch of all 100 prompt + candidate sequences, no cache.

Users alternate which method runs first (so load on the shared CPU hits all alike). Prints
each total time, the ratios and the largest absolute score difference.

    .venv/bin/python benchmarks/bench_candidate_scoring.py --users 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from audit.build import build_recommender
from audit.data.loaders import load_dataset
from audit.paths import models_dir
from audit.reference import inference
from audit.variants import BuildContext


def batched_full(model, prompt: list[int], conts: list[list[int]]) -> np.ndarray:
    """All candidates in one padded batch without a cache (prompt recomputed per row)."""
    lps = inference.sequence_logprobs(model, [prompt + c for c in conts], batch_size=len(conts))
    return np.array([lp[len(prompt) - 1:].sum() for lp in lps])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50, help="users (seeded sample of evaluable users)")
    ap.add_argument("--negatives", type=int, default=99)
    ap.add_argument("--size", default="default", choices=["default", "small", "tiny"])
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (quick runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ds = load_dataset("ml-100k")
    ctx = BuildContext(dataset=ds, cache_dir=models_dir(), seed=args.seed, progress=True)
    entry = {"adapter": "reference", "size": args.size}
    if args.epochs is not None:
        entry["epochs"] = args.epochs
    rec = build_recommender("reference", entry, ctx)
    model, fmt = rec.model, rec.fmt
    titles = ds.item_titles
    users = ds.sample_users(args.users, args.seed)
    jobs = []
    for u in users:
        seq = ds.sequences[u]
        prompt = fmt.prompt_ids_for_items(seq.test_history, ds.user_profiles.get(u, {}))
        cands = [seq.test, *ds.negatives(u, args.negatives, args.seed)]
        jobs.append((prompt, [fmt.output_ids(titles[c]) for c in cands]))

    methods = {
        "cached": lambda p, c: inference.score_continuations(model, p, c),
        "naive": lambda p, c: inference.score_continuations_naive(model, p, c),
        "batched": lambda p, c: batched_full(model, p, c),
    }
    names = list(methods)
    times = dict.fromkeys(names, 0.0)
    diffs = {"naive": 0.0, "batched": 0.0}
    methods["cached"](*jobs[0])  # warm-up
    for i, (prompt, conts) in enumerate(jobs):
        order = names[i % 3:] + names[:i % 3]
        out = {}
        for name in order:
            t0 = time.perf_counter()
            out[name] = methods[name](prompt, conts)
            times[name] += time.perf_counter() - t0
        for name in diffs:
            diffs[name] = max(diffs[name], float(np.abs(out["cached"] - out[name]).max()))

    n_cands = len(jobs[0][1])
    mean_prompt = np.mean([len(p) for p, _ in jobs])
    mean_cand = np.mean([len(c) for _, cs in jobs for c in cs])
    print(f"model: {rec.info['parameters']} parameters, {rec.info['model_dir']}")
    print(f"{len(jobs)} users x {n_cands} candidates; prompt {mean_prompt:.1f} tokens, "
          f"candidate {mean_cand:.1f} tokens (mean); threads {args.threads}")
    for name in names:
        print(f"{name:8s} {times[name]:8.2f} s  ({1000 * times[name] / len(jobs):7.1f} ms/user)")
    print(f"ratio naive/cached   {times['naive'] / times['cached']:.2f}x   "
          f"max |score diff| {diffs['naive']:.2e}")
    print(f"ratio batched/cached {times['batched'] / times['cached']:.2f}x   "
          f"max |score diff| {diffs['batched']:.2e}")


if __name__ == "__main__":
    main()
