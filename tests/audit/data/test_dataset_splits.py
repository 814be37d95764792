"""The leave-one-out split, the user-group partition, negatives and user samples on :class:`Dataset`."""

from __future__ import annotations

import pandas as pd
import numpy as np
import pytest

from audit.data.dataset import Dataset


@pytest.fixture()
def shuffled_dataset() -> Dataset:
    """Rows out of time order; user 'b' has a timestamp tie; 'c' has 2 interactions, 'd' one."""
    rows = [("a", "3", 30), ("b", "2", 5), ("a", "1", 10), ("c", "4", 1), ("a", "5", 50), ("b", "1", 5),
            ("a", "2", 20), ("b", "4", 9), ("d", "1", 7), ("c", "2", 0), ("a", "4", 40)]
    interactions = pd.DataFrame([(u, i, 3.0, t) for u, i, t in rows],
                                columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [str(i) for i in range(1, 8)], "title": [f"T{i}" for i in range(1, 8)],
                          "year": pd.array([None] * 7, dtype="Int64"), "genres": [""] * 7})
    return Dataset("shuffled", interactions, items)


def test_sequences_are_chronological_with_the_last_item_as_test_and_second_last_as_valid(
        shuffled_dataset: Dataset) -> None:
    a = shuffled_dataset.sequences["a"]
    assert a.train == ("1", "2", "3") and a.valid == "4" and a.test == "5"
    assert a.full == ("1", "2", "3", "4", "5") and a.test_history == ("1", "2", "3", "4")


def test_timestamp_ties_are_broken_by_item_id(shuffled_dataset: Dataset) -> None:
    b = shuffled_dataset.sequences["b"]
    assert b.full == ("1", "2", "4") and b.test == "4"


def _tied_dataset(item_ids: list[str]) -> Dataset:
    """User 'u': one early interaction, then every id in ``item_ids`` at the same timestamp."""
    rows = [("u", "0", 1)] + [("u", i, 5) for i in item_ids]
    interactions = pd.DataFrame([(u, i, 3.0, t) for u, i, t in rows],
                                columns=["user_id", "item_id", "rating", "timestamp"])
    ids = sorted({"0", *item_ids})
    items = pd.DataFrame({"item_id": ids, "title": ids, "year": pd.array([None] * len(ids), dtype="Int64"),
                          "genres": [""] * len(ids)})
    return Dataset("tied", interactions, items)


def test_numeric_item_ids_tied_in_time_are_ordered_by_number_not_by_string() -> None:
    seq = _tied_dataset(["10", "9", "100"]).sequences["u"]
    assert seq.full == ("0", "9", "10", "100")  # string order would hold out "9"


def test_ids_that_are_not_numbers_follow_the_numeric_ones_in_string_order() -> None:
    assert _tied_dataset(["b", "7", "a"]).sequences["u"].full == ("0", "7", "a", "b")


def test_tied_next_share_counts_users_whose_test_and_valid_items_share_a_timestamp(
        shuffled_dataset: Dataset) -> None:
    # 'a' has distinct stamps (40, 50); 'b' holds out '4' at 9 after '2' at 5: no tie.
    assert shuffled_dataset.tied_next_share == 0.0
    assert _tied_dataset(["1", "2"]).tied_next_share == 1.0


def test_the_fingerprint_changes_when_the_split_changes_though_the_rows_do_not(shuffled_dataset: Dataset) -> None:
    assert Dataset("shuffled", shuffled_dataset.interactions, shuffled_dataset.items).fingerprint \
        == shuffled_dataset.fingerprint
    other = Dataset("shuffled", shuffled_dataset.interactions, shuffled_dataset.items)
    other.__dict__["sequences"] = {**shuffled_dataset.sequences,
                                   "a": shuffled_dataset.sequences["a"].__class__("a", ("2", "1", "3"), "4", "5")}
    assert other.fingerprint != shuffled_dataset.fingerprint


def test_users_with_fewer_than_three_interactions_have_no_valid_or_test_item(shuffled_dataset: Dataset) -> None:
    c, d = shuffled_dataset.sequences["c"], shuffled_dataset.sequences["d"]
    assert (c.train, c.valid, c.test) == (("2", "4"), None, None)
    assert (d.train, d.valid, d.test) == (("1",), None, None)
    assert shuffled_dataset.evaluable_users() == ["a", "b"]
    assert shuffled_dataset.sample_users(None, seed=0) == ["a", "b"]


def test_every_users_interactions_are_kept_across_the_split(tiny_dataset: Dataset) -> None:
    for uid, seq in tiny_dataset.sequences.items():
        rows = tiny_dataset.interactions[tiny_dataset.interactions["user_id"] == uid]
        assert seq.full == tuple(rows.sort_values("timestamp")["item_id"])


