"""A loaded causal LM as the ``hf`` recommender runs it: the torch module, its tokenizer and
device, the pad and start ids, the context length, and the soft prefix its prompts carry.

:mod:`~audit.llm.decoding` and :mod:`~audit.llm.scoring` run a :class:`CausalLM`; a copy
with another prefix (:meth:`CausalLM.with_prefix`) or merged weights
(:meth:`CausalLM.with_module`) shares everything else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from audit.llm.loading import first_not_none, max_positions

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)
class CausalLM:
    """``module`` (eval mode) and ``tokenizer`` on ``device``; ``soft_prefix``: (P, hidden_size)
    input vectors spliced after every prompt's first token, or None."""

    module: Any
    tokenizer: Any
    device: "torch.device"
    soft_prefix: "torch.Tensor | None" = None

    @property
    def pad_id(self) -> int:
        """Padding id: the tokenizer's pad token, else its EOS, else 0."""
        return first_not_none(self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0)

    @property
    def start_id(self) -> int | None:
        """The token a text's first token is conditioned on: BOS, else EOS, else None."""
        return first_not_none(self.tokenizer.bos_token_id, self.tokenizer.eos_token_id)

    @property
    def max_positions(self) -> int | None:
        return max_positions(self.module.config)

    @property
    def width(self) -> int:
        """d of the input embeddings (what a soft prefix's rows must have)."""
        return int(self.module.get_input_embeddings().weight.shape[1])

    @property
    def prefix_len(self) -> int:
        return 0 if self.soft_prefix is None else int(self.soft_prefix.shape[0])

    def with_prefix(self, prefix: "torch.Tensor | None") -> "CausalLM":
        """The same model whose prompts carry ``prefix`` ((n, width) vectors; None: none)."""
        if prefix is not None:
            if prefix.ndim != 2 or prefix.shape[1] != self.width:
                raise ValueError(f"soft prefix must have shape (n, {self.width}), got {tuple(prefix.shape)}")
            prefix = prefix.detach().float()
        return dataclasses.replace(self, soft_prefix=prefix)

    def with_module(self, module: Any) -> "CausalLM":
        """The same tokenizer, device and prefix around another module (e.g. merged LoRA weights)."""
        return dataclasses.replace(self, module=module.eval())

    def pad(self, seqs: Sequence[Sequence[int]], side: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(ids, attention mask) of ``seqs`` padded on the ``left`` or ``right``, on the device."""
        import torch

        width = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if not s:
                continue
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[row, sl] = torch.tensor(list(s), dtype=torch.long)
            mask[row, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    def inputs(self, ids: "torch.Tensor", mask: "torch.Tensor",
               prefix: "torch.Tensor | None" = None) -> dict[str, "torch.Tensor"]:
        """Model inputs for padded prompt ids: ``input_ids`` without a soft prefix; with one
        (``prefix`` or :attr:`soft_prefix`), ``inputs_embeds`` with the prefix spliced after each
        row's first real token (see :func:`audit.llm.soft_prompt.splice_after_first_token`)."""
        from audit.llm.soft_prompt import splice_after_first_token

        prefix = self.soft_prefix if prefix is None else prefix
        if prefix is None:
            return {"input_ids": ids, "attention_mask": mask}
        return splice_after_first_token(self.module.get_input_embeddings()(ids), mask, prefix)


def position_ids(mask: "torch.Tensor", offset: int = 0) -> "torch.Tensor":
    """Position ids counting real tokens only (left padding gets position 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset
