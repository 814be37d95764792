"""Next-item quality on ML-100k of the item-token LLM and its peers, side by side on one protocol.

Protocol: every evaluable user (943); the held-out test item (history = train + valid) ranked
among 99 unseen items sampled either uniformly (``uniform``: what the utility probe does) or in
proportion to their training popularity + 1 (``popularity``: popular negatives, so popularity
alone no longer wins); both are :meth:`audit.data.dataset.Dataset.negatives`, as in the utility probe. HR@10 and NDCG@10 with 95% bootstrap CIs over users, and each model's paired
difference from popularity and from item-kNN on the same users and candidates.

Peers (all fitted on training data only: no test item is ever seen):

- ``popularity``: training interaction counts;
- ``item-knn``: how often item b follows item a within 10 positions of users' training
  sequences, cosine-normalised by the items' user counts, summed over the user's last 10 history items;
- ``als``: implicit ALS (the ``implicit`` package; 64 factors, 15 iterations) on every user's
  history (train + valid);
- ``reference`` (``--reference``): the built-in reference model, trained or loaded from the cache;
- ``smollm2-items`` (``--llm``): SmolLM2-135M with item tokens (``items: tokens`` + the ``lora``
  variant; options ``--epochs --lr --init``), trained on the default training users through the
  real training path (cached under ``--cache``), timed.

    .venv/bin/python benchmarks/item_tokens_quality.py                       # peers only (seconds)
    .venv/bin/python benchmarks/item_tokens_quality.py --llm --reference     # everything
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from audit.data.dataset import Dataset
from audit.data.loaders import load_dataset
from audit.stats import mean_metric, paired_bootstrap

K = 10
NEGATIVES = 99
Scorer = Callable[[list[str], list[list[str]]], np.ndarray]


def candidates(ds: Dataset, users: list[str], protocol: str, seed: int) -> list[list[str]]:
    out = []
    for u in users:
        out.append([ds.sequences[u].test, *ds.negatives(u, NEGATIVES, seed, protocol)])
    return out


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of column 0 (the test item) in each row, 0 = best; ties count half."""
    pos = scores[:, :1]
    return (scores[:, 1:] > pos).sum(1) + 0.5 * (scores[:, 1:] == pos).sum(1)


def popularity_scorer(ds: Dataset) -> Scorer:
    pop = ds.item_popularity
    return lambda users, cands: np.array([[pop.get(c, 0) for c in row] for row in cands], dtype=float)


def knn_scorer(ds: Dataset, last: int = 10, window: int = 10) -> Scorer:
    """sim(a, b) = (times b follows a within ``window`` positions of a training sequence) /
    sqrt(n_a n_b), n = users with the item in training; a candidate's score sums sim over the
    user's last ``last`` history items."""
    items = list(ds.item_titles)
    index = {i: j for j, i in enumerate(items)}
    follows = np.zeros((len(items), len(items)))
    count = np.zeros(len(items))
    for s in ds.sequences.values():
        seq = [index[i] for i in s.train]
        for a in range(len(seq)):
            for b in range(max(0, a - window), a):
                follows[seq[b], seq[a]] += 1
        for i in set(seq):
            count[i] += 1
    norm = np.sqrt(count) + 1e-9
    sim = follows / norm[:, None] / norm[None, :]

    def score(users: list[str], cands: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(users), len(cands[0])))
        for a, (u, row) in enumerate(zip(users, cands)):
            hist = [index[i] for i in ds.sequences[u].test_history[-last:]]
            out[a] = sim[np.ix_(hist, [index[c] for c in row])].sum(0)
        return out
    return score


def als_scorer(ds: Dataset, seed: int, factors: int = 64, iterations: int = 15) -> Scorer:
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    items = list(ds.item_titles)
    index = {i: j for j, i in enumerate(items)}
    users = list(ds.sequences)
    uidx = {u: n for n, u in enumerate(users)}
    r, c = [], []
    for u, s in ds.sequences.items():
        for i in set(s.test_history):
            r.append(uidx[u])
            c.append(index[i])
    x = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(users), len(items)))
    model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=0.05, random_state=seed)
    model.fit(x, show_progress=False)
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda us, cands: np.array([[float(uf[uidx[u]] @ itf[index[i]]) for i in row] for u, row in zip(us, cands)])


