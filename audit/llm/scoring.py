"""Likelihoods and hidden states of an ``hf`` causal LM (natural logs throughout).

- :func:`score_candidates`: log p(continuation | prompt) summed over each candidate's tokens;
  ``shared`` runs the prompt once and scores chunks of candidates against its cached keys and
  values (:func:`score_shared`), ``naive`` runs one full forward per candidate
  (:func:`score_naive`, the slow, obvious reference); both give the same numbers to float tolerance.
- :func:`token_logprobs`: log p of each token of a text given its prefix, the first token
  conditioned on the start token (BOS, else EOS; NaN when there is neither).
- :func:`answer_logprobs`: log p of each answer token after its prompt, where a LoRA example's
  loss is, optionally with each position's mean and standard deviation of log p.
- :func:`last_hidden`: the last layer's state at each sequence's final token.

Every prompt carries the model's soft prefix when it has one.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, Sequence

import numpy as np

from audit.llm.decoding import Track, untracked
from audit.llm.model import CausalLM, position_ids
from audit.token_stats import next_token_stats

AnswerRow = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def score_candidates(lm: CausalLM, prompt_ids: list[int], conts: list[list[int]], *,
                     mode: Literal["shared", "naive"] = "shared", batch_size: int = 64) -> np.ndarray:
    """Summed log-likelihood of each continuation after ``prompt_ids`` (0 for an empty one)."""
    if mode == "shared":
        return score_shared(lm, prompt_ids, conts, batch_size)
    return score_naive(lm, prompt_ids, conts)


def score_shared(lm: CausalLM, prompt_ids: list[int], conts: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """Run the prompt once; then score chunks of candidates in single rows: each chunk is the
    candidates' tokens side by side, with a 4-D attention mask letting every candidate token
    see the prompt's cached keys/values and its own earlier tokens only (block-diagonal), and
    position ids restarting after the prompt for each candidate. The prompt cache is cropped
    back after each chunk, never copied; ``batch_size`` candidates per chunk."""
    import torch
    from transformers import DynamicCache

    scores = np.zeros(len(conts), dtype=np.float64)
    order = [j for j in range(len(conts)) if conts[j]]
    if not order:
        return scores
    model, device, limit = lm.module, lm.device, lm.max_positions
    longest = max(len(c) for c in conts)
    if limit and len(prompt_ids) + longest > limit:
        prompt_ids = prompt_ids[len(prompt_ids) + longest - limit:]
    plen = len(prompt_ids) + lm.prefix_len
    with torch.no_grad():
        cache = DynamicCache()
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        kw = cache_kwarg(model)
        inputs = lm.inputs(prompt, torch.ones_like(prompt))
        inputs.pop("attention_mask")
        first = model(**inputs, use_cache=True, logits_to_keep=1, **{kw: cache})
        last_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        dtype = first.logits.dtype if first.logits.is_floating_point() else torch.float32
        neg = torch.finfo(dtype).min
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            flat: list[int] = []
            pos: list[int] = []
            owner: list[int] = []
            for r, j in enumerate(rows):
                flat += conts[j]
                pos += list(range(plen, plen + len(conts[j])))
                owner += [r] * len(conts[j])
            n = len(flat)
            own = torch.tensor(owner, device=device)
            same = own[:, None] == own[None, :]
            causal = torch.ones((n, n), dtype=torch.bool, device=device).tril()
            allowed = torch.cat([torch.ones((n, plen), dtype=torch.bool, device=device), same & causal], 1)
            mask = torch.zeros((1, 1, n, plen + n), dtype=dtype, device=device)
            mask.masked_fill_(~allowed[None, None], neg)
            ids = torch.tensor([flat], dtype=torch.long, device=device)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=torch.tensor([pos], device=device),
                           use_cache=True, **{kw: cache}).logits
            cache.crop(-n)
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            offset = 0
            for j in rows:
                c = conts[j]
                total = float(last_logp[c[0]])
                if len(c) > 1:
                    tgt = torch.tensor(c[1:], device=device)
                    total += float(logp[offset:offset + len(c) - 1].gather(-1, tgt[:, None]).sum())
                scores[j] = total
                offset += len(c)
    return scores


def score_naive(lm: CausalLM, prompt_ids: list[int], conts: list[list[int]]) -> np.ndarray:
    """One full forward per candidate (the slow, obvious reference for :func:`score_shared`)."""
    import torch

    scores = np.zeros(len(conts), dtype=np.float64)
    limit = lm.max_positions
    with torch.no_grad():
        for j, cont in enumerate(conts):
            if not cont:
                continue
            p = prompt_ids
            if limit and len(p) + len(cont) > limit:
                p = p[len(p) + len(cont) - limit:]
            ids = torch.tensor([p + cont], dtype=torch.long, device=lm.device)
            inputs = lm.inputs(ids, torch.ones_like(ids))
            inputs.pop("attention_mask")
            logp = torch.log_softmax(lm.module(**inputs).logits[0].float(), dim=-1)
            targets = ids[0, len(p):]
            at = len(p) + lm.prefix_len
            scores[j] = float(logp[at - 1:-1].gather(-1, targets[:, None]).sum())
    return scores


def token_logprobs(lm: CausalLM, seqs: Sequence[list[int]], batch_size: int = 64) -> list[np.ndarray]:
    """Per-token log-probabilities of token sequences (without the start token, which is added;
    no soft prefix: raw texts), right-padded in batches."""
    import torch

    out: list[np.ndarray] = []
    prefix = [] if lm.start_id is None else [lm.start_id]
    limit = lm.max_positions
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            chunk = [prefix + s for s in seqs[start:start + batch_size]]
            if limit:
                chunk = [c[:limit] for c in chunk]
            ids, mask = lm.pad(chunk, "right")
            logits = lm.module(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, seq in enumerate(chunk):
                n = len(seq)
                vals = logp[row, : n - 1].gather(-1, ids[row, 1:n, None]).squeeze(-1).double().cpu().numpy()
                if not prefix:
                    vals = np.concatenate([[math.nan], vals]) if n else vals
                out.append(vals)
    return out


def answer_logprobs(lm: CausalLM, rows: Sequence[tuple[list[int], list[int]]], *, batch_size: int,
                    stats: bool = False, track: Track = untracked) -> list[AnswerRow]:
    """Per (prompt ids, answer ids): log p of each answer token after the prompt (soft prefix
    included; a prompt is cut from the left so that prefix, prompt and answer fit the context),
    with ``stats`` also each answer position's mean and standard deviation of log p (else None).
    Rows are left-padded in batches of ``batch_size`` (sorted by length, returned in the given
    order) and only the answer positions are projected onto the vocabulary."""
    import torch

    limit, p_len = lm.max_positions, lm.prefix_len
    fitted = []
    for prompt, answer in rows:
        if limit and len(prompt) + len(answer) > limit - p_len:
            prompt = prompt[-max(1, limit - p_len - len(answer)):]
        fitted.append((prompt, answer))
    keep_arg = "logits_to_keep" in forward_parameters(lm.module)
    out: list[AnswerRow] = [None] * len(fitted)  # type: ignore[list-item]
    # rows of similar length share a batch (less left padding); results go back in request order
    order = sorted(range(len(fitted)), key=lambda i: len(fitted[i][0]) + len(fitted[i][1]))
    with torch.no_grad():
        for start in track(list(range(0, len(fitted), batch_size)), "answer log-probs", "batch"):
            at = order[start:start + batch_size]
            chunk = [fitted[i] for i in at]
            ids, mask = lm.pad([p + a for p, a in chunk], "left")
            tail = max(len(a) for _, a in chunk)
            inputs = lm.inputs(ids, mask)
            kwargs = {"logits_to_keep": tail + 1} if keep_arg else {}
            logits = lm.module(**inputs, position_ids=position_ids(inputs["attention_mask"]),
                               **kwargs).logits[:, -(tail + 1):-1].float()
            logp = torch.log_softmax(logits, dim=-1)  # position j predicts token width - tail + j
            for row, (_, answer) in enumerate(chunk):
                n = len(answer)
                dist = logp[row, tail - n:]
                target = ids[row, ids.shape[1] - n:]
                vals = dist.gather(-1, target[:, None]).squeeze(-1).double().cpu().numpy()
                mu, sigma = next_token_stats(dist.double().cpu().numpy()) if stats else (None, None)
                out[at[row]] = (vals, mu, sigma)
    return out


def last_hidden(lm: CausalLM, seqs: Sequence[Sequence[int]], *, batch_size: int, prompts: bool = False) -> np.ndarray:
    """(len(seqs), hidden_size): the last layer's state at each sequence's last token (float64);
    ``prompts`` carry the soft prefix."""
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = lm.pad(seqs[start:start + batch_size], "left")
            inputs = lm.inputs(ids, mask) if prompts else {"input_ids": ids, "attention_mask": mask}
            # the transformer body only: its last state is the model's last hidden state, without the
            # vocabulary projection of every position
            out = lm.module.base_model(**inputs, position_ids=position_ids(inputs["attention_mask"]), use_cache=False)
            chunks.append(out.last_hidden_state[:, -1, :].float().cpu().numpy())
    width = int(getattr(lm.module.config, "hidden_size", 0) or 0)
    return np.concatenate(chunks, 0).astype(np.float64) if chunks else np.zeros((0, width))


def forward_parameters(model: Any) -> frozenset[str]:
    """The keyword parameters of ``model.forward`` (e.g. whether it takes ``logits_to_keep``)."""
    return frozenset(inspect.signature(model.forward).parameters)


def cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache (``cache`` from transformers 5.x on, before
    that ``past_key_values``, which 5.40 removes)."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"

