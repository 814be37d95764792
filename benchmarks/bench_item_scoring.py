"""Item-token scoring against title scoring on SmolLM2-135M, same users and candidates, one run.

Both are the ``hf`` adapter on the fetched SmolLM2-135M-Instruct, zero-shot (scoring cost does
not depend on the weights' values): ``items: titles`` scores each candidate by its title's summed
log-likelihood after the prompt (shared prompt keys/values, the default), ``items: tokens`` reads
all candidates' log-probabilities from one forward over the prompt. Each scores the test item and
99 uniform negatives for the same seeded users, interleaved (title, items, title, items ...) so
load changes hit both alike. Then the training throughput of both LoRA forms: a few optimiser
steps on the real training examples (batch 8, LoRA on the top 8 layers), in examples/s and
predicted targets (answer tokens or next items) per second.

    .venv/bin/python benchmarks/bench_item_scoring.py --users 20
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds over the users")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import tempfile

    import torch

    from audit.build import build_recommender
    from audit.data.loaders import load_dataset
    from audit.interface import RecRequest
    from audit.variants import BuildContext

    torch.set_num_threads(2)
    ds = load_dataset("ml-100k")
    ctx = BuildContext(dataset=ds, cache_dir=tempfile.mkdtemp(prefix="bench-items-"), seed=0, progress=False)
    titles_rec = build_recommender("titles", {"adapter": "hf", "model": "smollm2-135m"}, ctx)
    items_rec = build_recommender("items", {"adapter": "hf", "model": "smollm2-135m", "items": "tokens"}, ctx)
    items10 = build_recommender("items10", {"adapter": "hf", "model": "smollm2-135m", "items": "tokens",
                                            "history": titles_rec.config.history}, ctx)
    users = ds.sample_users(args.users, seed=args.seed)
    titles = ds.item_titles
    reqs, cands = [], []
    for u in users:
        seq = ds.sequences[u]
        reqs.append(RecRequest(history=tuple(titles[i] for i in seq.test_history),
                               profile=dict(ds.user_profiles.get(u, {})), user=u))
        cands.append([titles[c] for c in [seq.test, *ds.negatives(u, 99, args.seed)]])
    seconds: dict[str, list[float]] = {"titles": [], "items": [], "items10": []}
    for _ in range(args.rounds):
        for name, rec in (("titles", titles_rec), ("items", items_rec), ("items10", items10)):
            t0 = time.perf_counter()
            rec.score(reqs, cands)
            seconds[name].append((time.perf_counter() - t0) / len(users))
    print(f"SmolLM2-135M, {len(users)} users x 100 candidates, 2 torch threads, {args.rounds} interleaved rounds; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {'scoring':<34} {'s/user (min)':>12} {'s/user (median)':>16}")
    h = titles_rec.config.history
    labels = {"titles": f"titles, {h}-item history", "items": f"item tokens, {items_rec.config.history}-item history",
              "items10": f"item tokens, {h}-item history"}
    for name, label in labels.items():
        print(f"  {label:<34} {min(seconds[name]):>12.3f} {np.median(seconds[name]):>16.3f}")
    for name in ("items", "items10"):
        print(f"  {labels[name]}: {min(seconds['titles']) / min(seconds[name]):.1f}x fewer seconds per user than "
              "titles (min over rounds)")
    if args.train_steps > 0:
        train_throughput(ds, args.train_steps)


def train_throughput(ds, steps: int) -> None:
    """examples/s and targets/s of a few plain optimiser steps of each LoRA form on its real examples."""
    import tempfile

    import torch

    from audit.adapters.hf import HFAdapter, HFConfig
    from audit.llm.item_training import ItemModel, ItemRecipe
    from audit.llm.training import LoraModel, LoraRecipe
    from audit.training.stages import recipe_groups
    from audit.variants import BuildContext

    ctx = BuildContext(dataset=ds, cache_dir=tempfile.mkdtemp(prefix="bench-items-"), seed=0, progress=False)
    print(f"\n  {'training (batch 8, LoRA top 8 layers)':<40} {'examples/s':>10} {'targets/s':>10}")
    for form in ("titles", "tokens"):
        rec = HFAdapter.build(HFConfig(model="smollm2-135m", items=form), ctx)
        if form == "titles":
            recipe = LoraRecipe(history=rec.config.history)
            model = LoraModel(recipe, rec.base_parts(), ds.item_titles)
        else:
            recipe = ItemRecipe(history=rec.config.history)
            base = rec.item_base_parts(ds.item_titles)
            base.model = _fresh_base(rec)
            model = ItemModel(recipe, base)
        groups = recipe_groups(recipe, ds)
        users = list(groups.trained)[:steps * 8]
        data = model.stage_data(recipe.stages[0], {u: ds.sequences[u].train for u in users},
                                {u: dict(ds.user_profiles.get(u, {})) for u in users})
        rng = np.random.default_rng(0)
        examples = data.epoch_examples(rng)
        trainable = model.trainable()
        params = [p for g in trainable.parameter_groups(0.0) for p in g["params"]]
        opt = torch.optim.AdamW(params, lr=1e-4)
        trainable.module.train()
        times, n_ex, n_tgt = [], 0, 0
        for s, (ids, tgt) in enumerate(data.batches(examples, 8, rng)):
            if s > steps:
                break
            t0 = time.perf_counter()
            loss = trainable.loss(ids, tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if s > 0:  # the first step warms up
                times.append(time.perf_counter() - t0)
                n_ex, n_tgt = n_ex + ids.shape[0], n_tgt + int((tgt != -100).sum())
        label = "titles (10-item answer lists)" if form == "titles" else f"item tokens ({recipe.history}-item windows)"
        print(f"  {label:<40} {n_ex / sum(times):>10.2f} {n_tgt / sum(times):>10.1f}")


def _fresh_base(rec):
    """The adapter's model without item tokens (a fresh load: ItemModel installs its own)."""
    from audit.llm import loading

    model, _ = loading.load_local(rec.directory, rec.device, rec.config.dtype)
    return model


if __name__ == "__main__":
    main()