@pytest.mark.parametrize("pretrain,heldout", [(0.5, 0.1), (0.0, 0.0), (0.3, 0.3), (0.8, 0.15)])
def test_user_groups_partition_all_users(tiny_dataset: Dataset, pretrain: float, heldout: float) -> None:
    groups = tiny_dataset.user_groups(seed=3, pretrain=pretrain, heldout=heldout)
    parts = [set(groups.pretrain), set(groups.finetune), set(groups.heldout)]
    assert set().union(*parts) == set(tiny_dataset.user_ids())
    assert sum(map(len, parts)) == len(tiny_dataset.user_ids())  # disjoint
    n = len(tiny_dataset.user_ids())
    assert len(groups.pretrain) == round(pretrain * n) and len(groups.heldout) == round(heldout * n)
    assert all(groups.group_of(u) == "heldout" for u in groups.heldout)
    assert set(groups.trained) == parts[0] | parts[1]


def test_user_groups_are_seeded_and_reproducible(tiny_dataset: Dataset) -> None:
    same = tiny_dataset.user_groups(seed=1), tiny_dataset.user_groups(seed=1)
    assert same[0] == same[1]
    others = {tiny_dataset.user_groups(seed=s).pretrain for s in range(5)}
    assert len(others) > 1


def test_user_groups_reject_impossible_shares(tiny_dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="pretrain"):
        tiny_dataset.user_groups(pretrain=0.7, heldout=0.3)


def test_negatives_are_never_items_the_user_interacted_with(tiny_dataset: Dataset) -> None:
    for uid in tiny_dataset.user_ids():
        negs = tiny_dataset.negatives(uid, n=15, seed=0)
        assert len(negs) == len(set(negs)) == 15
        assert not set(negs) & set(tiny_dataset.sequences[uid].full)
        assert set(negs) <= set(tiny_dataset.items["item_id"])


def test_negatives_are_seeded_per_user(tiny_dataset: Dataset) -> None:
    assert tiny_dataset.negatives("1", 10, seed=4) == tiny_dataset.negatives("1", 10, seed=4)
    assert tiny_dataset.negatives("1", 10, seed=4) != tiny_dataset.negatives("1", 10, seed=5)
    with pytest.raises(ValueError, match="unseen items"):
        tiny_dataset.negatives("1", 19, seed=0)  # 30 items, 12 seen


def test_popularity_sampled_negatives_favour_popular_unseen_items(tiny_dataset: Dataset) -> None:
    pop = tiny_dataset.item_popularity
    uniform, popular = [], []
    for uid in tiny_dataset.user_ids():
        negs = tiny_dataset.negatives(uid, 8, seed=0, sampling="popularity")
        assert len(set(negs)) == 8 and not set(negs) & set(tiny_dataset.sequences[uid].full)
        assert negs == tiny_dataset.negatives(uid, 8, seed=0, sampling="popularity")
        popular += [pop[i] for i in negs]
        uniform += [pop[i] for i in tiny_dataset.negatives(uid, 8, seed=0)]
    assert np.mean(popular) > np.mean(uniform)
    with pytest.raises(ValueError, match="uniform"):
        tiny_dataset.negatives("1", 3, seed=0, sampling="loudest")


def test_sample_users_is_seeded_sorted_and_drawn_from_evaluable_users(tiny_dataset: Dataset) -> None:
    sample = tiny_dataset.sample_users(10, seed=2)
    assert sample == tiny_dataset.sample_users(10, seed=2) and len(sample) == 10
    assert sample == sorted(sample, key=int) and set(sample) <= set(tiny_dataset.evaluable_users())
    assert tiny_dataset.sample_users(10, seed=3) != sample
    assert tiny_dataset.sample_users(1000, seed=0) == tiny_dataset.evaluable_users()
    among = tiny_dataset.user_groups(seed=0).heldout
    assert set(tiny_dataset.sample_users(2, seed=0, among=among)) <= set(among)


@pytest.mark.slow
def test_real_ml100k_splits_cover_every_rating(ml100k: Dataset) -> None:
    assert sum(len(s.full) for s in ml100k.sequences.values()) == 100_000
    groups = ml100k.user_groups(seed=0)
    assert len(groups.pretrain) + len(groups.finetune) + len(groups.heldout) == 943
    assert not set(ml100k.negatives("1", 99, seed=0)) & set(ml100k.sequences["1"].full)


@pytest.mark.slow
def test_real_ml100k_has_no_repeated_user_item_pair(ml100k: Dataset) -> None:
    """So the CSV loader's duplicates rule has nothing to decide on ML-100k, and its data
    fingerprint does not carry one."""
    assert not ml100k.interactions.duplicated(["user_id", "item_id"]).any()
    assert "duplicates" not in ml100k.meta and "reading" not in ml100k.meta
