"""The one interface every audited recommender implements.

Batch-first and capability-declared, in the spirit of lm-evaluation-harness's
``LM``. A probe names the capabilities it needs; a recommender that lacks one
gets a ``skip`` result with the reason, never a made-up number.

Capabilities:

- ``generate``: top-K item titles for each request (open generation, or a ranking
  of ``candidates`` when a request has them);
- ``score``: a log-likelihood-like score (higher is better) per candidate item;
- ``token-logprobs``: per-token log-probabilities (natural log) of raw texts;
- ``token-stats``: with each token's log-probability, the mean and standard deviation of log p
  under the model's next-token distribution at that position (Min-K%++ needs them);
- ``answer-logprobs``: per-token log-probabilities of given item titles written as the model's own
  answer to a request's prompt (what an instruction fine-tune's loss is on: the memorisation
  probes score an ``hf`` fine-tune's training windows this way), with optional Min-K%++ statistics;
- ``answer-generate``: the model's own greedy answer (item titles) to a request's prompt, the same
  prompt ``answer-logprobs`` scores after (what extraction reads from an instruction fine-tune);
- ``embed-user``: a vector representation of the user behind each request;
- ``embed``: a vector per item title (used for grounding);
- ``complete``: free-text completion of raw prompts (extraction, data-set recall);
- ``train``: the adapter can be (re)trained by training variants;
- ``train-stages``: staged training with the private trainers (pretrain / fine-tune stages,
  ``dp``, ``federated``; what the privacy and poisoning variants edit);
- ``train-lora``: LoRA fine-tuning of a pretrained LLM (the ``lora`` variant);
- ``train-private``: a private fine-tune stage the ``dp`` trainer can run (the ``dp`` variant):
  the reference's fine-tune stage, an ``hf`` model's LoRA stage;
- ``train-federated``: a private fine-tune stage the ``federated`` trainer can run (the
  ``federated`` variant; clients exchange the trained part only: every reference weight, an
  ``hf`` model's LoRA weights);
- ``train-transforms``: a recipe with sequence transforms that declares its private-data stage
  and its public pre-training form (:class:`audit.training.recipe.RecipeOps`: ``private_data_stages``,
  ``with_private_stage``, ``with_public_pretrain``): the ``fake-users``, ``detect-fakes``, ``backdoor`` and ``canaries``
  variants (the reference; an ``hf`` model's LoRA recipe);
- ``constrain``: generation can be restricted to catalog items (the constrained-decoding variant);
- ``soft-prompt``: a learned soft prefix can be carried (the fair-prompt variant).

What keeps each capability (the methods to override, or the protocol to satisfy) is declared in
:mod:`audit.capabilities`.

Variants declare the capabilities they need (``Variant.requires``); a suite asking for a variant
its adapter does not declare fails at load time, naming the adapters that can.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from audit.errors import CapabilityMissing

CAPABILITIES: frozenset[str] = frozenset(
    {"generate", "score", "token-logprobs", "token-stats", "answer-logprobs", "answer-generate", "embed-user", "embed", "complete",
     "train", "train-stages", "train-lora", "train-private", "train-federated", "train-transforms", "constrain",
     "soft-prompt"}
)


@dataclass(frozen=True)
class RecRequest:
    """One recommendation request.

    ``history`` holds item titles, oldest first. ``profile`` holds the attributes
    shown in the prompt (empty means a neutral prompt). ``candidates`` is empty for
    open generation, or the item titles to rank. ``user`` is an identifier for
    logging only and is never shown to the model.
    """

    history: tuple[str, ...]
    profile: Mapping[str, str] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    user: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "profile", MappingProxyType(dict(self.profile)))

    def __hash__(self) -> int:
        return hash((self.history, tuple(sorted(self.profile.items())), self.candidates, self.user))

    def to_json(self) -> dict[str, Any]:
        return {"history": list(self.history), "profile": dict(self.profile),
                "candidates": list(self.candidates), "user": self.user}

    @property
    def history_id(self) -> str:
        """The content address of ``history`` (:func:`history_id`): ``outputs.jsonl`` stores each
        distinct history once under it."""
        return history_id(self.history)


def history_id(titles: Sequence[str]) -> str:
    """Content address of a history: 16 hex characters of SHA-256 over the titles in order
    (equal histories, equal ids; the order counts)."""
    return hashlib.sha256("\x1f".join(titles).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Generation:
    """What one ``generate`` call produced for one request: the prompt the model
    saw, its raw text and the parsed list of item titles. ``failed``: why no answer came back
    (e.g. an endpoint's time-out after its retries), None when the model answered; a failed
    generation has no items, and probes never read it as the model's answer (see
    :meth:`audit.probes.base.ProbeContext.generate`)."""

    prompt: str
    raw: str
    items: tuple[str, ...]
    failed: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))


def titles_sequence(items: Sequence[str], profile: Mapping[str, str], titles: Mapping[str, str]) -> tuple[str, str]:
    """The plain-text form of an item sequence for any language model: ``"User (<profile>)
    watched:\n"`` (or ``"A user watched:\n"``) as the context, one title per line as the body."""
    prof = ", ".join(f"{k}: {v}" for k, v in sorted(profile.items()))
    context = (f"User ({prof}) watched:\n" if prof else "A user watched:\n")
    return context, "\n".join(titles[i] for i in items)


