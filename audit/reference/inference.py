"""Reading the reference model: candidate scoring (KV-cached and naive), token
log-probabilities, open generation, free completion and embeddings.

Everything takes token ids in the format of :mod:`audit.reference.prompts` and runs under
``torch.no_grad`` in eval mode. ``soft_prefix`` (``(n, d)`` learned vectors, optional) is
spliced in right after ``<bos>`` of every prompt: the hook for soft-prompt defenses.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

from audit.reference.model import position_ids_for, token_embeddings

#: builds the logits processor that constrains open generation; called with the number of
#: prompt positions present in ``input_ids`` as the processor sees them (0 when decoding
#: from embeddings, i.e. with a soft prefix)
GenerationConstraint = Callable[[int], LogitsProcessor]


def _prompt_embeds(model: GPT2LMHeadModel, ids: torch.Tensor, soft_prefix: torch.Tensor | None) -> torch.Tensor:
    """Input embeddings of right-padded prompts (``<bos>`` in column 0), with the soft prefix
    spliced in after ``<bos>``."""
    emb = token_embeddings(model, ids)
    if soft_prefix is None:
        return emb
    pre = soft_prefix.to(emb.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
    return torch.cat([emb[:, :1], pre, emb[:, 1:]], dim=1)


def prefix_len(soft_prefix: torch.Tensor | None) -> int:
    return 0 if soft_prefix is None else int(soft_prefix.shape[0])


@torch.no_grad()
def prompt_states(model: GPT2LMHeadModel, prompts: Sequence[Sequence[int]],
                  soft_prefix: torch.Tensor | None = None, batch_size: int = 64,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For each prompt: the final hidden state ``(d,)`` and next-token log-probs ``(V,)`` at
    its last position. Returns two stacked arrays, (n, d) and (n, V)."""
    hid_out, lp_out = [], []
    n_pre = prefix_len(soft_prefix)
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        ids = _right_pad(chunk)
        emb = _prompt_embeds(model, ids, soft_prefix)
        hidden = model.transformer(inputs_embeds=emb, position_ids=position_ids_for(emb.shape[0], emb.shape[1]),
                                   use_cache=False).last_hidden_state
        last = hidden[torch.arange(len(chunk)), torch.tensor([len(p) - 1 + n_pre for p in chunk])]
        hid_out.append(last.float().numpy())
        lp_out.append(torch.log_softmax(model.lm_head(last).float(), dim=-1).numpy())
    return np.concatenate(hid_out), np.concatenate(lp_out)


@torch.no_grad()
def score_continuations(model: GPT2LMHeadModel, prompt: Sequence[int], continuations: Sequence[Sequence[int]],
                        soft_prefix: torch.Tensor | None = None, batch_size: int = 128) -> np.ndarray:
    """log p(continuation | prompt) (natural log, summed over its tokens) for each
    continuation, running the prompt once and sharing its KV cache across the candidates.

    One forward over the prompt gives the cache and the first continuation token's
    distribution; the cache is repeated over a batch of candidates, which then run only
    their own tokens (right-padded: a causal model never attends to later padding)."""
    out = np.zeros(len(continuations), dtype=np.float64)
    if not continuations:
        return out
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    emb = _prompt_embeds(model, ids, soft_prefix)
    p_len = emb.shape[1]
    res = model(inputs_embeds=emb, position_ids=position_ids_for(1, p_len), use_cache=True, logits_to_keep=1)
    first_lp = torch.log_softmax(res.logits[0, -1].float(), dim=-1)
    cache = res.past_key_values
    for s in range(0, len(continuations), batch_size):
        chunk = continuations[s:s + batch_size]
        n = len(chunk)
        longest = max(len(c) for c in chunk)
        cand = torch.zeros((n, longest), dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.bool)
        for r, c in enumerate(chunk):
            cand[r, :len(c)] = torch.tensor(list(c), dtype=torch.long)
            mask[r, :len(c)] = True
        total = first_lp[cand[:, 0]].double()
        if longest > 1:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(n)
            logits = model(inputs_embeds=token_embeddings(model, cand[:, :-1]), past_key_values=past,
                           use_cache=True, position_ids=position_ids_for(n, longest - 1, offset=p_len)).logits
            lp = torch.log_softmax(logits.float(), dim=-1)
            tok_lp = lp.gather(-1, cand[:, 1:].unsqueeze(-1)).squeeze(-1).double()
            total = total + (tok_lp * mask[:, 1:]).sum(dim=1)
        out[s:s + n] = total.numpy()
    return out


