"""The black-box, list-based membership attack of Zhang et al. (CCS 2021, "Membership
Inference Attacks Against Recommender Systems"), for recommenders without log-probabilities.

Each user is described by the items they interacted with and the items recommended to
them. With item vectors (the recommender's ``embed`` when it has one, else a co-occurrence
factorisation: ``sklearn.decomposition.TruncatedSVD`` of the item x user interaction
matrix of the attacker's *shadow* users), a user's feature vector is the difference
between the centroid of their history and the centroid of their recommendations, plus the
cosine and Euclidean distances between the two centroids. A classifier
(``StandardScaler`` + ``LogisticRegression``) is trained on a shadow split of users whose
membership the attacker knows and scores the disjoint target split.

The shadow split stands in for the paper's shadow recommender: the attacker is assumed to
know the membership of some users (half of each group by default), which is a stronger
attacker than the paper's but needs no second model. Recommended titles are mapped to
catalog items by exact normalised title; titles outside the catalog are left out.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def cooccurrence_vectors(histories: Sequence[Sequence[str]], item_ids: Sequence[str], *, dim: int = 32,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Item vectors (L2-normalised, ``dim`` wide) from TruncatedSVD of the item x user matrix
    of ``histories``; items that never occur get no vector."""
    index = {str(i): j for j, i in enumerate(item_ids)}
    rows, cols = [], []
    for u, hist in enumerate(histories):
        for item in set(map(str, hist)):
            if item in index:
                rows.append(index[item])
                cols.append(u)
    if not rows:
        return {}
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(index), len(histories)))
    k = max(1, min(dim, min(matrix.shape) - 1))
    vecs = TruncatedSVD(n_components=k, random_state=seed).fit_transform(matrix)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
    seen = np.asarray(matrix.sum(axis=1)).ravel() > 0
    return {i: vecs[j] for i, j in index.items() if seen[j]}


def centroid(items: Sequence[str], vectors: Mapping[str, np.ndarray], dim: int) -> np.ndarray | None:
    """Mean vector of the items that have one (None when none has)."""
    vs = [vectors[i] for i in items if i in vectors]
    return np.mean(vs, axis=0) if vs else None


def list_features(history: Sequence[str], recommended: Sequence[str], vectors: Mapping[str, np.ndarray],
                  dim: int) -> np.ndarray:
    """[history centroid - recommendation centroid, cosine distance, Euclidean distance].

    A missing centroid (no known item) gives zeros and distances of 1 and 0."""
    h = centroid(history, vectors, dim)
    r = centroid(recommended, vectors, dim)
    if h is None or r is None:
        return np.concatenate([np.zeros(dim), [1.0, 0.0]])
    diff = h - r
    denom = float(np.linalg.norm(h) * np.linalg.norm(r))
    cos = 1.0 - float(h @ r) / denom if denom > 0 else 1.0
    return np.concatenate([diff, [cos, float(np.linalg.norm(diff))]])


def shadow_split(members: Sequence[str], nonmembers: Sequence[str], *, shadow_share: float = 0.5,
                 seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    """Seeded split of each group into (shadow members, shadow non-members, target members,
    target non-members); ``shadow_share`` of each group goes to the shadow side."""
    rng = np.random.default_rng(seed)

    def cut(group: Sequence[str]) -> tuple[list[str], list[str]]:
        g = list(group)
        order = rng.permutation(len(g))
        k = int(round(shadow_share * len(g)))
        return [g[i] for i in order[:k]], [g[i] for i in order[k:]]

    sm, tm = cut(members)
    sn, tn = cut(nonmembers)
    return sm, sn, tm, tn


def train_and_score(shadow_x: np.ndarray, shadow_y: np.ndarray, target_x: np.ndarray, *,
                    seed: int = 0) -> np.ndarray:
    """Fit the attack classifier on the shadow users; return P(member) for the target users."""
    if len(set(np.asarray(shadow_y).tolist())) < 2:
        raise ValueError("the shadow split needs members and non-members")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    clf.fit(shadow_x, shadow_y)
    return clf.predict_proba(target_x)[:, 1]
