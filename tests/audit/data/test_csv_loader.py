"""The generic CSV loader: column mappings, normalisation, and errors that name the file and columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audit.data.csv_loader import CsvColumns, load_csv_dataset
from audit.errors import ConfigError

MAPPED = CsvColumns.model_validate({
    "interactions": {"user": "uid", "item": "movie", "timestamp": "ts", "rating": "stars"},
    "items": {"item": "id", "title": "name", "year": "yr", "genres": "cats", "genre_separator": ";"},
    "users": {"user": "uid", "attributes": ["gender", "age"]},
})


@pytest.fixture()
def csv_files(tmp_path: Path) -> dict[str, Path]:
    """Three small CSV files with the user's own column names."""
    inter = tmp_path / "ratings.csv"
    inter.write_text("uid,movie,stars,ts\n"
                     "u1,m2,4,1000\nu1,m1,5,900\nu1,m3,3,1100\n"
                     "u2,m1,2,2000\nu2,m3,1,2100\nu2,m2,5,2050\n")
    items = tmp_path / "films.csv"
    items.write_text("id,name,yr,cats\n"
                     "m1,Toy Story (1995),1995,Animation; Comedy\n"
                     '"m2","Godfather, The",1972,Crime;Drama\n'
                     "m3,Brand New Film,,\n")
    users = tmp_path / "people.csv"
    users.write_text("uid,gender,age,zip\nu1,F,29,12345\nu2,M,61,54321\n")
    return {"interactions": inter, "items": items, "users": users}


def test_a_column_mapping_loads_into_the_dataset_contract(csv_files: dict[str, Path]) -> None:
    ds = load_csv_dataset(csv_files["interactions"], csv_files["items"], csv_files["users"], MAPPED, name="mine")
    assert ds.name == "mine"
    assert list(ds.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ds.sequences["u1"].train == ("m1",) and ds.sequences["u1"].valid == "m2"
    assert ds.sequences["u1"].test == "m3"
    items = ds.items.set_index("item_id")
    assert items.loc["m1", "title"] == "Toy Story" and items.loc["m1", "year"] == 1995  # year cut from title
    assert items.loc["m2", "title"] == "Godfather, The" and items.loc["m2", "genres"] == "Crime|Drama"
    assert items.loc["m1", "genres"] == "Animation|Comedy"
    assert pd.isna(items.loc["m3", "year"]) and items.loc["m3", "genres"] == ""
    assert ds.attributes == ("gender", "age")  # zip not asked for
    assert ds.user_profiles["u1"] == {"gender": "F", "age": "25-34"} and ds.user_profiles["u2"]["age"] == "56+"


def test_default_names_need_no_mapping_and_optional_columns_may_be_absent(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id\na,x\na,y\na,z\n")
    (tmp_path / "t.csv").write_text("item_id,title\nx,Alpha (2001)\ny,Beta\nz,Gamma\n")
    ds = load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv")
    assert ds.users is None and ds.attributes == ()
    assert ds.interactions["rating"].tolist() == [1.0, 1.0, 1.0]  # implicit feedback
    assert ds.sequences["a"].test == "z"  # no timestamp: file order is time order
    assert ds.item_titles["x"] == "Alpha (2001)"


def test_date_timestamps_become_utc_seconds_and_order_the_sequence(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n"
                                    "a,x,2024-01-03\na,y,2024-01-01T12:00:00Z\na,z,2024-01-02\n")
    (tmp_path / "t.csv").write_text("item_id,title\nx,X\ny,Y\nz,Z\n")
    ds = load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv")
    assert ds.interactions.set_index("item_id").loc["z", "timestamp"] == 1704153600
    assert ds.sequences["a"].full == ("y", "z", "x")


def test_tab_separated_files_are_read_by_extension(tmp_path: Path) -> None:
    (tmp_path / "i.tsv").write_text("user_id\titem_id\trating\ttimestamp\na\tx\t3\t1\n")
    (tmp_path / "t.tsv").write_text("item_id\ttitle\tgenres\nx\tA, film\tDrama|War\n")
    ds = load_csv_dataset(tmp_path / "i.tsv", tmp_path / "t.tsv")
    assert ds.items.loc[0, "title"] == "A, film" and ds.items.loc[0, "genres"] == "Drama|War"


def test_a_missing_file_is_a_config_error_naming_it(csv_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"items file .*nope\.csv not found"):
        load_csv_dataset(csv_files["interactions"], tmp_path / "nope.csv", columns=MAPPED)


def test_a_missing_column_names_the_file_the_mapping_and_the_columns_found(csv_files: dict[str, Path]) -> None:
    bad = CsvColumns.model_validate({**MAPPED.model_dump(), "interactions": {"user": "user", "item": "movie",
                                                                             "timestamp": "ts", "rating": "stars"}})
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(csv_files["interactions"], csv_files["items"], columns=bad)
    message = str(err.value)
    assert "ratings.csv" in message and "'user' (columns.interactions.user)" in message
    assert "columns found: 'uid', 'movie', 'stars', 'ts'" in message


def test_an_optional_column_named_explicitly_must_exist(csv_files: dict[str, Path]) -> None:
    bad = CsvColumns.model_validate({**MAPPED.model_dump(), "items": {"item": "id", "title": "name",
                                                                      "year": "released"}})
    with pytest.raises(ConfigError, match=r"films\.csv: no column 'released' \(columns\.items\.year\)"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], columns=bad)


def test_a_missing_attribute_column_lists_the_users_file_columns(csv_files: dict[str, Path]) -> None:
    bad = CsvColumns.model_validate({**MAPPED.model_dump(), "users": {"user": "uid", "attributes": ["sex"]}})
    with pytest.raises(ConfigError, match=r"people\.csv: no column 'sex'.*'uid', 'gender', 'age', 'zip'"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], csv_files["users"], bad)


