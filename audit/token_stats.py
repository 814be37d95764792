"""Next-token distribution statistics of a causal LM (what Min-K%++ standardises by), shared by
the model leaves and the memorisation scores: pure math on log-distributions, and the same
statistics read from any ``transformers`` causal LM's logits."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def next_token_stats(log_dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of log p(z) under z ~ p, per position.

    ``log_dist`` has shape (T, V): the model's full next-token log-distribution at each
    of T positions. Returns two arrays of shape (T,): mu_t = sum_z p(z) log p(z) and
    sigma_t = sqrt(sum_z p(z) log p(z)^2 - mu_t^2).
    """
    lp = np.asarray(log_dist, dtype=float)
    if lp.ndim != 2:
        raise ValueError(f"expected a (positions, vocabulary) array, got shape {lp.shape}")
    p = np.exp(lp)
    finite = np.where(np.isfinite(lp), lp, 0.0)
    mu = (p * finite).sum(axis=1)
    var = (p * finite**2).sum(axis=1) - mu**2
    return mu, np.sqrt(np.clip(var, 0.0, None))


def causal_lm_token_stats(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                           ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(log p of each token, mu, sigma) from a transformers causal LM, each text prefixed with
    the tokenizer's start token (BOS, else EOS) as the interface's ``token_logprobs`` does.
    Texts are right-padded in batches (a causal model never looks right)."""
    import torch

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [] if start is None else [start]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
    seqs = [prefix + list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    out = []
    with torch.no_grad():
        for start_row in range(0, len(seqs), batch_size):
            chunk = range(start_row, min(len(seqs), start_row + batch_size))
            rows = [seqs[i] for i in chunk]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
            pos = torch.arange(width)[None, :].expand(len(rows), width)
            log_dist = torch.log_softmax(model(input_ids=ids, position_ids=pos).logits.double(), dim=-1)
            for row, seq in enumerate(rows):
                n = len(seq)
                dist = log_dist[row, : n - 1]
                lp = dist.gather(1, ids[row, 1:n, None]).squeeze(1).numpy()
                mu, sigma = next_token_stats(dist.numpy())
                if not prefix:
                    lp, mu, sigma = (np.concatenate([[np.nan], a]) for a in (lp, mu, sigma))
                out.append((lp, mu, sigma))
    return out
