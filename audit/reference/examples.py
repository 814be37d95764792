"""A stage's training data: per-user item sequences turned into token sequences, a fresh
draw per epoch (random window offsets, random attribute dropout), and padded batches.

Trainers (``plain``, ``dp``, ``federated``) receive a :class:`StageData` and choose how to
draw from it: all users at once (:meth:`StageData.epoch_examples`), one user at a time
(:meth:`StageData.user_examples`, e.g. a federated client), and batches via :meth:`collate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from audit.reference.prompts import Example, PromptFormat
from audit.training.data import TrainingData


@dataclass
class StageData(TrainingData):
    """Training sequences of one stage.

    ``sequences``: user -> catalog item ids, oldest first (already transformed);
    ``profiles``: user -> attributes; ``attribute_dropout``: chance (0..1) each attribute
    is hidden in one example; ``catalog_titles``: add one ``<item_X> title`` row per
    catalog item to every epoch."""

    fmt: PromptFormat
    sequences: dict[str, tuple[str, ...]]
    profiles: dict[str, dict[str, str]]
    attribute_dropout: float = 0.5
    catalog_titles: bool = True
    _catalog: list[Example] | None = field(default=None, repr=False)

    @property
    def pad_id(self) -> int:
        return self.fmt.pad

    @property
    def window(self) -> int:
        return self.fmt.max_history

    def user_examples(self, user: str, rng: np.random.Generator) -> list[Example]:
        """Sliding windows over one user's sequence, newest first: the last window ends at the
        newest item, earlier ones every ``window`` items before it (random offset), so each
        item is a next-item target about once per epoch. Each window is ``window`` history
        items and the item after them."""
        seq = self.sequences[user]
        n, w = len(seq), self.window
        if n < 2:
            return []
        ends = [n]
        end = n - w - int(rng.integers(0, max(1, w // 2)))
        while end >= 2:
            ends.append(end)
            end -= w
        out = []
        for e in ends:
            start = max(0, e - 1 - w)
            out.append(self.fmt.window_example(seq[start:e - 1], seq[e - 1], self.shown_profile(user, rng), user))
        return out

    def catalog_examples(self) -> list[Example]:
        """One ``<item_X> title`` row per catalog item when ``catalog_titles`` (else none)."""
        if not self.catalog_titles:
            return []
        if self._catalog is None:
            self._catalog = [self.fmt.catalog_example(i) for i in self.fmt.vocab.item_ids]
        return self._catalog



def stage_sequences(sequences: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    return {str(u): tuple(map(str, s)) for u, s in sequences.items()}
