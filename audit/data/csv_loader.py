"""Your own data as CSV files: interactions (required), items (required), users (optional).

Each file has a column mapping from recaudit's fields to your column names, e.g.::

    columns:
      interactions: {user: uid, item: movie, timestamp: ts, rating: stars}
      items: {item: id, title: name, year: yr, genres: cats, genre_separator: ","}
      users: {user: uid, attributes: [gender, age]}      # or {attributes: {gender: sex, age: age_years}}

Unmapped fields default to recaudit's names (``user_id``, ``item_id``, ``timestamp``, ``rating``,
``title``, ``year``, ``genres``). Optional fields: ``rating`` (absent: 1.0, implicit feedback),
``timestamp`` (needed unless ``order="file"``, see below), ``year`` (absent: a trailing ``(YYYY)``
in the title is used), ``genres`` (absent: empty). An optional field left at its default is
skipped when the file has no such column; one you name must exist. Timestamps are integers
(seconds) or dates/datetimes (converted to UTC seconds).

The order matters: the leave-last-out split holds out each user's last interaction as the test
item and the one before as the validation item. ``order="timestamp"`` (the default) orders each
user's rows by the timestamp column (ties by item id), so the column must exist and every row must
hold a time (else a ConfigError naming the first line and user); the file's row order is then
irrelevant. ``order="file"`` (an explicit opt-in) takes each user's rows in file order; the
``timestamp`` of each interaction is then its 0-based row position, and a timestamp column the file
also has must not decrease within a user (a ConfigError names the first user and line where it
does; map ``timestamp: null`` to ignore such a column).

A user-item pair present more than once is handled by ``duplicates``: ``"first"`` (default) keeps
its earliest interaction in the split's order (timestamp, then file order) with that row's rating,
because leave-last-out evaluation asks for the next *new* item: a repeat held out as the test item
would be an item already in the history, which a recommender that filters seen items (most do)
can never hit, which the negatives (items the user never interacted with) cannot include, and which
one that echoes the history hits for free. ``"last"`` keeps the latest (a re-consumption moves the
item later); ``"keep"`` keeps every repeat; ``"error"`` refuses the file, naming the first repeat's
lines. ``meta["duplicates"]`` counts them (``rule``, ``repeated``: interactions repeating an earlier
one of the same pair, ``dropped``); when there are any, ``meta["reading"]`` (so the fingerprint)
holds the same. Titles get
the MovieLens normalisation (trailing year cut when it is the item's year). A numeric ``age``
attribute is bucketed with :func:`audit.data.dataset.age_bucket`. Every user-caused problem
raises :class:`~audit.errors.ConfigError` naming the file and, for columns, the columns found.

Files are read exactly as written: a header naming a column twice is an error (never a silently
renamed ``rating.1``), and so is a row with fewer fields than the header (with the file's line
number; a row with more fields is one too). The data set's ``meta["reading"]`` records the column
mapping, the delimiter and where the order came from (``timestamp`` column or ``file`` order); the
data fingerprint covers it, so two files that load differently never share a cache entry.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from audit.config import StrictConfig
from audit.data.dataset import Dataset, age_bucket, drop_repeated_pairs, normalise_items
from audit.data.spec import (DUPLICATE_RULES, INTERACTION_ORDERS, CsvColumns, InteractionColumns, ItemColumns,
                             UserColumns)
from audit.errors import ConfigError

__all__ = ["CsvColumns", "InteractionColumns", "ItemColumns", "UserColumns", "load_csv_dataset"]

_SHOW = 5  # how many offending values an error message lists


def load_csv_dataset(interactions: Path, items: Path, users: Path | None = None,
                     columns: CsvColumns | None = None, *, delimiter: str | None = None,
                     name: str = "csv", order: str = "timestamp", duplicates: str = "first") -> Dataset:
    """Load the three CSV files into a :class:`Dataset` (see the module doc for the mapping rules).

    ``delimiter``: one character; None = tab for ``.tsv``/``.tab`` files, else comma. ``order``:
    ``"timestamp"`` or ``"file"``; ``duplicates``: ``"first"``, ``"last"``, ``"keep"`` or ``"error"``
    (both explained in the module doc)."""
    if order not in INTERACTION_ORDERS:
        raise ConfigError(f"dataset order must be one of {', '.join(INTERACTION_ORDERS)}, not {order!r}")
    if duplicates not in DUPLICATE_RULES:
        raise ConfigError(f"dataset duplicates must be one of {', '.join(DUPLICATE_RULES)}, not {duplicates!r}")
    columns = columns or CsvColumns()
    inter_frame, inter_lines = _read(interactions, "interactions", delimiter)
    item_frame, item_lines = _read(items, "items", delimiter)
    item_df = _items(item_frame, items, columns.items, item_lines)
    inter_df = _interactions(inter_frame, interactions, columns.interactions, inter_lines, order)
    unknown = sorted(set(inter_df["item_id"]) - set(item_df["item_id"]))
    if unknown:
        raise ConfigError(f"{interactions}: {len(unknown)} item ids are not in {items} "
                          f"(e.g. {', '.join(map(repr, unknown[:_SHOW]))}); add them to the items file")
    inter_df, counts = _duplicates(inter_df, interactions, inter_lines, duplicates)
    user_df = None if users is None else _users(*_read(users, "users", delimiter), users, columns.users)
    reading: dict[str, object] = {"columns": columns.model_dump(mode="json"),
                                  "delimiter": _delimiter(interactions, delimiter), "order": order}
    if counts["repeated"]:
        reading["duplicates"] = counts
    return Dataset(name, inter_df, item_df, user_df, source=f"csv:{interactions}",
                   meta={"files": {"interactions": str(interactions), "items": str(items),
                                   "users": None if users is None else str(users)}, "reading": reading,
                         "duplicates": counts})


def _duplicates(inter: pd.DataFrame, path: Path, lines: list[int] | None,
                rule: str) -> tuple[pd.DataFrame, dict[str, object]]:
    """Apply the ``duplicates`` rule; the counts for ``meta["duplicates"]``."""
    repeat = inter.duplicated(["user_id", "item_id"], keep="first")  # file order
    repeated = int(repeat.sum())
    if repeated and rule == "error":
        row = int(repeat.idxmax())
        u, i = inter.at[row, "user_id"], inter.at[row, "item_id"]
        same = inter.index[(inter["user_id"] == u) & (inter["item_id"] == i)]
        pairs = int(inter[inter.duplicated(["user_id", "item_id"], keep=False)]
                    .drop_duplicates(["user_id", "item_id"]).shape[0])
        where = " and ".join(_line(int(r), lines) for r in same[:2])
        raise ConfigError(f"interactions file {path}: user {u!r} has item {i!r} more than once ({where}; "
                          f"{repeated} repeated interaction(s) of {pairs} user-item pair(s) in all); "
                          "dataset.duplicates: error refuses repeats: remove them, or choose duplicates: "
                          "first (keep the earliest), last or keep")
    kept = inter if rule in ("keep", "error") else drop_repeated_pairs(inter, rule)
    return kept, {"rule": rule, "repeated": repeated, "dropped": len(inter) - len(kept)}


def _delimiter(path: Path, delimiter: str | None) -> str:
    return delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")


def _line(row: int, lines: list[int] | None) -> str:
    """'line 7' for data row ``row`` (0-based) of a file whose records start on ``lines``."""
    return f"line {lines[row]}" if lines is not None else f"data row {row + 1}"


def _check_layout(path: Path, role: str, sep: str) -> list[int]:
    """The line (1-based, in the file) on which each data record starts; ConfigError for a header
    naming a column twice or a row with fewer fields than the header (with its line number)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=sep, skipinitialspace=True)
        header = [c.strip() for c in next(reader, [])]
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise ConfigError(f"{role} file {path}: the header (line 1) names {', '.join(map(repr, twice))} more "
                              "than once; give each column its own name")
        short, first = 0, None
        starts: list[int] = []
        end = reader.line_num
        for row in reader:
            if row:
                starts.append(end + 1)
                if len(row) < len(header):
                    short += 1
                    if first is None:
                        first = (end + 1, len(row))
            end = reader.line_num
        if first is not None:
            raise ConfigError(f"{role} file {path}: line {first[0]} has {first[1]} field(s), the header has "
                              f"{len(header)} ({short} short row(s) in all); fill in the missing fields")
        return starts


