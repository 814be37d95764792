"""Training a selective fair soft prompt (PFRec, Wu et al. SIGIR 2022) on any frozen model that
offers a :class:`~audit.training.soft_prompt.SoftPromptTarget` (the reference and ``hf`` adapters
do, through their ``soft_prompt_target``).

The model's weights never change. A prefix of ``prefix_len`` learned input embeddings is
spliced into every prompt right after its first token (``<bos>``); it is trained on neutral
prompts (no profile) of the training users with

    loss_prompt = loss_rec − λ · loss_disc          (adversary = "reverse", PFRec's form)
    loss_prompt = loss_rec + λ · KL(prior ‖ p_disc)  (adversary = "confuse")

where ``loss_rec`` is the model's own language-model loss on the user's training examples in
its own format (the reference: next-item / title targets on sliding windows, as it was
trained; ``hf``: the next item's title after its generate prompt), and ``loss_disc`` the
cross-entropy of a small MLP discriminator predicting the selected attribute (set) value
from the user representation: what ``embed_user`` returns (the reference: the final hidden
state at the ``<rec>`` token; ``hf``: at the prompt's last token). The discriminator is updated every step on detached
representations. ``reverse`` can be met by making the discriminator confidently *wrong*,
which still leaks to a fresh attacker; ``confuse`` pushes its predictions to the class prior
(no information), which is what an auditor's attacker checks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audit.progress import progress_log
from audit.training.data import IGNORE, TrainingData
from audit.training.soft_prompt import SoftPromptTarget

Adversary = Literal["reverse", "confuse"]


class Discriminator(nn.Module):
    """MLP from a user representation (d) to logits over the attribute values; the input is
    standardised per feature over the batch (like the auditor's attacker standardises)."""

    def __init__(self, d: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class PromptTrainingSettings:
    """Optimisation settings (see :class:`audit.fairness.fair_prompt.FairPromptConfig`)."""

    prefix_len: int = 8
    lam: float = 1.0
    epochs: int = 8
    lr: float = 1e-2
    batch_size: int = 64
    disc_hidden: int = 64
    disc_lr: float = 1e-2
    adversary: Adversary = "confuse"
    seed: int = 0


def train_fair_prompt(target: SoftPromptTarget, sequences: Mapping[str, Sequence[str]],
                      labels: Mapping[str, str], settings: PromptTrainingSettings, *,
                      progress: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Learn the prefix (prefix_len, d) for users in ``labels`` (their ``sequences`` are catalog
    item ids, oldest first) against ``target``'s frozen model, which is left unchanged.
    Returns the prefix and a summary."""
    users = [u for u in sequences if u in labels and len(sequences[u]) >= 2]
    classes = sorted({labels[u] for u in users})
    if len(classes) < 2:
        raise ValueError(f"the training users hold fewer than two attribute values: {classes}")
    class_index = {c: i for i, c in enumerate(classes)}
    y_of = {u: class_index[labels[u]] for u in users}
    counts = np.bincount([y_of[u] for u in users], minlength=len(classes)).astype(float)
    prior = torch.tensor(counts / counts.sum(), dtype=torch.float32)

    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    data = target.training_data({u: tuple(sequences[u]) for u in users})
    model = target.module
    was_training = model.training
    model.eval()  # frozen: no dropout, no weight updates
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)

    d = target.width
    prefix = nn.Parameter(torch.randn(settings.prefix_len, d, generator=gen) * target.init_scale)
    disc = Discriminator(d, len(classes), settings.disc_hidden)
    torch.manual_seed(settings.seed)
    for m in disc.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    opt_p = torch.optim.Adam([prefix], lr=settings.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=settings.disc_lr)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    steps = 0
    try:
        base_loss = _plain_rec_loss(target, data, settings.batch_size, settings.seed)
        n_batches = data.n_batches(len(data.epoch_examples(np.random.default_rng(0))), settings.batch_size)
        bar = tqdm(total=n_batches * settings.epochs, desc="fair-prompt", unit="step", disable=not progress,
                   leave=False)
        log = None if progress else progress_log("fair-prompt", "step", n_batches * settings.epochs)
        for epoch in range(settings.epochs):
            examples = data.epoch_examples(rng)
            ex_labels = {id(e): y_of[str(e.user)] for e in examples}
            rec_l, disc_l, disc_acc = [], [], []
            order_rng = np.random.default_rng(rng.integers(1 << 31))
            for batch in _batches(examples, settings.batch_size, order_rng):
                input_ids, targets = data.collate(batch)
                y = torch.tensor([ex_labels[id(e)] for e in batch])
                loss_rec, reps = target.forward(input_ids, targets, prefix)
                reps = reps.float()
                # discriminator step on detached representations
                logits_d = disc(reps.detach())
                loss_d = nn.functional.cross_entropy(logits_d, y)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # prompt step against the (just updated) discriminator
                logits = disc(reps)
                if settings.adversary == "reverse":
                    adv = -nn.functional.cross_entropy(logits, y)
                else:
                    logp = nn.functional.log_softmax(logits, dim=-1)
                    adv = (prior * (prior.clamp_min(1e-12).log() - logp)).sum(dim=-1).mean()
                loss = loss_rec + settings.lam * adv
                opt_p.zero_grad(set_to_none=True)
                loss.backward()
                opt_p.step()
                steps += 1
                rec_l.append(float(loss_rec.detach()))
                disc_l.append(float(loss_d.detach()))
                disc_acc.append(float((logits_d.argmax(-1) == y).float().mean()))
                bar.update(1)
                if log is not None:
                    log.send(steps)
            history.append({"epoch": epoch + 1, "rec_loss": float(np.mean(rec_l)),
                            "disc_loss": float(np.mean(disc_l)), "disc_accuracy": float(np.mean(disc_acc))})
            bar.set_postfix(rec=f"{history[-1]['rec_loss']:.3f}", disc_acc=f"{history[-1]['disc_accuracy']:.2f}")
        bar.close()
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    summary = {
        "users": len(users), "classes": classes, "class_counts": counts.astype(int).tolist(),
        "majority_rate": float(counts.max() / counts.sum()), "steps": steps,
        "seconds": round(time.perf_counter() - t0, 2), "epochs": history,
        "final_rec_loss": history[-1]["rec_loss"] if history else math.nan,
        "base_rec_loss": base_loss,
    }
    return prefix.detach().clone(), summary


@torch.no_grad()
def _plain_rec_loss(target: SoftPromptTarget, data: TrainingData, batch_size: int, seed: int) -> float:
    """The frozen model's own loss (nats per target token) on one draw of the examples, no prefix:
    the reference point for ``rec_loss`` in the summary."""
    examples = data.epoch_examples(np.random.default_rng(seed))
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        input_ids, targets = data.collate(examples[start:start + batch_size])
        loss, _ = target.forward(input_ids, targets, None)
        n = int((targets != IGNORE).sum())
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def _batches(examples: list, batch_size: int, rng: np.random.Generator):
    """Shuffled batches of similar lengths (chunks of 50 batches sorted by length, as StageData)."""
    order = rng.permutation(len(examples))
    chunk = batch_size * 50
    groups = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: len(examples[i]))
        groups.extend(part[j:j + batch_size] for j in range(0, len(part), batch_size))
    for g in rng.permutation(len(groups)):
        yield [examples[i] for i in groups[g]]
