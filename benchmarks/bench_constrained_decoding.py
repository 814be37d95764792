"""Cost of constrained decoding: generation time with vs without the catalog prefix tree.

Builds the reference model on ML-100k (loads it from the cache; trains it first if
absent, up to ~10 min), wraps it with the ``constrained-decoding`` variant, and for the
same ``--users`` users generates ``--k`` items per user both ways, batch by batch,
alternating which goes first (so load on the shared CPU hits both alike). Prints the
two wall-clock times, their ratio (constrained / unconstrained), and the hallucination
rate of each with its 95% bootstrap CI over users.

    .venv/bin/python benchmarks/bench_constrained_decoding.py --users 200 --k 10
    .venv/bin/python benchmarks/bench_constrained_decoding.py --hf-path models/my-llm --users 20

``--hf-path`` benchmarks a local ``transformers`` causal LM through the ``hf`` adapter instead.
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from audit.build import build_recommender
from audit.catalog import Catalog
from audit.data.loaders import load_dataset
from audit.decoding.constrained import (
    ConstrainedDecodingConfig,
    ConstrainedDecodingVariant,
)
from audit.paths import models_dir
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.hallucination import analyse_list, ratio_metric
from audit.variants import BuildContext


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200, help="users to generate for (seeded sample; 0 = all)")
    ap.add_argument("--k", type=int, default=10, help="items per list")
    ap.add_argument("--batch", type=int, default=50, help="requests per generate call")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--size", default="default", choices=["default", "small", "tiny"],
                    help="reference model preset (default: the one the quality bar is measured on)")
    ap.add_argument("--hf-path", default=None, help="benchmark this local transformers model instead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ds = load_dataset("ml-100k")
    ctx = BuildContext(dataset=ds, cache_dir=models_dir(), seed=args.seed, progress=True)
    entry = ({"adapter": "reference", "size": args.size} if args.hf_path is None
             else {"adapter": "hf", "path": args.hf_path})
    t0 = time.perf_counter()
    plain = build_recommender("plain", entry, ctx)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    constrained = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(plain, ctx)
    trie_s = time.perf_counter() - t0

    users = ds.sample_users(args.users or None, args.seed)
    pctx = ProbeContext(dataset=ds, users=users, seed=args.seed, recorder=OutputRecorder("bench", "bench"))
    reqs = [pctx.request(u) for u in users]
    times = {"unconstrained": 0.0, "constrained": 0.0}
    gens: dict[str, list] = {"unconstrained": [], "constrained": []}
    recs = {"unconstrained": plain, "constrained": constrained}
    starts = list(range(0, len(reqs), args.batch))
    for b, start in enumerate(tqdm(starts, desc="generate (both ways)", unit="batch")):
        chunk = reqs[start:start + args.batch]
        order = ["unconstrained", "constrained"] if b % 2 == 0 else ["constrained", "unconstrained"]
        batch_out = {}
        for name in order:
            t = time.perf_counter()
            batch_out[name] = recs[name].generate_detailed(chunk, args.k)
            times[name] += time.perf_counter() - t
        for name in gens:
            gens[name].extend(batch_out[name])

    catalog = Catalog(ds.item_titles)
    print(f"model: {entry}  (build/load {build_s:.1f}s; prefix tree over {len(ds.item_titles)} titles "
          f"built in {trie_s:.2f}s)")
    print(f"users: {len(users)}  k: {args.k}  batch: {args.batch}  torch threads: {args.threads}")
    print(f"{'decoding':<14} {'seconds':>9} {'s/user':>8} {'hallucination rate [95% CI]':>32} {'dup rate':>9}")
    for name in ("unconstrained", "constrained"):
        analyses = [analyse_list(g.items, args.k, catalog, set(ds.sequences[u].test_history), ds.sequences[u].test)
                    for u, g in zip(users, gens[name])]
        slots = [len(a.matches) for a in analyses]
        rate = ratio_metric([sum(a.hallucinated) for a in analyses], slots, seed=args.seed)
        dup = ratio_metric([sum(a.duplicate) for a in analyses], slots, seed=args.seed)
        ci = "n/a" if rate.ci is None else f"[{rate.ci[0]:.4f}, {rate.ci[1]:.4f}]"
        print(f"{name:<14} {times[name]:>9.2f} {times[name] / len(users):>8.4f} "
              f"{rate.value:>10.4f} {ci:>21} {dup.value:>9.4f}")
    print(f"ratio constrained / unconstrained generation time: "
          f"{times['constrained'] / times['unconstrained']:.3f}")


if __name__ == "__main__":
    main()