def _read(path: Path, role: str, delimiter: str | None) -> tuple[pd.DataFrame, list[int] | None]:
    """The file as strings, and the line each row starts on (None where pandas and the csv module
    disagree on the rows, e.g. lines of blanks: messages then count data rows)."""
    if not path.is_file():
        where = "not a file" if path.exists() else "not found"
        raise ConfigError(f"{role} file {path} {where} (relative paths in a suite are relative to the suite file)")
    sep = _delimiter(path, delimiter)
    try:
        lines = _check_layout(path, role, sep)
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{role} file {path} cannot be read as CSV (delimiter {sep!r}): "
                          f"{str(exc).strip().splitlines()[0]}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise ConfigError(f"{role} file {path} has no rows (columns: {', '.join(frame.columns)})")
    return frame, (lines if len(lines) == len(frame) else None)


def _columns(frame: pd.DataFrame, path: Path, role: str, mapping: StrictConfig,
             required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, str | None]:
    """field -> column in ``frame`` (None for an absent optional field); ConfigError on a missing column."""
    chosen: dict[str, str | None] = {}
    missing: list[str] = []
    for fld in (*required, *optional):
        col = getattr(mapping, fld)
        if col is None or (col not in frame.columns and fld in optional and fld not in mapping.model_fields_set):
            chosen[fld] = None
        elif col in frame.columns:
            chosen[fld] = col
        else:
            missing.append(f"{col!r} (columns.{role}.{fld})")
    if missing:
        raise ConfigError(f"{role} file {path}: no column {', '.join(missing)}; columns found: "
                          f"{', '.join(map(repr, frame.columns))}. Map each field to one of these in the "
                          f"suite's dataset.columns.{role}")
    return chosen


