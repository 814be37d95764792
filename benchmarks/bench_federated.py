"""A federated fine-tuning run over centralised fine-tuning of the same total work
(target <= 2x, plus Ray's start-up, which is reported on its own), on the reference model or
on an ``hf`` causal LM's LoRA path (SmolLM2).

Both sides train the same model from the same start on the private (fine-tune) users of
ML-100k with the same optimiser settings:

- centralised: the ``plain`` trainer for ``--epochs`` epochs over the users, on ``--threads``
  threads;
- federated: the ``federated`` path (Flower ``run_simulation``, Ray backend, ``--cpus`` CPUs,
  one thread per client) with ``--clients`` IID clients, *all* of them every round,
  ``--epochs`` rounds of one local epoch: every user's windows are trained ``--epochs`` times
  in both runs.

Models:

- ``--model reference`` (default): the reference model (``--preset``, fresh weights; tokenizer
  trained on ML-100k), all private users, catalog rows off; clients exchange every weight.
- ``--model NAME`` (a fetched model, e.g. ``smollm2-135m``) or ``--path DIR`` (any local HF
  causal-LM directory): the ``hf`` adapter (``--history`` items per prompt, default 5) with LoRA
  as the ``lora`` variant's defaults (r 8 on the attention and MLP projections of the last 8
  layers, lr 1e-3, batch 8; ``--targets`` answer items, default 3; ``--lora JSON`` overrides any
  other option of the variant, e.g. ``'{"layers": null}'``) on the first ``--users`` private
  users (default 64); the frozen base never travels, clients exchange the LoRA weights only.

Printed: the centralised seconds and steps; the federated simulation's seconds split into
start-up (Ray, actors, first load of the task: until every client answered the server's first
query) and rounds; the ratio rounds / centralised (the target) and the ratio with start-up
included; the bytes of trained state sent per round and in all (server -> clients and back, as
the federated manifest counts them); the clients' local steps and losses per round.

Run: ``.venv/bin/python benchmarks/bench_federated.py [--epochs 3 --clients 4]`` (reference);
on SmolLM2-135M (``recaudit fetch smollm2-135m`` first; about 3 minutes on 2 cores):
``.venv/bin/python benchmarks/bench_federated.py --model smollm2-135m --users 64 --epochs 1 --clients 2 --cpus 2``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audit.errors import ConfigError
from audit.reference.presets import PRESETS
from audit.training.recipe import StageSpec
from audit.training.trainers import train_plain
from audit.training.data import TrainingData
from audit.training.protocol import Trainable
from privacy.federated import FederatedOptions, partition_users, run_federated

REFERENCE = "reference"


@dataclasses.dataclass
class Workload:
    """What both sides train: ``fresh()`` gives the trainable at its common starting point."""

    description: str
    fresh: Callable[[], Trainable]
    data: TrainingData
    stage: StageSpec


def reference_workload(args: argparse.Namespace) -> Workload:
    """The reference model at ``--preset`` (fresh weights) on the private users (all, or the first ``--users``)."""
    from private_setup import private_finetune_setup  # type: ignore[import-not-found]

    from audit.reference.model import parameter_count
    from audit.reference.trainable import ReferenceTrainable

    setup = private_finetune_setup(args.preset)
    model, tok, data, recipe = setup.model, setup.tokenizer, setup.data, setup.recipe
    if args.users is not None:
        data = data.subset(data.users[:args.users])
    stage = dataclasses.replace(recipe.stages[0], name="finetune", users="finetune", epochs=args.epochs,
                                catalog_titles=False)
    return Workload(f"reference model {parameter_count(model):,} parameters; {len(data.users)} private users",
                    lambda: ReferenceTrainable(copy.deepcopy(model), tok), data, stage)


def hf_workload(args: argparse.Namespace, cache: Path) -> Workload:
    """The ``hf`` adapter's LoRA path (the ``lora`` variant's recipe) on the first ``--users`` private users."""
    from audit.build import build_recommender
    from audit.config import validate_config
    from audit.data.loaders import load_dataset
    from audit.llm.examples import LLMStageData
    from audit.llm.lora import attach_lora
    from audit.llm.trainable import LoraTrainable
    from audit.llm.training import LORA_STAGE, LoraRecipe
    from audit.llm.variant import LoraVariant, LoraVariantConfig
    from audit.training.stages import stage_training_sequences
    from audit.variants import BuildContext

    ds = load_dataset("ml-100k")
    ctx = BuildContext(dataset=ds, cache_dir=cache, seed=0, progress=False)
    source = {"path": args.path} if args.path is not None else {"model": args.model}
    rec = build_recommender("llm", {"adapter": "hf", "history": args.history, **source}, ctx)
    lora = validate_config(LoraVariantConfig, {"targets": args.targets, **args.lora}, "--lora")
    recipe = LoraVariant(lora).modify_recipe(
        LoraRecipe(history=rec.config.history, score_k=rec.config.score_k, seed=0), ctx)
    recipe = recipe.replace_stage(LORA_STAGE, users="finetune", epochs=args.epochs)
    stage = recipe.stage(LORA_STAGE)
    groups = ds.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share, heldout=recipe.heldout_share)
    seqs, profiles, _ = stage_training_sequences(recipe, 0, stage, groups, ds)
    base = rec.base_parts()
    data = LLMStageData({str(u): tuple(map(str, s)) for u, s in seqs.items()}, profiles, dict(ds.item_titles),
                        base.encode_prompt, base.encode_answer, history=recipe.history, targets=recipe.targets,
                        examples_per_user=recipe.examples_per_user, attribute_dropout=recipe.attribute_dropout,
                        pad_id=base.pad_id)
    data = data.subset(data.users[:args.users or 64])
    trainable = LoraTrainable(attach_lora(base.model, recipe.lora, seed=recipe.seed))
    start = {k: v.clone() for k, v in trainable.trained_state().items()}

    def fresh() -> Trainable:
        trainable.load_trained_state(start)
        return trainable

    n_lora = sum(p.numel() for _, p in trainable.named_trainable())
    name = args.path if args.path is not None else args.model
    layers = f"last {recipe.lora.layers} layers" if recipe.lora.layers else "all layers"
    return Workload(f"hf {name} {rec.info['parameters']:,} parameters + LoRA {n_lora:,} weights "
                    f"(r {recipe.lora.r}, {layers}); history {recipe.history}, "
                    f"targets {recipe.targets}, batch {stage.batch_size}; {len(data.users)} private users",
                    fresh, data, stage)


def compare(work: Workload, args: argparse.Namespace) -> None:
    """Train centrally, then federated from the same start; print the times, ratios and bytes."""
    print(f"{work.description}; {args.epochs} epochs; {args.clients} clients x 1 local epoch x {args.epochs} rounds",
          flush=True)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summary = train_plain(work.fresh(), work.data, work.stage, 0, False)
    central_s = time.perf_counter() - t0
    torch.set_num_threads(before)
    print(f"centralised: {central_s:7.1f} s ({summary['steps']} steps, final loss {summary['final_loss']:.3f}, "
          f"{args.threads} threads)", flush=True)

    parts = partition_users(work.data.users, work.data.profiles, args.clients, "iid", "occupation", seed=0)
    local = dataclasses.replace(work.stage, epochs=1)
    opts = FederatedOptions(clients=args.clients, clients_per_round=args.clients, rounds=args.epochs,
                            ray_cpus=args.cpus)
    out = run_federated(work.fresh(), work.data, parts, local, opts, seed=0)
    startup, rounds, total = out["startup_seconds"], out["rounds_seconds"], out["simulation_seconds"]
    print(f"federated:   {total:7.1f} s in all = start-up {startup:.1f} s (Ray, actors, first task load) "
          f"+ rounds {rounds:.1f} s + {total - startup - rounds:.1f} s shut-down/other")
    metrics = out.get("train_metrics", {})
    for r in sorted(metrics):
        print(f"  round {r}: {metrics[r].get('steps', float('nan')):.1f} local steps per client "
              f"(example-weighted mean), loss {metrics[r].get('train-loss', float('nan')):.3f}")
    print(f"ratio rounds / centralised          = {rounds / central_s:.2f}x (target <= 2x)")
    print(f"ratio whole simulation / centralised = {total / central_s:.2f}x (Ray start-up included)")
    sent = out["bytes"]
    for r in sent["per_round"]:
        print(f"bytes round {r['round']}: server -> clients {r['server_to_clients']:,}, "
              f"clients -> server {r['clients_to_server']:,}")
    print(f"bytes in all: {sent['total']:,} ({sent['total'] / 2**20:.2f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=REFERENCE,
                    help="'reference' or a fetched hf model name (e.g. smollm2-135m)")
    ap.add_argument("--path", default=None, help="a local HF causal-LM directory (instead of --model)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="centralised training threads")
    ap.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one per client actor)")
    ap.add_argument("--users", type=int, default=None,
                    help="train on the first N private users (default: all for the reference, 64 for hf)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS), help="reference only")
    ap.add_argument("--history", type=int, default=5, help="hf only: history items per prompt")
    ap.add_argument("--targets", type=int, default=3, help="hf only: answer items per example")
    ap.add_argument("--lora", default="{}", help="hf only: JSON of other lora-variant options")
    args = ap.parse_args()
    try:
        if args.users is not None and args.users < args.clients:
            raise ConfigError(f"--users ({args.users}) must be at least --clients ({args.clients})")
        if args.path is None and args.model == REFERENCE:
            work = reference_workload(args)
            compare(work, args)
            return
        if args.path is not None and args.model != REFERENCE:
            raise ConfigError("give --model NAME or --path DIR, not both")
        try:
            args.lora = json.loads(args.lora)
        except ValueError as exc:
            raise ConfigError(f"--lora: not JSON ({exc})") from None
        if not isinstance(args.lora, dict):
            raise ConfigError(f"--lora: expected a JSON object of lora-variant options, got {args.lora!r}")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        with tempfile.TemporaryDirectory(prefix="bench-federated-") as cache:
            compare(hf_workload(args, Path(cache)), args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