@pytest.mark.parametrize("inter,items,pattern", [
    ("uid,movie,stars,ts\nu1,m1,good,1\n", None, r"column 'stars' must hold numbers.*'good'"),
    ("uid,movie,stars,ts\nu1,m1,3,yesterday-ish\n", None, r"column 'ts' must hold integers.*'yesterday-ish'"),
    ("uid,movie,stars,ts\nu1,m9,3,1\n", None, r"item ids are not in .*films\.csv.*'m9'"),
    ("uid,movie,stars,ts\n,m1,3,1\n", None, r"empty user id in column 'uid'"),
    (None, "id,name,yr,cats\nm1,A,,\nm1,B,,\n", r"item ids must be unique; repeated: 'm1'"),
    (None, "id,name,yr,cats\nm1,,,\n", r"empty title"),
    (None, "id,name,yr,cats\nm1,A,soon,\n", r"column 'yr' must hold years"),
])
def test_bad_values_are_config_errors_naming_the_file_and_column(
        csv_files: dict[str, Path], inter: str | None, items: str | None, pattern: str) -> None:
    if inter is not None:
        csv_files["interactions"].write_text(inter)
    if items is not None:
        csv_files["items"].write_text(items)
    with pytest.raises(ConfigError, match=pattern):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], columns=MAPPED)


def test_an_empty_file_is_a_config_error(csv_files: dict[str, Path]) -> None:
    csv_files["interactions"].write_text("")
    with pytest.raises(ConfigError, match=r"interactions file .*ratings\.csv cannot be read"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], columns=MAPPED)
    csv_files["interactions"].write_text("uid,movie,stars,ts\n")
    with pytest.raises(ConfigError, match=r"ratings\.csv has no rows"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], columns=MAPPED)


def test_numeric_ages_are_bucketed_with_blanks_left_unknown_and_labels_kept(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id\na,x\nb,x\nc,x\n")
    (tmp_path / "t.csv").write_text("item_id,title\nx,X\n")
    (tmp_path / "u.csv").write_text("user_id,age\na,17\nb,\nc,44\n")
    ds = load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv", tmp_path / "u.csv")
    assert ds.user_profiles == {"a": {"age": "under 18"}, "b": {}, "c": {"age": "35-44"}}
    (tmp_path / "u.csv").write_text("user_id,age\na,young\nb,old\nc,old\n")
    assert load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv", tmp_path / "u.csv").attribute_values("age") \
        == ["old", "young"]
    (tmp_path / "u.csv").write_text("user_id,age\na,-3\nb,20\nc,30\n")
    with pytest.raises(ConfigError, match=r"u\.csv: column 'age' holds ages outside 0\.\.200.*'-3'"):
        load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv", tmp_path / "u.csv")


def test_a_header_naming_a_column_twice_is_an_error(csv_files: dict[str, Path]) -> None:
    csv_files["interactions"].write_text("uid,movie,stars,stars\nu1,m2,4,1000\nu1,m1,5,900\n")
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED)
    assert "the header (line 1) names 'stars' more than once" in str(err.value)


def test_a_short_row_is_reported_with_its_line_number(csv_files: dict[str, Path]) -> None:
    csv_files["interactions"].write_text("uid,movie,stars,ts\nu1,m2,4,1000\nu1,m1,5,900\nu1,m3\nu2,m1\n")
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED)
    assert "line 4 has 2 field(s), the header has 4 (2 short row(s) in all)" in str(err.value)


def test_files_read_differently_never_share_a_fingerprint(csv_files: dict[str, Path], tmp_path: Path) -> None:
    """Same parsed interactions, once ordered by a timestamp column and once by file order
    (no timestamp column, rows already in time order): the fingerprints differ."""
    with_ts = load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED)
    frame = pd.read_csv(csv_files["interactions"]).sort_values(["uid", "ts"])
    no_ts = tmp_path / "no_ts.csv"
    frame.drop(columns=["ts"]).to_csv(no_ts, index=False)
    mapping = CsvColumns.model_validate({**MAPPED.model_dump(), "interactions": {"user": "uid", "item": "movie",
                                                                                "rating": "stars"}})
    by_file = load_csv_dataset(no_ts, csv_files["items"], None, mapping)
    assert with_ts.meta["reading"]["order"] == "timestamp" and by_file.meta["reading"]["order"] == "file"
    assert [s.test for _, s in sorted(with_ts.sequences.items())] == [s.test for _, s in sorted(by_file.sequences.items())]
    assert with_ts.fingerprint != by_file.fingerprint
    again = load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED)
    assert again.fingerprint == with_ts.fingerprint, "the same file read the same way keeps its fingerprint"


def test_the_fingerprint_covers_the_column_mapping_beyond_the_parsed_content(csv_files: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    """Implicit feedback (no rating column: 1.0) and an explicit all-1 rating column parse to equal
    frames; they were read differently, so they never share a cache entry."""
    implicit = tmp_path / "implicit.csv"
    implicit.write_text("uid,movie,ts\nu1,m2,1000\nu1,m1,900\nu1,m3,1100\n")
    explicit = tmp_path / "explicit.csv"
    explicit.write_text("uid,movie,stars,ts\nu1,m2,1,1000\nu1,m1,1,900\nu1,m3,1,1100\n")
    cols = {"user": "uid", "item": "movie", "timestamp": "ts"}
    a = load_csv_dataset(implicit, csv_files["items"], None, CsvColumns.model_validate({**MAPPED.model_dump(),
                                                                                        "interactions": cols}))
    b = load_csv_dataset(explicit, csv_files["items"], None, MAPPED)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert a.fingerprint != b.fingerprint
