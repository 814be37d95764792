"""The ``constrained-decoding`` variant: every generated slot is a real catalog item.

For models the harness runs itself (``reference`` and ``hf``), a prefix tree
(:class:`~audit.decoding.trie.TokenTrie`) of every catalog item's token sequence in that
model's tokenizer is built once per wrap, and a
:class:`~audit.decoding.list_constraint.ListConstraint` is installed through the adapter's
constrained-decoding hook, so decoding can only spell catalog items (distinct ones within
a list), in the adapter's own output layout. Two hook styles are supported:

- ``hf``: ``generate_detailed(..., generation_constraint=fn)`` where ``fn(batch_id, generated)``
  is a ``prefix_allowed_tokens_fn`` that sees the generated tokens only;
- ``reference``: the attribute ``adapter.generation_constraint``, a factory
  ``(prompt_length) -> LogitsProcessor`` called per decoding batch; it is set for the
  duration of each call and restored afterwards (the wrapped adapter stays unconstrained).

Layouts (how one item and the list around it are written in tokens):

- the reference model writes one item per beam: ``<item_X>`` + title tokens + ``<sep>``
  (:class:`ReferenceLayout`, from ``adapter.fmt``); the prefix tree holds item token +
  title per catalog item, so the title after an item token is always that item's title;
- an adapter may declare its own through a ``constraint_layout()`` method returning an
  object like :class:`TextLayout`;
- otherwise (``hf``) :class:`TextLayout` from the adapter's ``tokenizer``: ``numbered`` =
  ``1. Title (year)\n2. Title (year)\n...<eos>`` (what the default chat prompt asks for) or
  ``lines`` = one title per line; both parse back with ``parse_item_list``.

Ranking requests (with candidates) are constrained to their own candidates when
``restrict_candidates`` is true (``hf`` style; the reference model ranks candidates by
score, without decoding). Suite entry::

    reference+constrained: {adapter: reference, variant: constrained-decoding}
"""

from __future__ import annotations

import inspect
import time
from typing import Any, ClassVar, Literal, Mapping, Protocol, Sequence

from audit.config import StrictConfig
from audit.decoding.delegate import DelegatingRecommender
from audit.decoding.list_constraint import ListConstraint, ListFormat
from audit.decoding.trie import TokenTrie
from audit.errors import ConfigError
from audit.interface import Generation, RecRequest, Recommender
from audit.variants import BuildContext, Variant

HOOK = "generation_constraint"


class ConstraintLayout(Protocol):
    """How a model writes one item and a list of items, in token ids. ``slots(k)``: items per
    generated sequence when ``k`` are asked (``k`` for a list in one sequence, 1 when each
    beam is one item)."""

    def item_tokens(self, title: str, item_id: str | None = None) -> tuple[int, ...]: ...

    def list_format(self, k: int) -> ListFormat: ...

    def slots(self, k: int) -> int: ...


class TextLayout:
    """Plain-text lists for any tokenizer: ``numbered`` ("1. Title\\n2. Title") or ``lines``."""

    def __init__(self, tokenizer: Any, style: Literal["numbered", "lines"] = "numbered") -> None:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("constrained decoding needs a tokenizer with an end-of-sequence token "
                              "(the list must be able to end)")
        self.tokenizer = tokenizer
        self.style = style
        self.eos = int(eos)
        pad = tokenizer.pad_token_id
        # after the end only padding (when it differs from eos): a finished beam that is kept
        # running must not end a second time (see ReferenceLayout)
        self.stop = (self.eos,) if pad is None else (int(pad),)
        self.separator = self._encode("\n")
        self._formats: dict[int, ListFormat] = {}

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def item_tokens(self, title: str, item_id: str | None = None) -> tuple[int, ...]:
        return self._encode((" " if self.style == "numbered" else "") + title.strip())

    def slots(self, k: int) -> int:
        return k

    def list_format(self, k: int) -> ListFormat:
        fmt = self._formats.get(k)
        if fmt is None:
            leads = tuple(self._encode(f"{i}.") for i in range(1, k + 1)) if self.style == "numbered" else ()
            fmt = ListFormat(separator=self.separator, end=(self.eos,), leads=leads, stop=self.stop)
            self._formats[k] = fmt
        return fmt