@torch.no_grad()
def score_continuations_naive(model: GPT2LMHeadModel, prompt: Sequence[int], continuations: Sequence[Sequence[int]],
                              soft_prefix: torch.Tensor | None = None) -> np.ndarray:
    """The obvious reference for :func:`score_continuations`: one full forward over
    prompt + continuation per candidate."""
    out = np.zeros(len(continuations), dtype=np.float64)
    p = len(prompt)
    for i, c in enumerate(continuations):
        lps = sequence_logprobs(model, [list(prompt) + list(c)], soft_prefix=soft_prefix)[0]
        out[i] = float(lps[p - 1:].sum())
    return out


@torch.no_grad()
def sequence_logprobs(model: GPT2LMHeadModel, sequences: Sequence[Sequence[int]],
                      soft_prefix: torch.Tensor | None = None, batch_size: int = 32) -> list[np.ndarray]:
    """For each id sequence (starting with <bos>): log p(token_i | tokens_<i) for i >= 1,
    an array of length len(seq) - 1."""
    out: list[np.ndarray] = []
    n_pre = prefix_len(soft_prefix)
    for s in range(0, len(sequences), batch_size):
        chunk = sequences[s:s + batch_size]
        ids = _right_pad(chunk)
        emb = _prompt_embeds(model, ids, soft_prefix)
        logits = model(inputs_embeds=emb, position_ids=position_ids_for(emb.shape[0], emb.shape[1]),
                       use_cache=False).logits
        # row j of lp (position n_pre + j: <bos> or the last prefix slot for j = 0) predicts ids[j + 1]
        lp = torch.log_softmax(logits[:, n_pre:].float(), dim=-1)
        tok = lp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for r, q in enumerate(chunk):
            out.append(tok[r, :len(q) - 1].double().numpy())
    return out