def _ids(frame: pd.DataFrame, col: str, path: Path, what: str, lines: list[int] | None) -> pd.Series:
    ids = frame[col].astype(str).str.strip()
    empty = frame.index[ids == ""]
    if len(empty):
        raise ConfigError(f"{path}: {len(empty)} rows have an empty {what} in column {col!r} "
                          f"(first on {_line(int(empty[0]), lines)})")
    return ids


def _interactions(frame: pd.DataFrame, path: Path, mapping: InteractionColumns, lines: list[int] | None,
                  order: str) -> pd.DataFrame:
    cols = _columns(frame, path, "interactions", mapping, ("user", "item"), ("timestamp", "rating"))
    users = _ids(frame, cols["user"], path, "user id", lines)
    items = _ids(frame, cols["item"], path, "item id", lines)
    if cols["rating"] is None:
        ratings = pd.Series(1.0, index=frame.index)
    else:
        ratings = pd.to_numeric(frame[cols["rating"]].str.strip(), errors="coerce")
        _no_blanks(ratings, frame[cols["rating"]], path, cols["rating"], "numbers", lines)
    position = pd.Series(range(len(frame)), index=frame.index, dtype="int64")
    if cols["timestamp"] is None:
        if order == "timestamp":
            why = ("columns.interactions.timestamp is null" if mapping.timestamp is None else
                   f"no column {mapping.timestamp!r}; columns found: {', '.join(map(repr, frame.columns))}")
            raise ConfigError(f"interactions file {path}: no timestamp column ({why}). The leave-last-out split "
                              "holds out each user's last interaction, so it needs their order: map "
                              "columns.interactions.timestamp to the column holding the time, or declare "
                              "dataset order: file to take each user's rows in file order")
        stamps = position
    else:
        col = cols["timestamp"]
        stamps = _timestamps(frame[col].str.strip(), path, col, lines, users, order)
        if order == "file":
            _not_backwards(stamps, frame[col].str.strip(), users, path, col, lines)
            stamps = position
    return pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings.astype(float),
                         "timestamp": stamps.astype("int64")}).reset_index(drop=True)


def _timestamps(raw: pd.Series, path: Path, col: str, lines: list[int] | None, users: pd.Series,
                order: str) -> pd.Series:
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(float).astype("int64")
    if numeric[raw != ""].notna().all():  # numbers with blanks: the blanks are the bad values
        parsed: pd.Series = numeric
    else:
        try:
            parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
        except (ValueError, TypeError):
            parsed = pd.Series(pd.NaT, index=raw.index)
    fix = ("the split orders each user's interactions by it: fill them in, or declare dataset order: file"
           if order == "timestamp" else "map columns.interactions.timestamp: null to ignore the column")
    _no_blanks(parsed, raw, path, col, "integers (seconds) or dates", lines, users, fix)
    return (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)


def _not_backwards(stamps: pd.Series, raw: pd.Series, users: pd.Series, path: Path, col: str,
                   lines: list[int] | None) -> None:
    """Under order: file, ConfigError when the file's timestamps decrease within a user."""
    before = stamps.groupby(users, sort=False).shift()
    back = stamps < before
    if not back.any():
        return
    row = int(back.idxmax())
    user = users[row]
    prev = int(users.index[(users == user) & (users.index < row)][-1])
    raise ConfigError(f"interactions file {path}: order: file takes each user's rows in file order, but column "
                      f"{col!r} goes back in time for {int(users[back].nunique())} user(s): user {user!r} has "
                      f"{raw[row]!r} on {_line(row, lines)} after {raw[prev]!r} on {_line(prev, lines)}. "
                      "Sort the file by time, order by the column (order: timestamp, the default), or map "
                      "columns.interactions.timestamp: null to ignore it")