class ReferenceLayout:
    """The reference model's format: each returned beam is ``<item_X> Title (year)<sep>``."""

    def __init__(self, fmt: Any) -> None:
        self.fmt = fmt
        self.vocab = fmt.vocab
        # after <sep> only padding: under beam search a finished beam kept running must not
        # "finish" a second time (it would re-enter the hypotheses as a duplicate)
        self._format = ListFormat(separator=(), end=(int(fmt.sep),), stop=(int(fmt.pad),))

    def item_tokens(self, title: str, item_id: str | None = None) -> tuple[int, ...]:
        """Item token + title tokens for a catalog item; title tokens alone otherwise."""
        if item_id is not None and item_id in self.vocab.token_of:
            return (int(self.vocab.token_of[item_id]), *self.vocab.title_ids(title))
        ids = self.fmt.output_ids(title)
        return tuple(int(t) for t in ids[:-1])  # without the closing <sep>

    def list_format(self, k: int) -> ListFormat:
        return self._format

    def slots(self, k: int) -> int:
        return 1


class ConstrainedDecodingConfig(StrictConfig):
    """``layout``: text layout for adapters without their own (``numbered`` | ``lines``);
    ``restrict_candidates``: ranking requests may only name their candidates;
    ``block_repeats``: an item cannot appear twice in one list."""

    layout: Literal["numbered", "lines"] = "numbered"
    restrict_candidates: bool = True
    block_repeats: bool = True


class ConstrainedRecommender(DelegatingRecommender):
    """Generation through the adapter's constraint hook with a catalog prefix tree."""

    def __init__(self, inner: Recommender, layout: ConstraintLayout, titles: Mapping[str, str],
                 config: ConstrainedDecodingConfig, hook: Literal["call", "factory"] = "call") -> None:
        super().__init__(inner)
        self.layout = layout
        self.config = config
        self.hook = hook
        t0 = time.perf_counter()
        self._tokens: dict[str, tuple[int, ...]] = {}
        self.trie = TokenTrie.from_sequences(
            {item: layout.item_tokens(title, item) for item, title in titles.items()})
        self.build_seconds = time.perf_counter() - t0
        self.info["constrained_decoding"] = {
            "items": len(titles), "distinct_sequences": len(self.trie), "trie_nodes": self.trie.n_nodes,
            "max_item_tokens": self.trie.max_depth, "build_seconds": round(self.build_seconds, 4),
            "layout": type(layout).__name__, "hook": hook,
            "restrict_candidates": config.restrict_candidates and hook == "call",
            "block_repeats": config.block_repeats}

    def tokens_of(self, title: str) -> tuple[int, ...]:
        ids = self._tokens.get(title)
        if ids is None:
            ids = self.layout.item_tokens(title)
            self._tokens[title] = ids
        return ids

    def _trie_for(self, req: RecRequest) -> TokenTrie:
        if not (self.config.restrict_candidates and req.candidates and self.hook == "call"):
            return self.trie
        return TokenTrie.from_sequences({i: self.tokens_of(t) for i, t in enumerate(req.candidates)
                                         if self.tokens_of(t)})

    def constraint_for(self, reqs: Sequence[RecRequest], k: int) -> ListConstraint:
        """The constraint for one batch of requests (rows in order)."""
        slots = self.layout.slots(k)
        tries = [self._trie_for(r) for r in reqs]
        shared = all(t is self.trie for t in tries)
        return ListConstraint(self.trie if shared else tries, self.layout.list_format(slots), slots,
                              block_repeats=self.config.block_repeats)

    def _batch_size(self, reqs: Sequence[RecRequest]) -> int:
        """Rows per inner call: the adapter's own batch size when rows carry their own tries
        (the hook's ``batch_id`` counts rows within one decoding batch)."""
        if not (self.config.restrict_candidates and any(r.candidates for r in reqs)):
            return max(len(reqs), 1)
        return int(getattr(getattr(self.inner, "config", None), "batch_size", 0) or max(len(reqs), 1))

    def _ensure_token_budget(self, k: int) -> None:
        """Raise the adapter's ``max_new_tokens`` so a full constrained list always fits
        (a list cut short would end in a partial title)."""
        cfg = getattr(self.inner, "config", None)
        current = getattr(cfg, "max_new_tokens", None)
        slots = self.layout.slots(k)
        needed = self.layout.list_format(slots).tokens_per_list(slots, self.trie.max_depth)
        if isinstance(current, int) and current < needed and hasattr(cfg, "model_copy"):
            self.inner.config = cfg.model_copy(update={"max_new_tokens": needed})  # type: ignore[attr-defined]
            self.info["constrained_decoding"]["max_new_tokens"] = needed

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        reqs = list(reqs)
        if self.hook == "factory":
            return self._generate_with_factory(reqs, k)
        self._ensure_token_budget(k)
        out: list[Generation] = []
        bs = self._batch_size(reqs)
        for start in range(0, len(reqs), bs):
            chunk = reqs[start:start + bs]
            fn = self.constraint_for(chunk, k).prefix_allowed_tokens_fn(prompt_length=0)
            out.extend(self.inner.generate_detailed(chunk, k, **{HOOK: fn}))
        return out

    def _generate_with_factory(self, reqs: list[RecRequest], k: int) -> list[Generation]:
        constraint = self.constraint_for([], k)  # the shared catalog trie

        def factory(prompt_length: int) -> Any:
            return constraint.logits_processor(prompt_length)

        previous = getattr(self.inner, HOOK)
        setattr(self.inner, HOOK, factory)
        try:
            return self.inner.generate_detailed(reqs, k)
        finally:
            setattr(self.inner, HOOK, previous)


