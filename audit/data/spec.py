"""What a suite's ``dataset:`` section may say, and the data sets by name.

Suite files write ``dataset: {name: ml-100k, users: 300, seed: 0}`` (a fetched data set) or
``dataset: {name: csv, interactions: ..., items: ..., users_file: ..., columns: {...}}`` (the
user's own files, paths relative to the suite file). ``users`` is how many users the probes
audit, a seeded sample (absent = all); training always uses the whole data set.

This module only validates: :data:`DATASETS` holds lazy ``"module:object"`` targets, so a suite
is checked without importing pandas or a loader. Loading lives in :mod:`audit.data.loaders`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from audit.config import StrictConfig
from audit.registry import Registry

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

__all__ = ["CSV", "CSV_DESCRIPTION", "DATASETS", "DUPLICATE_RULES", "INTERACTION_ORDERS", "CsvColumns",
           "DatasetSpec", "InteractionColumns", "ItemColumns", "UserColumns"]

CSV = "csv"
CSV_DESCRIPTION = "your own interactions / items / users CSV files with a column mapping"

#: how each user's interactions are ordered for the leave-last-out split (``dataset.order``)
INTERACTION_ORDERS = ("timestamp", "file")
#: what happens to a user-item pair that occurs more than once (``dataset.duplicates``)
DUPLICATE_RULES = ("first", "last", "keep", "error")

ORDER_DESCRIPTION = (
    "how each user's interactions are ordered; the order matters because the leave-last-out split holds out "
    "each user's last interaction as the test item and the one before as the validation item. 'timestamp' "
    "(default): by the timestamp column (ties by item id), which must exist and hold a value on every row; "
    "the row order of the file is irrelevant. 'file': each user's rows in the order they appear in the "
    "file (an explicit opt-in, for files without time stamps); a timestamp column the file also has must "
    "then not decrease within a user (map columns.interactions.timestamp: null to ignore it)")
DUPLICATES_DESCRIPTION = (
    "a user-item pair present more than once: 'first' (default) keeps its earliest interaction in the "
    "split's order, so every held-out item is new to the user; 'last' keeps its latest; 'keep' keeps every "
    "repeat (a held-out item may then be in the history); 'error' refuses the file, naming the first "
    "repeat's lines. The report's dataset entry gives the rule and how many were repeated and dropped")

DATASETS: Registry[Any] = Registry("data set")
DATASETS.register("ml-100k", "audit.data.movielens:ML_100K",
                  "MovieLens-100k: 100k ratings, 943 users (gender, age, occupation), 1,682 films")
DATASETS.register(CSV, "audit.data.loaders:CSV_DATASET", CSV_DESCRIPTION)


# -- the CSV files' column mappings (read by audit.data.csv_loader) -----------------------------
class InteractionColumns(StrictConfig):
    """Column names in the interactions file (one row per user-item event)."""

    #: the user id column
    user: str = "user_id"
    #: the item id column (every id must be in the items file)
    item: str = "item_id"
    #: integer seconds or a date/datetime (UTC); needed unless ``order: file``; null = no timestamp column
    timestamp: str | None = "timestamp"
    #: a number per row (absent: 1.0, implicit feedback); null = no rating column
    rating: str | None = "rating"


class ItemColumns(StrictConfig):
    """Column names in the items file (one row per item)."""

    #: the item id column (one row per id)
    item: str = "item_id"
    #: the title shown to the model and matched in its answers
    title: str = "title"
    #: release year (absent: a trailing ``(YYYY)`` in the title); null = no year column
    year: str | None = "year"
    #: genres, several in one cell split by ``genre_separator`` (absent: none); null = no genres column
    genres: str | None = "genres"
    #: what separates genres within a cell
    genre_separator: str = Field(default="|", min_length=1)


class UserColumns(StrictConfig):
    """Column names in the users file; ``attributes`` lists columns (or maps attribute -> column).
    None = every column but the user id."""

    #: the user id column
    user: str = "user_id"
    #: the attribute columns (a list), or attribute name -> column (a mapping); null = every column but the
    #: user id; a numeric ``age`` is bucketed like ML-100k's
    attributes: list[str] | dict[str, str] | None = None


class CsvColumns(StrictConfig):
    """The column mappings of the three files."""

    #: the interactions file's columns
    interactions: InteractionColumns = InteractionColumns()
    #: the items file's columns
    items: ItemColumns = ItemColumns()
    #: the users file's columns
    users: UserColumns = UserColumns()


class DatasetSpec(StrictConfig):
    """The ``dataset:`` section of a suite.

    ``users``: how many users the probes audit (seeded sample of users with a test item;
    None = all). ``seed``: the sample's seed. The CSV fields apply to ``name: csv`` only;
    their paths are relative to the suite file's directory. ``order`` and ``duplicates`` say how a
    CSV is turned into each user's sequence (see their descriptions; ML-100k has a timestamp on
    every rating and no user-item pair twice, so neither applies to it)."""

    #: a data set by name (``ml-100k``, fetched with ``recaudit fetch ml-100k``) or ``csv`` (your own files)
    name: str
    users: int | None = Field(default=None, ge=1)
    seed: int = 0
    #: ``csv``: the interactions file (one row per user-item event; required)
    interactions: str | None = None
    #: ``csv``: the items file (one row per item, with its title; required)
    items: str | None = None
    #: ``csv``: the users file with their attributes (optional; the fairness and leakage probes need attributes)
    users_file: str | None = None
    #: ``csv``: the column names of the three files (see the tables below)
    columns: CsvColumns | None = None
    #: ``csv``: one character (None = tab for ``.tsv``/``.tab`` files, else comma)
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    label: str | None = Field(default=None, min_length=1,
                              description="name shown in reports for a csv data set (default 'csv')")
    order: Literal["timestamp", "file"] = Field(default="timestamp", description=ORDER_DESCRIPTION)
    duplicates: Literal["first", "last", "keep", "error"] = Field(default="first",
                                                                  description=DUPLICATES_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in DATASETS:
            try:
                DATASETS.check(name)
            except KeyError as exc:  # UnknownNameError: message with close matches and the list
                raise PydanticCustomError("unknown_dataset", str(exc)) from None
        return name

    @model_validator(mode="after")
    def _fields_fit_name(self) -> "DatasetSpec":
        csv_fields = ("interactions", "items", "users_file", "columns", "delimiter", "label", "order", "duplicates")
        if self.name == CSV:
            missing = [f for f in ("interactions", "items") if getattr(self, f) is None]
            if missing:
                raise PydanticCustomError("csv_files", "name: csv needs {missing} (paths to CSV files, relative "
                                          "to the suite file)", {"missing": " and ".join(missing)})
        else:
            given = [f for f in csv_fields if getattr(self, f) is not None and f in self.model_fields_set]
            if given:
                raise PydanticCustomError("csv_only", "{given} only apply to name: csv, not {name}",
                                          {"given": ", ".join(given), "name": self.name})
        return self

    def audit_users(self, dataset: Dataset) -> list[str]:
        """The users the probes audit: ``users`` sampled with ``seed`` among users with a test item."""
        return dataset.sample_users(self.users, self.seed)
