"""The base of a stage's training data, shared by every trainable model.

A subclass turns one user's item sequence into training examples in its model's own format
(:meth:`TrainingData.user_examples`); batching, shuffling and per-epoch draws are common.
Trainers draw all users at once (:meth:`epoch_examples`), one user at a time (a DP record or a
federated client), and batches (:meth:`batches`, :meth:`collate`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

IGNORE = -100


def target_positions(targets: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(positions, targets) of shape (B, T), T = most targets in a row: each row's target
    positions first (in order), padded with non-target positions whose target is ``IGNORE``."""
    import torch

    keep = targets != IGNORE
    width = max(1, int(keep.sum(dim=1).max()))
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
    return order, targets.gather(1, order)


def answer_start(n: int, targets: int) -> int:
    """Where the newest window's answer starts in a sequence of ``n >= 2`` items: the last
    ``targets`` items, after at least one history item (an instruction fine-tune's example)."""
    return max(1, n - targets)


class TrainingExample(Protocol):
    """Token ids and, per position, the token it must predict (``-100`` where no loss applies)."""

    ids: np.ndarray
    targets: np.ndarray
    user: str | None

    def __len__(self) -> int: ...


class TrainingData:
    """Sequences (user -> catalog item ids, oldest first) and profiles of one stage.

    Subclasses set ``sequences``, ``profiles``, ``attribute_dropout`` and implement
    :meth:`user_examples` and :attr:`pad_id`."""

    sequences: dict[str, tuple[str, ...]]
    profiles: dict[str, dict[str, str]]
    attribute_dropout: float

    @property
    def users(self) -> list[str]:
        return list(self.sequences)

    def subset(self, users: Sequence[str]) -> "TrainingData":
        """The same data restricted to ``users`` (e.g. one federated client's share)."""
        part = copy.copy(self)
        part.sequences = {u: self.sequences[u] for u in users}
        part.profiles = {u: self.profiles[u] for u in users if u in self.profiles}
        return part

    @property
    def pad_id(self) -> int:
        raise NotImplementedError

    def shown_profile(self, user: str, rng: np.random.Generator) -> dict[str, str]:
        """The user's profile with each attribute hidden with probability ``attribute_dropout``."""
        prof = self.profiles.get(user, {})
        if not prof or self.attribute_dropout <= 0:
            return dict(prof)
        keep = rng.random(len(prof)) >= self.attribute_dropout
        return {k: v for (k, v), kept in zip(prof.items(), keep) if kept}

    def user_examples(self, user: str, rng: np.random.Generator) -> list[TrainingExample]:
        raise NotImplementedError

    def catalog_examples(self) -> list[TrainingExample]:
        """Examples that belong to no user (e.g. the reference's catalog title rows); none by default."""
        return []

    def epoch_examples(self, rng: np.random.Generator, users: Sequence[str] | None = None) -> list[TrainingExample]:
        """One epoch's examples for ``users`` (default all), plus :meth:`catalog_examples`."""
        out: list[TrainingExample] = []
        for u in (self.users if users is None else users):
            out.extend(self.user_examples(u, rng))
        out.extend(self.catalog_examples())
        return out

    def collate(self, examples: Sequence[TrainingExample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, targets)`` int64 tensors of shape (B, longest)."""
        import torch

        length = max(len(e) for e in examples)
        ids = np.full((len(examples), length), self.pad_id, dtype=np.int64)
        tgt = np.full((len(examples), length), IGNORE, dtype=np.int64)
        for r, e in enumerate(examples):
            ids[r, :len(e)] = e.ids
            tgt[r, :len(e)] = e.targets
        return torch.from_numpy(ids), torch.from_numpy(tgt)

    def batches(self, examples: Sequence[TrainingExample], batch_size: int, rng: np.random.Generator,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of similar lengths (little padding): shuffle, sort chunks of 50
        batches by length, cut into batches, shuffle the batches."""
        order = rng.permutation(len(examples))
        chunk = batch_size * 50
        groups: list[list[int]] = []
        for s in range(0, len(order), chunk):
            part = sorted(order[s:s + chunk], key=lambda i: len(examples[i]))
            groups.extend(part[j:j + batch_size] for j in range(0, len(part), batch_size))
        for g in rng.permutation(len(groups)):
            yield self.collate([examples[i] for i in groups[g]])

    def n_batches(self, n_examples: int, batch_size: int) -> int:
        chunk = batch_size * 50
        full, rest = divmod(n_examples, chunk)
        return full * 50 + -(-rest // batch_size)
