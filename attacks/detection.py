"""Fake-user detection before training, and the ``detect-fakes`` defense variant.

Two unsupervised detectors score every user of a stage's training corpus (higher =
more suspicious); the ``flag_share`` most suspicious users are flagged and removed before
the stage trains. Neither detector sees user ids or the attack's manifest.

- ``pca``: PCA-VarSelect (Mehta & Nejdl 2009; RecAD's ``PCASelectUsers``): users are the
  variables. The binary item x user matrix is z-scored per user, PCA (scikit-learn) finds its
  top ``components`` principal components, and each user's score is the sum of its squared
  loadings on them. Users with the *smallest* scores are flagged: injected profiles are
  nearly uncorrelated with the co-consumption patterns that dominate the top components.
  (RecAD's code takes the item x item covariance instead and projects each user's row on it;
  on implicit sequences that flags the shortest real profiles -- precision 0 against bandwagon
  fakes on ML-100k's fine-tune users -- so the paper's users-as-variables form is used.)
- ``popularity``: a z-score on profile popularity. A user's statistic is the mean
  ``log(1 + popularity)`` of the items in their profile (popularity counted in the same
  corpus); robust z = (x - median) / (1.4826 * MAD). Users with the *lowest* z are flagged:
  profile-injection attacks pad profiles with filler drawn uniformly from the catalog, far
  less popular than what real users consume. (An ``average`` attack, whose filler follows
  popularity, is built to evade it.)

Precision and recall against the known fakes are computed by the ``poisoning`` probe from the
manifests (the fake-user transform's ids, this transform's flagged ids).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.training.recipe import RecipeOps, SequenceTransform
from audit.variants import BuildContext, Variant

if TYPE_CHECKING:
    from scipy import sparse

DetectorName = Literal["pca", "popularity"]
DETECTORS: tuple[str, ...] = ("pca", "popularity")


def user_item_matrix(sequences: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str], sparse.csr_matrix]:
    """(users sorted, items sorted, binary CSR matrix users x items) of the corpus."""
    users = sorted(sequences)
    items = sorted({i for s in sequences.values() for i in s})
    col = {i: j for j, i in enumerate(items)}
    rows, cols = [], []
    for r, u in enumerate(users):
        for i in set(sequences[u]):
            rows.append(r)
            cols.append(col[i])
    data = np.ones(len(rows), dtype=float)
    from scipy import sparse

    return users, items, sparse.csr_matrix((data, (rows, cols)), shape=(len(users), len(items)))


def pca_suspicion(matrix: sparse.csr_matrix, components: int = 3, seed: int = 0) -> np.ndarray:
    """PCA-VarSelect score per user, negated so higher = more suspicious (see module)."""
    n_users, n_items = matrix.shape
    k = max(1, min(components, n_users - 1, n_items - 1))
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    by_user = StandardScaler().fit_transform(matrix.T.toarray().astype(float))  # items x users
    pca = PCA(n_components=k, svd_solver="arpack", random_state=seed).fit(by_user)
    loadings = pca.components_  # k x users
    return -(loadings ** 2).sum(axis=0)


def popularity_suspicion(matrix: sparse.csr_matrix) -> np.ndarray:
    """Negated robust z-score of each user's mean log(1 + item popularity) (see module)."""
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    logpop = np.log1p(popularity)
    lengths = np.asarray(matrix.sum(axis=1)).ravel()
    mean_logpop = np.asarray(matrix @ logpop).ravel() / np.maximum(lengths, 1.0)
    med = float(np.median(mean_logpop))
    mad = float(np.median(np.abs(mean_logpop - med))) * 1.4826
    z = (mean_logpop - med) / (mad if mad > 0 else 1.0)
    return -z


def suspicion(sequences: Mapping[str, Sequence[str]], method: str, components: int = 3,
              seed: int = 0) -> dict[str, float]:
    """user -> suspicion score (higher = more likely fake) under ``method``."""
    if method not in DETECTORS:
        raise ConfigError(f"unknown fake-user detector {method!r}; choose one of {', '.join(DETECTORS)}")
    users, _items, matrix = user_item_matrix(sequences)
    if not users:
        return {}
    scores = pca_suspicion(matrix, components, seed) if method == "pca" else popularity_suspicion(matrix)
    return {u: float(s) for u, s in zip(users, scores)}


