"""What training a soft prompt needs from a frozen model: the :class:`SoftPromptTarget` protocol
(each model leaf implements it; :func:`audit.fairness.soft_prompt.train_fair_prompt` trains
against it) and the model-independent tensor helpers its implementations share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from audit.training.data import IGNORE

if TYPE_CHECKING:
    import torch
    from torch import nn

    from audit.training.data import TrainingData


class SoftPromptTarget(Protocol):
    """A frozen model as the fair-prompt trainer sees it: ``module`` (frozen while training),
    ``width`` (d of the prefix vectors), ``init_scale`` (std of the prefix's random start, the
    model's embedding scale), the neutral training examples of some users, and one forward."""

    module: "nn.Module"
    width: int
    init_scale: float

    def training_data(self, sequences: Mapping[str, Sequence[str]]) -> "TrainingData":
        """Examples (neutral prompts, no profile) for users -> catalog item ids, oldest first."""
        ...

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor,
                prefix: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the target tokens, user representations (B, d)) of a
        right-padded batch, the prefix spliced after each prompt's first token (None: none)."""
        ...


def targets_after_prefix(targets: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """``targets`` (B, L) aligned with a prompt whose prefix of ``prefix_len`` vectors sits after
    the first token: (B, L + P), no target on the prefix positions."""
    import torch

    pad = torch.full((targets.shape[0], prefix_len), IGNORE, dtype=targets.dtype, device=targets.device)
    return torch.cat([targets[:, :1], pad, targets[:, 1:]], dim=1)


def splice_prefix(embeds: torch.Tensor, prefix: torch.Tensor, at: int = 1) -> torch.Tensor:
    """Insert ``prefix`` (P, d) into every row of ``embeds`` (B, L, d) before position ``at``."""
    import torch

    b = embeds.shape[0]
    return torch.cat([embeds[:, :at], prefix.unsqueeze(0).expand(b, -1, -1), embeds[:, at:]], dim=1)


