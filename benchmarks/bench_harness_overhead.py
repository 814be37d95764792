"""Harness overhead on a cheap Python recommender: the harness path vs calling the function.

The recommender is a small user-kNN: each request's history titles are looked up in a
title -> column index, the history vector's cosine similarity to all 943 training users of
a seeded synthetic ML-100k-sized data set (943 x 1682 float32 matrix) is computed, the 50
nearest users' items are summed weighted by similarity, seen items are masked and the
top-k titles returned. That is roughly a millisecond of real, sleep-free work per request
(printed below), so the ratio reflects what the harness adds to a cheap model.

Two paths over the same pre-built requests, interleaved batch by batch (direct then harness,
then harness then direct on the next batch, ...) so both see the same machine load (the cores
are shared); totals over ``--repeats`` passes are compared. BLAS runs on one thread so the
timings are not dominated by thread contention.

- direct: ``generate(requests, k)`` called in batches of ``--batch``;
- harness: the ``python`` adapter built from ``"__main__:generate"`` (target resolution,
  signature check, output repair, ``Generation`` objects with the request as JSON and the
  list as raw JSON) called through ``ProbeContext.generate``, which records every call in
  the :class:`OutputRecorder` for ``outputs.jsonl``.

Run: ``.venv/bin/python benchmarks/bench_harness_overhead.py`` (target ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd

from audit.adapters.python import PythonAdapter, PythonConfig
from audit.data.dataset import Dataset
from audit.interface import RecRequest
from audit.probes.base import OutputRecorder, ProbeContext
from audit.variants import BuildContext

N_ITEMS, N_USERS, PER_USER = 1682, 943, 60
_STATE: dict[str, object] = {}


def synthetic_dataset(seed: int = 0) -> Dataset:
    """An ML-100k-sized synthetic data set (popularity-skewed interactions)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [str(i) for i in range(1, N_ITEMS + 1)],
                          "title": [f"Synthetic Film {i}" for i in range(1, N_ITEMS + 1)],
                          "year": pd.array([1930 + i % 68 for i in range(1, N_ITEMS + 1)], dtype="Int64"),
                          "genres": ["Drama"] * N_ITEMS})
    pop = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
    pop /= pop.sum()
    rows = []
    for u in range(1, N_USERS + 1):
        for t, i in enumerate(rng.choice(N_ITEMS, size=PER_USER, replace=False, p=pop) + 1):
            rows.append((str(u), str(i), 4.0, 1_000_000 + 100 * u + t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Dataset("synthetic-100k", inter, items, None, source="synthetic")


def setup(dataset: Dataset) -> None:
    """Build the user-item matrix the recommender reads (done once, not timed)."""
    ids = list(dataset.item_titles)
    index = {iid: j for j, iid in enumerate(ids)}
    users = np.zeros((len(dataset.sequences), len(ids)), dtype=np.float32)
    for row, seq in enumerate(dataset.sequences.values()):
        users[row, [index[i] for i in seq.train]] = 1.0
    norms = np.linalg.norm(users, axis=1) + 1e-9
    titles = [dataset.item_titles[i] for i in ids]
    _STATE.update(users=users, norms=norms, titles=titles, row_of={t: j for j, t in enumerate(titles)})


def generate(requests: list[RecRequest], k: int, neighbours: int = 50) -> list[list[str]]:
    """User-kNN: cosine similarity of the history to every training user, the top
    ``neighbours`` users' items weighted by similarity, seen items masked, top ``k`` titles."""
    users, norms = _STATE["users"], _STATE["norms"]
    titles, row_of = _STATE["titles"], _STATE["row_of"]
    out = []
    for req in requests:
        cols = [row_of[t] for t in req.history if t in row_of]
        x = np.zeros(users.shape[1], dtype=np.float32)  # type: ignore[union-attr]
        x[cols] = 1.0
        sims = (users @ x) / (norms * np.sqrt(max(len(cols), 1)))  # type: ignore[operator]
        nbrs = np.argpartition(-sims, neighbours)[:neighbours]
        scores = sims[nbrs] @ users[nbrs]  # type: ignore[index]
        scores[cols] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        out.append([titles[j] for j in top])  # type: ignore[index]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per timed pass")
    ap.add_argument("--batch", type=int, default=64, help="requests per call")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    dataset = synthetic_dataset()
    setup(dataset)
    users = dataset.evaluable_users()
    recorder = OutputRecorder(recommender="knn", probe="bench")
    pctx = ProbeContext(dataset=dataset, users=users, seed=0, recorder=recorder)
    reqs = [pctx.request(users[i % len(users)]) for i in range(args.requests)]
    batches = [reqs[i:i + args.batch] for i in range(0, len(reqs), args.batch)]
    adapter = PythonAdapter.build(PythonConfig(generate="__main__:generate"),
                                  BuildContext(dataset=dataset, cache_dir=Path("."), suite_dir=None))

    def direct(batch: list[RecRequest]) -> list[list[str]]:
        return generate(batch, args.k)

    def harness(batch: list[RecRequest]) -> list[list[str]]:
        return [list(g.items) for g in pctx.generate(adapter, batch, args.k, "open")]

    if [x for b in batches for x in direct(b)] != [x for b in batches for x in harness(b)]:
        raise SystemExit("the two paths disagree: the benchmark is broken")
    totals = {"direct": 0.0, "harness": 0.0}
    per_pass: list[float] = []
    for _ in range(args.repeats):
        recorder.records.clear()
        before = dict(totals)
        for j, batch in enumerate(batches):
            order = (("direct", direct), ("harness", harness))
            for name, fn in (order if j % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fn(batch)
                totals[name] += time.perf_counter() - t0
        per_pass.append((totals["harness"] - before["harness"]) / (totals["direct"] - before["direct"]))
    n = args.requests * args.repeats
    d, h = totals["direct"], totals["harness"]
    hist = statistics.mean(len(r.history) for r in reqs)
    print(f"workload: user-kNN over {N_USERS} users x {N_ITEMS} items, {args.requests} requests "
          f"(mean history {hist:.0f} titles), batches of {args.batch}, k={args.k}, {args.repeats} passes")
    print(f"direct   {d:8.3f} s  ({1e3 * d / n:.3f} ms/request)")
    print(f"harness  {h:8.3f} s  ({1e3 * h / n:.3f} ms/request; {len(recorder.records)} records per pass)")
    print(f"ratio harness/direct = {h / d:.3f}  (per pass: {', '.join(f'{r:.3f}' for r in per_pass)}; "
          f"median {statistics.median(per_pass):.3f}; target <= 1.10)")


if __name__ == "__main__":
    main()
