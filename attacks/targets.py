"""Target items of a poisoning attack, chosen deterministically from the data set and a seed.

One function, :func:`select_targets`, is used by the attack variants (what they push) and by
the ``poisoning`` probe (what it measures), so probing a *clean* recommender with the same
:class:`TargetSpec` measures exactly the items an attacked one was poisoned with.

Popularity is :attr:`audit.data.dataset.Dataset.item_popularity` (training interactions of the
leave-one-out split). Only items with at least ``min_interactions`` of them are eligible, so a
target is a real, if rare, item the model has seen. ``popularity: low`` draws ``n`` targets
(seeded) from the least popular ``pool_share`` of the eligible items (at least ``n`` of them);
``high`` from the most popular share; ``random`` from all eligible items. ``items`` names the
targets explicitly instead.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.errors import ConfigError


class TargetSpec(StrictConfig):
    """Which items an attack pushes. ``n``: number of targets (1..50); ``popularity``: low |
    high | random; ``pool_share``: share (0..1] of the eligible items, by popularity, drawn
    from; ``min_interactions``: training interactions an item needs to be eligible; ``seed``:
    draw seed; ``items``: explicit catalog item ids (overrides the draw)."""

    n: int = Field(5, ge=1, le=50)
    popularity: Literal["low", "high", "random"] = "low"
    pool_share: float = Field(0.1, gt=0, le=1)
    min_interactions: int = Field(3, ge=0)
    seed: int = 0
    items: list[str] | None = None


def select_targets(dataset: Dataset, spec: TargetSpec) -> tuple[str, ...]:
    """The target item ids of ``spec`` on ``dataset`` (sorted by id; equal inputs, equal output)."""
    catalog = set(dataset.item_titles)
    if spec.items is not None:
        items = [str(i) for i in spec.items]
        unknown = [i for i in items if i not in catalog]
        if unknown or not items:
            raise ConfigError(f"targets.items: {unknown or 'empty list'} not in the catalog of "
                              f"{dataset.name!r} ({len(catalog)} items); give catalog item ids")
        return tuple(sorted(dict.fromkeys(items), key=_id_key))
    pop = dataset.item_popularity
    eligible = sorted((i for i in catalog if pop.get(i, 0) >= spec.min_interactions),
                      key=lambda i: (pop.get(i, 0), _id_key(i)))
    if len(eligible) < spec.n:
        raise ConfigError(f"targets: only {len(eligible)} items of {dataset.name!r} have at least "
                          f"{spec.min_interactions} training interactions, {spec.n} targets asked; "
                          "lower targets.n or targets.min_interactions")
    size = max(spec.n, math.ceil(spec.pool_share * len(eligible)))
    if spec.popularity == "low":
        pool = eligible[:size]
    elif spec.popularity == "high":
        pool = eligible[-size:]
    else:
        pool = eligible
    rng = np.random.default_rng(spec.seed)
    picked = rng.choice(len(pool), size=spec.n, replace=False)
    return tuple(sorted((pool[int(j)] for j in picked), key=_id_key))


def _id_key(item_id: str) -> tuple[int, str]:
    return (int(item_id), item_id) if item_id.isdigit() else (1 << 62, item_id)
