"""The ``reference`` adapter: the built-in GPT-2-architecture recommender, trained here on the
data set (or loaded from a directory), behind the :class:`~audit.interface.Recommender` interface.

The model, its token format, its training, its soft-prompt target and its constrained-decoding
layout live in :mod:`audit.reference`; this module is the glue. Capabilities:

- ``generate``: open generation of ``k`` distinct items (one beam per item), or the top ``k``
  candidates by ``score`` when a request has candidates;
- ``score``: log p(``<item_X>`` | prompt), or with ``score_mode: item+title`` of the item token
  and its title; titles outside the catalog are scored as their text;
- ``token-logprobs`` / ``token-stats``: log p of each token of a raw text in the model's format
  (item tokens recognised), with the mean and spread of log p at each position;
- ``embed-user``: the final hidden state at the prompt's ``<rec>`` token; ``embed``: the mean final
  hidden state over a title's text tokens; ``complete``: greedy continuation of raw prompts;
- ``train``, ``train-stages``, ``train-private``, ``train-federated``, ``train-transforms``:
  training variants edit the :class:`~audit.reference.recipe.TrainingRecipe`
  (``Variant.modify_recipe(recipe, ctx)``) before the model is trained or loaded from the cache;
- ``constrain`` (:class:`audit.decoding.constrained.ConstrainableGeneration`, factory style):
  ``adapter.generation_constraint`` holds a ``(prompt_length) -> transformers.LogitsProcessor``
  factory (:data:`audit.reference.inference.GenerationConstraint`) during a call, or
  ``logits_processor=`` / ``prefix_allowed_tokens_fn=`` go to :meth:`ReferenceAdapter.generate_detailed`.
  Every returned sequence is one item: ``<item_X>``, title tokens, ``<sep>``; the processor sees
  ``input_ids`` = prompt (left-padded, ``prompt_length`` columns) + generated tokens;
  :meth:`ReferenceAdapter.constraint_layout` gives the layout (:class:`audit.reference.layout.ReferenceLayout`);
- ``soft-prompt``: :meth:`ReferenceAdapter.with_soft_prefix` returns a copy whose prompts carry
  learned ``(n, d)`` vectors right after ``<bos>`` (scoring, generation, embeddings), and
  :meth:`ReferenceAdapter.soft_prompt_target` the model as the prefix trainer sees it
  (:class:`audit.reference.soft_prompt.ReferenceSoftPromptTarget`).

Item sequences for the memorisation probes are written in the model's own format
(``sequence_format = "reference"``, :meth:`ReferenceAdapter.render_sequence`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Sequence

import numpy as np
from pydantic import Field

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.interface import Adapter, Generation, RecRequest
from audit.reference.presets import make_recipe
from audit.token_stats import causal_lm_token_stats
from audit.variants import BuildContext

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel, LogitsProcessor, PreTrainedTokenizerFast

    from audit.reference.inference import GenerationConstraint
    from audit.reference.prompts import PromptFormat
    from audit.reference.training import TrainedReference


class ReferenceConfig(StrictConfig):
    """Options of the ``reference`` adapter.

    ``size``: a preset (``default`` meets the ML-100k quality bar after ~2 minutes of training on 2 cores;
    ``small`` and ``tiny`` are for quick runs and tests); the other training fields
    override the preset. ``path``: load an already-trained model directory instead of
    training. ``score_mode``: ``item`` (default) scores log p(``<item_X>`` | prompt), the
    model's own next-item prediction; ``item+title`` scores log p(``<item_X> title<sep>`` |
    prompt), which adds the title's spelling likelihood and so favours short, well-learnt
    titles (on ML-100k it ranks far worse: see BENCHMARKS.md). Titles outside the catalog
    are scored as their text in both modes; the mode also orders open generation. ``batch_size``: prompts
    (or prompt x item rows in generation) per forward pass. ``bf16``: train under CPU bfloat16
    autocast (None = the preset's, float32; on CPUs without native bf16, e.g. AVX2-only, bf16
    is emulated and several times slower than float32)."""

    size: Literal["default", "small", "tiny"] = "default"
    path: str | None = None
    #: training passes over the users' windows (None = the preset's: default 20, small 6, tiny 40)
    epochs: int | None = Field(default=None, ge=1)
    #: width of the transformer (None = the preset's: 64, tiny 32)
    d_model: int | None = Field(default=None, ge=8)
    #: transformer layers (None = the preset's: 2, tiny 1)
    n_layer: int | None = Field(default=None, ge=1)
    #: attention heads (None = the preset's: 2)
    n_head: int | None = Field(default=None, ge=1)
    #: dropout while training (None = the preset's: default 0.25, small 0.1, tiny 0)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    #: most recent history items a prompt holds (None = the preset's: 50, tiny 12)
    max_history: int | None = Field(default=None, ge=1)
    #: peak learning rate (None = the preset's: 0.01)
    lr: float | None = Field(default=None, gt=0.0)
    #: training examples per step (None = the preset's: 64, tiny 32)
    train_batch_size: int | None = Field(default=None, ge=1)
    bf16: bool | None = None
    score_mode: Literal["item", "item+title"] = "item"
    batch_size: int = Field(default=64, ge=1)


class ReferenceAdapter(Adapter):
    """The reference recommender around a :class:`~audit.reference.training.TrainedReference`."""

    name = "reference"
    kind = "reference"
    Config = ReferenceConfig
    sequence_format = "reference"
    capabilities = frozenset({"generate", "score", "token-logprobs", "token-stats", "embed-user", "embed", "complete", "train",
                              "train-stages", "train-private", "train-federated", "train-transforms", "constrain",
                              "soft-prompt"})

    def __init__(self, trained: TrainedReference, config: ReferenceConfig | None = None,
                 directory: Path | None = None) -> None:
        super().__init__()
        self.trained = trained
        self.config = config or ReferenceConfig()
        self.directory = directory
        self.soft_prefix: torch.Tensor | None = None
        #: optional constraint for open generation (see the module docstring)
        self.generation_constraint: GenerationConstraint | None = None
        self.info = {"model_dir": None if directory is None else str(directory),
                     "key": trained.manifest.get("key"), "parameters": trained.manifest.get("parameters"),
                     "score_mode": self.config.score_mode,
                     "training": [s.get("summary") for s in trained.manifest.get("stages", [])],
                     "unknown_history_titles": 0}

    # -- construction ----------------------------------------------------------------
    @classmethod
    def build(cls, config: ReferenceConfig, ctx: BuildContext, training_variants: Sequence[Any] = ()) -> "ReferenceAdapter":
        """Train (or load from the cache) the model the config and training variants describe."""
        from audit.reference import store

        if config.path is not None:
            if training_variants:
                raise ConfigError(f"reference adapter: 'path' loads a trained model, so training variant(s) "
                                  f"{', '.join(v.name for v in training_variants)} cannot apply; drop one of them")
            directory = Path(config.path).expanduser()
            return cls(store.load(directory), config, directory)
        recipe = make_recipe(config, seed=ctx.seed)
        for variant in training_variants:
            recipe = variant.modify_recipe(recipe, ctx)
        trained, directory, fresh = store.train_or_load(recipe, ctx.dataset, Path(ctx.cache_dir), progress=ctx.progress)
        rec = cls(trained, config, directory)
        rec.info["trained_now"] = fresh
        return rec

    # -- the `constrain` capability (audit.decoding.constrained.ConstrainableGeneration) ----------
    #: generation_constraint holds a (prompt_length) -> LogitsProcessor factory during a call
    constraint_mode: ClassVar[Literal["call", "factory"]] = "factory"

    def constraint_layout(self, style: Literal["numbered", "lines"] = "numbered") -> Any:
        """One item per beam: item token + title tokens + ``<sep>`` (``style`` does not apply)."""
        from audit.reference.layout import ReferenceLayout

        return ReferenceLayout(self.fmt)

    def constraint_batch_size(self) -> int:
        return self.config.batch_size

    def reserve_new_tokens(self, tokens: int) -> int | None:
        """None: the output length follows from the item format, not from a token budget."""
        return None

    def soft_prompt_target(self, dataset: Any = None) -> Any:
        """The frozen model as the fair-prompt trainer sees it (sliding windows, ``<rec>`` state)."""
        from audit.reference.soft_prompt import ReferenceSoftPromptTarget

        return ReferenceSoftPromptTarget(self.model, self.fmt)

    def with_soft_prefix(self, prefix: torch.Tensor | None) -> "ReferenceAdapter":
        """A copy sharing the model whose prompts carry ``prefix`` ((n, d) vectors) after ``<bos>``."""
        other = copy.copy(self)
        other.info = dict(self.info)
        if prefix is not None:
            d = self.model.config.n_embd
            if prefix.ndim != 2 or prefix.shape[1] != d:
                raise ValueError(f"soft prefix must have shape (n, {d}), got {tuple(prefix.shape)}")
            prefix = prefix.detach().float()
        other.soft_prefix = prefix
        return other

    # -- parts other modules use --------------------------------------------------------
    @property
    def model(self) -> GPT2LMHeadModel:
        """The network (eval mode; shared by copies from :meth:`with_soft_prefix`)."""
        return self.trained.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        return self.trained.tokenizer

    @property
    def fmt(self) -> PromptFormat:
        """Builds prompts and outputs in the model's token format."""
        return self.trained.fmt

    @property
    def manifest(self) -> dict[str, Any]:
        return self.trained.manifest

    def prompt_ids(self, req: RecRequest) -> list[int]:
        """The prompt's token ids (history truncated to fit the model's positions)."""
        ids, unknown = self.fmt.prompt_ids(req.history, req.profile, max_tokens=self._max_prompt_tokens())
        self.info["unknown_history_titles"] += unknown
        return ids

    def catalog_outputs(self) -> dict[str, list[int]]:
        """Catalog title -> the token ids the model writes for it (``<item_X>``, title, ``<sep>``)."""
        return {title: self.fmt.output_ids(title) for title in self.fmt.vocab.item_of_title}

    def _max_prompt_tokens(self) -> int:
        from audit.reference import inference

        return self.model.config.n_positions - self._max_output_tokens() - inference.prefix_len(self.soft_prefix)

    def _max_output_tokens(self) -> int:
        vocab = self.fmt.vocab
        return 2 + max((len(vocab.title_ids(t)) for t in vocab.item_of_title), default=8) + 8

    # -- the interface --------------------------------------------------------------------
    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """log-likelihood (nats, <= 0) of each item given the request's prompt; see ``score_mode``."""
        if len(reqs) != len(items):
            raise ValueError(f"score: {len(reqs)} requests but {len(items)} item lists")
        return self._score_prompts([self.prompt_ids(r) for r in reqs], items)

    def _score_prompts(self, prompts: list[list[int]], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        from audit.reference import inference

        vocab = self.fmt.vocab
        out: list[np.ndarray] = []
        first_lp = None
        if self.config.score_mode == "item":
            _, first_lp = inference.prompt_states(self.model, prompts, self.soft_prefix, self.config.batch_size)
        for i, (prompt, titles) in enumerate(zip(prompts, items)):
            titles = list(titles)
            scores = np.zeros(len(titles), dtype=np.float64)
            if first_lp is not None:
                toks = [vocab.token_for_title(t) for t in titles]
                text_only = [j for j, t in enumerate(toks) if t is None]
                for j, t in enumerate(toks):
                    if t is not None:
                        scores[j] = float(first_lp[i, t])
            else:
                text_only = list(range(len(titles)))
            if text_only:
                conts = [self.fmt.output_ids(titles[j]) for j in text_only]
                scores[text_only] = inference.score_continuations(
                    self.model, prompt, conts, self.soft_prefix, batch_size=max(self.config.batch_size, 128))
            out.append(scores)
        return out

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int, *,
                          logits_processor: Sequence[LogitsProcessor] = (),
                          prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
                          ) -> list[Generation]:
        """Requests with candidates: the top-``k`` candidates by :meth:`score`. Without: open
        generation of ``k`` distinct items (:func:`audit.reference.inference.generate_items`:
        the ``k`` most likely first tokens after the prompt, each continued greedily to
        ``<sep>``), ordered like :meth:`score` orders them (``score_mode``); raw text is the
        ``<item_X> title<sep>`` slots in that order and the items are the decoded title text."""
        from audit.reference import inference
        from audit.reference.prompts import parse_output

        out: list[Generation | None] = [None] * len(reqs)
        ranked = [i for i, r in enumerate(reqs) if r.candidates]
        if ranked:
            prompts_by_req = {i: self.prompt_ids(reqs[i]) for i in ranked}
            scores = self._score_prompts([prompts_by_req[i] for i in ranked], [reqs[i].candidates for i in ranked])
            for i, sc in zip(ranked, scores):
                order = np.argsort(-sc, kind="stable")[:k]
                cands = reqs[i].candidates
                top = [cands[j] for j in order]
                raw = (f"[ranked {len(cands)} candidates by log-likelihood ({self.config.score_mode})] "
                       + "<sep>".join(top))
                out[i] = Generation(prompt=self.fmt.decode(prompts_by_req[i]), raw=raw, items=tuple(top))
        open_idx = [i for i, r in enumerate(reqs) if not r.candidates]
        if open_idx and k > 0:
            prompts = [self.prompt_ids(reqs[i]) for i in open_idx]
            results = inference.generate_items(
                self.model, prompts, k, sep_id=self.fmt.sep, pad_id=self.fmt.pad,
                banned_first=self.fmt.control_ids, max_new_tokens=self._max_output_tokens(),
                soft_prefix=self.soft_prefix, logits_processor=logits_processor,
                prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, constraint=self.generation_constraint,
                batch_size=self.config.batch_size)
            by_item = self.config.score_mode == "item"
            for i, prompt, hyps in zip(open_idx, prompts, results):
                hyps = sorted(hyps, key=lambda h: -(h[1] if by_item else h[1] + h[2]))
                raw = "".join(self.fmt.decode(toks) for toks, _, _ in hyps)
                out[i] = Generation(prompt=self.fmt.decode(prompt), raw=raw, items=tuple(parse_output(raw)))
        for i in range(len(reqs)):
            if out[i] is None:  # k == 0
                out[i] = Generation(prompt=self.fmt.decode(self.prompt_ids(reqs[i])), raw="", items=())
        return out  # type: ignore[return-value]

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """log p of each token of each raw text (in the model's format; item tokens are
        recognised) given the tokens before it; a leading ``<bos>`` is added when absent
        and gets no value."""
        from audit.reference import inference

        seqs = [self._with_bos(t) for t in texts]
        return inference.sequence_logprobs(self.model, seqs, self.soft_prefix, batch_size=self.config.batch_size)

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """Final hidden state at the end of each prompt (the ``<rec>`` position), (n, d)."""
        from audit.reference import inference

        prompts = [self.prompt_ids(r) for r in reqs]
        hidden, _ = inference.prompt_states(self.model, prompts, self.soft_prefix, self.config.batch_size)
        return hidden

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """Mean final hidden state over a title's text tokens (``<bos>`` + title text; the
        same for catalog and non-catalog titles), (n, d)."""
        from audit.reference import inference

        vocab = self.fmt.vocab
        seqs = [[self.fmt.bos, *vocab.title_ids(t)] for t in titles]
        return inference.mean_hidden(self.model, seqs, batch_size=self.config.batch_size)

    def render_sequence(self, items: Sequence[str], profile: Mapping[str, str],
                        titles: Mapping[str, str]) -> tuple[str, str]:
        """The reference's own format: ``<profile><hist>`` as the context, one item token per item
        as the body (each predicted from the items before it, as in training)."""
        from audit.reference.prompts import profile_text
        from audit.reference.tokenizer import HIST, item_token

        return profile_text(profile) + HIST, "".join(item_token(i) for i in items)

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return causal_lm_token_stats(self.model, self.tokenizer, texts, batch_size=self.config.batch_size)

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuation (raw text, control and item tokens kept) of each raw prompt."""
        from audit.reference import inference

        seqs = [self._with_bos(p) for p in prompts]
        limit = self.model.config.n_positions
        too_long = [i for i, s in enumerate(seqs) if len(s) + max_new_tokens > limit]
        if too_long:
            raise ValueError(f"complete: prompt {too_long[0]} has {len(seqs[too_long[0]])} tokens; with "
                             f"max_new_tokens={max_new_tokens} it exceeds the model's {limit} positions")
        results = inference.generate(self.model, seqs, num_return=1, num_beams=1, max_new_tokens=max_new_tokens,
                                     eos_id=self.fmt.eos, pad_id=self.fmt.pad, soft_prefix=self.soft_prefix,
                                     batch_size=self.config.batch_size)
        return [self.fmt.decode(hyps[0][0]) for hyps in results]

    def _with_bos(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        return ids if ids[:1] == [self.fmt.bos] else [self.fmt.bos, *ids]