def constraint_hook(rec: Recommender) -> Literal["call", "factory"] | None:
    """How ``rec`` takes a decoding constraint: ``call`` = ``generate_detailed(...,
    generation_constraint=fn)``; ``factory`` = the attribute ``generation_constraint`` holding a
    ``(prompt_length) -> LogitsProcessor`` factory; None = no hook."""
    if not hasattr(rec, HOOK):
        return None
    try:
        params = inspect.signature(rec.generate_detailed).parameters
    except (TypeError, ValueError):
        return None
    return "call" if HOOK in params else "factory"


def layout_for(rec: Recommender, config: ConstrainedDecodingConfig) -> ConstraintLayout:
    """The adapter's own layout when it declares one, the reference format, else the text
    layout of its tokenizer."""
    own = getattr(rec, "constraint_layout", None)
    if callable(own):
        return own()
    if getattr(rec, "kind", None) == "reference" or type(rec).__name__ == "ReferenceAdapter":
        return ReferenceLayout(rec.fmt)  # type: ignore[attr-defined]
    tokenizer = getattr(rec, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"constrained decoding: {rec.name!r} exposes the hook but neither "
                          "constraint_layout() nor a tokenizer to build the prefix tree from")
    return TextLayout(tokenizer, config.layout)


class ConstrainedDecodingVariant(Variant):
    """Wrap a harness-run model so generation can only spell catalog items."""

    name: ClassVar[str] = "constrained-decoding"
    requires: ClassVar[frozenset[str]] = frozenset({"constrain"})
    Config: ClassVar[type[StrictConfig]] = ConstrainedDecodingConfig
    trains: ClassVar[bool] = False

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        cfg: ConstrainedDecodingConfig = self.config  # type: ignore[assignment]
        hook = constraint_hook(rec)
        if hook is None:
            raise ConfigError(
                f"variant 'constrained-decoding' needs a model the harness runs itself (adapter "
                f"'reference' or 'hf'); {rec.name!r} ({type(rec).__name__}) has no constrained-decoding "
                "hook. For black-box adapters (openai, python) use variant 'grounding' instead.")
        return ConstrainedRecommender(rec, layout_for(rec, cfg), ctx.dataset.item_titles, cfg, hook)
