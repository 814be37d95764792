"""The black-box list attack's parts: item vectors, features, the shadow split, the classifier."""

from __future__ import annotations

import numpy as np

from audit.memorisation.list_attack import (cooccurrence_vectors, list_features, shadow_split,
                                            train_and_score)


def test_items_that_co_occur_get_close_vectors():
    histories = [["a", "b"], ["a", "b"], ["c", "d"], ["c", "d"], ["a", "b", "e"], ["c", "d", "e"]]
    vecs = cooccurrence_vectors(histories, ["a", "b", "c", "d", "e", "never"], dim=2)
    assert "never" not in vecs
    assert vecs["a"] @ vecs["b"] > 0.99
    assert abs(vecs["a"] @ vecs["c"]) < 0.5


def test_features_are_the_centroid_difference_and_two_distances():
    vecs = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    f = list_features(["a"], ["b"], vecs, 2)
    assert np.allclose(f[:2], [1.0, -1.0])
    assert np.isclose(f[2], 1.0) and np.isclose(f[3], np.sqrt(2))
    assert np.allclose(list_features(["zzz"], ["b"], vecs, 2), [0, 0, 1, 0])


def test_shadow_split_is_seeded_and_disjoint():
    members, nonmembers = [str(i) for i in range(10)], [str(i) for i in range(10, 16)]
    sm, sn, tm, tn = shadow_split(members, nonmembers, seed=1)
    assert sorted(sm + tm) == sorted(members) and sorted(sn + tn) == sorted(nonmembers)
    assert len(sm) == 5 and len(sn) == 3
    assert shadow_split(members, nonmembers, seed=1) == (sm, sn, tm, tn)


def test_classifier_learns_a_planted_feature_from_the_shadow_users():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = rng.normal(size=(200, 4))
    x[:, 0] += 2.0 * y
    p = train_and_score(x[:100], y[:100], x[100:])
    assert p[y[100:] == 1].mean() > p[y[100:] == 0].mean() + 0.3
