"""The reference network: a small GPT-2 (``transformers.GPT2LMHeadModel``) and the forward
paths every trainer and the adapter share.

Opacus-friendly by construction: :func:`forward_hidden` always passes ``position_ids``
expanded to the batch (GPT-2 would build them with batch size 1, which breaks
per-sample gradients), and tied input/output embeddings are a switch
(``ModelSpec.tie_embeddings``). Soft prompts: :func:`token_embeddings` gives the
prompt's input embeddings, a caller may splice learned vectors into them, and
:func:`forward_hidden` / :func:`forward_logits` run the model from ``inputs_embeds``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from audit.reference.recipe import ModelSpec


class _RightPaddingNeedsNoMask(logging.Filter):
    """Drops transformers' one-time "pass an attention_mask" warning. Training, scoring and
    log-prob batches here are right-padded, and a causal model never attends to padding that
    comes after a position, so the warning does not apply; left-padded generation always
    passes its attention mask (see :mod:`audit.reference.inference`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "recommend passing in an `attention_mask`" not in record.getMessage()


logging.getLogger("transformers.modeling_utils").addFilter(_RightPaddingNeedsNoMask())


def make_model(spec: ModelSpec, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int,
               seed: int) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of the given size (seeded: equal seeds, equal weights)."""
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=spec.n_positions, n_embd=spec.d_model,
        n_layer=spec.n_layer, n_head=spec.n_head, n_inner=spec.d_model * spec.ffn_mult,
        resid_pdrop=spec.dropout, embd_pdrop=spec.dropout, attn_pdrop=spec.attn_dropout,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
        tie_word_embeddings=spec.tie_embeddings, use_cache=True,
        activation_function=spec.activation,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def position_ids_for(batch: int, length: int, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """``(batch, length)`` positions ``offset .. offset+length-1``, expanded to every row."""
    pos = torch.arange(offset, offset + length, device=device)
    return pos.unsqueeze(0).expand(batch, length)


def token_embeddings(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Input embeddings ``(B, L, d)`` of token ids (before positions are added)."""
    return model.transformer.wte(input_ids)


def forward_hidden(model: GPT2LMHeadModel, *, input_ids: torch.Tensor | None = None,
                   inputs_embeds: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states ``(B, L, d)`` (after the last layer norm).

    Right-padded batches need no attention mask (a causal model never looks right);
    left-padded ones must pass ``attention_mask`` and their own ``position_ids``."""
    if inputs_embeds is None:
        if input_ids is None:
            raise ValueError("pass input_ids or inputs_embeds")
        inputs_embeds = token_embeddings(model, input_ids)
    b, length = inputs_embeds.shape[0], inputs_embeds.shape[1]
    if position_ids is None:
        position_ids = position_ids_for(b, length, device=inputs_embeds.device)
    out = model.transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def forward_logits(model: GPT2LMHeadModel, **kwargs: torch.Tensor | None) -> torch.Tensor:
    """Next-token logits ``(B, L, V)``; same arguments as :func:`forward_hidden`."""
    return model.lm_head(forward_hidden(model, **kwargs))


def lm_loss(model: GPT2LMHeadModel, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per target token) of a right-padded batch; ``targets`` holds
    the token each position must predict, -100 where no loss applies. Works under Opacus
    (batch dimension kept in every module)."""
    logits = forward_logits(model, input_ids=input_ids)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=-100)


def lm_loss_at_targets(model: GPT2LMHeadModel, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same value as :func:`lm_loss`, computing output logits only where a target exists
    (faster; flattens the batch, so not for per-sample-gradient trainers)."""
    hidden = forward_hidden(model, input_ids=input_ids)
    keep = targets != -100
    logits = model.lm_head(hidden[keep])
    return nn.functional.cross_entropy(logits.float(), targets[keep])
