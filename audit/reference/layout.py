"""The reference model's constrained-decoding layout: one item per beam (a ``ConstraintLayout``
of :mod:`audit.decoding.constrained`, satisfied structurally)."""

from __future__ import annotations

from typing import Any

from audit.list_format import ListFormat


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
