"""Quality and training cost of the reference model on ML-100k.

Trains the reference recipe (``--size``, default ``default``) on the default training users
(``groups.trained``), timing it (wall clock and process CPU seconds, with the load average
of the shared machine before and after), then runs the utility probe on every evaluable user:
the test item (history = train + valid) ranked among 99 uniformly sampled unseen items.
Prints HR@10, NDCG@10 and MRR with 95% bootstrap CIs over users, beside the popularity ranking
of the same candidates.

    .venv/bin/python benchmarks/reference_quality.py              # trains into a fresh temp cache
    .venv/bin/python benchmarks/reference_quality.py --cached     # reuses $RECAUDIT_HOME/models
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from audit.adapters.reference import ReferenceAdapter, ReferenceConfig
from audit.data.loaders import load_dataset
from audit.paths import models_dir
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.utility import UtilityConfig, UtilityProbe
from audit.reference import store
from audit.reference.presets import make_recipe


def _fmt(metric) -> str:
    lo, hi = metric.ci if metric.ci is not None else (float("nan"), float("nan"))
    return f"{metric.value:.4f}  [{lo:.4f}, {hi:.4f}]  n={metric.n}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=["default", "small", "tiny"])
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (quick runs)")
    ap.add_argument("--cached", action="store_true", help="load from $RECAUDIT_HOME/models when present")
    ap.add_argument("--score-mode", default="item", choices=["item", "item+title"])
    ap.add_argument("--users", type=int, default=0, help="evaluate a seeded sample (0 = all users)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training and scoring")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ds = load_dataset("ml-100k")
    config = ReferenceConfig(size=args.size, score_mode=args.score_mode, epochs=args.epochs)
    recipe = make_recipe(config, seed=args.seed)
    tmp = None if args.cached else tempfile.TemporaryDirectory(prefix="reference-quality-")
    cache = models_dir() if args.cached else Path(tmp.name)
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    trained, directory, trained_now = store.train_or_load(recipe, ds, cache, progress=True, threads=args.threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load_after = os.getloadavg()
    rec = ReferenceAdapter(trained, config, directory)

    m = trained.manifest
    print(f"recipe: {recipe.to_json()}")
    print(f"parameters: {m['parameters']}; users trained: {m['stages'][0]['n_users']}; "
          f"threads: {m.get('threads')}")
    if trained_now:
        for s in m["stages"]:
            sm = s["summary"]
            print(f"stage {s['name']}: {sm.get('steps')} steps, {sm.get('seconds')} s wall, "
                  f"{sm.get('cpu_seconds')} CPU s, final loss {sm.get('final_loss'):.3f}")
        print(f"build (tokenizer + training + save + reload): {wall:.1f} s wall, {cpu:.1f} CPU s; "
              f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-min)")
    else:
        print(f"loaded from {directory} (trained earlier in {m.get('train_seconds')} s)")

    users = ds.sample_users(args.users or None, args.seed)
    ctx = ProbeContext(dataset=ds, users=users, seed=args.seed, recorder=OutputRecorder("reference", "utility"))
    t0 = time.perf_counter()
    result = UtilityProbe(UtilityConfig(k=[10])).run(rec, ctx)
    print(f"utility probe ({args.score_mode}) on {len(users)} users in {time.perf_counter() - t0:.1f} s")
    for name in ("hr@10", "ndcg@10", "mrr"):
        print(f"  {name:8s} model      {_fmt(result.metrics[name])}")
        print(f"  {name:8s} popularity {_fmt(result.metrics['popularity_' + name])}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
