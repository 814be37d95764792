"""Training examples of an item-token LM: next-item prediction at every history position.

A user's training sequence is cut into windows of ``window`` items from its newest end
(``[n - W, n)``, ``[n - 2W, n - W)``, ...: every training item is a target exactly once per
epoch). An example is the prompt's text prefix (instruction and the profile with attribute
dropout, :meth:`audit.prompts.PromptSet.before_history`) followed by the window's item tokens;
the target at the prefix's last token is the window's first item and at each item token the
next item (SASRec-style: one softmax over the catalog's item tokens at each position). The
last item of a window predicts nothing (the item after it starts the next window's context
only when windows overlap, which they do not). Targets are item rows (0..n-1), not token ids.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from audit.llm.examples import LLMExample
from audit.llm.item_tokens import ItemVocabulary
from audit.training.data import IGNORE, TrainingData

#: profile (attributes shown) -> the prompt's text prefix as token ids
PrefixEncoder = Callable[[Mapping[str, str]], list[int]]


def sequence_example(prefix: list[int], items: list[str], vocab: ItemVocabulary, user: str | None) -> LLMExample:
    """``prefix`` + the items' tokens, each position's target the next item's row."""
    if not prefix:
        raise ValueError("an item-token example needs a non-empty text prefix (at least the start token)")
    rows = [vocab.row(i) for i in items]
    ids = np.asarray(prefix + [vocab.offset + r for r in rows], dtype=np.int64)
    targets = np.full(len(ids), IGNORE, dtype=np.int64)
    start = len(prefix) - 1
    targets[start:start + len(rows)] = rows
    return LLMExample(ids, targets, user)


class ItemStageData(TrainingData):
    """One stage's sequences (user -> item ids) as item-token examples (see the module docstring)."""

    def __init__(self, sequences: dict[str, tuple[str, ...]], profiles: dict[str, dict[str, str]],
                 vocab: ItemVocabulary, encode_prefix: PrefixEncoder, *, window: int, attribute_dropout: float,
                 pad_id: int) -> None:
        self.sequences, self.profiles, self.vocab = sequences, profiles, vocab
        self.encode_prefix, self.window = encode_prefix, int(window)
        self.attribute_dropout, self._pad = attribute_dropout, pad_id

    @property
    def pad_id(self) -> int:
        return self._pad

    def windows(self, n: int) -> list[tuple[int, int]]:
        """(start, end) of the windows of a sequence of ``n`` items, newest first."""
        return [(max(0, end - self.window), end) for end in range(n, 0, -self.window)]

    def user_examples(self, user: str, rng: np.random.Generator) -> list[LLMExample]:
        seq = list(self.sequences[user])
        return [sequence_example(self.encode_prefix(self.shown_profile(user, rng)), seq[a:b], self.vocab, user)
                for a, b in self.windows(len(seq))]
