"""Catalog items as tokens of a causal LM (P5 / CLLM4Rec / E4SRec style): one new token per item.

- :class:`ItemVocabulary`: item id <-> item token id (``offset + row``; ``offset`` is the first id
  after the tokenizer's own vocabulary and the model's embedding rows), and how an item token is
  written in prompt text (``<item_ID>``).
- :func:`title_rows`: each item's row initialised from the base model's reading of its title: the
  mean of the title's token embeddings (the LLM's language knowledge), or seeded random rows of
  the same scale (the ablation).
- :class:`ItemAwareEmbedding`: the model's input embedding with the item rows appended; put in
  place of the model's input embedding, so ``input_ids`` holding item token ids (and every code
  path that embeds ids: soft prefixes, peft, Opacus) just work.
- :class:`ItemHead`: the output side, a linear map hidden state -> one logit per item (its own
  rows and a per-item bias, initialised from the output embeddings of the title tokens). It is a
  module of its own (never the tied word embedding) so that Opacus sees each trained parameter
  in exactly one module (per-sample gradients) and the vocabulary's 49k text rows never enter a
  forward over items.

Next-item probabilities are a softmax over the item tokens only (the next token of a history is
always an item): SASRec-style full-catalog cross-entropy in training, and one forward over a
prompt gives every candidate's log-probability in scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import torch

from audit.errors import ConfigError

ItemInit = Literal["titles", "random"]
ITEM_TOKEN = "<item_{}>"


@dataclass(frozen=True)
class ItemVocabulary:
    """The catalog's items (in catalog order) as token ids ``offset .. offset + n - 1``."""

    items: tuple[str, ...]
    offset: int

    def __post_init__(self) -> None:
        if not self.items:
            raise ConfigError("items: tokens needs a catalog with at least one item")
        if len(set(self.items)) != len(self.items):
            raise ConfigError("items: tokens: the catalog repeats item ids")
        object.__setattr__(self, "_row", {i: r for r, i in enumerate(self.items)})

    @classmethod
    def for_model(cls, items: Sequence[str], tokenizer: object, embedding_rows: int) -> "ItemVocabulary":
        """Item tokens after both the tokenizer's ids and the model's embedding rows."""
        return cls(tuple(map(str, items)), max(int(len(tokenizer)), int(embedding_rows)))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.items)

    def row(self, item: str) -> int:
        """The item's row (0..n-1); KeyError for an item outside the catalog."""
        return self._row[item]  # type: ignore[attr-defined]

    def __contains__(self, item: object) -> bool:
        return item in self._row  # type: ignore[attr-defined]

    def token_ids(self, items: Sequence[str]) -> list[int]:
        """The token id of each item."""
        return [self.offset + self.row(i) for i in items]

    def text(self, items: Sequence[str]) -> str:
        """How ``items`` appear in a prompt's text: ``<item_ID>`` each, side by side."""
        return "".join(ITEM_TOKEN.format(i) for i in items)

    def digest_data(self) -> dict[str, object]:
        import hashlib

        return {"n": len(self.items), "offset": self.offset,
                "items": hashlib.sha256("\n".join(self.items).encode()).hexdigest()}


