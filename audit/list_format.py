"""How a model writes a list of items as token ids: the layout a model declares for the
``constrain`` capability (``constraint_layout().list_format(k)``) and
:class:`audit.decoding.list_constraint.ListConstraint` enforces. A plain data structure, so the
model leaves can describe their output without importing the decoding package."""

from __future__ import annotations

from dataclasses import dataclass

#: the kinds of forced token runs: before the first item, between two items, after the last
START, BETWEEN, END = 0, 1, 2


@dataclass(frozen=True)
class ListFormat:
    """Token-id layout of a generated list.

    ``start``: forced once before the first item; ``leads``: forced before item ``i``
    (``leads[i]``, the last one repeating; empty = nothing), e.g. the numbers of a numbered
    list; ``separator``: forced between items (before the next lead); ``end``: forced after
    the last item (e.g. ``(eos_id,)``); ``stop``: tokens allowed once the list is finished
    (end-of-sequence and padding ids; default: the last ``end`` token).
    """

    separator: tuple[int, ...]
    end: tuple[int, ...]
    leads: tuple[tuple[int, ...], ...] = ()
    start: tuple[int, ...] = ()
    stop: tuple[int, ...] = ()

    def lead(self, slot: int) -> tuple[int, ...]:
        if not self.leads:
            return ()
        return self.leads[min(slot, len(self.leads) - 1)]

    def sequence(self, which: int, slot: int) -> tuple[int, ...]:
        """The forced tokens of kind ``which`` before item ``slot`` (or after the last one)."""
        if which == START:
            return self.start + self.lead(0)
        if which == BETWEEN:
            return self.separator + self.lead(slot)
        return self.end

    def tokens_per_list(self, k: int, max_item_tokens: int) -> int:
        """An upper bound on the tokens a constrained list of ``k`` items takes."""
        longest_lead = max((len(x) for x in self.leads), default=0)
        return (len(self.start) + longest_lead * k + len(self.separator) * max(k - 1, 0)
                + len(self.end) + k * max_item_tokens)
