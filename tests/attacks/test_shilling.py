"""Fake-user profiles hold the targets, have the documented sizes and sources, and the budget
is nested and seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from attacks.detection import (
    DetectFakesConfig,
    DetectFakesTransform,
    DetectFakesVariant,
)
from attacks.shilling import FakeUsersConfig, FakeUsersTransform, FakeUsersVariant
from attacks.targets import TargetSpec
from audit.errors import ConfigError
from audit.reference.recipe import TrainingRecipe
from audit.variants import BuildContext

TARGETS = ("70", "75", "80")


def _corpus(ds):
    seqs = {u: list(s.train) for u, s in ds.sequences.items()}
    return seqs, {u: dict(ds.user_profiles[u]) for u in seqs}


def _apply(ds, seed=0, **kw):
    seqs, profiles = _corpus(ds)
    out, prof, m = FakeUsersTransform(targets=TARGETS, **kw).apply(seqs, profiles, ds, np.random.default_rng(seed))
    return seqs, out, prof, m


def test_zero_share_is_the_identity(longtail):
    seqs, out, _, m = _apply(longtail, share=0.0)
    assert out == seqs and m["n_fake_users"] == 0 and m["fake_users"] == []


@pytest.mark.parametrize("kind", ["random", "average", "bandwagon", "segment"])
def test_every_fake_holds_all_targets_and_has_the_mean_real_length(longtail, kind):
    seqs, out, prof, m = _apply(longtail, kind=kind, share=0.05)
    assert m["n_fake_users"] == round(0.05 * len(seqs)) == len(m["fake_users"])
    mean_len = round(float(np.mean([len(s) for s in seqs.values()])))
    assert m["filler_size"] == mean_len
    for uid in m["fake_users"]:
        assert uid not in seqs
        assert set(TARGETS) <= set(out[uid])
        assert len(out[uid]) == len(set(out[uid])) == mean_len + len(TARGETS)
        assert set(prof[uid]) == {"gender", "age"}  # copied from a real user
    for u in seqs:
        assert out[u] == seqs[u]


def test_bandwagon_selects_popular_items_and_random_filler_does_not(longtail):
    seqs, _, _, _ = _apply(longtail, share=0.0)
    counts = Counter(i for s in seqs.values() for i in s)
    top = {i for i, _ in counts.most_common(10)}
    _, out_b, _, mb = _apply(longtail, kind="bandwagon", share=0.1, selected_share=0.5, popular_pool=10)
    _, out_r, _, mr = _apply(longtail, kind="random", share=0.1)
    share_top_b = np.mean([len(top & set(out_b[u])) for u in mb["fake_users"]])
    share_top_r = np.mean([len(top & set(out_r[u])) for u in mr["fake_users"]])
    assert mb["selected_size"] == round(0.5 * mb["filler_size"])
    assert share_top_b >= min(10, mb["selected_size"]) > share_top_r


def test_average_filler_follows_popularity(longtail):
    seqs, _, _, _ = _apply(longtail, share=0.0)
    counts = Counter(i for s in seqs.values() for i in s)
    _, out_a, _, ma = _apply(longtail, kind="average", share=0.2)
    _, out_r, _, mr = _apply(longtail, kind="random", share=0.2)

    def mean_pop(out, fakes):
        return np.mean([counts[i] for u in fakes for i in out[u] if i not in TARGETS])

    assert mean_pop(out_a, ma["fake_users"]) > 1.5 * mean_pop(out_r, mr["fake_users"])


def test_segment_attack_uses_the_targets_genre(longtail):
    _, out, _, m = _apply(longtail, kind="segment", share=0.1, selected_share=0.5, popular_pool=10)
    genres = dict(zip(longtail.items["item_id"], longtail.items["genres"]))
    assert m["segment_genre"] in {genres[t] for t in TARGETS}
    for u in m["fake_users"]:
        in_seg = sum(genres[i] == m["segment_genre"] for i in out[u] if i not in TARGETS)
        assert in_seg >= m["selected_size"]


def test_budget_sweep_is_nested_and_seeded(longtail):
    _, small, _, ms = _apply(longtail, share=0.05, seed=4)
    _, large, _, ml = _apply(longtail, share=0.2, seed=4)
    assert set(ms["fake_users"]) < set(ml["fake_users"])
    assert all(small[u] == large[u] for u in ms["fake_users"])
    _, again, _, _ = _apply(longtail, share=0.05, seed=4)
    assert again == small


def test_variant_poisons_the_finetune_stage_and_detection_runs_after(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    fake = FakeUsersVariant(FakeUsersConfig(targets=TargetSpec(n=2)))
    detect = DetectFakesVariant(DetectFakesConfig(method="popularity"))
    for order in ((fake, detect), (detect, fake)):
        recipe = TrainingRecipe()
        for v in order:
            recipe = v.modify_recipe(recipe, ctx)
        assert [s.name for s in recipe.stages] == ["pretrain", "finetune"]
        kinds = [type(t) for t in recipe.sequence_transforms]
        assert kinds == [FakeUsersTransform, DetectFakesTransform]
        assert all(t.stages == ("finetune",) for t in recipe.sequence_transforms)


def test_full_stage_needs_a_one_stage_recipe(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    recipe = FakeUsersVariant(FakeUsersConfig(stage="full")).modify_recipe(TrainingRecipe(), ctx)
    assert [s.name for s in recipe.stages] == ["full"] and recipe.sequence_transforms[0].stages is None
    with pytest.raises(ConfigError, match="one-stage"):
        FakeUsersVariant(FakeUsersConfig(stage="full")).modify_recipe(TrainingRecipe().two_stage(), ctx)


def test_placement_end_closes_each_fake_with_a_rotating_target(longtail):
    _, out, _, m = _apply(longtail, share=0.1, placement="end")
    for i, uid in enumerate(m["fake_users"]):
        seq = out[uid]
        assert seq[-1] == TARGETS[i % len(TARGETS)]
        assert set(seq[-len(TARGETS):]) == set(TARGETS)
    _, out_r, _, mr = _apply(longtail, share=0.1, placement="random")
    tails = [set(out_r[u][-len(TARGETS):]) == set(TARGETS) for u in mr["fake_users"]]
    assert not all(tails)


def test_target_repeats_add_occurrences_of_every_target(longtail):
    _, out, _, m = _apply(longtail, share=0.1, target_repeats=4)
    for uid in m["fake_users"]:
        counts = Counter(out[uid])
        assert all(counts[t] == 4 for t in TARGETS)
        assert len(out[uid]) == m["profile_length"] == m["filler_size"] + 4 * len(TARGETS)
