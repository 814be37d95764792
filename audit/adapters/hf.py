"""The ``hf`` adapter: any local ``transformers`` causal-LM directory as a recommender.

Suite entry: ``local-llm: {adapter: hf, path: models/my-llm, batch_size: 8}``; ``items: tokens``: one token per
catalog item (:mod:`audit.adapters.hf_items`). Glue over :mod:`audit.llm` (local safetensors only, a relative ``path``
against the suite's directory, then the cwd; :mod:`audit.prompts` templates, chat-templated when the tokenizer has one).

- ``generate``: the ``generate`` (``rank``: with candidates) prompt decoded (greedy; ``temperature > 0``
  samples, seeded), at most ``k`` titles kept (:func:`audit.parsing.parse_item_list`);
- ``score``: log p(title's continuation | generate prompt with ``k = score_k``, then ``"1."``),
  summed over its tokens (``score_mode``: ``shared`` prompt keys/values, or ``naive``: same numbers);
- ``token-logprobs`` / ``token-stats``: log p of each token of a text (the first given BOS, else EOS, else NaN), with
  the mean and spread of log p at each position;
- ``answer-logprobs`` / ``answer-generate``: log p of titles written as the model's numbered answer
  after a request's generate prompt (where a LoRA example's loss is), and the greedy answer there;
- ``embed-user`` / ``embed``: the last state at a prompt's / a title's last token; ``complete``: greedy, raw prompts;
- ``train*``: training variants LoRA-tune the model (:class:`audit.llm.training.LoraRecipe`), merged after;
- ``constrain``: ``generate_detailed(..., generation_constraint=fn, logits_processors=[...])`` (or those
  attributes; they see generated tokens only); ``soft-prompt``: :meth:`HFAdapter.with_soft_prefix`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.interface import Adapter, Generation, RecRequest
from audit.llm import decoding, loading, scoring
from audit.llm.decoding import AllowedTokensFn
from audit.llm.encoding import Encoding
from audit.llm.layout import TextLayout
from audit.llm.model import CausalLM
from audit.llm.soft_prompt import HFSoftPromptTarget
from audit.parsing import parse_item_list
from audit.progress import track
from audit.registry import HF_ITEM_FORMS
from audit.prompts import Prompt, PromptSet, load_prompt_set
from audit.token_stats import causal_lm_token_stats
from audit.variants import BuildContext

if TYPE_CHECKING:
    import torch


class HFConfig(StrictConfig):
    """Options (token counts are model tokens). ``model``: a fetched model (``recaudit fetch smollm2-135m``;
    give ``model`` or ``path``, exactly one); ``path``: a local Hugging Face directory (relative to the suite's
    directory, then the working directory). ``history``: the last history items each prompt shows
    (LLMRank and TALLRec use 10-20; ``items: tokens``: 100 unless given). ``items``: ``titles`` or ``tokens``."""

    path: str | None = None
    model: str | None = None
    history: int = Field(10, ge=1, le=1000)
    #: prompt templates: a YAML file (relative to the suite), a mapping of overrides, or ``{file: ..., **overrides}``
    #: (None = the packaged defaults, audit/prompts/default.yaml)
    prompts: str | dict[str, Any] | None = None
    #: None: use the tokenizer's chat template when it has one; False: never; True: require one
    chat_template: bool | None = None
    #: longest generated answer (constrained decoding raises it to what its k titles need)
    max_new_tokens: int = Field(160, ge=1, le=8192)
    #: 0 = greedy decoding; above 0 samples (seeded)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    #: nucleus-sampling share when sampling (1 = off)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    #: requests per generation batch (16: 1.52x the throughput of 8 for SmolLM2 on 2 cores, BENCHMARKS.md)
    batch_size: int = Field(16, ge=1)
    #: candidate titles (or texts) scored per forward pass
    score_batch_size: int = Field(64, ge=1)
    #: ``shared``: the prompt runs once and the candidates are scored side by side under a block-diagonal
    #: mask; ``naive``: one prompt + candidate sequence each (same numbers, slower)
    score_mode: Literal["shared", "naive"] = "shared"
    #: the k written into the generate prompt that ``score`` and ``embed_user`` condition on
    score_k: int = Field(10, ge=1)
    #: torch device (``cpu``, ``cuda``, ``cuda:1``); a missing CUDA device is a config error
    device: str = "cpu"
    #: weights' dtype on load
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: sampling seed (None = the suite's seed)
    seed: int | None = None
    items: Literal["titles", "tokens"] = "titles"

    @model_validator(mode="after")
    def _one_source(self) -> "HFConfig":
        if (self.path is None) == (self.model is None):
            raise ValueError("give exactly one of `model: NAME` (a fetched model, e.g. smollm2-135m) "
                             "or `path: DIR` (a local Hugging Face directory)")
        return self


class HFAdapter(Adapter):
    """A local causal LM as a recommender: ``lm`` (a CausalLM) runs it, ``encoding`` writes its prompts."""

    Config: ClassVar[type[StrictConfig]] = HFConfig
    capabilities: frozenset[str] = frozenset(
        {"generate", "score", "token-logprobs", "token-stats", "answer-logprobs", "answer-generate", "embed-user",
         "embed", "complete", "train", "train-lora", "train-private", "train-federated", "train-transforms",
         "constrain", "soft-prompt"})
    kind: ClassVar[str] = "hf"
    #: the `constrain` hook style: ``generate_detailed(..., generation_constraint=fn)``
    constraint_mode: ClassVar[Literal["call", "factory"]] = "call"

    def __init__(self, model: Any, tokenizer: Any, config: HFConfig, prompts: PromptSet,
                 name: str = "hf", seed: int = 0) -> None:
        super().__init__()
        self.name, self.config = name, config
        self.seed = seed if config.seed is None else config.seed
        self.lm = CausalLM(model.eval(), tokenizer, loading.torch_device(config.device))
        self.use_chat = loading.use_chat_template(tokenizer, config.chat_template, config.path)
        self.encoding = Encoding(tokenizer, prompts, use_chat=self.use_chat, history=config.history,
                                 max_positions=self.lm.max_positions)
        self.generation_constraint: AllowedTokensFn | None = None
        self.logits_processors: list[Any] = []
        self.directory: Path | None = None
        self.progress = False
        self.manifest: dict[str, Any] | None = None
        self.info.update({"path": config.path, "model": config.model, "history_window": config.history,
                          "chat_template": self.use_chat, "parameters": int(sum(p.numel() for p in model.parameters())),
                          "model_type": getattr(model.config, "model_type", "?")})

    @classmethod
    def build(cls, config: HFConfig, ctx: BuildContext | None = None,
              training_variants: Sequence[Any] = ()) -> "HFAdapter":
        """Load the model; with training variants, LoRA-tune it (or load the cached LoRA) and merge it."""
        if config.items != "titles" and cls is HFAdapter:  # e.g. tokens: one token per catalog item
            return HF_ITEM_FORMS.get(config.items).build(config, ctx, training_variants)
        suite_dir = ctx.suite_dir if ctx is not None else None
        directory = loading.model_dir(config.model, config.path, suite_dir)
        device = loading.torch_device(config.device)
        prompts = load_prompt_set(config.prompts, Path(suite_dir) if suite_dir else None)
        model, tokenizer = loading.load_local(directory, device, config.dtype)
        rec = cls(model, tokenizer, config, prompts, seed=ctx.seed if ctx is not None else 0)
        rec.directory, rec.progress = directory, bool(ctx.progress) if ctx is not None else False
        if training_variants:
            if ctx is None:
                raise ConfigError("hf adapter: training variants need a data set (build it from a suite)")
            rec._finetune(training_variants, ctx)
        return rec

    def _finetune(self, training_variants: Sequence[Any], ctx: BuildContext) -> None:
        from audit.llm.training import LoraRecipe, train_or_load_lora

        recipe = LoraRecipe(history=self.config.history, score_k=self.config.score_k, seed=ctx.seed)
        for variant in training_variants:
            recipe = variant.modify_recipe(recipe, ctx)
        peft_model, manifest, directory, fresh = train_or_load_lora(
            recipe, self.base_parts(), ctx.dataset, Path(ctx.cache_dir), progress=ctx.progress)
        self.lm = self.lm.with_module(peft_model.merge_and_unload())
        self.manifest, self.answer_items = manifest, recipe.targets
        self.info.update({"lora_dir": str(directory), "trained_now": fresh, "key": manifest.get("key"),
                          "training": [s.get("summary") for s in manifest.get("stages", [])],
                          "trainable_parameters": manifest.get("trainable_parameters")})

    @classmethod
    def capabilities_for(cls, config: HFConfig) -> frozenset[str]:  # another items form declares its own
        return HF_ITEM_FORMS.get(config.items).capabilities if config.items != "titles" else cls.capabilities

    def untrained(self, ctx: BuildContext) -> "HFAdapter | None":
        """The base checkpoint loaded again without the LoRA; None when this model was not fine-tuned here."""
        return None if self.manifest is None else type(self).build(self.config, ctx)

    def identity(self) -> str | None:
        """See :func:`audit.llm.loading.model_identity`; None for a model not loaded from a directory."""
        if self.directory is None or (self.manifest is not None and not self.manifest.get("key")):
            return None
        lora = None if self.manifest is None else self.manifest["key"]
        return loading.model_identity(f"{type(self).__module__}.{type(self).__qualname__}",
                                      self.config.model_dump(mode="json"), self.directory, lora, self.soft_prefix)

    def base_parts(self) -> Any:
        """What the LoRA training path needs from this adapter (:func:`audit.llm.loading.base_parts`)."""
        return loading.base_parts(self.lm, self.encoding, self.directory, self.config.dtype,
                                  self.training_prompt_ids, self.answer_ids)

    # -- parts other modules use ------------------------------------------------------------------
    model = property(lambda self: self.lm.module, doc="The torch module (shared by copies from with_soft_prefix).")
    tokenizer = property(lambda self: self.lm.tokenizer)
    device, pad_id = property(lambda self: self.lm.device), property(lambda self: self.lm.pad_id)
    prompts = property(lambda self: self.encoding.prompts, doc="The prompt templates (a PromptSet).")
    soft_prefix = property(lambda self: self.lm.soft_prefix, doc="(P, hidden_size) prompt vectors, or None.")

    def set_prompts(self, prompts: PromptSet) -> None:
        """Replace the templates (a variant may ask for a different answer format)."""
        self.encoding = self.encoding.with_prompts(prompts)

    def prompt_text(self, prompt: Prompt) -> str:
        """The exact text the model reads: chat-templated messages, or the completion form."""
        return self.encoding.text(prompt)

    def render(self, req: RecRequest, k: int, task: Any = None) -> Prompt:
        """The prompt for ``req`` (history windowed); ``task`` defaults to generate / rank."""
        return self.encoding.render(req, k, task)

    def score_prompt_ids(self, req: RecRequest) -> list[int]:
        """The ``generate`` prompt (``k = score_k``) ``score``, ``embed_user`` and LoRA examples condition on."""
        return self.encoding.request_ids(req, self.config.score_k, task="generate", reserve=64,
                                         prefix_len=self.lm.prefix_len)

    training_prompt_ids = score_prompt_ids

    def answer_ids(self, titles: Sequence[str]) -> list[int]:
        """Token ids of a numbered answer list ending with the end-of-turn token."""
        return self.encoding.answer_ids(titles)

    def answer_prefix_ids(self, req: RecRequest, k: int) -> list[int]:
        """Token ids of the prompt ``generate`` feeds for ``req`` (constraint builders use the end)."""
        return self.encoding.request_ids(req, k, reserve=self.config.max_new_tokens, prefix_len=self.lm.prefix_len)

    def newline_ids(self) -> frozenset[int]:
        """Token ids whose text contains a line break (how list items end)."""
        return decoding.newline_ids(self.tokenizer)

    # -- constrain and soft-prompt ----------------------------------------------------------------
    def constraint_layout(self, style: Literal["numbered", "lines"] = "numbered") -> Any:
        """The text layout (``numbered`` list or one title per line) in this model's tokenizer."""
        return TextLayout(self.tokenizer, style)

    def constraint_batch_size(self) -> int:
        return self.config.batch_size

    def reserve_new_tokens(self, tokens: int) -> int | None:
        """Raise ``max_new_tokens`` to at least ``tokens`` (a list cut short ends in a partial title)."""
        self.config = self.config.model_copy(update={"max_new_tokens": max(int(tokens), self.config.max_new_tokens)})
        return self.config.max_new_tokens

    def with_soft_prefix(self, prefix: "torch.Tensor | None") -> "HFAdapter":
        """A copy sharing the model whose prompts carry ``prefix`` ((n, hidden_size)) after their first token."""
        other = copy.copy(self)
        other.info, other.lm = dict(self.info), self.lm.with_prefix(prefix)
        return other

    def soft_prompt_target(self, dataset: Any) -> Any:
        """The frozen model as the fair-prompt trainer sees it (:class:`audit.llm.soft_prompt.HFSoftPromptTarget`)."""
        return HFSoftPromptTarget(self.lm, dataset.item_titles, self.training_prompt_ids, self.answer_ids,
                                  history=self.config.history)

    # -- decoding ---------------------------------------------------------------------------------
    def generate_detailed(self, reqs: Sequence[RecRequest], k: int, *,
                          generation_constraint: "AllowedTokensFn | None" = None,
                          logits_processors: Sequence[Any] | None = None) -> list[Generation]:
        """Decode one answer per request and parse it (see the module docstring)."""
        processors = self.logits_processors if logits_processors is None else list(logits_processors)
        return self._answers([self.render(r, k) for r in reqs], k, sample=self.config.temperature > 0,
                             constraint=generation_constraint or self.generation_constraint, processors=processors)

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        """Greedy answers after each training prompt, unconstrained: the weights' own answer."""
        return self._answers([self.render(r, self.config.score_k, task="generate") for r in reqs], max_items,
                             sample=False)

    def _answers(self, prompts: Sequence[Prompt], k: int, **options: Any) -> list[Generation]:
        """Decode after each prompt (stopped after ``k`` list items) and parse at most ``k`` titles."""
        texts = [self.prompt_text(p) for p in prompts]
        new = self.config.max_new_tokens
        raws = self._generate([self.encoding.prompt_ids(t, new, prefix_len=self.lm.prefix_len) for t in texts],
                              new, stop_after=k, **options)
        return [Generation(prompt=t, raw=raw, items=tuple(parse_item_list(raw, k))) for t, raw in zip(texts, raws)]

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        ids = [self.encoding.prompt_ids(p, max_new_tokens, raw=True, prefix_len=self.lm.prefix_len) for p in prompts]
        return self._generate(ids, max_new_tokens, sample=False)

    def _generate(self, ids: list[list[int]], max_new_tokens: int, **options: Any) -> list[str]:
        cfg = self.config
        return decoding.generate_texts(self.lm, ids, max_new_tokens, batch_size=cfg.batch_size, seed=self.seed,
                                       temperature=cfg.temperature, top_p=cfg.top_p, track=self._bar, **options)

    def _bar(self, items: list[Any], what: str, unit: str) -> Any:
        """``items`` with progress (counts and ETA: a bar on a terminal, log lines in a CLI log)."""
        return items if len(items) < 2 else track(items, f"[{self.name}] {what}", unit, enabled=self.progress)

    # -- likelihoods and representations ----------------------------------------------------------
    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Summed natural-log likelihood of each title's continuation given the prompt."""
        if len(reqs) != len(items):
            raise ValueError(f"score: {len(reqs)} requests but {len(items)} item lists")
        enc, out = self.encoding, []
        for req, titles in self._bar(list(zip(reqs, items)), "score", "user"):
            out.append(scoring.score_candidates(self.lm, self.score_prompt_ids(req) + enc.marker_ids(1),
                                                [enc.continuation_ids(t) for t in titles], mode=self.config.score_mode,
                                                batch_size=self.config.score_batch_size))
        return out

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-token natural-log probabilities of each text (see the module docstring)."""
        seqs = [self.encoding.plain_ids(t) for t in texts]
        return scoring.token_logprobs(self.lm, seqs, self.config.score_batch_size)

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return causal_lm_token_stats(self.model, self.tokenizer, texts)

    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Log p of each answer token after the training prompt (:func:`audit.llm.scoring.answer_logprobs`)."""
        if len(reqs) != len(answers):
            raise ValueError(f"answer_logprobs: {len(reqs)} requests but {len(answers)} answers")
        rows = [(self.training_prompt_ids(r), self.answer_ids(list(a))) for r, a in zip(reqs, answers)]
        return scoring.answer_logprobs(self.lm, rows, batch_size=self.config.batch_size, stats=stats, track=self._bar)

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """(len(reqs), hidden_size): the last hidden state at the end of each generate prompt."""
        seqs = [self.score_prompt_ids(r) for r in reqs]
        return scoring.last_hidden(self.lm, seqs, batch_size=self.config.batch_size, prompts=True)

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """(len(titles), hidden_size): the last hidden state at each title's final token."""
        seqs = [self.encoding.text_ids(t) for t in titles]
        return scoring.last_hidden(self.lm, seqs, batch_size=self.config.batch_size)