def recommender_scorer(rec, ds: Dataset) -> Scorer:
    """Scores through the recaudit interface (the requests the utility probe sends)."""
    from audit.interface import RecRequest

    titles = ds.item_titles

    def score(users: list[str], cands: list[list[str]]) -> np.ndarray:
        reqs = [RecRequest(history=tuple(titles[i] for i in ds.sequences[u].test_history),
                           profile=dict(ds.user_profiles.get(u, {})), user=u) for u in users]
        return np.array(rec.score(reqs, [[titles[c] for c in row] for row in cands]))
    return score


def ci(metric) -> str:
    lo, hi = metric.ci
    return f"{metric.value:.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", action="store_true", help="train/load and score SmolLM2 with item tokens")
    ap.add_argument("--reference", action="store_true", help="train/load and score the reference model")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--init", default="titles", choices=["titles", "random"])
    ap.add_argument("--layers", type=int, default=None, help="LoRA on the last N layers (default: the recipe's)")
    ap.add_argument("--all-layers", action="store_true", help="LoRA on every layer")
    ap.add_argument("--frozen-item-inputs", action="store_true", help="train the item head only, not the input rows")
    ap.add_argument("--history", type=int, default=None, help="items per training window and prompt")
    ap.add_argument("--users", type=int, default=0, help="a seeded sample of users (0 = all)")
    ap.add_argument("--cache", default=None, help="model cache (default $RECAUDIT_HOME/models)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    ds = load_dataset("ml-100k")
    users = ds.sample_users(args.users or None, seed=args.seed)
    scorers: dict[str, Scorer] = {"popularity": popularity_scorer(ds), "item-knn": knn_scorer(ds),
                                  "als": als_scorer(ds, args.seed)}
    info: dict[str, str] = {}
    from audit.build import build_recommender
    from audit.paths import models_dir
    from audit.variants import BuildContext

    cache = Path(args.cache) if args.cache else models_dir()
    ctx = BuildContext(dataset=ds, cache_dir=cache, seed=args.seed, progress=True)
    if args.reference:
        t0 = time.perf_counter()
        scorers["reference"] = recommender_scorer(build_recommender("reference", {"adapter": "reference"}, ctx), ds)
        info["reference"] = f"built in {time.perf_counter() - t0:.0f} s"
    if args.llm:
        lora = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
                                  ("item_init", args.init), ("layers", args.layers)) if v is not None}
        if args.all_layers:
            lora["layers"] = None
        if args.frozen_item_inputs:
            lora["train_item_inputs"] = False
        entry = {"adapter": "hf", "model": "smollm2-135m", "items": "tokens", "variant": {"lora": lora},
                 **({"history": args.history} if args.history else {})}
        print(f"smollm2-items: {entry}")
        t0 = time.perf_counter()
        rec = build_recommender("smollm2-items", entry, ctx)
        summary = rec.info.get("training") or [{}]
        info["smollm2-items"] = (f"built in {time.perf_counter() - t0:.0f} s (trained now: {rec.info.get('trained_now')};"
                                 f" training {summary[0].get('seconds')} s, {summary[0].get('steps')} steps)")
        scorers["smollm2-items"] = recommender_scorer(rec, ds)
    print(f"ML-100k, {len(users)} users, test item vs {NEGATIVES} negatives; 2 torch threads; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, text in info.items():
        print(f"  {name}: {text}")
    for protocol in ("uniform", "popularity"):
        cands = candidates(ds, users, protocol, args.seed)
        print(f"\nprotocol: {protocol} negatives")
        print(f"  {'model':<14} {'HR@10 [95% CI]':<24} {'NDCG@10 [95% CI]':<24} {'vs popularity (paired HR diff)':<32} "
              f"{'vs item-knn':<26} seconds")
        hits: dict[str, np.ndarray] = {}
        for name, scorer in scorers.items():
            t0 = time.perf_counter()
            rk = ranks(scorer(users, cands))
            secs = time.perf_counter() - t0
            hit = (rk < K).astype(float)
            ndcg = np.where(rk < K, 1.0 / np.log2(rk + 2.0), 0.0)
            hits[name] = hit
            diffs = []
            for base in ("popularity", "item-knn"):
                if base == name or base not in hits:
                    diffs.append("")
                    continue
                d = hit - hits[base]
                lo, hi = paired_bootstrap(d[:, None], lambda rows: float(rows.mean()), seed=args.seed)
                diffs.append(f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
            print(f"  {name:<14} {ci(mean_metric(hit, seed=args.seed)):<24} {ci(mean_metric(ndcg, seed=args.seed)):<24} "
                  f"{diffs[0]:<32} {diffs[1]:<26} {secs:.1f}")
    print(f"\nn = {len(users)} users per figure; CIs: bootstrap over users (percentile, 95%)")


if __name__ == "__main__":
    main()