def _no_blanks(parsed: pd.Series, raw: pd.Series, path: Path, col: str, expected: str,
               lines: list[int] | None = None, users: pd.Series | None = None, fix: str = "") -> None:
    bad = raw[parsed.isna()]
    if len(bad):
        row = int(bad.index[0])
        who = "" if users is None else f", user {users[row]!r}"
        raise ConfigError(f"{path}: column {col!r} must hold {expected}; {len(bad)} values do not "
                          f"(e.g. {', '.join(map(repr, bad.unique()[:_SHOW].tolist()))}; first on "
                          f"{_line(row, lines)}{who})" + (f"; {fix}" if fix else ""))


def _items(frame: pd.DataFrame, path: Path, mapping: ItemColumns, lines: list[int] | None) -> pd.DataFrame:
    cols = _columns(frame, path, "items", mapping, ("item", "title"), ("year", "genres"))
    ids = _ids(frame, cols["item"], path, "item id", lines)
    dupes = ids[ids.duplicated()].unique().tolist()
    if dupes:
        raise ConfigError(f"{path}: item ids must be unique; repeated: {', '.join(map(repr, dupes[:_SHOW]))}")
    titles = frame[cols["title"]].astype(str).str.strip()
    if (titles == "").any():
        first = ids[titles == ""].tolist()[:_SHOW]
        raise ConfigError(f"{path}: items {', '.join(map(repr, first))} have an empty title in column "
                          f"{cols['title']!r}")
    years: list[object] = [None] * len(frame)
    if cols["year"] is not None:
        raw = frame[cols["year"]].astype(str).str.strip()
        numbers = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        _no_blanks(numbers.where(raw != "", 0), raw, path, cols["year"], "years (or be empty)", lines)
        years = [None if pd.isna(v) else f"{int(v):04d}" for v in numbers]
    if cols["genres"] is None:
        genres = [""] * len(frame)
    else:
        sep = mapping.genre_separator
        genres = ["|".join(g.strip() for g in str(v).split(sep) if g.strip()) for v in frame[cols["genres"]]]
    return normalise_items(ids, titles, years, genres)


def _users(frame: pd.DataFrame, lines: list[int] | None, path: Path, mapping: UserColumns) -> pd.DataFrame:
    cols = _columns(frame, path, "users", mapping, ("user",), ())
    if mapping.attributes is None:
        attrs = {c: c for c in frame.columns if c != cols["user"]}
    elif isinstance(mapping.attributes, dict):
        attrs = dict(mapping.attributes)
    else:
        attrs = {c: c for c in mapping.attributes}
    absent = [c for c in attrs.values() if c not in frame.columns]
    if absent:
        raise ConfigError(f"users file {path}: no column {', '.join(map(repr, absent))} "
                          f"(columns.users.attributes); columns found: {', '.join(map(repr, frame.columns))}")
    ids = _ids(frame, cols["user"], path, "user id", lines)
    dupes = ids[ids.duplicated()].unique().tolist()
    if dupes:
        raise ConfigError(f"{path}: user ids must be unique; repeated: {', '.join(map(repr, dupes[:_SHOW]))}")
    out = pd.DataFrame({"user_id": ids})
    for attr, col in attrs.items():
        values = frame[col].astype(str).str.strip()
        if attr == "age":
            values = _bucket_ages(values, path, col)
        out[attr] = values.where(values != "")  # empty = unknown (missing)
    return out.reset_index(drop=True)


def _bucket_ages(values: pd.Series, path: Path, col: str) -> pd.Series:
    """Exact ages (every non-empty value a number) -> bucket labels; anything else is kept as labels."""
    present = values != ""
    numbers = pd.to_numeric(values.where(present), errors="coerce")
    if not (numbers.notna() == present).all() or not present.any():
        return values
    outside = values[present & ~numbers.between(0, 200)]
    if len(outside):
        raise ConfigError(f"{path}: column {col!r} holds ages outside 0..200 "
                          f"(e.g. {', '.join(map(repr, outside.unique()[:_SHOW].tolist()))})")
    return pd.Series([age_bucket(a) if ok else "" for a, ok in zip(numbers, present)],
                     index=values.index, dtype=str)
