"""Helpers for the poisoning tests: a synthetic catalog with a long-tail popularity and taste
groups (so detectors and unpopular targets mean something), and recommenders of known behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attacks.targets import TargetSpec, select_targets
from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.interface import Adapter, Recommender, RecRequest
from audit.parsing import normalize_title
from audit.probes.base import OutputRecorder, ProbeContext
from audit.registry import ADAPTERS
from audit.variants import BuildContext

GENDERS = ("F", "M")


def make_longtail_dataset(n_users: int = 120, n_items: int = 80, seed: int = 0, tastes: int = 3,
                          affinity: float = 4.0) -> Dataset:
    """Users draw 15..30 items with Zipf-like weights (item 1 most popular), ``affinity`` times
    more likely within their taste group (user u and item i share one when u % tastes == (i - 1)
    % tastes), in random order."""
    rng = np.random.default_rng(seed)
    base = 1.0 / np.arange(1, n_items + 1) ** 1.1
    taste_of_item = np.arange(n_items) % tastes
    items = pd.DataFrame({
        "item_id": [str(i) for i in range(1, n_items + 1)],
        "title": [f"Little Film {i}" if i % 3 == 0 else f"Story Number {i}" for i in range(1, n_items + 1)],
        "year": pd.array([1980 + i % 20 for i in range(1, n_items + 1)], dtype="Int64"),
        "genres": ["Drama" if i % 2 else "Comedy" for i in range(1, n_items + 1)],
    })
    rows = []
    for u in range(1, n_users + 1):
        weights = base * np.where(taste_of_item == u % tastes, affinity, 1.0)
        size = int(rng.integers(15, 31))
        chosen = rng.choice(n_items, size=size, replace=False, p=weights / weights.sum()) + 1
        for t, i in enumerate(chosen):
            rows.append((str(u), str(i), 4.0, 1_000_000 + 1000 * u + t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame({"user_id": [str(u) for u in range(1, n_users + 1)],
                          "gender": [GENDERS[u % 2] for u in range(1, n_users + 1)],
                          "age": ["18-24" if u % 3 else "25-34" for u in range(1, n_users + 1)]})
    return Dataset("longtail", interactions, items, users, source="synthetic")


def probe_context(dataset: Dataset, probe: str = "poisoning") -> ProbeContext:
    return ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0,
                        recorder=OutputRecorder("rec", probe))


class PopularityScorer(Recommender):
    """Scores each candidate by its training popularity (a clean, attack-free recommender);
    ``boost`` adds a bonus to the given titles, optionally only for users of one gender."""

    capabilities = frozenset({"score"})

    def __init__(self, dataset: Dataset, boost: dict[str, float] | None = None,
                 only_gender: str | None = None) -> None:
        super().__init__()
        self.pop = {dataset.item_titles[i]: float(c) for i, c in dataset.item_popularity.items()}
        self.boost = dict(boost or {})
        self.only_gender = only_gender

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for req, row in zip(reqs, items):
            boosted = self.only_gender is None or req.profile.get("gender") == self.only_gender
            out.append(np.array([self.pop.get(t, 0.0) + (self.boost.get(t, 0.0) if boosted else 0.0)
                                 for t in row]))
        return out


def popularity_by_title(dataset: Dataset) -> dict[str, float]:
    """{normalised catalog title: training interactions} of every item."""
    return {normalize_title(dataset.item_titles[i]): float(c) for i, c in dataset.item_popularity.items()}


class TextSensitiveScorer(Recommender):
    """Popularity of the catalog item a title names (exact after normalisation; unknown titles
    score -1), plus ``bonus`` for every '!' in the title: a recommender an item-text attack can move."""

    capabilities = frozenset({"score"})

    def __init__(self, dataset: Dataset, bonus: float = 1000.0) -> None:
        super().__init__()
        self.pop = popularity_by_title(dataset)
        self.bonus = bonus

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.array([self.pop.get(normalize_title(t), -1.0) + self.bonus * t.count("!") for t in row])
                for row in items]


class LengthBiasedScorer(Recommender):
    """A title-likelihood stand-in: every word of a title costs ``per_word`` (a summed log
    likelihood falls with each token), plus a small popularity term for a catalog title. It
    ranks short titles first: a recommender an attacker who deletes words can move."""

    capabilities = frozenset({"score"})

    def __init__(self, dataset: Dataset, per_word: float = 5.0) -> None:
        super().__init__()
        self.pop = popularity_by_title(dataset)
        self.per_word = per_word

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.array([0.01 * self.pop.get(normalize_title(t), 0.0) - self.per_word * len(t.split())
                          for t in row]) for row in items]


class PopularityAdapter(PopularityScorer, Adapter):
    """The popularity scorer as a suite adapter (``test-popularity``); ``boost_targets`` plants a
    promotion of the targets of ``targets``."""

    class Config(StrictConfig):
        boost_targets: bool = False
        targets: TargetSpec = TargetSpec(n=3, seed=2)

    @classmethod
    def build(cls, config: PopularityAdapter.Config, ctx: BuildContext,
              training_variants: Sequence[Any]) -> PopularityAdapter:
        targets = select_targets(ctx.dataset, config.targets)
        boost = {ctx.dataset.item_titles[t]: 1e6 for t in targets} if config.boost_targets else {}
        return cls(ctx.dataset, boost=boost)


def register() -> None:
    """Register the test adapter (idempotent)."""
    ADAPTERS.register("test-popularity", PopularityAdapter, "popularity scorer for the poisoning tests")
