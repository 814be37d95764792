"""The ``constrained-decoding`` variant: every generated slot is a real catalog item.

For models the harness runs itself (``reference`` and ``hf``), a prefix tree
(:class:`~audit.decoding.trie.TokenTrie`) of every catalog item's token sequence in that
model's tokenizer is built once per wrap, and a
:class:`~audit.decoding.list_constraint.ListConstraint` is installed through the adapter's
constrained-decoding hook, so decoding can only spell catalog items (distinct ones within
a list), in the adapter's own output layout. An adapter offers this by declaring the
``constrain`` capability and implementing :class:`ConstrainableGeneration` (its layout, its
hook style, its batch size and its token budget); nothing is discovered by name or attribute.
Two hook styles are supported:

- ``hf``: ``generate_detailed(..., generation_constraint=fn)`` where ``fn(batch_id, generated)``
  is a ``prefix_allowed_tokens_fn`` that sees the generated tokens only;
- ``reference``: the attribute ``adapter.generation_constraint``, a factory
  ``(prompt_length) -> LogitsProcessor`` called per decoding batch; it is set for the
  duration of each call and restored afterwards (the wrapped adapter stays unconstrained).

Layouts (how one item and the list around it are written in tokens) come from the adapter's
``constraint_layout()`` (a :class:`ConstraintLayout`, each model's own):

- the reference model writes one item per beam: ``<item_X>`` + title tokens + ``<sep>``; the
  prefix tree holds item token + title per catalog item, so the title after an item token is
  always that item's title;
- ``hf`` writes plain-text lists in its own tokenizer: ``numbered`` =
  ``1. Title (year)\n2. Title (year)\n...<eos>`` (what the default chat prompt asks for) or
  ``lines`` = one title per line; both parse back with ``parse_item_list``.

Ranking requests (with candidates) are constrained to their own candidates when
``restrict_candidates`` is true (``hf`` style; the reference model ranks candidates by
score, without decoding). Suite entry::

    reference+constrained: {adapter: reference, variant: constrained-decoding}
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Protocol, Sequence, runtime_checkable

from audit.config import StrictConfig
from audit.decoding.delegate import DelegatingRecommender
from audit.decoding.trie import TokenTrie
from audit.errors import ConfigError
from audit.list_format import ListFormat
from audit.interface import Generation, RecRequest, Recommender
from audit.variants import BuildContext, Variant

if TYPE_CHECKING:
    from audit.decoding.list_constraint import ListConstraint

HOOK = "generation_constraint"
LayoutStyle = Literal["numbered", "lines"]


class ConstraintLayout(Protocol):
    """How a model writes one item and a list of items, in token ids. ``slots(k)``: items per
    generated sequence when ``k`` are asked (``k`` for a list in one sequence, 1 when each
    beam is one item)."""

    def item_tokens(self, title: str, item_id: str | None = None) -> tuple[int, ...]: ...

    def list_format(self, k: int) -> ListFormat: ...

    def slots(self, k: int) -> int: ...


@runtime_checkable
class ConstrainableGeneration(Protocol):
    """What an adapter declaring the ``constrain`` capability implements.

    ``constraint_mode``: ``"call"`` = ``generate_detailed(reqs, k, generation_constraint=fn)`` takes a
    ``prefix_allowed_tokens_fn``; ``"factory"`` = the attribute ``generation_constraint`` holds a
    ``(prompt_length) -> LogitsProcessor`` factory while a call runs."""

    constraint_mode: ClassVar[Literal["call", "factory"]]
    generation_constraint: Any

    def constraint_layout(self, style: LayoutStyle) -> ConstraintLayout:
        """How this model writes an item and a list, in its own tokens (``style`` applies to text layouts)."""
        ...

    def constraint_batch_size(self) -> int:
        """Requests per decoding batch (the ``batch_id`` the hook sees counts rows within one)."""
        ...

    def reserve_new_tokens(self, tokens: int) -> int | None:
        """Make room for at least ``tokens`` generated tokens; the budget now in force (None when the
        model's output length does not depend on a budget)."""
        ...


class ConstrainedDecodingConfig(StrictConfig):
    """``layout``: text layout for adapters without their own (``numbered`` | ``lines``);
    ``restrict_candidates``: ranking requests may only name their candidates;
    ``block_repeats``: an item cannot appear twice in one list."""

    layout: Literal["numbered", "lines"] = "numbered"
    restrict_candidates: bool = True
    block_repeats: bool = True


class ConstrainedRecommender(DelegatingRecommender):
    """Generation through the adapter's constraint hook with a catalog prefix tree."""

    def __init__(self, inner: ConstrainableGeneration, titles: Mapping[str, str],
                 config: ConstrainedDecodingConfig) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self.generator = inner
        layout = inner.constraint_layout(config.layout)
        hook = inner.constraint_mode
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

    def constraint_for(self, reqs: Sequence[RecRequest], k: int) -> "ListConstraint":
        """The constraint for one batch of requests (rows in order)."""
        from audit.decoding.list_constraint import ListConstraint

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
        return max(int(self.generator.constraint_batch_size()), 1)

    def _ensure_token_budget(self, k: int) -> None:
        """Raise the adapter's ``max_new_tokens`` so a full constrained list always fits
        (a list cut short would end in a partial title)."""
        slots = self.layout.slots(k)
        needed = self.layout.list_format(slots).tokens_per_list(slots, self.trie.max_depth)
        budget = self.generator.reserve_new_tokens(needed)
        if budget is not None:
            self.info["constrained_decoding"]["max_new_tokens"] = budget

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

        previous = self.generator.generation_constraint
        self.generator.generation_constraint = factory
        try:
            return self.inner.generate_detailed(reqs, k)
        finally:
            self.generator.generation_constraint = previous


class ConstrainedDecodingVariant(Variant):
    """Wrap a harness-run model so generation can only spell catalog items."""

    name: ClassVar[str] = "constrained-decoding"
    requires: ClassVar[frozenset[str]] = frozenset({"constrain"})
    Config: ClassVar[type[StrictConfig]] = ConstrainedDecodingConfig
    trains: ClassVar[bool] = False

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        cfg: ConstrainedDecodingConfig = self.config  # type: ignore[assignment]
        if not (rec.has("constrain") and isinstance(rec, ConstrainableGeneration)):
            raise ConfigError(
                f"variant 'constrained-decoding' needs a model whose decoding the harness runs (an adapter "
                f"declaring 'constrain', such as 'reference' or 'hf', listed before any wrapping variant); "
                f"{rec.name!r} ({type(rec).__name__}) does not declare it. For black-box adapters (openai, "
                "python) use variant 'grounding' instead.")
        return ConstrainedRecommender(rec, ctx.dataset.item_titles, cfg)
