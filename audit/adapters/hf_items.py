"""The ``hf`` adapter with ``items: tokens``: every catalog item one token of the LLM.

Suite entry::

    llm-items: {adapter: hf, model: smollm2-135m, items: tokens, variant: {lora: {epochs: 2}}}

The prompt is the plain-completion ``generate`` template up to its ``{history}`` field (the
instruction and the profile, so counterfactual fairness and attribute dropout act on words),
then the last ``history`` history items as item tokens (default 50). Nothing follows them: the
state at the last item token predicts the next item, exactly as in training
(:mod:`audit.llm.item_training`). Without a training variant the item rows are their
title-embedding initialisation (the LLM's zero-shot reading of the titles).

- ``score``: log p(item | prompt) under the softmax over the catalog's item tokens: one forward
  per prompt scores every candidate (a title outside the catalog scores ``-inf``);
- ``generate``: the ``k`` likeliest item tokens not in the history (among the candidates for a
  ``rank`` request), as catalog titles: a closed vocabulary, nothing can be invented;
- ``embed-user``: the state at the prompt's last token; ``embed``: a title's text, as ``hf``;
- ``token-logprobs``: texts in the model's own format (``render_sequence``: the prefix text,
  then ``<item_ID>`` tokens): text tokens scored by the LM head, item tokens by the item softmax;
- ``soft-prompt``: the ``fair-prompt`` variant trains a prefix of input vectors against the item
  model's own next-item loss (:class:`audit.llm.soft_prompt.ItemSoftPromptTarget`); ``score``,
  ``generate``, ``embed_user`` and ``token_logprobs`` then read every prompt with it;
- ``train*``: the training variants (``lora`` and everything that edits its recipe: ``dp``,
  ``federated``, ``fake-users``, ``backdoor``, ``canaries``, ...) train LoRA and the item rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from audit.adapters.hf import HFAdapter, HFConfig
from audit.errors import ConfigError
from audit.interface import Generation, RecRequest
from audit.llm import loading
from audit.prompts import load_prompt_set
from audit.variants import BuildContext

if TYPE_CHECKING:
    import torch

    from audit.llm.item_training import ItemBaseParts, ItemTokenLM
    from audit.llm.item_tokens import ItemVocabulary

#: history items per prompt and training window when ``history`` is not given (ItemRecipe.history)
ITEM_HISTORY = 50
#: most catalog items that become tokens (each adds two rows of the model's width; DP keeps one
#: gradient of every row per example of a batch)
MAX_ITEM_TOKENS = 100_000
_ITEM_RE = re.compile(r"<item_([^<>\s]+)>")


class ItemTokenAdapter(HFAdapter):
    """A local causal LM with one token per catalog item (see the module docstring)."""

    capabilities: frozenset[str] = frozenset(
        {"generate", "score", "token-logprobs", "embed-user", "embed", "train", "train-lora", "train-private",
         "train-federated", "train-transforms", "soft-prompt"})
    sequence_format = "item-tokens"
    closed_catalog = True  # generate returns catalog items only
    reads_item_text = False  # history and candidates are item ids (titles only map to them)

    item_lm: "ItemTokenLM"
    vocab: "ItemVocabulary"

    @classmethod
    def build(cls, config: HFConfig, ctx: BuildContext | None = None,
              training_variants: Sequence[Any] = ()) -> "ItemTokenAdapter":
        from audit.llm.item_tokens import ItemVocabulary
        from audit.llm.item_training import ItemRecipe, build_item_model

        if ctx is None:
            raise ConfigError("hf adapter with items: tokens needs the suite's data set (its catalog becomes "
                              "the model's item tokens); build it from a suite")
        titles = ctx.dataset.item_titles
        if len(titles) > MAX_ITEM_TOKENS:
            raise ConfigError(f"hf adapter: items: tokens on a catalog of {len(titles)} items; at most "
                              f"{MAX_ITEM_TOKENS} become tokens (use items: titles, or a smaller catalog)")
        if "history" not in config.model_fields_set:
            config = config.model_copy(update={"history": ITEM_HISTORY})
        directory = loading.model_dir(config.model, config.path, ctx.suite_dir)
        device = loading.torch_device(config.device)
        prompts = load_prompt_set(config.prompts, Path(ctx.suite_dir) if ctx.suite_dir else None)
        prompts.before_history({})  # ConfigError now for a template without {history}
        model, tokenizer = loading.load_local(directory, device, config.dtype)
        rec = cls(model, tokenizer, config, prompts, seed=ctx.seed)
        rec.directory, rec.progress = directory, bool(ctx.progress)
        rec.vocab = ItemVocabulary.for_model(list(titles), tokenizer, model.get_input_embeddings().weight.shape[0])
        rec._item_of_title = {}
        for item, title in titles.items():
            rec._item_of_title.setdefault(title.strip(), item)
        rec._titles_by_row = [titles[i] for i in rec.vocab.items]  # each item row's catalog title
        rec.info.update({"items": "tokens", "item_tokens": len(rec.vocab), "unknown_titles": 0})
        recipe = ItemRecipe(history=config.history, seed=ctx.seed)
        if training_variants:
            rec._finetune_items(recipe, training_variants, ctx)
        else:
            rec._use(build_item_model(rec.item_base_parts(titles), recipe, lora=False))
        return rec

    def _finetune_items(self, recipe: Any, training_variants: Sequence[Any], ctx: BuildContext) -> None:
        from audit.llm.item_training import ItemTokenLM, train_or_load_items

        for variant in training_variants:
            recipe = variant.modify_recipe(recipe, ctx)
        model, manifest, directory, fresh = train_or_load_items(
            recipe, self.item_base_parts(ctx.dataset.item_titles), ctx.dataset, Path(ctx.cache_dir),
            progress=ctx.progress)
        self._use(ItemTokenLM(model.lm.merge_and_unload(), model.head).eval())
        self.manifest = manifest
        self.info.update({"lora_dir": str(directory), "trained_now": fresh, "key": manifest.get("key"),
                          "training": [s.get("summary") for s in manifest.get("stages", [])],
                          "trainable_parameters": manifest.get("trainable_parameters")})

    def _use(self, item_lm: "ItemTokenLM") -> None:
        self.item_lm = item_lm.eval()
        self.lm = self.lm.with_module(item_lm.lm)

    def item_base_parts(self, titles: Mapping[str, str]) -> "ItemBaseParts":
        """What item-token training needs (:class:`audit.llm.item_training.ItemBaseParts`)."""
        import hashlib
        import json

        from audit.llm.fetch import weights_digest
        from audit.llm.item_training import ItemBaseParts

        ident = {"weights": weights_digest(self.directory) if self.directory is not None else "in-memory",
                 "prefix": self.prefix_ids({"gender": "F"}), "tokenizer": loading.tokenizer_digest(self.tokenizer),
                 "prompts": self.prompts.config.model_dump(mode="json"), "dtype": self.config.dtype,
                 "items": self.vocab.digest_data()}
        identity = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        return ItemBaseParts(model=self.lm.module, tokenizer=self.tokenizer, vocab=self.vocab, titles=dict(titles),
                             encode_prefix=self.prefix_ids, pad_id=self.pad_id, identity=identity)

    def identity(self) -> str | None:
        if self.directory is None or (self.manifest is not None and not self.manifest.get("key")):
            return None
        trained = self.vocab.digest_data() if self.manifest is None else self.manifest["key"]
        return loading.model_identity(f"{type(self).__module__}.{type(self).__qualname__}",
                                      self.config.model_dump(mode="json"), self.directory, str(trained),
                                      self.soft_prefix)

    def soft_prompt_target(self, dataset: Any) -> Any:
        """The frozen item model as the fair-prompt trainer sees it (:class:`audit.llm.soft_prompt.ItemSoftPromptTarget`)."""
        from audit.llm.soft_prompt import ItemSoftPromptTarget

        return ItemSoftPromptTarget(self.lm, self.item_lm, self.vocab, self.prefix_ids, history=self.config.history)

    # -- prompts ------------------------------------------------------------------------------
    def prefix_ids(self, profile: Mapping[str, str]) -> list[int]:
        """Token ids of the prompt's text part (instruction and profile), starting with BOS."""
        return self.encoding.prompt_ids(self.prompts.before_history(profile), raw=True)

    def history_items(self, req: RecRequest) -> list[str]:
        """The request's last ``history`` catalog items (titles outside the catalog are dropped and counted)."""
        items = [self._item_of_title.get(t.strip()) for t in req.history]
        self.info["unknown_titles"] += sum(i is None for i in items)
        return [i for i in items if i is not None][-self.config.history:]

    def request_item_ids(self, req: RecRequest) -> list[int]:
        return self.prefix_ids(req.profile) + self.vocab.token_ids(self.history_items(req))

    def request_text(self, req: RecRequest) -> str:
        """The exact text the model reads for ``req`` (item tokens written ``<item_ID>``)."""
        return self.prompts.before_history(req.profile) + self.vocab.text(self.history_items(req))

    def render_sequence(self, items: Sequence[str], profile: Mapping[str, str],
                        titles: Mapping[str, str]) -> tuple[str, str]:
        """(prefix text, the items' ``<item_ID>`` tokens): a training window as the model reads it."""
        return self.prompts.before_history(profile), self.vocab.text([str(i) for i in items])

    # -- forward passes -----------------------------------------------------------------------
    def last_states(self, seqs: Sequence[Sequence[int]]) -> "torch.Tensor":
        """(len(seqs), d) float32: the final state at each sequence's last token (soft prefix included)."""
        import torch

        from audit.llm import scoring

        states = scoring.last_hidden(self.lm, seqs, batch_size=self.config.score_batch_size, prompts=True)
        return torch.from_numpy(states).float()

    def item_logprobs(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """(len(reqs), n_items): log p of every catalog item as each request's next item."""
        import torch

        rows = []
        for start in self._bar(list(range(0, len(reqs), self.config.score_batch_size)), "score", "batch"):
            part = reqs[start:start + self.config.score_batch_size]
            states = self.last_states([self.request_item_ids(r) for r in part])
            with torch.no_grad():
                rows.append(torch.log_softmax(self.item_lm.head(states).float(), -1).cpu().numpy())
        return np.concatenate(rows, 0).astype(np.float64) if rows else np.zeros((0, len(self.vocab)))

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """log p(item | prompt) (nats, <= 0) of each title; ``-inf`` for a title outside the catalog."""
        if len(reqs) != len(items):
            raise ValueError(f"score: {len(reqs)} requests but {len(items)} item lists")
        table = self.item_logprobs(reqs)
        out = []
        for row, titles in zip(table, items):
            ids = [self._item_of_title.get(t.strip()) for t in titles]
            self.info["unknown_titles"] += sum(i is None for i in ids)
            out.append(np.asarray([row[self.vocab.row(i)] if i is not None else -np.inf for i in ids]))
        return out

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int, **_: Any) -> list[Generation]:
        """The ``k`` likeliest catalog items not in the history (candidates only, for a rank request)."""
        table = self.item_logprobs(reqs)
        titles = self._titles_by_row
        out = []
        for req, row in zip(reqs, table):
            row = row.copy()
            for item in (self._item_of_title.get(t.strip()) for t in req.history):
                if item is not None:
                    row[self.vocab.row(item)] = -np.inf
            if req.candidates:
                allowed = np.full(len(row), -np.inf)
                for item in (self._item_of_title.get(t.strip()) for t in req.candidates):
                    if item is not None:
                        allowed[self.vocab.row(item)] = 0.0
                row = row + allowed
            order = [int(j) for j in np.argsort(-row, kind="stable")[:k] if np.isfinite(row[j])]
            picked = tuple(titles[j] for j in order)
            out.append(Generation(prompt=self.request_text(req), raw="\n".join(picked), items=picked))
        return out

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """(len(reqs), d): the final state at the end of each prompt (what ``score`` reads the items from)."""
        from audit.llm import scoring

        return scoring.last_hidden(self.lm, [self.request_item_ids(r) for r in reqs],
                                   batch_size=self.config.score_batch_size, prompts=True)

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Log p of each token after the start token of texts in the model's own format (``<item_ID>``
        tokens recognised: scored by the item softmax; text tokens by the LM head); right-padded
        batches of ``score_batch_size`` texts, one forward each."""
        import torch

        head_text = self.item_lm.lm.get_output_embeddings()
        seqs = [self.text_item_ids(t) for t in texts]
        out: list[np.ndarray] = []
        for start in range(0, len(seqs), self.config.score_batch_size):
            part = seqs[start:start + self.config.score_batch_size]
            ids, mask = self.lm.pad(part, "right")
            with torch.no_grad():
                hidden = self.item_lm.body(**self.lm.inputs(ids, mask), use_cache=False).last_hidden_state
                if self.lm.prefix_len:  # drop the soft prefix's positions (after the first token)
                    hidden = torch.cat([hidden[:, :1], hidden[:, 1 + self.lm.prefix_len:]], dim=1)
                hidden = hidden[:, :-1]
                nxt, real = ids[:, 1:], mask[:, 1:].bool()
                logp = torch.zeros(nxt.shape, dtype=torch.float32, device=ids.device)
                for is_item, head, offset in ((nxt >= self.vocab.offset, self.item_lm.head, self.vocab.offset),
                                              (nxt < self.vocab.offset, head_text, 0)):
                    at = is_item & real
                    if bool(at.any()):
                        lp = torch.log_softmax(head(hidden[at]).float(), -1)
                        logp[at] = lp.gather(1, (nxt[at] - offset).unsqueeze(1))[:, 0]
            out += [logp[r, :len(s) - 1].double().cpu().numpy() for r, s in enumerate(part)]
        return out

    def text_item_ids(self, text: str) -> list[int]:
        """The start token, then the text's tokens with each ``<item_ID>`` of a catalog item as its token."""
        ids = [] if self.lm.start_id is None else [int(self.lm.start_id)]
        pos = 0
        for m in _ITEM_RE.finditer(text):
            if m.group(1) not in self.vocab:
                continue
            ids += self.encoding.plain_ids(text[pos:m.start()]) if m.start() > pos else []
            ids.append(self.vocab.offset + self.vocab.row(m.group(1)))
            pos = m.end()
        ids += self.encoding.plain_ids(text[pos:]) if pos < len(text) else []
        return ids
