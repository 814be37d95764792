"""Training examples for an ``hf`` causal LM, in the recommender's own prompt format.

An example is TALLRec/BIGRec-style instruction tuning: the input is the adapter's ``generate``
prompt for a window of the user's history (the last ``history`` items before the target, and
the profile with attribute dropout), the answer is the numbered list of the user's next
``targets`` items written as catalog titles (the first line is the next item; ``targets: 1``
is the one-item TALLRec form), then the end-of-turn token. Loss applies to the answer tokens
only. The answer is tokenised line by line exactly as :meth:`HFAdapter.score` tokenises a
candidate (``"1."`` then ``" " + title``), so training and scoring agree token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from audit.interface import RecRequest
from audit.training.data import IGNORE, TrainingData, answer_start

#: request -> prompt token ids (the adapter's own generate prompt)
PromptEncoder = Callable[[RecRequest], list[int]]
#: titles -> answer token ids (numbered list + end token)
AnswerEncoder = Callable[[Sequence[str]], list[int]]


@dataclass
class LLMExample:
    ids: np.ndarray
    targets: np.ndarray
    user: str | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def make_example(prompt: Sequence[int], answer: Sequence[int], user: str | None) -> LLMExample:
    """``prompt + answer`` with next-token targets on the answer tokens only."""
    ids = np.asarray([*prompt, *answer], dtype=np.int64)
    targets = np.full(len(ids), IGNORE, dtype=np.int64)
    start = len(prompt) - 1
    targets[start:len(ids) - 1] = ids[start + 1:]
    return LLMExample(ids, targets, user)


class LLMStageData(TrainingData):
    """One stage's sequences as LLM instruction examples (see the module docstring).

    ``examples_per_user``: windows drawn per user per epoch: the most recent full answer
    window always, the rest at uniformly random positions."""

    def __init__(self, sequences: dict[str, tuple[str, ...]], profiles: dict[str, dict[str, str]],
                 titles: dict[str, str], encode_prompt: PromptEncoder, encode_answer: AnswerEncoder, *,
                 history: int, targets: int, examples_per_user: int, attribute_dropout: float,
                 pad_id: int) -> None:
        self.sequences = sequences
        self.profiles = profiles
        self.titles = titles
        self.encode_prompt = encode_prompt
        self.encode_answer = encode_answer
        self.history = history
        self.targets = targets
        self.examples_per_user = examples_per_user
        self.attribute_dropout = attribute_dropout
        self._pad = pad_id

    @property
    def pad_id(self) -> int:
        return self._pad

    def window_ends(self, n: int, rng: np.random.Generator) -> list[int]:
        """Positions of the first answer item: the newest full window, then random others."""
        if n < 2:
            return []
        ends = [answer_start(n, self.targets)]
        if self.examples_per_user > 1:
            extra = rng.integers(1, n, size=self.examples_per_user - 1)
            ends.extend(int(e) for e in extra)
        return ends

    def user_examples(self, user: str, rng: np.random.Generator) -> list[LLMExample]:
        seq = self.sequences[user]
        out = []
        for e in self.window_ends(len(seq), rng):
            hist = tuple(self.titles[i] for i in seq[max(0, e - self.history):e])
            answer = [self.titles[i] for i in seq[e:e + self.targets]]
            req = RecRequest(history=hist, profile=self.shown_profile(user, rng), user=user)
            out.append(make_example(self.encode_prompt(req), self.encode_answer(answer), user))
        return out
