"""The ``hf`` adapter: any local ``transformers`` causal-LM directory as a recommender.

Suite entry::

    local-llm: {adapter: hf, path: models/my-llm, max_new_tokens: 160, batch_size: 8}

Loading is strictly local: ``from_pretrained(path, local_files_only=True)`` and
``use_safetensors=True`` (nothing is fetched from a hub, nothing is unpickled). A relative
``path`` resolves against the suite's directory, then the current working directory.

Prompts come from :mod:`audit.prompts` (``prompts:`` overrides them). When the tokenizer has
a chat template (and ``chat_template`` is not ``false``), the chat form (system + user
messages) goes through ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``;
otherwise the plain-completion form is the prompt.

Capabilities and what they compute:

- ``generate``: renders ``generate`` (or ``rank`` when the request has candidates), decodes
  (greedy by default; ``temperature > 0`` samples, seeded), parses the text with
  :func:`audit.parsing.parse_item_list` and keeps at most ``k`` titles.
- ``score``: log p(continuation(title) | generate prompt), natural log, summed over the
  title's tokens (the prompt is the open-generation prompt of the request with ``k =
  score_k``; the continuation template defaults to the bare title). The prompt is run once per request and its ``past_key_values`` are shared
  by all candidates (``score_mode: naive`` runs one full forward per candidate instead; both
  give the same numbers to float tolerance).
- ``token_logprobs``: log p of each token of a text given its prefix; the first token is
  conditioned on the tokenizer's BOS token (EOS when there is no BOS; NaN when neither).
- ``answer-logprobs``: log p of each token of a list of titles written as the model's answer
  (numbered, then the end-of-turn token) after a request's generate prompt: the tokens and
  positions a LoRA training example puts its loss on (the memorisation probes' ``answers``
  path); ``answer_items`` is the fine-tune's ``targets`` (None before fine-tuning).
- ``answer-generate``: greedy decoding after that same prompt (extraction's ``answers`` mode).
- ``embed_user``: last layer's hidden state at the final prompt token (d = hidden size).
- ``embed``: last layer's hidden state at the final token of each title.
- ``complete``: greedy continuation of raw prompts (no template).

A plain prompt starts with the tokenizer's BOS token when it has one (GPT-2's
``<|endoftext|>``) and the tokenizer did not already add it, so prompts, scores and
``token_logprobs`` share one convention; chat-templated prompts are left as the template
writes them. Prompts longer than the model's context
are cut from the left (the oldest history goes).

Constrained-decoding hook (used by the ``constrained-decoding`` variant)
-----------------------------------------------------------------------
``adapter.generation_constraint``: ``None`` or a callable ``(batch_id: int, generated:
torch.LongTensor) -> list[int]`` returning the token ids allowed next, where ``generated``
holds only the tokens generated so far for that row (the prompt is stripped: a
``prefix_allowed_tokens_fn`` that learns the prompt length from its first call sees 0) and
``batch_id`` is the request's index in the ``generate_detailed`` call (not in the internal
``batch_size`` chunk), so per-request constraints can be indexed by it. It is passed to
``model.generate`` as ``prefix_allowed_tokens_fn``. ``adapter.logits_processors``: a list of
``transformers.LogitsProcessor`` objects called as ``processor(generated_ids, scores)``, again
with the prompt stripped. Both can also be given per call:
``generate_detailed(reqs, k, generation_constraint=..., logits_processors=[...])``.
``adapter.tokenizer``, ``adapter.model`` and ``adapter.prompts`` (a :class:`PromptSet`, which
a variant may replace with :meth:`set_prompts`) are public for building such constraints;
``adapter.answer_prefix_ids()`` gives the token ids the model sees right before its answer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from audit.config import StrictConfig
from audit.errors import ConfigError
from audit.interface import Adapter, Generation, RecRequest
from audit.parsing import parse_item_list
from audit.prompts import Prompt, PromptSet, load_prompt_set
from audit.variants import BuildContext

AllowedTokensFn = Callable[[int, torch.Tensor], list[int]]


class HFConfig(StrictConfig):
    """Options of the ``hf`` adapter (token counts are model tokens).

    ``model``: a fetched model name (``recaudit fetch smollm2-135m``) or ``path``: a local
    Hugging Face directory (exactly one). ``history``: the most recent history items put into
    every prompt (LLMRank and TALLRec use 10-20; the prompt's prefill dominates the cost on CPU).
    """

    path: str | None = None
    model: str | None = None
    history: int = Field(10, ge=1, le=1000)
    prompts: str | dict[str, Any] | None = None
    #: None: use the tokenizer's chat template when it has one; False: never; True: require one
    chat_template: bool | None = None
    max_new_tokens: int = Field(160, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    #: requests per generation batch (16: 1.52x the throughput of 8 for SmolLM2 on 2 cores, BENCHMARKS.md)
    batch_size: int = Field(16, ge=1)
    score_batch_size: int = Field(64, ge=1)
    score_mode: Literal["shared", "naive"] = "shared"
    #: the k written into the generate prompt that ``score`` and ``embed_user`` condition on
    score_k: int = Field(10, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "HFConfig":
        if (self.path is None) == (self.model is None):
            raise ValueError("give exactly one of `model: NAME` (a fetched model, e.g. smollm2-135m) "
                             "or `path: DIR` (a local Hugging Face directory)")
        return self


class _PromptStripped:
    """Wraps a user hook so it sees only the generated tokens (the prompt is cut off) and the
    request's index in the whole ``generate_detailed`` call as its batch id."""

    def __init__(self, fn: AllowedTokensFn, prompt_len: int, offset: int) -> None:
        self.fn, self.prompt_len, self.offset = fn, prompt_len, offset

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        return self.fn(self.offset + batch_id, input_ids[self.prompt_len:])


class _LinesWritten:
    """Stopping criterion: per row, True once the generated part holds ``lines`` line breaks."""

    def __init__(self, newline_ids: frozenset[int], prompt_len: int, lines: int) -> None:
        self.ids = torch.tensor(sorted(newline_ids), dtype=torch.long)
        self.prompt_len, self.lines = prompt_len, lines

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        generated = input_ids[:, self.prompt_len:]
        count = torch.isin(generated, self.ids.to(generated.device)).sum(1)
        return count >= self.lines


class _StrippedProcessor:
    def __init__(self, proc: Any, prompt_len: int) -> None:
        self.proc, self.prompt_len = proc, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.proc(input_ids[:, self.prompt_len:], scores)


def resolve_model_dir(path: str, ctx: BuildContext | None) -> Path:
    """``path`` as given if absolute; else against the suite directory, then the cwd."""
    p = Path(path).expanduser()
    suite_dir = ctx.suite_dir if ctx is not None else None
    tried = [p] if p.is_absolute() else [*([Path(suite_dir) / p] if suite_dir else []), Path.cwd() / p]
    for cand in tried:
        if cand.is_dir():
            return cand.resolve()
    raise ConfigError(f"hf adapter: model directory {path!r} not found "
                      f"(looked in: {', '.join(str(t) for t in tried)})")


class HFAdapter(Adapter):
    """A local causal LM behind the recommender interface (see the module docstring)."""

    Config: ClassVar[type[StrictConfig]] = HFConfig
    capabilities: frozenset[str] = frozenset(
        {"generate", "score", "token_logprobs", "token-stats", "answer-logprobs", "answer-generate", "embed_user",
         "embed", "complete",
         "train", "train-lora",
         "train-private", "train-federated", "train-transforms", "constrain", "soft-prompt"})
    kind: ClassVar[str] = "hf"

    #: the `constrain` capability (audit.decoding.constrained.ConstrainableGeneration):
    #: ``generate_detailed(..., generation_constraint=fn)`` takes a prefix_allowed_tokens_fn
    constraint_mode: ClassVar[Literal["call", "factory"]] = "call"

    def __init__(self, model: Any, tokenizer: Any, config: HFConfig, prompts: PromptSet,
                 name: str = "hf", seed: int = 0) -> None:
        super().__init__()
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.prompts = prompts
        self.seed = seed if config.seed is None else config.seed
        self.device = torch.device(config.device)
        self.generation_constraint: AllowedTokensFn | None = None
        self.logits_processors: list[Any] = []
        #: (P, hidden_size) input vectors spliced after every prompt's first token (the fair prompt)
        self.soft_prefix: torch.Tensor | None = None
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if config.chat_template and not has_template:
            raise ConfigError(f"hf adapter: chat_template: true, but the tokenizer in {config.path!r} "
                              "has no chat template; set chat_template: null to use plain prompts")
        self.use_chat = has_template and config.chat_template is not False
        self.pad_id = _first_not_none(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self.start_id = _first_not_none(tokenizer.bos_token_id, tokenizer.eos_token_id)
        self.max_positions = _max_positions(model.config)
        self.directory: Path | None = None
        self.progress = False
        self.manifest: dict[str, Any] | None = None
        self._newline_ids: frozenset[int] | None = None
        self.info.update({"path": config.path, "model": config.model, "history_window": config.history,
                          "chat_template": self.use_chat,
                          "parameters": int(sum(p.numel() for p in model.parameters())),
                          "model_type": getattr(model.config, "model_type", "?")})

    @classmethod
    def build(cls, config: HFConfig, ctx: BuildContext | None = None,
              training_variants: Sequence[Any] = ()) -> "HFAdapter":
        """Load tokenizer and model (local files and safetensors only); with training variants,
        LoRA-tune it (or load the cached adapter) and merge the LoRA weights for inference."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.model is not None:
            from audit.llm.fetch import fetched_model_dir

            directory = fetched_model_dir(config.model)
        else:
            directory = resolve_model_dir(str(config.path), ctx)
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise ConfigError(f"hf adapter: unknown device {config.device!r} (e.g. cpu, cuda, cuda:1)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"hf adapter: device {config.device!r} asked for, but CUDA is not available here")
        base_dir = ctx.suite_dir if ctx is not None else None
        prompts = load_prompt_set(config.prompts, Path(base_dir) if base_dir else None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"hf adapter: cannot load a tokenizer from {directory} ({exc})") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(directory), local_files_only=True, use_safetensors=True,
                dtype=getattr(torch, config.dtype), use_kernels=False)  # no Hub kernels: loading stays local
        except (OSError, ValueError) as exc:
            raise ConfigError(f"hf adapter: {directory} is not a causal-LM directory with safetensors "
                              f"weights ({exc})") from None
        model.to(device)  # before any LoRA is attached (opacus issue #820)
        seed = ctx.seed if ctx is not None else 0
        rec = cls(model, tokenizer, config, prompts, seed=seed)
        rec.directory = directory
        rec.progress = bool(ctx.progress) if ctx is not None else False
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
        self.model = peft_model.merge_and_unload().eval()
        self.manifest = manifest
        self.answer_items = recipe.targets
        self.info.update({"lora_dir": str(directory), "trained_now": fresh, "key": manifest.get("key"),
                          "training": [s.get("summary") for s in manifest.get("stages", [])],
                          "trainable_parameters": manifest.get("trainable_parameters")})

    def untrained(self, ctx: BuildContext) -> "HFAdapter | None":
        """The base checkpoint without the LoRA (loaded again: the LoRA was merged into this one's
        weights), same options and prompts; None when this model was not fine-tuned here."""
        if self.manifest is None:
            return None
        return type(self).build(self.config, ctx)

    def identity(self) -> str | None:
        """SHA-256 of the adapter's class and options, the base weights' digest, the trained LoRA's
        cache key and the soft prefix's values; None for a model not loaded from a directory."""
        import hashlib
        import json as _json

        from audit.llm.fetch import weights_digest

        if self.directory is None or (self.manifest is not None and not self.manifest.get("key")):
            return None
        h = hashlib.sha256(_json.dumps({
            "adapter": f"{type(self).__module__}.{type(self).__qualname__}",
            "options": self.config.model_dump(mode="json"), "weights": weights_digest(self.directory),
            "lora": None if self.manifest is None else self.manifest["key"]}, sort_keys=True, default=str).encode())
        if self.soft_prefix is not None:
            h.update(self.soft_prefix.detach().to("cpu", torch.float32).numpy().tobytes())
        return h.hexdigest()

    def base_parts(self) -> Any:
        """What the LoRA training path needs from this adapter (see :mod:`audit.llm.training`)."""
        from audit.llm.fetch import weights_digest
        from audit.llm.training import BaseModelParts

        directory = getattr(self, "directory", None)
        probe = RecRequest(history=("Alpha (1990)", "Beta, The (1991)"), profile={"gender": "F"})
        ident = {"weights": weights_digest(directory) if directory is not None else "in-memory",
                 # how this adapter writes a training example, so a change of encoding retrains
                 "encoding": [self.training_prompt_ids(probe), self.answer_ids(["Alpha (1990)", "Beta, The (1991)"])],
                 "tokenizer": _tokenizer_digest(self.tokenizer), "chat": self.use_chat,
                 "prompts": self.prompts.config.model_dump(mode="json"), "dtype": self.config.dtype}
        import hashlib
        import json as _json

        identity = hashlib.sha256(_json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        return BaseModelParts(model=self.model, encode_prompt=self.training_prompt_ids,
                              encode_answer=self.answer_ids, pad_id=self.pad_id, identity=identity)

    # -- soft prompt (the fair-prompt variant) ----------------------------------------------------
    def _prefix_len(self) -> int:
        return 0 if self.soft_prefix is None else int(self.soft_prefix.shape[0])

    def _inputs(self, ids: torch.Tensor, mask: torch.Tensor,
                prefix: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for padded prompt ids: ``input_ids`` without a soft prefix; with one
        (``prefix`` or :attr:`soft_prefix`), ``inputs_embeds`` with the prefix spliced after each
        row's first real token (left or right padding) and the attention mask widened to match."""
        prefix = self.soft_prefix if prefix is None else prefix
        if prefix is None:
            return {"input_ids": ids, "attention_mask": mask}
        embeds = self.model.get_input_embeddings()(ids)
        prefix = prefix.to(device=embeds.device, dtype=embeds.dtype)
        ones = torch.ones(prefix.shape[0], dtype=mask.dtype, device=mask.device)
        first = mask.argmax(dim=1)  # the first real token of each row
        rows, masks = [], []
        for r in range(ids.shape[0]):
            at = int(first[r]) + 1
            rows.append(torch.cat([embeds[r, :at], prefix, embeds[r, at:]]))
            masks.append(torch.cat([mask[r, :at], ones, mask[r, at:]]))
        return {"inputs_embeds": torch.stack(rows), "attention_mask": torch.stack(masks)}

    def with_soft_prefix(self, prefix: torch.Tensor | None) -> "HFAdapter":
        """A copy sharing the model whose prompts carry ``prefix`` ((n, hidden_size) vectors) after
        their first token: generation, scoring, ``embed_user`` and ``complete`` all see it."""
        other = copy.copy(self)
        other.info = dict(self.info)
        if prefix is not None:
            d = int(self.model.get_input_embeddings().weight.shape[1])
            if prefix.ndim != 2 or prefix.shape[1] != d:
                raise ValueError(f"soft prefix must have shape (n, {d}), got {tuple(prefix.shape)}")
            prefix = prefix.detach().float()
        other.soft_prefix = prefix
        return other

    def soft_prompt_target(self, dataset: Any) -> Any:
        """The frozen model as the fair-prompt trainer sees it (see :class:`HFSoftPromptTarget`)."""
        return HFSoftPromptTarget(self, dict(dataset.item_titles))

    # -- prompts --------------------------------------------------------------------------------
    def set_prompts(self, prompts: PromptSet) -> None:
        """Replace the templates (a variant may ask for a different answer format)."""
        self.prompts = prompts

    def prompt_text(self, prompt: Prompt) -> str:
        """The exact text the model reads: chat-templated messages, or the completion form."""
        if self.use_chat:
            return self.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False,
                                                      add_generation_prompt=True)
        return prompt.text

    def _encode_prompt(self, text: str, reserve: int = 0, raw: bool = False) -> list[int]:
        """Token ids of a prompt; ``raw`` text (``complete``) is never chat-templated."""
        templated = self.use_chat and not raw  # templated text already carries its special tokens
        ids = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and not templated and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids and self.start_id is not None:
            ids = [self.start_id]
        limit = self.max_positions - reserve - self._prefix_len() if self.max_positions else None
        if limit is not None and len(ids) > limit:
            ids = ids[len(ids) - max(limit, 1):]
        return list(ids)

    def _encode_plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def windowed(self, req: RecRequest) -> RecRequest:
        """``req`` with only the last ``history`` items of its history (the prompt's window)."""
        h = self.config.history
        return req if len(req.history) <= h else dataclasses.replace(req, history=req.history[-h:])

    def render(self, req: RecRequest, k: int, task: Any = None) -> Prompt:
        """The prompt for ``req`` (history windowed); ``task`` defaults to generate / rank."""
        req = self.windowed(req)
        return self.prompts.render(task or self.prompts.task_for(req), req, k)

    def answer_ids(self, titles: Sequence[str]) -> list[int]:
        """Token ids of a numbered answer list ending with the end-of-turn token, tokenised line by
        line as :meth:`score` tokenises (``"1."`` then ``" " + title``)."""
        out: list[int] = []
        for i, title in enumerate(titles, 1):
            if i > 1:
                out += self._encode_plain("\n")
            out += self._marker_ids(i) + self._continuation_ids(title)
        if self.tokenizer.eos_token_id is not None:
            out.append(int(self.tokenizer.eos_token_id))
        return out

    def _marker_ids(self, index: int) -> list[int]:
        return self._encode_plain(f"{index}.")

    def constraint_layout(self, style: Literal["numbered", "lines"] = "numbered") -> Any:
        """The text layout (``numbered`` list or one title per line) in this model's tokenizer."""
        from audit.decoding.constrained import TextLayout

        return TextLayout(self.tokenizer, style)

    def constraint_batch_size(self) -> int:
        return self.config.batch_size

    def reserve_new_tokens(self, tokens: int) -> int | None:
        """Raise ``max_new_tokens`` to at least ``tokens`` (a constrained list cut short would end in a
        partial title); returns the budget now in force."""
        if self.config.max_new_tokens < tokens:
            self.config = self.config.model_copy(update={"max_new_tokens": int(tokens)})
        return self.config.max_new_tokens

    def answer_prefix_ids(self, req: RecRequest, k: int) -> list[int]:
        """Token ids of the prompt ``generate`` feeds for ``req`` (constraint builders use the end)."""
        prompt = self.render(req, k)
        return self._encode_prompt(self.prompt_text(prompt), reserve=self.config.max_new_tokens)

    # -- decoding ---------------------------------------------------------------------------------
    def _pad(self, seqs: Sequence[Sequence[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
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

    @torch.no_grad()
    def _decode(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *, sample: bool,
                constraint: AllowedTokensFn | None = None,
                processors: Sequence[Any] = (), stop_after: int | None = None) -> list[str]:
        """Left-padded batched decoding (KV cache). ``stop_after``: a row stops once it has written
        that many lines (k list items), so no tokens are spent past the k-th title."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        texts: list[str] = []
        bs = self.config.batch_size
        starts = list(range(0, len(prompt_ids), bs))
        for start in self._bar(starts, "generate", "batch"):
            chunk = prompt_ids[start:start + bs]
            ids, mask = self._pad(chunk, "left")
            inputs = self._inputs(ids, mask)
            width = ids.shape[1] if "input_ids" in inputs else 0  # generate returns only new tokens for embeds
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.pad_id,
                                      "do_sample": sample, "num_beams": 1}
            if self.tokenizer.eos_token_id is not None:
                kwargs["eos_token_id"] = self.tokenizer.eos_token_id
            if sample:
                kwargs.update(temperature=self.config.temperature, top_p=self.config.top_p)
                torch.manual_seed(self.seed + start)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if constraint is not None:
                kwargs["prefix_allowed_tokens_fn"] = _PromptStripped(constraint, width, start)
            if processors:
                kwargs["logits_processor"] = LogitsProcessorList(
                    [_StrippedProcessor(p, width) for p in processors])
            if stop_after:
                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [_LinesWritten(self.newline_ids(), width, stop_after)])
            out = self.model.generate(**inputs, **kwargs)
            for row in out[:, width:]:
                texts.append(self.tokenizer.decode(row.tolist(), skip_special_tokens=True))
        return texts

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int, *,
                          generation_constraint: AllowedTokensFn | None = None,
                          logits_processors: Sequence[Any] | None = None) -> list[Generation]:
        """Decode one answer per request and parse it (see the module docstring)."""
        return self._answers([self.render(r, k) for r in reqs], k, sample=self.config.temperature > 0,
                             constraint=generation_constraint or self.generation_constraint,
                             processors=(self.logits_processors if logits_processors is None
                                         else list(logits_processors)))

    def _answers(self, prompts: Sequence[Prompt], k: int, *, sample: bool, constraint: AllowedTokensFn | None = None,
                 processors: Sequence[Any] = ()) -> list[Generation]:
        """Decode after each prompt (stopped after ``k`` list items) and parse at most ``k`` titles."""
        texts = [self.prompt_text(p) for p in prompts]
        ids = [self._encode_prompt(t, reserve=self.config.max_new_tokens) for t in texts]
        raws = self._decode(ids, self.config.max_new_tokens, sample=sample, stop_after=k,
                            constraint=constraint, processors=processors)
        return [Generation(prompt=t, raw=raw, items=tuple(parse_item_list(raw, k))) for t, raw in zip(texts, raws)]

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [list(g.items) for g in self.generate_detailed(reqs, k)]

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        """Greedy answers after each request's training prompt (:meth:`training_prompt_ids`, the
        prompt :meth:`answer_logprobs` scores after; soft prefix included, no decoding constraint or
        logits processor: the weights' own answer), stopped after ``max_items`` list items."""
        return self._answers([self.render(r, self.config.score_k, task="generate") for r in reqs], max_items,
                             sample=False)

    def newline_ids(self) -> frozenset[int]:
        """Token ids whose text contains a line break (how list items end)."""
        if self._newline_ids is None:
            vocab = self.tokenizer.get_vocab()
            self._newline_ids = frozenset(i for i in vocab.values()
                                          if "\n" in self.tokenizer.decode([i], skip_special_tokens=False))
        return self._newline_ids

    def _bar(self, items: list[Any], what: str, unit: str) -> Any:
        """``items`` with progress (counts and ETA: a bar on a terminal, log lines in a CLI log)."""
        from audit.progress import track

        if len(items) < 2:
            return items
        return track(items, f"[{self.name}] {what}", unit, enabled=self.progress)

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        from audit.memorisation.sequences import hf_token_logprob_stats

        return hf_token_logprob_stats(self.model, self.tokenizer, texts)

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        ids = [self._encode_prompt(p, reserve=max_new_tokens, raw=True) for p in prompts]
        return self._decode(ids, max_new_tokens, sample=False)

    # -- likelihoods ------------------------------------------------------------------------------
    def score_prompt_ids(self, req: RecRequest) -> list[int]:
        """The request's ``generate`` prompt (history windowed, ``k = score_k``): the context
        ``embed_user`` reads and, followed by the first list marker, ``score`` conditions on;
        also the prompt of every LoRA training example."""
        prompt = self.render(req, self.config.score_k, task="generate")
        return self._encode_prompt(self.prompt_text(prompt), reserve=64)

    training_prompt_ids = score_prompt_ids

    def _continuation_ids(self, title: str) -> list[int]:
        return self._encode_plain(" " + self.prompts.continuation(title).lstrip())

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Summed natural-log likelihood of each title's continuation given the prompt."""
        if len(reqs) != len(items):
            raise ValueError(f"score: {len(reqs)} requests but {len(items)} item lists")
        fn = self._score_shared if self.config.score_mode == "shared" else self._score_naive
        out = []
        for req, titles in self._bar(list(zip(reqs, items)), "score", "user"):
            prompt_ids = self.score_prompt_ids(req) + self._marker_ids(1)
            conts = [self._continuation_ids(t) for t in titles]
            out.append(fn(prompt_ids, conts))
        return out

    def _position_ids(self, mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0) + offset

    @torch.no_grad()
    def _score_shared(self, prompt_ids: list[int], conts: list[list[int]]) -> np.ndarray:
        """Run the prompt once; then score chunks of candidates in single rows: each chunk is the
        candidates' tokens side by side, with a 4-D attention mask letting every candidate token
        see the prompt's cached keys/values and its own earlier tokens only (block-diagonal), and
        position ids restarting after the prompt for each candidate. The prompt cache is cropped
        back after each chunk, never copied; ``score_batch_size`` candidates per chunk."""
        from transformers import DynamicCache

        scores = np.zeros(len(conts), dtype=np.float64)
        order = [j for j in range(len(conts)) if conts[j]]
        if not order:
            return scores
        limit = self.max_positions
        longest = max(len(c) for c in conts)
        if limit and len(prompt_ids) + longest > limit:
            prompt_ids = prompt_ids[len(prompt_ids) + longest - limit:]
        plen = len(prompt_ids) + self._prefix_len()
        cache = DynamicCache()
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        kw = _cache_kwarg(self.model)
        inputs = self._inputs(prompt, torch.ones_like(prompt))
        inputs.pop("attention_mask")
        first = self.model(**inputs, use_cache=True, logits_to_keep=1, **{kw: cache})
        last_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        dtype = first.logits.dtype if first.logits.is_floating_point() else torch.float32
        neg = torch.finfo(dtype).min
        bs = self.config.score_batch_size
        for start in range(0, len(order), bs):
            rows = order[start:start + bs]
            flat: list[int] = []
            pos: list[int] = []
            owner: list[int] = []
            for r, j in enumerate(rows):
                flat += conts[j]
                pos += list(range(plen, plen + len(conts[j])))
                owner += [r] * len(conts[j])
            n = len(flat)
            own = torch.tensor(owner, device=self.device)
            same = own[:, None] == own[None, :]
            causal = torch.ones((n, n), dtype=torch.bool, device=self.device).tril()
            allowed = torch.cat([torch.ones((n, plen), dtype=torch.bool, device=self.device), same & causal], 1)
            mask = torch.zeros((1, 1, n, plen + n), dtype=dtype, device=self.device)
            mask.masked_fill_(~allowed[None, None], neg)
            ids = torch.tensor([flat], dtype=torch.long, device=self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=torch.tensor([pos], device=self.device),
                                use_cache=True, **{kw: cache}).logits
            cache.crop(-n)
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            offset = 0
            for j in rows:
                c = conts[j]
                total = float(last_logp[c[0]])
                if len(c) > 1:
                    tgt = torch.tensor(c[1:], device=self.device)
                    total += float(logp[offset:offset + len(c) - 1].gather(-1, tgt[:, None]).sum())
                scores[j] = total
                offset += len(c)
        return scores

    @torch.no_grad()
    def _score_naive(self, prompt_ids: list[int], conts: list[list[int]]) -> np.ndarray:
        """One full forward per candidate (the slow, obvious reference for ``_score_shared``)."""
        scores = np.zeros(len(conts), dtype=np.float64)
        for j, cont in enumerate(conts):
            if not cont:
                continue
            p = prompt_ids
            if self.max_positions and len(p) + len(cont) > self.max_positions:
                p = p[len(p) + len(cont) - self.max_positions:]
            ids = torch.tensor([p + cont], dtype=torch.long, device=self.device)
            inputs = self._inputs(ids, torch.ones_like(ids))
            inputs.pop("attention_mask")
            logp = torch.log_softmax(self.model(**inputs).logits[0].float(), dim=-1)
            targets = ids[0, len(p):]
            at = len(p) + self._prefix_len()
            scores[j] = float(logp[at - 1:-1].gather(-1, targets[:, None]).sum())
        return scores

    @torch.no_grad()
    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-token natural-log probabilities of each text (see the module docstring)."""
        out: list[np.ndarray] = []
        seqs = [self._encode_plain(t) for t in texts]
        prefix = [] if self.start_id is None else [self.start_id]
        bs = self.config.score_batch_size
        for start in range(0, len(seqs), bs):
            chunk = [prefix + s for s in seqs[start:start + bs]]
            if self.max_positions:
                chunk = [c[: self.max_positions] for c in chunk]
            ids, mask = self._pad(chunk, "right")
            logits = self.model(input_ids=ids, attention_mask=mask,
                                position_ids=self._position_ids(mask)).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, seq in enumerate(chunk):
                n = len(seq)
                vals = logp[row, : n - 1].gather(-1, ids[row, 1:n, None]).squeeze(-1).double().cpu().numpy()
                if not prefix:
                    vals = np.concatenate([[math.nan], vals]) if n else vals
                out.append(vals)
        return out

    @torch.no_grad()
    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Log p of each token of each answer (:meth:`answer_ids`: the numbered titles and the
        end-of-turn token) after the request's training prompt (:meth:`training_prompt_ids`): a
        LoRA example's answer-token log-likelihoods exactly, soft prefix included. Rows are
        left-padded in batches of ``batch_size`` (sorted by length, returned in request order) and
        only the answer positions are projected onto
        the vocabulary; ``stats`` adds each position's mean and standard deviation of log p."""
        if len(reqs) != len(answers):
            raise ValueError(f"answer_logprobs: {len(reqs)} requests but {len(answers)} answers")
        rows = []
        for req, titles in zip(reqs, answers):
            prompt, answer = self.training_prompt_ids(req), self.answer_ids(list(titles))
            if self.max_positions and len(prompt) + len(answer) > self.max_positions - self._prefix_len():
                keep = max(1, self.max_positions - self._prefix_len() - len(answer))
                prompt = prompt[-keep:]
            rows.append((prompt, answer))
        from audit.memorisation.scores import next_token_stats

        keep_arg = "logits_to_keep" in _forward_parameters(self.model)
        out: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = [None] * len(rows)  # type: ignore[list-item]
        bs = self.config.batch_size
        # rows of similar length share a batch (less left padding); results go back in request order
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
        for start in self._bar(list(range(0, len(rows), bs)), "answer log-probs", "batch"):
            at = order[start:start + bs]
            chunk = [rows[i] for i in at]
            ids, mask = self._pad([p + a for p, a in chunk], "left")
            tail = max(len(a) for _, a in chunk)
            inputs = self._inputs(ids, mask)
            kwargs = {"logits_to_keep": tail + 1} if keep_arg else {}
            logits = self.model(**inputs, position_ids=self._position_ids(inputs["attention_mask"]),
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

    # -- representations --------------------------------------------------------------------------
    @torch.no_grad()
    def _last_hidden(self, seqs: Sequence[Sequence[int]], prompts: bool = False) -> np.ndarray:
        """Last-layer state at each sequence's last token; ``prompts`` carry the soft prefix."""
        chunks = []
        bs = self.config.batch_size
        for start in range(0, len(seqs), bs):
            ids, mask = self._pad(seqs[start:start + bs], "left")
            inputs = self._inputs(ids, mask) if prompts else {"input_ids": ids, "attention_mask": mask}
            out = self.model(**inputs, position_ids=self._position_ids(inputs["attention_mask"]),
                             output_hidden_states=True)
            chunks.append(out.hidden_states[-1][:, -1, :].float().cpu().numpy())
        width = int(getattr(self.model.config, "hidden_size", 0) or 0)
        return np.concatenate(chunks, 0).astype(np.float64) if chunks else np.zeros((0, width))

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """(len(reqs), hidden_size): the last hidden state at the end of each generate prompt."""
        return self._last_hidden([self.score_prompt_ids(r) for r in reqs], prompts=True)

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """(len(titles), hidden_size): the last hidden state at each title's final token."""
        prefix = [] if self.start_id is None else [self.start_id]
        return self._last_hidden([prefix + self._encode_plain(t) for t in titles])


class HFSoftPromptTarget:
    """An ``hf`` model seen by :func:`audit.fairness.soft_prompt.train_fair_prompt`: one example per
    user (its generate prompt for the newest window of ``history`` items, no profile, then the
    next item's title), the prefix spliced after the prompt's first token, the representation the
    last prompt token's final state (what :meth:`HFAdapter.embed_user` returns). Gradients reach
    the prefix through every layer; the model's weights are frozen by the trainer."""

    def __init__(self, adapter: HFAdapter, titles: dict[str, str]) -> None:
        self.adapter, self.titles = adapter, titles
        self.module = adapter.model
        emb = adapter.model.get_input_embeddings().weight
        self.width = int(emb.shape[1])
        self.init_scale = float(emb.detach().float().std())
        self._body = adapter.model.base_model
        self._head = adapter.model.get_output_embeddings()

    def training_data(self, sequences: Any) -> Any:
        from audit.llm.examples import LLMStageData

        a = self.adapter
        return LLMStageData({str(u): tuple(map(str, s)) for u, s in sequences.items()}, {}, self.titles,
                            a.training_prompt_ids, a.answer_ids, history=a.config.history, targets=1,
                            examples_per_user=1, attribute_dropout=0.0, pad_id=a.pad_id)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor,
                prefix: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        from audit.fairness.soft_prompt import targets_after_prefix
        from audit.training.data import IGNORE

        device = self.adapter.device
        input_ids, targets = input_ids.to(device), targets.to(device)
        last_prompt = (targets != IGNORE).int().argmax(dim=1)  # the first target sits at the prompt's last token
        if prefix is None:
            hidden = self._body(input_ids=input_ids, use_cache=False).last_hidden_state
            p_len = 0
        else:
            # right padding: every row starts at 0, so the prefix goes to position 1 in every row
            inputs = self.adapter._inputs(input_ids, torch.ones_like(input_ids), prefix=prefix)
            hidden = self._body(inputs_embeds=inputs["inputs_embeds"], use_cache=False).last_hidden_state
            p_len = int(prefix.shape[0])
        tgt = targets_after_prefix(targets, p_len)
        keep = tgt != IGNORE
        loss = torch.nn.functional.cross_entropy(self._head(hidden[keep]).float(), tgt[keep])
        reps = hidden[torch.arange(hidden.shape[0], device=device), last_prompt + p_len]
        return loss, reps


def _forward_parameters(model: Any) -> frozenset[str]:
    """The keyword parameters of ``model.forward`` (e.g. whether it takes ``logits_to_keep``)."""
    import inspect

    return frozenset(inspect.signature(model.forward).parameters)


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache (``cache`` from transformers 5.x on, before
    that ``past_key_values``, which 5.40 removes)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's vocabulary, special tokens and chat template."""
    import hashlib
    import json

    payload = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                          "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                          "chat": getattr(tokenizer, "chat_template", None)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _first_not_none(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _max_positions(cfg: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
