"""Both detectors flag injected profiles far above the base rate, and the transform removes
what it flags."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.detection import (
    DetectFakesTransform,
    flag_users,
    precision_recall,
    suspicion,
)
from attacks.shilling import FakeUsersTransform
from audit.errors import ConfigError


def _poisoned(ds, kind, share=0.05):
    seqs = {u: list(s.train) for u, s in ds.sequences.items()}
    profiles = {u: dict(ds.user_profiles[u]) for u in seqs}
    out, prof, m = FakeUsersTransform(kind=kind, share=share, targets=("70", "75")).apply(
        seqs, profiles, ds, np.random.default_rng(0))
    return out, prof, m


@pytest.mark.parametrize("method", ["pca", "popularity"])
@pytest.mark.parametrize("kind", ["random", "bandwagon", "segment"])
def test_detector_precision_beats_the_base_rate(longtail, method, kind):
    seqs, _, m = _poisoned(longtail, kind)
    fakes = m["fake_users"]
    base_rate = len(fakes) / len(seqs)
    flagged = flag_users(seqs, method, flag_share=2 * base_rate)
    precision, recall = precision_recall(flagged, fakes)
    assert precision > 3 * base_rate
    assert recall >= 0.5


def test_suspicion_is_deterministic_and_unknown_detector_refused(longtail):
    seqs, _, _ = _poisoned(longtail, "bandwagon")
    assert suspicion(seqs, "pca") == suspicion(seqs, "pca")
    with pytest.raises(ConfigError, match="pca, popularity"):
        suspicion(seqs, "oracle")


def test_transform_removes_flagged_users_and_records_them(longtail):
    seqs, profiles, _ = _poisoned(longtail, "random")
    out, prof, manifest = DetectFakesTransform(method="popularity", flag_share=0.1).apply(
        seqs, profiles, longtail, np.random.default_rng(0))
    flagged = manifest["flagged_users"]
    assert len(flagged) == manifest["n_flagged"] == int(np.ceil(0.1 * len(seqs)))
    assert not set(flagged) & set(out) and not set(flagged) & set(prof)
    assert set(out) | set(flagged) == set(seqs)


def test_precision_recall_definitions():
    assert precision_recall(["a", "b"], ["b", "c", "d"]) == (0.5, pytest.approx(1 / 3))
    p, r = precision_recall([], [])
    assert np.isnan(p) and np.isnan(r)