@torch.no_grad()
def mean_hidden(model: GPT2LMHeadModel, sequences: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
    """Mean final hidden state over positions 1.. of each id sequence (position 0 is
    ``<bos>``), shape (n, d)."""
    out = []
    for s in range(0, len(sequences), batch_size):
        chunk = sequences[s:s + batch_size]
        length = max(len(q) for q in chunk)
        ids = _right_pad(chunk)
        mask = torch.zeros((len(chunk), length), dtype=torch.float32)
        for r, q in enumerate(chunk):
            mask[r, 1:len(q)] = 1.0
        hidden = model.transformer(input_ids=ids, position_ids=position_ids_for(len(chunk), length),
                                   use_cache=False).last_hidden_state.float()
        denom = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        out.append(((hidden * mask.unsqueeze(-1)).sum(dim=1) / denom).numpy())
    if not out:
        return np.zeros((0, model.config.n_embd), dtype=np.float32)
    return np.concatenate(out)


def _right_pad(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """(n, longest) int64 ids, each row left-aligned and padded with 0 (a causal model never
    attends to padding after a position, so no mask is needed for positions before it)."""
    ids = torch.zeros((len(sequences), max(len(q) for q in sequences)), dtype=torch.long)
    for r, q in enumerate(sequences):
        ids[r, :len(q)] = torch.tensor(list(q), dtype=torch.long)
    return ids


def _left_pad(prompts: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, length - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[r, length - len(p):] = 1
    return ids, mask


@torch.no_grad()
def generate_items(model: GPT2LMHeadModel, prompts: Sequence[Sequence[int]], k: int, *, sep_id: int, pad_id: int,
                   banned_first: Sequence[int], max_new_tokens: int, soft_prefix: torch.Tensor | None = None,
                   logits_processor: Sequence[LogitsProcessor] = (),
                   prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
                   constraint: GenerationConstraint | None = None, batch_size: int = 64,
                   ) -> list[list[tuple[list[int], float, float]]]:
    """Open generation of ``k`` distinct items per prompt, in two decoding phases.

    1. The next-token distribution at the end of the prompt (after the logits processors,
       which see ``input_ids`` = the left-padded prompts) gives the ``k`` most likely first
       tokens, excluding ``banned_first`` (control tokens): normally ``k`` distinct item tokens.
    2. Each (prompt + first token) is continued greedily with ``model.generate`` until
       ``<sep>``: the title, decoded token by token (it may spell a title that does not exist).

    Returns per prompt ``k`` triples (generated ids incl. the first token and ``<sep>``,
    log p(first token), log p(rest | prompt, first token)), in phase-1 order."""
    results: list[list[tuple[list[int], float, float]]] = []
    n_pre = prefix_len(soft_prefix)
    for s in range(0, len(prompts), max(1, batch_size // max(k, 1))):
        chunk = list(prompts[s:s + max(1, batch_size // max(k, 1))])
        ids, mask = _left_pad(chunk, pad_id)
        length = ids.shape[1]
        emb = token_embeddings(model, ids)
        if soft_prefix is not None:
            rows, masks = [], []
            for r, p in enumerate(chunk):
                start = length - len(p)
                rows.append(torch.cat([emb[r, :start + 1], soft_prefix.to(emb.dtype), emb[r, start + 1:]]))
                masks.append(torch.cat([mask[r, :start + 1], torch.ones(n_pre, dtype=torch.long), mask[r, start + 1:]]))
            emb, full_mask = torch.stack(rows), torch.stack(masks)
        else:
            full_mask = mask
        pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = model.transformer(inputs_embeds=emb, attention_mask=full_mask, position_ids=pos,
                                   use_cache=False).last_hidden_state[:, -1]
        first_lp = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)
        procs = _processors(logits_processor, prefix_allowed_tokens_fn, constraint,
                            0 if soft_prefix is not None else length)
        view_ids = ids if soft_prefix is None else ids[:, :0]
        masked = procs(view_ids, first_lp.clone())
        masked[:, list(banned_first)] = -float("inf")
        top = torch.topk(masked, k, dim=-1)
        # phase 2: every prompt k times, each followed by one of its first tokens
        rep_ids = ids.repeat_interleave(k, dim=0)
        rep_mask = mask.repeat_interleave(k, dim=0)
        firsts = top.indices.reshape(-1, 1)
        valid = torch.isfinite(top.values).reshape(-1)
        kwargs: dict = {}
        if soft_prefix is not None:
            rep_emb = emb.repeat_interleave(k, dim=0)
            kwargs["inputs_embeds"] = torch.cat([rep_emb, token_embeddings(model, firsts)], dim=1)
            kwargs["attention_mask"] = torch.cat([full_mask.repeat_interleave(k, dim=0),
                                                  torch.ones_like(firsts)], dim=1)
            gen_offset = 0
        else:
            kwargs["input_ids"] = torch.cat([rep_ids, firsts], dim=1)
            kwargs["attention_mask"] = torch.cat([rep_mask, torch.ones_like(firsts)], dim=1)
            gen_offset = length + 1
        procs2 = _processors(logits_processor, prefix_allowed_tokens_fn, constraint,
                             0 if soft_prefix is not None else length)
        if soft_prefix is not None:  # decoding from embeddings: processors see generated ids only
            procs2 = LogitsProcessorList([_PrependColumns(procs2, firsts)])
        out = model.generate(**kwargs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                             eos_token_id=sep_id, pad_token_id=pad_id, logits_processor=procs2,
                             return_dict_in_generate=True, output_logits=True)
        seqs = out.sequences[:, gen_offset:]
        if out.logits:
            step_lp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
            tok_lp = step_lp.gather(-1, seqs[:, :step_lp.shape[1]].unsqueeze(-1)).squeeze(-1)
        else:
            tok_lp = torch.zeros((seqs.shape[0], 0))
        for r in range(len(chunk)):
            row = []
            for j in range(k):
                i = r * k + j
                if not bool(valid[i]):
                    continue
                toks = seqs[i].tolist()
                n = toks.index(sep_id) + 1 if sep_id in toks else len(toks)
                rest = float(tok_lp[i, :n].sum())
                first = int(firsts[i, 0])
                row.append(([first, *toks[:n]], float(first_lp[r, first]), rest))
            results.append(row)
    return results


class _PrependColumns(LogitsProcessor):
    """Shows wrapped processors ``input_ids`` with fixed leading columns (the first generated
    token, which was fed as an embedding and is not in ``input_ids``)."""

    def __init__(self, inner: LogitsProcessorList, columns: torch.Tensor) -> None:
        self.inner = inner
        self.columns = columns

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.inner(torch.cat([self.columns.to(input_ids.device), input_ids], dim=1), scores)


def _processors(logits_processor: Sequence[LogitsProcessor],
                prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None,
                constraint: GenerationConstraint | None, prompt_length: int) -> LogitsProcessorList:
    procs = LogitsProcessorList(list(logits_processor))
    if prefix_allowed_tokens_fn is not None:
        procs.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, num_beams=1))
    if constraint is not None:
        procs.append(constraint(prompt_length))
    return procs


@torch.no_grad()
def generate(model: GPT2LMHeadModel, prompts: Sequence[Sequence[int]], *, num_return: int, num_beams: int,
             max_new_tokens: int, eos_id: int, pad_id: int, soft_prefix: torch.Tensor | None = None,
             logits_processor: Sequence[LogitsProcessor] = (),
             prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
             constraint: GenerationConstraint | None = None, batch_size: int = 16,
             ) -> list[list[tuple[list[int], float]]]:
    """Decode with ``model.generate`` (beam search when ``num_beams`` > 1, greedy otherwise),
    batched over prompts (left-padded). Returns per prompt ``num_return`` pairs of
    (generated ids without the prompt, sequence log-prob or nan for greedy)."""
    results: list[list[tuple[list[int], float]]] = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        ids, mask = _left_pad(chunk, pad_id)
        procs = LogitsProcessorList(list(logits_processor))
        kwargs: dict = {}
        if soft_prefix is not None:
            n_pre = prefix_len(soft_prefix)
            emb = token_embeddings(model, ids)
            # left padding: <bos> is at column (length - len(p)); splice the prefix after it per row
            rows, masks = [], []
            for r, p in enumerate(chunk):
                start = ids.shape[1] - len(p)
                rows.append(torch.cat([emb[r, :start + 1], soft_prefix.to(emb.dtype), emb[r, start + 1:]]))
                masks.append(torch.cat([mask[r, :start + 1], torch.ones(n_pre, dtype=torch.long), mask[r, start + 1:]]))
            kwargs["inputs_embeds"] = torch.stack(rows)
            kwargs["attention_mask"] = torch.stack(masks)
            prompt_length = 0
        else:
            kwargs["input_ids"] = ids
            kwargs["attention_mask"] = mask
            prompt_length = ids.shape[1]
        if constraint is not None:
            procs.append(constraint(prompt_length))
        out = model.generate(**kwargs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                             num_return_sequences=num_return, do_sample=False,
                             eos_token_id=eos_id, pad_token_id=pad_id, length_penalty=0.0,
                             early_stopping=True if num_beams > 1 else False,
                             logits_processor=procs, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                             return_dict_in_generate=True, output_scores=num_beams > 1)
        seqs = out.sequences[:, prompt_length:] if soft_prefix is None else out.sequences
        scores = getattr(out, "sequences_scores", None)
        for r in range(len(chunk)):
            row = []
            for j in range(num_return):
                i = r * num_return + j
                toks = seqs[i].tolist()
                if eos_id in toks:
                    toks = toks[:toks.index(eos_id) + 1]
                while toks and toks[-1] == pad_id:
                    toks.pop()
                row.append((toks, float(scores[i]) if scores is not None else float("nan")))
            results.append(row)
    return results
