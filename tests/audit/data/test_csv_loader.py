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
    ds = load_csv_dataset(tmp_path / "i.csv", tmp_path / "t.csv", order="file")
    assert ds.users is None and ds.attributes == ()
    assert ds.interactions["rating"].tolist() == [1.0, 1.0, 1.0]  # implicit feedback
    assert ds.sequences["a"].test == "z"  # order: file: file order is time order
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
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\na,x,1\nb,x,1\nc,x,1\n")
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
    by_file = load_csv_dataset(no_ts, csv_files["items"], None, mapping, order="file")
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


# -- order: the leave-last-out split holds out each user's last interaction -----------------------

def _titles(tmp_path: Path, ids: str = "xyz") -> Path:
    path = tmp_path / "t.csv"
    path.write_text("item_id,title\n" + "".join(f"{i},{i.upper()}\n" for i in ids))
    return path


def test_no_timestamp_column_is_an_error_unless_order_file_is_declared(tmp_path: Path) -> None:
    """The issue's case: without a timestamp the held-out item silently became the last row of
    the file. Now the default order (timestamp) refuses, naming the file and the way out."""
    (tmp_path / "i.csv").write_text("user_id,item_id\na,x\na,y\na,z\n")
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))
    message = str(err.value)
    assert "i.csv: no timestamp column (no column 'timestamp'; columns found: 'user_id', 'item_id')" in message
    assert "order: file" in message
    unmapped = CsvColumns.model_validate({"interactions": {"timestamp": None}})
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\na,x,3\na,y,2\na,z,1\n")
    with pytest.raises(ConfigError, match=r"columns\.interactions\.timestamp is null"):
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), columns=unmapped)
    by_file = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), columns=unmapped, order="file")
    assert by_file.sequences["a"].full == ("x", "y", "z") and by_file.meta["reading"]["order"] == "file"


def test_order_file_keeps_the_file_order_where_timestamps_tie(tmp_path: Path) -> None:
    """Equal timestamps: the timestamp order breaks ties by item id, order: file keeps the rows'
    order (the timestamp becomes the row position)."""
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\na,z,5\nb,x,1\na,y,5\na,x,5\n")
    by_time = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))
    by_file = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), order="file")
    assert by_time.sequences["a"].full == ("x", "y", "z")
    assert by_file.sequences["a"].full == ("z", "y", "x")
    assert by_file.interactions["timestamp"].tolist() == [0, 1, 2, 3]
    assert by_time.fingerprint != by_file.fingerprint


def test_order_file_refuses_timestamps_that_go_back_within_a_user(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n"
                                    "a,x,1\nb,x,9\nb,y,9\na,y,3\nb,z,4\na,z,2\n")
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), order="file")
    message = str(err.value)
    assert "i.csv: order: file takes each user's rows in file order" in message
    assert "goes back in time for 2 user(s): user 'b' has '4' on line 6 after '9' on line 4" in message
    assert "columns.interactions.timestamp: null" in message
    assert load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path)).sequences["b"].full == ("z", "x", "y")


def test_a_missing_timestamp_value_names_its_line_and_user(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\na,x,1\n\na,y,2\nb,z,\nb,x,\n")
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))
    message = str(err.value)
    assert "column 'timestamp' must hold integers (seconds) or dates; 2 values do not" in message
    assert "first on line 5, user 'b'" in message, "the blank line 3 counts: lines are the file's own"
    assert "order: file" in message


def test_line_numbers_follow_quoted_fields_that_span_lines(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text('user_id,item_id,note,timestamp\na,x,"two\nlines",1\na,y,ok,\n')
    with pytest.raises(ConfigError, match=r"first on line 4, user 'a'"):
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))


# -- duplicates: a user-item pair more than once -----------------------------------------------------

REPEATS = ("user_id,item_id,rating,timestamp\n"
           "a,x,1,10\na,y,2,20\na,x,3,30\na,z,4,25\na,y,5,5\nb,x,1,1\nb,y,1,2\nb,z,1,3\n")


def test_repeats_keep_the_earliest_interaction_by_default_counted_in_meta(tmp_path: Path) -> None:
    """'first' keeps each pair's earliest row by time (a,y at t=5 on the last line, not t=20),
    with its rating; every held-out item is new to the user."""
    (tmp_path / "i.csv").write_text(REPEATS)
    ds = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))
    assert ds.sequences["a"].full == ("y", "x", "z")
    kept = ds.interactions[ds.interactions["user_id"] == "a"].set_index("item_id")
    assert kept.loc["y", "rating"] == 5.0 and kept.loc["x", "rating"] == 1.0
    assert ds.meta["duplicates"] == {"rule": "first", "repeated": 2, "dropped": 2}
    assert ds.meta["reading"]["duplicates"] == ds.meta["duplicates"], "the fingerprint covers the counts"
    assert len(ds.interactions) == 6
    assert ds.sequences["a"].test not in ds.sequences["a"].test_history


def test_last_keep_and_error_rules(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text(REPEATS)
    last = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), duplicates="last")
    a_last = last.interactions[last.interactions["user_id"] == "a"].set_index("item_id")
    assert a_last.loc["x", "timestamp"] == 30 and a_last.loc["y", "timestamp"] == 20
    assert last.sequences["a"].full == ("y", "z", "x"), "the re-consumed x moves to its latest time"
    keep = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), duplicates="keep")
    assert keep.sequences["a"].full == ("y", "x", "y", "z", "x") and len(keep.interactions) == 8
    assert keep.meta["duplicates"] == {"rule": "keep", "repeated": 2, "dropped": 0}
    first = load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path))
    assert len({first.fingerprint, last.fingerprint, keep.fingerprint}) == 3
    with pytest.raises(ConfigError) as err:
        load_csv_dataset(tmp_path / "i.csv", _titles(tmp_path), duplicates="error")
    message = str(err.value)
    assert "i.csv: user 'a' has item 'x' more than once (line 2 and line 4; 2 repeated interaction(s) of " \
           "2 user-item pair(s) in all)" in message
    assert "duplicates: first" in message


def test_without_repeats_the_rule_changes_nothing_not_even_the_fingerprint(csv_files: dict[str, Path]) -> None:
    loaded = [load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED, duplicates=rule)
              for rule in ("first", "last", "keep", "error")]
    assert len({ds.fingerprint for ds in loaded}) == 1
    assert all(ds.meta["duplicates"]["repeated"] == 0 and "duplicates" not in ds.meta["reading"] for ds in loaded)


def test_unknown_order_or_duplicates_rule_is_a_config_error(csv_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"order must be one of timestamp, file, not 'time'"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED, order="time")
    with pytest.raises(ConfigError, match=r"duplicates must be one of first, last, keep, error, not 'drop'"):
        load_csv_dataset(csv_files["interactions"], csv_files["items"], None, MAPPED, duplicates="drop")
