"""The suite's ``dataset:`` spec: validation, name lookup, CSV paths relative to the suite, audited users."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.config import validate_config
from audit.data.fetch import fetch_dataset
from audit.data.loaders import DATASETS, DatasetSpec, clear_memo, load_dataset, load_dataset_from_spec
from audit.errors import ConfigError, DatasetMissingError


@pytest.fixture()
def suite_dir(tmp_path: Path) -> Path:
    """A suite directory with data/ratings.csv and data/films.csv (the user's own names)."""
    data = tmp_path / "suite" / "data"
    data.mkdir(parents=True)
    rows = "".join(f"u{u},m{(u + k) % 6},{1 + k % 5},{100 * u + k}\n" for u in range(8) for k in range(4))
    (data / "ratings.csv").write_text("uid,movie,stars,ts\n" + rows)
    (data / "films.csv").write_text("id,name\n" + "".join(f"m{i},Film {i} ({1990 + i})\n" for i in range(6)))
    (data / "people.csv").write_text("uid,sex\n" + "".join(f"u{u},{'FM'[u % 2]}\n" for u in range(8)))
    return tmp_path / "suite"


CSV_SPEC = {
    "name": "csv", "interactions": "data/ratings.csv", "items": "data/films.csv", "users_file": "data/people.csv",
    "columns": {"interactions": {"user": "uid", "item": "movie", "rating": "stars", "timestamp": "ts"},
                "items": {"item": "id", "title": "name"},
                "users": {"user": "uid", "attributes": {"gender": "sex"}}},
    "users": 3, "seed": 7,
}


def test_a_csv_spec_loads_paths_relative_to_the_suite_directory(suite_dir: Path) -> None:
    spec = validate_config(DatasetSpec, CSV_SPEC, "dataset")
    ds = load_dataset_from_spec(spec, suite_dir)
    assert len(ds.interactions) == 32 and len(ds.items) == 6
    assert ds.attributes == ("gender",) and ds.user_profiles["u1"] == {"gender": "M"}
    assert ds.item_titles["m3"] == "Film 3 (1993)"


def test_users_is_a_seeded_sample_for_the_probes_and_training_keeps_everyone(suite_dir: Path) -> None:
    spec = validate_config(DatasetSpec, CSV_SPEC, "dataset")
    ds = load_dataset_from_spec(spec, suite_dir)
    audited = spec.audit_users(ds)
    assert len(audited) == 3 and audited == spec.audit_users(ds)
    assert set(audited) <= set(ds.evaluable_users())
    assert ds.interactions["user_id"].nunique() == 8  # the sample does not shrink the data set
    everyone = DatasetSpec(name="csv", interactions="a", items="b")
    assert everyone.audit_users(ds) == ds.evaluable_users()
    samples = {tuple(spec.model_copy(update={"seed": s}).audit_users(ds)) for s in range(10)}
    assert len(samples) > 1  # the seed picks the sample


def test_loading_twice_reuses_the_parsed_data_until_a_file_changes(suite_dir: Path) -> None:
    clear_memo()
    first = load_dataset(CSV_SPEC, base_dir=suite_dir)
    assert load_dataset(CSV_SPEC, base_dir=suite_dir) is first
    with open(suite_dir / "data" / "ratings.csv", "a") as fh:
        fh.write("u0,m5,5,999999\n")
    reloaded = load_dataset(CSV_SPEC, base_dir=suite_dir)
    assert reloaded is not first and len(reloaded.interactions) == 33


def test_an_unknown_name_suggests_close_ones_and_lists_all(recaudit_home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(DatasetSpec, {"name": "ml100k"}, "dataset")
    message = str(err.value)
    assert "dataset: name:" in message and "Did you mean 'ml-100k'" in message and "Available: csv, ml-100k" in message
    with pytest.raises(ConfigError, match="Did you mean 'ml-100k'"):
        load_dataset("ml-10k")


@pytest.mark.parametrize("data,pattern", [
    ({"name": "csv", "items": "f.csv"}, "name: csv needs interactions"),
    ({"name": "csv"}, "needs interactions and items"),
    ({"name": "ml-100k", "interactions": "r.csv"}, "interactions only apply to name: csv, not ml-100k"),
    ({"name": "ml-100k", "order": "file"}, "order only apply to name: csv, not ml-100k"),
    ({"name": "ml-100k", "duplicates": "keep"}, "duplicates only apply to name: csv, not ml-100k"),
    ({"name": "csv", "interactions": "a", "items": "b", "order": "time"}, r"order: .*'timestamp' or 'file'"),
    ({"name": "csv", "interactions": "a", "items": "b", "duplicates": "drop"},
     r"duplicates: .*'first', 'last', 'keep' or 'error'"),
    ({"name": "ml-100k", "users": 0}, r"users: Input should be greater than or equal to 1"),
    ({"name": "ml-100k", "user": 10}, r"unknown option 'user'"),
    ({"name": "csv", "interactions": "a", "items": "b", "columns": {"interactions": {"usr": "x"}}},
     r"unknown option 'columns.interactions.usr'"),
])
def test_invalid_specs_are_config_errors_saying_what_to_fix(data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_config(DatasetSpec, data, "dataset")


def test_order_and_duplicates_reach_the_loader_and_its_memo(suite_dir: Path) -> None:
    """The spec's order and duplicates rule are how the files are read: two specs that differ in
    them load separately (the memo keys on the spec) and differ in the fingerprint."""
    clear_memo()
    with open(suite_dir / "data" / "ratings.csv", "a") as fh:
        fh.write("u1,m1,5,50\n")  # u1 already has m1 (at 101), now also earlier, at 50
    first = load_dataset(CSV_SPEC, base_dir=suite_dir)
    assert first.meta["duplicates"] == {"rule": "first", "repeated": 1, "dropped": 1}
    keep = load_dataset({**CSV_SPEC, "duplicates": "keep"}, base_dir=suite_dir)
    assert keep is not first and len(keep.interactions) == len(first.interactions) + 1
    assert keep.fingerprint != first.fingerprint
    with pytest.raises(ConfigError, match="user 'u1' has item 'm1' more than once"):
        load_dataset({**CSV_SPEC, "duplicates": "error"}, base_dir=suite_dir)
    with pytest.raises(ConfigError, match="order: file takes each user's rows in file order"):
        load_dataset({**CSV_SPEC, "order": "file"}, base_dir=suite_dir)


def test_a_csv_spec_with_a_wrong_path_names_the_file(suite_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"interactions file .*suite/data/rating\.csv not found"):
        load_dataset_from_spec({**CSV_SPEC, "interactions": "data/rating.csv"}, suite_dir)


def test_ml100k_spec_loads_from_the_cache_home(recaudit_home: Path, grouplens_dir: Path) -> None:
    with pytest.raises(DatasetMissingError, match="recaudit fetch ml-100k"):
        load_dataset_from_spec({"name": "ml-100k", "users": 2}, recaudit_home)
    fetch_dataset("ml-100k", grouplens_dir)
    spec = DatasetSpec(name="ml-100k", users=2, seed=0)
    ds = load_dataset_from_spec(spec, Path("/nonexistent-suite-dir"))
    assert ds.name == "ml-100k" and len(spec.audit_users(ds)) == 2


def test_every_registered_data_set_has_a_description_and_a_loader() -> None:
    for name in DATASETS:
        entry = DATASETS.get(name)
        assert entry.name == name and entry.description and callable(entry.load)
        assert isinstance(entry.fetchable, bool)