def flag_users(sequences: Mapping[str, Sequence[str]], method: str, flag_share: float,
               components: int = 3, seed: int = 0) -> list[str]:
    """The ``ceil(flag_share * n_users)`` most suspicious users (ties broken by user id)."""
    scores = suspicion(sequences, method, components, seed)
    n_flag = min(len(scores), math.ceil(flag_share * len(scores) - 1e-9))
    ranked = sorted(scores, key=lambda u: (-scores[u], u))
    return sorted(ranked[:n_flag])


def precision_recall(flagged: Sequence[str], fakes: Sequence[str]) -> tuple[float, float]:
    """(precision, recall) of ``flagged`` against the known ``fakes`` (NaN where undefined)."""
    f, t = set(flagged), set(fakes)
    tp = len(f & t)
    precision = tp / len(f) if f else math.nan
    recall = tp / len(t) if t else math.nan
    return precision, recall


class InjectsFakeUsers:
    """Marks a sequence transform that adds fake users to a stage (what a detector removes);
    the detection variant cleans the stages such a transform poisons."""


@dataclass(frozen=True)
class DetectFakesTransform(SequenceTransform):
    """Remove the users a detector flags from a stage's corpus (see module docstring)."""

    name: ClassVar[str] = "detect-fakes"
    method: str = "pca"
    flag_share: float = 0.02
    components: int = 3
    stages: tuple[str, ...] | None = ("finetune",)

    def __post_init__(self) -> None:
        if self.method not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.method!r}")

    def apply(self, sequences: dict[str, list[str]], profiles: dict[str, dict[str, str]],
              dataset: Dataset, rng: np.random.Generator,
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], dict[str, Any]]:
        seed = int(rng.integers(0, 2**31 - 1))
        flagged = flag_users(sequences, self.method, self.flag_share, self.components, seed)
        gone = set(flagged)
        kept = {u: s for u, s in sequences.items() if u not in gone}
        kept_profiles = {u: p for u, p in profiles.items() if u not in gone}
        manifest = {"method": self.method, "flag_share": self.flag_share, "n_users": len(sequences),
                    "n_flagged": len(flagged), "flagged_users": flagged}
        return kept, kept_profiles, manifest


class DetectFakesConfig(StrictConfig):
    """``method``: pca (RecAD's PCASelectUsers) | popularity (profile-popularity z-score);
    ``flag_share``: share (0..1) of the stage's users flagged and removed; ``components``:
    principal components of the pca detector; ``stage``: the stage to clean (None = the
    stages a fake-user transform poisons, else the recipe's private-data stage when it has more
    than one stage, else all)."""

    method: DetectorName = "pca"
    flag_share: float = Field(0.02, gt=0, lt=1)
    components: int = Field(3, ge=1)
    stage: str | None = None


class DetectFakesVariant(Variant):
    """Flag suspected fake users and remove them before the stage trains."""

    name: ClassVar[str] = "detect-fakes"
    Config: ClassVar[type[StrictConfig]] = DetectFakesConfig
    trains: ClassVar[bool] = True
    requires: ClassVar[frozenset[str]] = frozenset({"train-transforms"})

    def modify_recipe(self, recipe: RecipeOps, ctx: BuildContext) -> RecipeOps:
        cfg: DetectFakesConfig = self.config  # type: ignore[assignment]
        names = [s.name for s in recipe.stages]
        if cfg.stage is not None:
            if cfg.stage not in names:
                raise ConfigError(f"variant 'detect-fakes': stage {cfg.stage!r} not in the recipe's "
                                  f"stages {names}")
            stages: tuple[str, ...] | None = (cfg.stage,)
        else:
            fakes = [t for t in recipe.sequence_transforms if isinstance(t, InjectsFakeUsers)]
            private = recipe.private_data_stages()
            if fakes:
                stages = fakes[0].stages
            elif len(names) > 1 and private:
                stages = private
            else:
                stages = None
        return recipe.with_transform(DetectFakesTransform(method=cfg.method, flag_share=cfg.flag_share,
                                                          components=cfg.components, stages=stages))
