"""A recommender that wraps another and forwards exactly the capabilities it declares."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from audit.interface import Generation, RecRequest, Recommender


class DelegatingRecommender(Recommender):
    """Forwards ``inner``'s capabilities except those in ``withheld``; subclasses override what
    they change (usually :meth:`generate_detailed`). Nothing else of ``inner`` shows through (no
    attribute forwarding): a probe sees the declared capabilities, ``info``, ``manifest``,
    ``baseline``, ``calibration_reference``, ``sequence_format`` and ``answer_items``, so wrappers
    stack.

    ``withheld``: capabilities a wrapper cannot pass through without bypassing what it changes.
    Here ``constrain`` and ``soft-prompt`` (their protocols drive the inner model's decoding or
    prompts), so a variant that needs one must come before any wrapping variant; subclasses add
    their own. Calling a withheld capability raises CapabilityMissing."""

    withheld: ClassVar[frozenset[str]] = frozenset({"constrain", "soft-prompt"})

    def __init__(self, inner: Recommender) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.capabilities = frozenset(inner.capabilities) - self.withheld
        self.info = dict(inner.info)
        self.sequence_format = inner.sequence_format
        self.answer_items = inner.answer_items
        self.calibration_reference = inner.calibration_reference

    @property
    def manifest(self) -> Mapping[str, Any] | None:  # type: ignore[override]
        return self.inner.manifest

    @property
    def baseline(self) -> Recommender | None:  # type: ignore[override]
        return self.inner.baseline

    def render_sequence(self, items: Sequence[str], profile: Mapping[str, str],
                        titles: Mapping[str, str]) -> tuple[str, str]:
        return self.inner.render_sequence(items, profile, titles)

    def _through(self, capability: str) -> Recommender:
        """``inner``, when this wrapper forwards ``capability``; else CapabilityMissing."""
        if capability not in self.capabilities:
            raise self._missing(capability)
        return self.inner

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        return self._through("generate").generate_detailed(reqs, k)

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [list(g.items) for g in self.generate_detailed(reqs, k)]

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return self._through("score").score(reqs, items)

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._through("token-logprobs").token_logprobs(texts)

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return self._through("token-stats").token_logprob_stats(texts)

    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        return self._through("answer-logprobs").answer_logprobs(reqs, answers, stats=stats)

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        return self._through("answer-generate").answer_generate(reqs, max_items)

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        return self._through("embed-user").embed_user(reqs)

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        return self._through("embed").embed(titles)

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        return self._through("complete").complete(prompts, max_new_tokens)

    def close(self) -> None:
        self.inner.close()
