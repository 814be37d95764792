"""The popularity recommender (``adapter: popularity``): every user gets the catalog's most
interacted-with items, as a recommender a suite can pair with.

``score``: an item's number of training interactions (the leave-one-out train part of the suite's
data set, :attr:`audit.data.dataset.Dataset.item_popularity`), so the utility probe ranks it by the
same one random-tie rule as every model. ``generate``: the ``k`` most popular catalog titles the
user has not consumed (ties by natural item id). The utility probe's ``popularity_*`` figures are
the same baseline; as a recommender it can stand in a pair (``pair: [popularity, my-model]``), so a
gate asks for a paired difference over popularity instead of a margin over chance.

Requests carry titles; a title shared by several catalog items scores as its most popular one. A
title outside the catalog scores 0 (never trained on).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Sequence

import numpy as np

from audit.config import StrictConfig
from audit.data.dataset import natural_key
from audit.errors import ConfigError
from audit.interface import Adapter, Generation, RecRequest


class PopularityConfig(StrictConfig):
    """No options: the ranking follows from the suite's data set."""


class PopularityAdapter(Adapter):
    """Most-popular-first recommendations from the suite's training interactions."""

    Config: ClassVar[type[Any]] = PopularityConfig
    capabilities: frozenset[str] = frozenset({"generate", "score"})
    kind: ClassVar[str] = "popularity"

    def __init__(self, counts: dict[str, int], titles: dict[str, str], data_fingerprint: str) -> None:
        super().__init__()
        self._by_title: dict[str, int] = {}
        for item, title in titles.items():
            self._by_title[title] = max(self._by_title.get(title, 0), int(counts.get(item, 0)))
        order = sorted(titles, key=lambda i: (-int(counts.get(i, 0)), natural_key(i)))
        seen: set[str] = set()
        self._ranked: list[str] = []
        for item in order:
            if titles[item] not in seen:
                seen.add(titles[item])
                self._ranked.append(titles[item])
        self._fingerprint = data_fingerprint
        self.info.update({"items": len(self._ranked), "data": data_fingerprint})

    @classmethod
    def build(cls, config: PopularityConfig, ctx: Any, training_variants: Sequence[Any] = ()) -> "PopularityAdapter":
        if ctx is None:
            raise ConfigError("popularity adapter: needs the suite's data set (build it inside a suite run)")
        ds = ctx.dataset
        return cls(ds.item_popularity, ds.item_titles, ds.fingerprint)

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.asarray([self._by_title.get(t, 0) for t in row], dtype=np.float64) for row in items]

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        """The most popular unconsumed titles; no prompt (the ranking reads no text), raw = the list as JSON."""
        return [Generation(prompt="", raw=json.dumps(items, ensure_ascii=False), items=tuple(items))
                for items in self._lists(reqs, k)]

    def _lists(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for req in reqs:
            consumed = set(req.history)
            picks: list[str] = []
            for title in self._ranked:
                if len(picks) >= k:
                    break
                if title not in consumed:
                    picks.append(title)
            out.append(picks)
        return out

    def identity(self) -> str | None:
        return hashlib.sha256(f"popularity:{self._fingerprint}".encode()).hexdigest()[:16]

    def manifest(self) -> dict[str, Any]:
        return {"adapter": "popularity", "data": self._fingerprint}
