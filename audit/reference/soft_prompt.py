"""The reference model as a soft-prompt target (:class:`~audit.training.soft_prompt.SoftPromptTarget`):
sliding-window examples without a profile, the prefix spliced after ``<bos>``, the user
representation the final hidden state at the ``<rec>`` token (what ``embed_user`` returns)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from audit.reference.examples import StageData
from audit.reference.model import forward_hidden, position_ids_for, token_embeddings
from audit.reference.prompts import PromptFormat
from audit.training.data import IGNORE, TrainingData
from audit.training.soft_prompt import splice_prefix, targets_after_prefix


class ReferenceSoftPromptTarget:
    """The reference model: sliding-window examples, representation at ``<rec>``."""

    def __init__(self, model: GPT2LMHeadModel, fmt: PromptFormat) -> None:
        self.module, self.fmt = model, fmt
        self.width = int(model.config.n_embd)
        self.init_scale = float(model.transformer.wte.weight.detach().std())

    def training_data(self, sequences: Mapping[str, Sequence[str]]) -> TrainingData:
        return StageData(self.fmt, {u: tuple(s) for u, s in sequences.items()}, {}, attribute_dropout=0.0,
                         catalog_titles=False)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor,
                prefix: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.module
        hidden = prefixed_hidden(model, input_ids, prefix)  # type: ignore[arg-type]
        p_len = 0 if prefix is None else int(prefix.shape[0])
        tgt = targets_after_prefix(targets, p_len)
        keep = tgt != IGNORE
        loss = nn.functional.cross_entropy(model.lm_head(hidden[keep]), tgt[keep])  # type: ignore[operator]
        reps = hidden[torch.arange(hidden.shape[0]), rec_positions(input_ids, self.fmt.rec) + p_len]
        return loss, reps


def prefixed_hidden(model: GPT2LMHeadModel, input_ids: torch.Tensor, prefix: torch.Tensor | None,
                    at: int = 1) -> torch.Tensor:
    """Final hidden states (B, L + P, d) of right-padded ``input_ids`` with ``prefix`` spliced in at
    ``at`` (positions run 0..L+P−1 for every row). ``prefix=None`` runs the plain prompt."""
    if prefix is None:
        return forward_hidden(model, input_ids=input_ids)
    embeds = splice_prefix(token_embeddings(model, input_ids), prefix.to(model.dtype), at)
    b, length = embeds.shape[:2]
    return forward_hidden(model, inputs_embeds=embeds, position_ids=position_ids_for(b, length))


def rec_positions(input_ids: torch.Tensor, rec_id: int) -> torch.Tensor:
    """Index (per row) of the ``<rec>`` token: where the user representation is read."""
    hits = (input_ids == rec_id).int()
    if bool((hits.sum(dim=1) != 1).any()):
        raise ValueError("every training row must hold exactly one <rec> token")
    return hits.argmax(dim=1)
