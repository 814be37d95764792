"""Embedding grounding (BIGRec, Bao et al.): map generated text to the catalog item whose
embedding is nearest in L2 distance.

The encoder is either the audited recommender's own ``embed`` (its hidden states,
BIGRec's way) or an offline encoder directory the user installed (any local
``transformers`` encoder; mean-pooled last hidden states, loaded with
``local_files_only`` — nothing comes from a model hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from audit.errors import ConfigError
from audit.interface import Recommender

Encoder = Callable[[Sequence[str]], np.ndarray]


class EmbeddingIndex:
    """Catalog title vectors, encoded once; :meth:`nearest` returns (item id, L2 distance)."""

    def __init__(self, encode: Encoder, titles: Mapping[str, str], batch_size: int = 256) -> None:
        self.encode = encode
        self.item_ids: list[str] = [str(i) for i in titles]
        texts = [str(t) for t in titles.values()]
        chunks = [np.asarray(encode(texts[s:s + batch_size]), dtype=np.float64)
                  for s in range(0, len(texts), batch_size)]
        self.vectors = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 1))
        if self.vectors.shape[0] != len(self.item_ids):
            raise ValueError(f"encoder returned {self.vectors.shape[0]} vectors for {len(self.item_ids)} titles")
        self._sq = np.einsum("ij,ij->i", self.vectors, self.vectors)

    def nearest(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Nearest catalog item and its Euclidean distance (embedding units) per text."""
        if not texts:
            return []
        q = np.asarray(self.encode(list(texts)), dtype=np.float64)
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + self._sq[None, :] - 2.0 * q @ self.vectors.T
        best = d2.argmin(axis=1)
        return [(self.item_ids[b], float(np.sqrt(max(d2[r, b], 0.0)))) for r, b in enumerate(best)]


def recommender_encoder(rec: Recommender) -> Encoder:
    """The recommender's own ``embed`` as an encoder (raises CapabilityMissing without it)."""
    return lambda texts: rec.embed(list(texts))


def local_encoder(path: str | Path, batch_size: int = 64) -> Encoder:
    """A mean-pooled encoder from a local ``transformers`` model directory (no hub access)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"embedding model directory {str(directory)!r} does not exist; give the path of "
                          "a local transformers encoder (config.json, weights, tokenizer files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True, use_kernels=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the embedding model in {str(directory)!r}: {exc}") from None
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    def encode(texts: Sequence[str]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                batch = tokenizer(list(texts[s:s + batch_size]), padding=True, truncation=True,
                                  return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, 1))

    return encode
