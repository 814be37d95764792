"""Constrain a causal LM's generation to a list of ``k`` catalog items.

The generated text is a list laid out as::

    start lead_1 ITEM_1 separator lead_2 ITEM_2 separator ... lead_k ITEM_k end

where each ``ITEM_i`` is a full path of a :class:`~audit.decoding.trie.TokenTrie`
(a catalog item's token ids) and ``start``, ``lead_i`` (e.g. "3."), ``separator`` and
``end`` are fixed token-id sequences (``end`` normally holds the end-of-sequence id). The state
machine below tracks, per generated prefix, where in that layout the prefix is,
and answers "which tokens may come next" with dict lookups. States are cached by
prefix, so each decoding step advances the parent prefix's state by one token
(no rescans), which also keeps beam search correct when beams are reordered.

Items already completed in the same list are blocked when cheap: a child edge is
closed once every terminal below it has been generated (O(items so far) per step).

Use :meth:`ListConstraint.prefix_allowed_tokens_fn` (or :meth:`ListConstraint.logits_processor`)
with ``model.generate``; create a new one per ``generate`` call (the state cache and the
prompt length belong to one call).
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, NamedTuple, Sequence

import torch
from transformers import LogitsProcessor

from audit.decoding.trie import ROOT, TokenTrie
from audit.errors import ConfigError
from audit.list_format import BETWEEN, END, START, ListFormat

_FORCED, _TITLE, _DONE = 0, 1, 2
_START, _BETWEEN, _END = START, BETWEEN, END


class _State(NamedTuple):
    phase: int
    slot: int  # index of the current / next item (0-based)
    node: int  # trie node while in _TITLE
    seq: int  # which forced sequence while in _FORCED
    pos: int  # position in that forced sequence
    completed: tuple[int, ...]  # terminal nodes generated so far in this list


class ListConstraint:
    """Allowed-next-token rules for lists of ``k`` items from a trie (one trie per batch row or shared)."""

    def __init__(self, tries: TokenTrie | Sequence[TokenTrie], fmt: ListFormat, k: int, *,
                 block_repeats: bool = True) -> None:
        if k < 1:
            raise ConfigError(f"constrained decoding needs k >= 1, got {k}")
        if not fmt.end:
            raise ConfigError("constrained decoding needs an end sequence (e.g. the end-of-sequence token id)")
        if k > 1 and not (fmt.separator or (fmt.leads and all(fmt.leads))):
            raise ConfigError("constrained decoding of more than one item needs a separator or lead token")
        self.tries: tuple[TokenTrie, ...] | None = None if isinstance(tries, TokenTrie) else tuple(tries)
        self.trie: TokenTrie | None = tries if isinstance(tries, TokenTrie) else None
        self.fmt = fmt
        self.k = k
        self.block_repeats = block_repeats
        self.stop = list(dict.fromkeys(fmt.stop or fmt.end[-1:]))
        for trie in ([self.trie] if self.trie is not None else list(self.tries or ())):
            _check_unambiguous(trie, fmt)

    def trie_for(self, batch_id: int) -> TokenTrie:
        if self.trie is not None:
            return self.trie
        assert self.tries is not None
        return self.tries[batch_id]

    # -- the state machine ----------------------------------------------------------
    def initial_state(self) -> _State:
        if self.fmt.sequence(_START, 0):
            return _State(_FORCED, 0, ROOT, _START, 0, ())
        return _State(_TITLE, 0, ROOT, _START, 0, ())

    def _after_item(self, trie: TokenTrie, slot: int, completed: tuple[int, ...]) -> int:
        """Which forced sequence follows item ``slot``: between items, or the end."""
        if slot + 1 >= self.k or (self.block_repeats and len(completed) >= len(trie)):
            return _END
        return _BETWEEN

    def allowed(self, trie: TokenTrie, st: _State) -> list[int]:
        """Token ids that may follow a prefix in state ``st``."""
        if st.phase == _FORCED:
            return [self.fmt.sequence(st.seq, st.slot)[st.pos]]
        if st.phase == _DONE:
            return self.stop
        node = st.node
        base = trie.allowed(node)
        out = base
        repeats_blocked = self.block_repeats and bool(st.completed)
        if repeats_blocked:
            blocked = _blocked_tokens(trie, node, st.completed)
            if blocked:
                out = [t for t in base if t not in blocked]
        if trie.is_terminal(node) and not (repeats_blocked and node in st.completed):
            nxt = self.fmt.sequence(self._after_item(trie, st.slot, st.completed + (node,)), st.slot + 1)[0]
            out = [*out, nxt]
        if not out:  # nothing left to continue with (cannot happen on a consistent trie): stop
            return self.stop
        return out

    def advance(self, trie: TokenTrie, st: _State, tok: int) -> _State:
        """The state after generating ``tok`` in state ``st`` (off-constraint tokens end the list)."""
        if st.phase == _DONE:
            return st
        if st.phase == _FORCED:
            seq = self.fmt.sequence(st.seq, st.slot)
            if tok != seq[st.pos]:
                return st._replace(phase=_DONE)
            if st.pos + 1 < len(seq):
                return st._replace(pos=st.pos + 1)
            if st.seq == _END:
                return st._replace(phase=_DONE)
            return _State(_TITLE, st.slot, ROOT, st.seq, 0, st.completed)
        child = trie.child(st.node, tok)
        if child is not None:
            return st._replace(node=child)
        if trie.is_terminal(st.node):
            completed = st.completed + (st.node,)
            which = self._after_item(trie, st.slot, completed)
            seq = self.fmt.sequence(which, st.slot + 1)
            if seq and tok == seq[0]:
                if len(seq) == 1:
                    if which == _END:
                        return _State(_DONE, st.slot + 1, ROOT, which, 0, completed)
                    return _State(_TITLE, st.slot + 1, ROOT, which, 0, completed)
                return _State(_FORCED, st.slot + 1, ROOT, which, 1, completed)
        return st._replace(phase=_DONE)

    def replay(self, trie: TokenTrie, generated: Sequence[int]) -> _State:
        """The state after a whole generated prefix (used for the first step and in tests)."""
        st = self.initial_state()
        for tok in generated:
            st = self.advance(trie, st, int(tok))
        return st

    # -- transformers glue -------------------------------------------------------------
    def prefix_allowed_tokens_fn(self, prompt_length: int | None = None
                                 ) -> Callable[[int, torch.Tensor], list[int]]:
        """A fresh ``prefix_allowed_tokens_fn`` for one ``model.generate`` call.

        ``prompt_length`` is the padded prompt length in tokens; when None it is taken
        from the first call (transformers calls it first with the prompt alone).
        """
        return _PrefixFn(self, prompt_length)

    def logits_processor(self, prompt_length: int, num_beams: int = 1) -> "ListConstraintLogitsProcessor":
        """A ``transformers`` logits processor enforcing this constraint for one generate call
        whose ``input_ids`` hold ``prompt_length`` prompt columns before the generated tokens."""
        return ListConstraintLogitsProcessor(self, prompt_length, num_beams)


class ListConstraintLogitsProcessor(LogitsProcessor):
    """Sets every token the constraint does not allow to -inf (rows = batch x beams)."""

    def __init__(self, constraint: ListConstraint, prompt_length: int, num_beams: int = 1) -> None:
        self.fn = _PrefixFn(constraint, prompt_length)
        self.num_beams = max(int(num_beams), 1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, -math.inf)
        for row in range(input_ids.shape[0]):
            mask[row, self.fn(row // self.num_beams, input_ids[row])] = 0
        return scores + mask


class _PrefixFn:
    """Callable state cache for one generate call: (batch row, generated prefix) -> state."""

    def __init__(self, constraint: ListConstraint, prompt_length: int | None) -> None:
        self.c = constraint
        self.prompt_length = prompt_length
        self._prev: dict[tuple[int, tuple[int, ...]], _State] = {}
        self._cur: dict[tuple[int, tuple[int, ...]], _State] = {}
        self._cur_len = -1
        self.calls = 0

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        self.calls += 1
        if self.prompt_length is None:
            self.prompt_length = int(input_ids.shape[-1])
        if self.c.trie is not None:
            batch_id = 0  # one shared trie: the state depends on the tokens only (beams share the cache)
        gen = tuple(input_ids[self.prompt_length:].tolist())
        n = len(gen)
        if n != self._cur_len:
            self._prev = self._cur if n == self._cur_len + 1 else {}
            self._cur = {}
            self._cur_len = n
        key = (batch_id, gen)
        st = self._cur.get(key)
        trie = self.c.trie_for(batch_id)
        if st is None:
            parent = self._prev.get((batch_id, gen[:-1])) if n else None
            st = self.c.advance(trie, parent, gen[-1]) if parent is not None else self.c.replay(trie, gen)
            self._cur[key] = st
        return self.c.allowed(trie, st)


def _blocked_tokens(trie: TokenTrie, node: int, completed: tuple[int, ...]) -> set[int]:
    """Child tokens of ``node`` whose whole subtree has already been generated."""
    depth = trie.depth(node)
    counts: dict[int, int] = {}
    for term in completed:
        path = trie.path(term)
        if len(path) > depth + 1 and path[depth] == node:
            child = path[depth + 1]
            counts[child] = counts.get(child, 0) + 1
    return {trie.token_into(c) for c, cnt in counts.items() if cnt >= trie.n_terminals(c)}


_CHECKED: "weakref.WeakKeyDictionary[TokenTrie, set[ListFormat]]" = weakref.WeakKeyDictionary()


def _check_unambiguous(trie: TokenTrie, fmt: ListFormat) -> None:
    """Reject formats whose separator/end could also continue an item (the list would be ambiguous).

    Checked once per (trie, format)."""
    done = _CHECKED.setdefault(trie, set())
    if fmt in done:
        return
    betweens = (fmt.sequence(_BETWEEN, i) for i in range(1, max(len(fmt.leads), 1) + 1))
    firsts = {fmt.end[0]} | {seq[0] for seq in betweens if seq}
    for term in trie.terminals():
        clash = firsts.intersection(trie.children(term))
        if clash:
            path = [trie.token_into(n) for n in trie.path(term)[1:]]
            raise ConfigError(
                f"constrained decoding: separator/end token {sorted(clash)} also continues item token "
                f"sequence {path} ({trie.keys(term)}); use a separator that cannot appear inside a title")
    done.add(fmt)
