"""A federated fine-tuning run over centralised fine-tuning of the same total work
(target <= 2x, plus Ray's start-up, which is reported on its own).

Both fine-tune the reference model (``--preset``, default: the adapter's default size and
stage settings; tokenizer trained on ML-100k) on the private (fine-tune) users of ML-100k,
catalog rows off, the same AdamW settings:

- centralised: the ``plain`` trainer for ``--epochs`` epochs over all private users, on
  ``--threads`` threads;
- federated: the ``federated`` path (Flower ``run_simulation``, Ray backend, ``--cpus``
  CPUs, one thread per client) with ``--clients`` IID clients, *all* of them every round,
  ``--epochs`` rounds of one local epoch: every user's windows are trained ``--epochs``
  times in both runs.

Printed: centralised seconds; the federated simulation's seconds split into start-up (Ray,
actors, first load of the task: until every client answered the server's first query) and
rounds; the ratio rounds / centralised (the target) and the ratio with start-up included.
Run: ``.venv/bin/python benchmarks/bench_federated.py [--epochs 3 --clients 4]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch
from private_setup import private_finetune_setup  # type: ignore[import-not-found]

from audit.reference.model import parameter_count
from audit.reference.presets import PRESETS
from audit.reference.trainers import train_plain
from audit.reference.trainable import ReferenceTrainable
from privacy.federated import FederatedOptions, partition_users, run_federated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="centralised training threads")
    ap.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one per client actor)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    args = ap.parse_args()

    setup = private_finetune_setup(args.preset)
    model, tok, data, recipe = setup.model, setup.tokenizer, setup.data, setup.recipe
    seqs = data.sequences
    stage = dataclasses.replace(recipe.stages[0], name="finetune", users="finetune", epochs=args.epochs,
                                catalog_titles=False)
    print(f"reference model {parameter_count(model):,} parameters; {len(seqs)} private users; "
          f"{args.epochs} epochs; {args.clients} clients x 1 local epoch x {args.epochs} rounds")

    central = copy.deepcopy(model)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summary = train_plain(ReferenceTrainable(central, tok), data, stage, 0, False)
    central_s = time.perf_counter() - t0
    torch.set_num_threads(before)
    print(f"centralised: {central_s:7.1f} s ({summary['steps']} steps, {args.threads} threads)")

    parts = partition_users(list(seqs), data.profiles, args.clients, "iid", "occupation", seed=0)
    local = dataclasses.replace(stage, epochs=1)
    opts = FederatedOptions(clients=args.clients, clients_per_round=args.clients, rounds=args.epochs,
                            ray_cpus=args.cpus)
    fl = copy.deepcopy(model)
    out = run_federated(ReferenceTrainable(fl, tok), data, parts, local, opts, seed=0)
    startup, rounds, total = out["startup_seconds"], out["rounds_seconds"], out["simulation_seconds"]
    print(f"federated:   {total:7.1f} s in all = start-up {startup:.1f} s (Ray, actors, first task load) "
          f"+ rounds {rounds:.1f} s + {total - startup - rounds:.1f} s shut-down/other")
    print(f"ratio rounds / centralised          = {rounds / central_s:.2f}x (target <= 2x)")
    print(f"ratio whole simulation / centralised = {total / central_s:.2f}x (Ray start-up included)")


if __name__ == "__main__":
    main()