def title_token_ids(tokenizer: object, titles: Sequence[str]) -> list[list[int]]:
    """Each title's token ids as it follows a space (as it reads inside a sentence); never empty."""
    out = []
    for t in titles:
        ids = list(tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        if not ids:
            raise ConfigError(f"items: tokens: the title {t!r} has no tokens in this tokenizer")
        out.append(ids)
    return out


def title_rows(table: "torch.Tensor", token_ids: Sequence[Sequence[int]], init: ItemInit,
               seed: int) -> "torch.Tensor":
    """(n, d) float32 rows: the mean of ``table``'s rows at each title's tokens (``titles``), or
    seeded normal rows with the same per-coordinate standard deviation as those means (``random``)."""
    table = table.detach().float().cpu()
    means = torch.stack([table[torch.as_tensor(list(ids), dtype=torch.long)].mean(0) for ids in token_ids])
    if init == "titles":
        return means
    if init != "random":
        raise ConfigError(f"items: tokens: init must be 'titles' or 'random', got {init!r}")
    gen = torch.Generator().manual_seed(int(seed))
    centre = means.mean(0, keepdim=True)
    return centre + torch.randn(means.shape, generator=gen) * means.std(0, keepdim=True)


class ItemAwareEmbedding(torch.nn.Module):
    """``base`` (the model's word embedding, frozen) for ids below ``offset``, the ``items``
    embedding (n rows) for ids ``offset .. offset + n - 1``. Both lookups keep the batch
    dimension, so Opacus computes each example's gradient of the item rows."""

    def __init__(self, base: "torch.nn.Module", rows: "torch.Tensor", offset: int) -> None:
        super().__init__()
        self.base = base
        self.items = torch.nn.Embedding(rows.shape[0], rows.shape[1])
        with torch.no_grad():
            self.items.weight.copy_(rows.to(self.items.weight.dtype))
        self.offset = int(offset)

    @property
    def weight(self) -> "torch.Tensor":
        """The text rows (what code reading ``get_input_embeddings().weight`` for a width expects)."""
        return self.base.weight

    def forward(self, ids: "torch.Tensor") -> "torch.Tensor":
        is_item = ids >= self.offset
        text = self.base(torch.where(is_item, torch.zeros_like(ids), ids))
        if not bool(is_item.any()):
            return text
        item = self.items(torch.where(is_item, ids - self.offset, torch.zeros_like(ids))).to(text.dtype)
        return torch.where(is_item.unsqueeze(-1), item, text)


class ItemHead(torch.nn.Module):
    """Hidden state (..., d) -> item logits (..., n): ``rows`` (n, d) and a per-item bias (zeros)."""

    def __init__(self, rows: "torch.Tensor") -> None:
        super().__init__()
        self.linear = torch.nn.Linear(rows.shape[1], rows.shape[0], bias=True)
        with torch.no_grad():
            self.linear.weight.copy_(rows.to(self.linear.weight.dtype))
            self.linear.bias.zero_()

    def forward(self, hidden: "torch.Tensor") -> "torch.Tensor":
        return self.linear(hidden.to(self.linear.weight.dtype))


def output_table(model: "torch.nn.Module") -> "torch.Tensor":
    """The model's output word embedding rows (the input rows for a tied model)."""
    out = model.get_output_embeddings()
    return (out if out is not None else model.get_input_embeddings()).weight


def install_item_tokens(model: "torch.nn.Module", vocab: ItemVocabulary, titles: Mapping[str, str], tokenizer: object,
                        *, init: ItemInit = "titles", seed: int = 0) -> ItemHead:
    """Put an :class:`ItemAwareEmbedding` in place of ``model``'s input embedding (item rows
    initialised by :func:`title_rows` from the input table) and return the :class:`ItemHead`
    (rows from the output table: the same table for tied embeddings). ConfigError for a model
    whose input embedding cannot be replaced or an item without a title."""
    missing = [i for i in vocab.items if not str(titles.get(i, "")).strip()]
    if missing:
        raise ConfigError(f"items: tokens needs a title for every catalog item; {len(missing)} have none "
                          f"(e.g. {missing[:3]})")
    base = model.get_input_embeddings()
    if base is None or not hasattr(base, "weight") or not hasattr(model, "set_input_embeddings"):
        raise ConfigError("items: tokens: this model's input embedding cannot be extended (it has no "
                          "get_input_embeddings/set_input_embeddings with a weight table)")
    if isinstance(base, ItemAwareEmbedding):
        raise ConfigError("items: tokens: this model already has item tokens")
    ids = title_token_ids(tokenizer, [titles[i] for i in vocab.items])
    in_rows = title_rows(base.weight, ids, init, seed)
    out_rows = title_rows(output_table(model), ids, init, seed + 1)
    emb = ItemAwareEmbedding(base, in_rows, vocab.offset).to(base.weight.device)
    model.set_input_embeddings(emb)
    return ItemHead(out_rows).to(base.weight.device)


def item_log_softmax(logits: "torch.Tensor") -> "torch.Tensor":
    """Natural-log next-item probabilities (float32) over the last axis."""
    return torch.log_softmax(logits.float(), dim=-1)


def candidate_rows(vocab: ItemVocabulary, items: Sequence[str]) -> np.ndarray:
    """Rows of ``items`` (-1 for an id outside the catalog)."""
    return np.asarray([vocab.row(i) if i in vocab else -1 for i in items], dtype=np.int64)
