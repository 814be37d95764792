"""Soft prompts on an ``hf`` causal LM: splicing a prefix of learned input vectors into padded
prompts, and the model as a :class:`~audit.training.soft_prompt.SoftPromptTarget` (what the
fair-prompt trainer trains a prefix against): with title answers (:class:`HFSoftPromptTarget`)
or with item tokens (:class:`ItemSoftPromptTarget`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from audit.interface import RecRequest
from audit.training.data import IGNORE
from audit.training.soft_prompt import targets_after_prefix

if TYPE_CHECKING:
    import torch

    from audit.llm.examples import LLMStageData
    from audit.llm.item_examples import ItemStageData
    from audit.llm.item_tokens import ItemVocabulary
    from audit.llm.item_training import ItemTokenLM
    from audit.llm.model import CausalLM


def splice_after_first_token(embeds: "torch.Tensor", mask: "torch.Tensor",
                             prefix: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """``inputs_embeds`` (B, L + P, d) with ``prefix`` (P, d) inserted after each row's first real
    token (left or right padding) and the attention mask widened to match."""
    import torch

    prefix = prefix.to(device=embeds.device, dtype=embeds.dtype)
    ones = torch.ones(prefix.shape[0], dtype=mask.dtype, device=mask.device)
    first = mask.argmax(dim=1)  # the first real token of each row
    rows, masks = [], []
    for r in range(embeds.shape[0]):
        at = int(first[r]) + 1
        rows.append(torch.cat([embeds[r, :at], prefix, embeds[r, at:]]))
        masks.append(torch.cat([mask[r, :at], ones, mask[r, at:]]))
    return {"inputs_embeds": torch.stack(rows), "attention_mask": torch.stack(masks)}


class HFSoftPromptTarget:
    """An ``hf`` model seen by :func:`audit.fairness.soft_prompt.train_fair_prompt`: one example per
    user (its generate prompt for the newest window of ``history`` items, no profile, then the
    next item's title), the prefix spliced after the prompt's first token, the representation the
    last prompt token's final state (what the adapter's ``embed_user`` returns). Gradients reach
    the prefix through every layer; the model's weights are frozen by the trainer."""

    def __init__(self, lm: "CausalLM", titles: Mapping[str, str],
                 encode_prompt: Callable[[RecRequest], list[int]],
                 encode_answer: Callable[[Sequence[str]], list[int]], *, history: int) -> None:
        self.lm, self.titles = lm, dict(titles)
        self.encode_prompt, self.encode_answer, self.history = encode_prompt, encode_answer, history
        self.module = lm.module
        emb = lm.module.get_input_embeddings().weight
        self.width = int(emb.shape[1])
        self.init_scale = float(emb.detach().float().std())
        self._body = lm.module.base_model
        self._head = lm.module.get_output_embeddings()

    def training_data(self, sequences: Mapping[str, Sequence[str]]) -> "LLMStageData":
        from audit.llm.examples import LLMStageData

        return LLMStageData({str(u): tuple(map(str, s)) for u, s in sequences.items()}, {}, self.titles,
                            self.encode_prompt, self.encode_answer, history=self.history, targets=1,
                            examples_per_user=1, attribute_dropout=0.0, pad_id=self.lm.pad_id)

    def forward(self, input_ids: "torch.Tensor", targets: "torch.Tensor",
                prefix: "torch.Tensor | None") -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        device = self.lm.device
        input_ids, targets = input_ids.to(device), targets.to(device)
        last_prompt = (targets != IGNORE).int().argmax(dim=1)  # the first target sits at the prompt's last token
        if prefix is None:
            hidden = self._body(input_ids=input_ids, use_cache=False).last_hidden_state
            p_len = 0
        else:
            # right padding: every row starts at 0, so the prefix goes to position 1 in every row
            inputs = self.lm.inputs(input_ids, torch.ones_like(input_ids), prefix=prefix)
            hidden = self._body(inputs_embeds=inputs["inputs_embeds"], use_cache=False).last_hidden_state
            p_len = int(prefix.shape[0])
        tgt = targets_after_prefix(targets, p_len)
        keep = tgt != IGNORE
        loss = torch.nn.functional.cross_entropy(self._head(hidden[keep]).float(), tgt[keep])
        reps = hidden[torch.arange(hidden.shape[0], device=device), last_prompt + p_len]
        return loss, reps



class ItemSoftPromptTarget:
    """An item-token model (:mod:`audit.adapters.hf_items`) seen by the fair-prompt trainer: one
    example per user (the prompt's text prefix without a profile, then the user's newest
    ``history`` training items as item tokens; targets: the next item at every position, as the
    model was trained), the prefix spliced after the first token, the representation the final
    state at the last item token (what the adapter's ``embed_user`` returns for that history).
    ``module`` is the whole item model (LM and item head), frozen by the trainer."""

    def __init__(self, lm: "CausalLM", item_lm: "ItemTokenLM", vocab: "ItemVocabulary",
                 encode_prefix: Callable[[Mapping[str, str]], list[int]], *, history: int) -> None:
        self.lm, self.item_lm, self.vocab = lm, item_lm, vocab
        self.encode_prefix, self.history = encode_prefix, int(history)
        self.module = item_lm
        text_rows = item_lm.embedding.weight
        self.width = int(text_rows.shape[1])
        self.init_scale = float(text_rows.detach().float().std())

    def training_data(self, sequences: Mapping[str, Sequence[str]]) -> "ItemStageData":
        from audit.llm.item_examples import ItemStageData

        newest = {str(u): tuple(map(str, s))[-self.history:] for u, s in sequences.items()}
        return ItemStageData(newest, {}, self.vocab, self.encode_prefix, window=self.history,
                             attribute_dropout=0.0, pad_id=self.lm.pad_id)

    def forward(self, input_ids: "torch.Tensor", targets: "torch.Tensor",
                prefix: "torch.Tensor | None") -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        from audit.llm.trainable import target_cross_entropy

        device = self.lm.device
        input_ids, targets = input_ids.to(device), targets.to(device)
        positions = torch.arange(targets.shape[1], device=device).expand_as(targets)
        last = torch.where(targets != IGNORE, positions, -1).max(dim=1).values + 1  # the last item token
        # right padding: every row starts at 0, so the prefix goes to position 1 in every row
        inputs = self.lm.inputs(input_ids, torch.ones_like(input_ids), prefix=prefix)
        inputs.pop("attention_mask")
        hidden = self.item_lm.body(**inputs, use_cache=False).last_hidden_state
        p_len = 0 if prefix is None else int(prefix.shape[0])
        loss = target_cross_entropy(hidden, targets_after_prefix(targets, p_len), self.item_lm.head)
        reps = hidden[torch.arange(hidden.shape[0], device=device), last + p_len]
        return loss, reps
