"""Decoding with an ``hf`` causal LM: left-padded batched generation (KV cache), stopped once a
row has written ``k`` list lines, with the caller's decoding constraints.

A constraint (``prefix_allowed_tokens_fn``, ``(batch_id, generated) -> allowed ids``) and logits
processors (``processor(generated_ids, scores)``) see only the generated tokens (the prompt is
stripped), and the constraint's ``batch_id`` is the row's index in the whole call (not in its
``batch_size`` chunk), so per-request constraints can be indexed by it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

from audit.llm.model import CausalLM

if TYPE_CHECKING:
    import torch

#: ``(batch_id, generated token ids) -> the token ids allowed next``
AllowedTokensFn = Callable[[int, "torch.Tensor"], list[int]]
#: ``(items, what, unit) -> items``, reporting progress over them
Track = Callable[[list[Any], str, str], Any]

_NEWLINES: "weakref.WeakKeyDictionary[Any, frozenset[int]]" = weakref.WeakKeyDictionary()


def untracked(items: list[Any], what: str, unit: str) -> list[Any]:
    return items


class PromptStripped:
    """Wraps a user hook so it sees only the generated tokens (the prompt is cut off) and the
    request's index in the whole call as its batch id."""

    def __init__(self, fn: AllowedTokensFn, prompt_len: int, offset: int) -> None:
        self.fn, self.prompt_len, self.offset = fn, prompt_len, offset

    def __call__(self, batch_id: int, input_ids: "torch.Tensor") -> list[int]:
        return self.fn(self.offset + batch_id, input_ids[self.prompt_len:])


class StrippedProcessor:
    """Wraps a logits processor so it sees only the generated tokens."""

    def __init__(self, proc: Any, prompt_len: int) -> None:
        self.proc, self.prompt_len = proc, prompt_len

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        return self.proc(input_ids[:, self.prompt_len:], scores)


class LinesWritten:
    """Stopping criterion: per row, True once the generated part holds ``lines`` line breaks."""

    def __init__(self, newline_ids: frozenset[int], prompt_len: int, lines: int) -> None:
        import torch

        self.ids = torch.tensor(sorted(newline_ids), dtype=torch.long)
        self.prompt_len, self.lines = prompt_len, lines

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor", **kwargs: Any) -> "torch.Tensor":
        import torch

        generated = input_ids[:, self.prompt_len:]
        count = torch.isin(generated, self.ids.to(generated.device)).sum(1)
        return count >= self.lines


def newline_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids whose text contains a line break (how list items end); computed once per tokenizer."""
    ids = _NEWLINES.get(tokenizer)
    if ids is None:
        ids = frozenset(i for i in tokenizer.get_vocab().values()
                        if "\n" in tokenizer.decode([i], skip_special_tokens=False))
        _NEWLINES[tokenizer] = ids
    return ids


def generate_texts(lm: CausalLM, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *,
                   batch_size: int, sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   seed: int = 0, constraint: AllowedTokensFn | None = None, processors: Sequence[Any] = (),
                   stop_after: int | None = None, track: Track = untracked) -> list[str]:
    """The decoded text generated after each prompt (special tokens skipped), in batches of
    ``batch_size`` left-padded rows; greedy, or sampled (``temperature``, ``top_p``) with the torch
    seed set to ``seed`` + the batch's first row. ``stop_after``: a row stops once it has written
    that many lines (k list items), so no tokens are spent past the k-th title."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    texts: list[str] = []
    starts = list(range(0, len(prompt_ids), batch_size))
    eos = lm.tokenizer.eos_token_id
    with torch.no_grad():
        for start in track(starts, "generate", "batch"):
            ids, mask = lm.pad(prompt_ids[start:start + batch_size], "left")
            inputs = lm.inputs(ids, mask)
            width = ids.shape[1] if "input_ids" in inputs else 0  # generate returns only new tokens for embeds
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": lm.pad_id,
                                      "do_sample": sample, "num_beams": 1}
            if eos is not None:
                kwargs["eos_token_id"] = eos
            if sample:
                kwargs.update(temperature=temperature, top_p=top_p)
                torch.manual_seed(seed + start)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if constraint is not None:
                kwargs["prefix_allowed_tokens_fn"] = PromptStripped(constraint, width, start)
            if processors:
                kwargs["logits_processor"] = LogitsProcessorList([StrippedProcessor(p, width) for p in processors])
            if stop_after:
                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [LinesWritten(newline_ids(lm.tokenizer), width, stop_after)])
            out = lm.module.generate(**inputs, **kwargs)
            for row in out[:, width:]:
                texts.append(lm.tokenizer.decode(row.tolist(), skip_special_tokens=True))
    return texts