class Recommender:
    """Base class for recommenders. Subclasses set ``name`` and ``capabilities``
    and implement the methods their capabilities promise.

    Only ``generate`` (or ``generate_detailed``) is needed for black-box probes.
    """

    name: str = "recommender"
    capabilities: frozenset[str] = frozenset()
    #: extra information for the report (variant, training summary, accounted epsilon ...)
    info: dict[str, Any]
    kind: ClassVar[str] = "base"
    #: how the memorisation probes write a user's item sequence for ``token_logprobs``
    #: (:meth:`render_sequence`): ``titles`` (one catalog title per line), or the name of the
    #: model's own format when it overrides :meth:`render_sequence` (the reference: ``reference``,
    #: its item tokens)
    sequence_format: str = "titles"
    #: True where ``generate`` can only return catalog items (an item-token model's closed
    #: vocabulary): the hallucination probe still measures, and reports the rate as 0 by construction
    closed_catalog: bool = False
    #: False where the model never reads item titles (an item-token model reads item ids): variants
    #: that act by rewriting titles (``item-text``) refuse it instead of reporting a meaningless effect
    reads_item_text: bool = True
    #: how many trailing items of a training window the model's fine-tune learnt to answer (an ``hf``
    #: LoRA's ``targets``); the memorisation probes' ``answers`` path splits each scored sequence
    #: the same way. None where the harness did not fine-tune the model
    answer_items: int | None = None
    #: the training manifest (users per stage, steps, seconds, loss, a DP account) of a model the
    #: harness trained; None for models it did not train
    manifest: Mapping[str, Any] | None = None
    #: the same model without what a wrapper changes (the item-text attack's comparison), or None
    baseline: "Recommender | None" = None
    #: a model trained on users disjoint from this one's, attached by the ``mia-reference`` variant
    calibration_reference: "Recommender | None" = None

    def __init__(self) -> None:
        self.info = {}

    # -- capability helpers -------------------------------------------------
    def render_sequence(self, items: Sequence[str], profile: Mapping[str, str],
                        titles: Mapping[str, str]) -> tuple[str, str]:
        """(context, body) texts of an item sequence (catalog ids, oldest first) in this model's
        ``sequence_format``, as the memorisation probes score it through ``token_logprobs``: the
        body's log-probabilities are those of ``context + body`` beyond ``context``'s tokens (the
        context must end at a token boundary). Default (``titles``): see :func:`titles_sequence`."""
        return titles_sequence(items, profile, titles)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def _missing(self, capability: str) -> CapabilityMissing:
        return CapabilityMissing(
            f"{type(self).__name__} ({self.name!r}) does not implement {capability!r}; "
            f"it declares {sorted(self.capabilities)}. Implement `{capability}` to enable it."
        )

    # -- the interface --------------------------------------------------------
    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        """Top-``k`` item titles per request (best first). May return fewer or
        malformed entries: probes count that, they do not crash on it."""
        return [list(g.items) for g in self.generate_detailed(reqs, k)]

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        """Like :meth:`generate`, with the prompt and raw text kept for the report.

        The default wraps :meth:`generate`; adapters that see real prompts and raw
        model text override this instead."""
        if type(self).generate is Recommender.generate:
            raise self._missing("generate")
        lists = self.generate(reqs, k)
        return [
            Generation(prompt=json.dumps(r.to_json(), ensure_ascii=False),
                       raw=json.dumps(list(items), ensure_ascii=False),
                       items=tuple(str(i) for i in items))
            for r, items in zip(reqs, lists)
        ]

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """A score per item for each request (float64, higher = more likely)."""
        raise self._missing("score")

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Natural-log probability of each token of each text given its prefix
        (the first token is conditioned on the model's start token)."""
        raise self._missing("token-logprobs")

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per text: (log p of each token, mu, sigma), where mu and sigma are the mean and standard
        deviation of log p under the next-token distribution at that position (natural log)."""
        raise self._missing("token-stats")

    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Per request: (log p of each token of ``answers[i]``, the item titles written in order as this
        model's own answer to ``reqs[i]``'s prompt; with ``stats``, mu and sigma of log p under the
        next-token distribution at each of those tokens, else None, None). Natural log."""
        raise self._missing("answer-logprobs")

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        """Per request: this model's greedy answer to the prompt ``answer_logprobs`` scores after (for a
        fine-tune, its training prompt), parsed into at most ``max_items`` item titles."""
        raise self._missing("answer-generate")

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        """Array of shape (len(reqs), d): the user representation per request."""
        raise self._missing("embed-user")

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """Array of shape (len(titles), d): one vector per item title."""
        raise self._missing("embed")

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy free-text continuation of each raw prompt."""
        raise self._missing("complete")

    def close(self) -> None:
        """Release resources (HTTP sessions, servers)."""

    def identity(self) -> str | None:
        """A digest that fixes every answer of this recommender (weights, trained parts, options,
        prompts), or None where that is not known (the default: wrappers, remote endpoints).
        Within one run, two recommenders with one identity answer alike, so a measurement of
        one may serve the other (the membership probe reuses the untuned base's scores across
        the fine-tunes it calibrates)."""
        return None

    def untrained(self, ctx: Any) -> "Recommender | None":
        """The same model as it was before the harness fine-tuned it (an ``hf`` model's base
        checkpoint without its LoRA), built afresh in the ``BuildContext`` ``ctx``; None where
        there is none (a model not fine-tuned from a pretrained checkpoint here). The natural
        calibration model of a fine-tune (``mia-reference: {base: true}``)."""
        return None


class Adapter(Recommender):
    """A recommender a suite entry names (``adapter: NAME``): ``Config`` (a pydantic model) validates
    the entry's options at load time, and ``build`` makes the recommender, applying the training
    variants listed before it (``training_variants``; an adapter that cannot train gets none, since
    the suite checks ``Variant.requires`` against :meth:`capabilities_for` first). Built-in and plugin adapters
    subclass this; the runner uses nothing else of them before they are built."""

    Config: ClassVar[type[Any]]

    @classmethod
    def build(cls, config: Any, ctx: Any, training_variants: Sequence[Any] = ()) -> "Adapter":
        """The recommender for a validated ``config`` in a ``BuildContext`` ``ctx``."""
        raise NotImplementedError(f"{cls.__name__}.build")

    @classmethod
    def check(cls, config: Any, suite_dir: Path | None = None) -> None:
        """Resolve at load time what a validated ``config`` names outside the suite file (modules,
        functions, files; ``suite_dir``: where relative names are looked up first), without building
        anything heavy; raise ConfigError naming what to fix. The default checks nothing."""

    @classmethod
    def capabilities_for(cls, config: Any) -> frozenset[str]:
        """The capabilities a recommender built from ``config`` declares (what the suite checks
        variants against at load time); the class's ``capabilities`` unless an option changes them."""
        return frozenset(cls.capabilities)

