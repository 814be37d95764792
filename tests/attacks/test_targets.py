"""Target selection is deterministic, popularity-aware and validated."""

from __future__ import annotations

import pytest

from attacks.targets import TargetSpec, select_targets
from audit.errors import ConfigError


def test_same_spec_same_targets_and_seed_changes_them(longtail):
    a = select_targets(longtail, TargetSpec(n=3, seed=0))
    assert a == select_targets(longtail, TargetSpec(n=3, seed=0))
    assert len(a) == 3 and len(set(a)) == 3
    draws = {select_targets(longtail, TargetSpec(n=3, seed=s, pool_share=0.5)) for s in range(5)}
    assert len(draws) > 1


def test_low_popularity_targets_come_from_the_tail_and_have_interactions(longtail):
    pop = longtail.item_popularity
    spec = TargetSpec(n=3, popularity="low", pool_share=0.2, min_interactions=2)
    low = select_targets(longtail, spec)
    eligible = sorted(c for c in pop.values() if c >= 2)
    cutoff = eligible[max(3, int(0.2 * len(eligible) + 0.999)) - 1]
    assert all(2 <= pop[t] <= cutoff for t in low)
    high = select_targets(longtail, TargetSpec(n=3, popularity="high", pool_share=0.2))
    assert min(pop[t] for t in high) > max(pop[t] for t in low)


def test_explicit_items_are_used_and_unknown_ids_refused(longtail):
    assert select_targets(longtail, TargetSpec(items=["7", "3"])) == ("3", "7")
    with pytest.raises(ConfigError, match="not in the catalog"):
        select_targets(longtail, TargetSpec(items=["3", "99999"]))


def test_too_few_eligible_items_is_a_config_error(longtail):
    with pytest.raises(ConfigError, match="lower targets.n"):
        select_targets(longtail, TargetSpec(n=5, min_interactions=10_000))
