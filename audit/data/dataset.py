"""The in-memory data set every loader produces, and the splits probes and variants use.

Columns (all loaders normalise to these):

- ``interactions``: ``user_id`` (str), ``item_id`` (str), ``rating`` (float), ``timestamp`` (int, seconds)
- ``items``: ``item_id`` (str), ``title`` (str, without year), ``year`` (Int64, may be missing),
  ``genres`` (str, ``|``-separated, may be empty)
- ``users`` (optional): ``user_id`` (str) and one column per attribute (str), e.g.
  ``gender``, ``age`` (bucket label), ``occupation``.
"""

from __future__ import annotations

import json
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

import numpy as np
import pandas as pd

#: ML-1M-style age buckets applied to ML-100k's exact ages (label -> [low, high]).
AGE_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("under 18", 0, 17), ("18-24", 18, 24), ("25-34", 25, 34), ("35-44", 35, 44),
    ("45-49", 45, 49), ("50-55", 50, 55), ("56+", 56, 200),
)


def age_bucket(age: int | float | str) -> str:
    """Map an exact age in years to its bucket label (e.g. 29 -> '25-34')."""
    a = int(float(age))
    for label, lo, hi in AGE_BUCKETS:
        if lo <= a <= hi:
            return label
    raise ValueError(f"age {age!r} outside 0..200")


def display_title(title: str, year: object) -> str:
    """'Toy Story', 1995 -> 'Toy Story (1995)'; no year -> the title alone."""
    if year is None or (isinstance(year, float) and np.isnan(year)) or year is pd.NA:
        return title
    return f"{title} ({int(year)})"


# -- the items frame every loader builds (titles and years normalised the MovieLens way) ----------
_TRAILING_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?:\s*\(V\))?\s*$")


def split_title_year(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); 'Heat' -> ('Heat', None). Drops a '(V)' after the year."""
    m = _TRAILING_YEAR.match(title)
    if m is None or not m.group("title"):
        return title.strip(), None
    return m.group("title").strip(), int(m.group("year"))


def normalise_items(item_ids: Iterable[object], titles: Iterable[object], years: Iterable[object],
                    genres: Iterable[str]) -> pd.DataFrame:
    """The ``items`` frame: ids as str, titles without a trailing year, ``year`` Int64.

    A given year (4 digits) wins; otherwise the title's trailing ``(YYYY)`` is used. The trailing
    year is cut from the title when it is used or equals the given year."""
    out_titles: list[str] = []
    out_years: list[int | None] = []
    for title, given in zip(titles, years):
        text = "" if title is None or (isinstance(title, float) and pd.isna(title)) else str(title).strip()
        stripped, in_title = split_title_year(text)
        year = _as_year(given)
        if year is None:
            year = in_title
        out_titles.append(stripped if in_title is not None and in_title == year else text)
        out_years.append(year)
    return pd.DataFrame({
        "item_id": pd.Series([str(i).strip() for i in item_ids], dtype=str),
        "title": pd.Series(out_titles, dtype=str),
        "year": pd.array(out_years, dtype="Int64"),
        "genres": pd.Series(list(genres), dtype=str),
    })


def drop_repeated_pairs(interactions: pd.DataFrame, keep: str) -> pd.DataFrame:
    """``interactions`` with one row per (user, item) pair: ``keep="first"`` keeps the pair's
    earliest row in the split's order (``timestamp``, then row order), ``"last"`` its latest; the
    kept rows stay in their original order (index reset)."""
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
    ordered = interactions.sort_values("timestamp", kind="stable")
    drop = ordered.duplicated(["user_id", "item_id"], keep=keep).reindex(interactions.index)
    return interactions.loc[~drop].reset_index(drop=True)


def _as_year(value: object) -> int | None:
    text = "" if value is None else str(value).strip()
    return int(text) if re.fullmatch(r"\d{4}", text) else None


@dataclass(frozen=True)
class UserSequence:
    """A user's chronological item ids split leave-one-out.

    ``train`` is everything but the last two interactions, ``valid`` the
    second-to-last and ``test`` the last item (None when the user has too few)."""

    user_id: str
    train: tuple[str, ...]
    valid: str | None
    test: str | None

    @property
    def full(self) -> tuple[str, ...]:
        return self.train + tuple(x for x in (self.valid, self.test) if x is not None)

    @property
    def test_history(self) -> tuple[str, ...]:
        """The history a model sees when predicting ``test``: train + valid."""
        return self.train + ((self.valid,) if self.valid is not None else ())


@dataclass(frozen=True)
class UserGroups:
    """A seeded partition of users: ``pretrain`` (public), ``finetune`` (private), ``heldout``
    (never trained on; the clean non-members of the memorisation probes)."""

    pretrain: tuple[str, ...]
    finetune: tuple[str, ...]
    heldout: tuple[str, ...]

    @property
    def trained(self) -> tuple[str, ...]:
        return self.pretrain + self.finetune

    def group_of(self, user_id: str) -> str:
        for name in ("pretrain", "finetune", "heldout"):
            if user_id in getattr(self, name + "_set"):
                return name
        raise KeyError(user_id)

    @cached_property
    def pretrain_set(self) -> frozenset[str]:
        return frozenset(self.pretrain)

    @cached_property
    def finetune_set(self) -> frozenset[str]:
        return frozenset(self.finetune)

    @cached_property
    def heldout_set(self) -> frozenset[str]:
        return frozenset(self.heldout)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions, items and (optionally) users of one data set."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    # -- identity -------------------------------------------------------------
    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 chars) of the normalised content and of the leave-one-out split made
        from it (each user's ordered train / validation / test items), so a change of the split
        rule can never reuse a model or result cached under the old split; for a user's files also of
        ``meta["reading"]`` (column mapping, delimiter, declared order, and the duplicates rule with its
        counts when the file repeats a user-item pair), so two files read differently never share a
        cache entry."""
        h = hashlib.sha256(self.name.encode())
        for frame in (self.interactions, self.items, self.users):
            if frame is None:
                h.update(b"<none>")
                continue
            h.update(",".join(map(str, frame.columns)).encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
        for uid, seq in sorted(self.sequences.items()):
            h.update("\x1f".join((uid, *seq.train, "|", seq.valid or "", seq.test or "")).encode() + b"\x1e")
        if self.meta.get("reading"):  # how a user's file was read (mapping, delimiter, order, duplicates)
            h.update(json.dumps(self.meta["reading"], sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    # -- lookups ----------------------------------------------------------------
    @cached_property
    def item_titles(self) -> dict[str, str]:
        """item_id -> display title with year, e.g. 'Toy Story (1995)'."""
        return {str(r.item_id): display_title(str(r.title), r.year)
                for r in self.items.itertuples(index=False)}

    @cached_property
    def attributes(self) -> tuple[str, ...]:
        """Names of the user attribute columns (empty without a users table)."""
        if self.users is None:
            return ()
        return tuple(c for c in self.users.columns if c != "user_id")

    @cached_property
    def user_profiles(self) -> dict[str, dict[str, str]]:
        """user_id -> {attribute: value} (empty dicts without a users table)."""
        if self.users is None:
            return {}
        cols = list(self.attributes)
        return {str(r[0]): {c: str(v) for c, v in zip(cols, r[1:]) if pd.notna(v)}
                for r in self.users[["user_id", *cols]].itertuples(index=False)}

    def attribute_values(self, attribute: str) -> list[str]:
        """Sorted distinct values of one user attribute."""
        if attribute not in self.attributes:
            raise KeyError(f"attribute {attribute!r} not in {list(self.attributes)}")
        assert self.users is not None
        return sorted(self.users[attribute].dropna().astype(str).unique().tolist())

    @cached_property
    def sequences(self) -> dict[str, UserSequence]:
        """Chronological leave-one-out split per user. Interactions with the same timestamp are
        ordered by item id in natural order (numerically where ids are numbers, so "9" < "10";
        ids that are not numbers after all numeric ones, by string), never by string order of
        numbers, which would put ids starting with "9" last; see ``tied_next_share``."""
        df = self.interactions.assign(_order=self.interactions["item_id"].astype(str).map(natural_key))
        df = df.sort_values(["user_id", "timestamp", "_order"], kind="stable")
        out: dict[str, UserSequence] = {}
        for uid, items in df.groupby("user_id", sort=True)["item_id"]:
            seq = tuple(items.astype(str))
            if len(seq) >= 3:
                out[str(uid)] = UserSequence(str(uid), seq[:-2], seq[-2], seq[-1])
            else:
                out[str(uid)] = UserSequence(str(uid), seq, None, None)
        return out

    @cached_property
    def tied_next_share(self) -> float:
        """Share (0-1) of users with a test item whose test interaction has the same timestamp as
        their validation interaction, so that which one is held out rests on the tie rule alone."""
        stamps = self.interactions.groupby(["user_id", "item_id"])["timestamp"].max()
        held = [(u, s) for u, s in self.sequences.items() if s.test is not None]
        if not held:
            return 0.0
        tied = sum(stamps[(u, s.valid)] == stamps[(u, s.test)] for u, s in held)
        return float(tied) / len(held)

    @cached_property
    def item_popularity(self) -> dict[str, int]:
        """item_id -> number of training interactions (leave-one-out train part only)."""
        counts: dict[str, int] = {i: 0 for i in self.items["item_id"].astype(str)}
        for s in self.sequences.values():
            for i in s.train:
                counts[i] = counts.get(i, 0) + 1
        return counts

    def user_ids(self) -> list[str]:
        return sorted(self.sequences, key=natural_key)

    def evaluable_users(self) -> list[str]:
        """Users with a test item, in natural id order."""
        return [u for u in self.user_ids() if self.sequences[u].test is not None]

    def sample_users(self, n: int | None, seed: int, among: Iterable[str] | None = None) -> list[str]:
        """A seeded sample of ``n`` evaluable users (all when n is None or larger), sorted."""
        pool = [u for u in (among if among is not None else self.evaluable_users())
                if u in self.sequences and self.sequences[u].test is not None]
        pool = sorted(set(pool), key=natural_key)
        if n is None or n >= len(pool):
            return pool
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(pool), size=n, replace=False)
        return sorted((pool[i] for i in picked), key=natural_key)

    def user_groups(self, *, seed: int = 0, pretrain: float = 0.5, heldout: float = 0.1) -> UserGroups:
        """Seeded split of all users into pretrain / finetune / heldout shares (fractions of users)."""
        if not (0 <= pretrain < 1 and 0 <= heldout < 1 and pretrain + heldout < 1):
            raise ValueError("need 0 <= pretrain, heldout and pretrain + heldout < 1")
        ids = self.user_ids()
        order = np.random.default_rng(seed).permutation(len(ids))
        n_pre = int(round(pretrain * len(ids)))
        n_held = int(round(heldout * len(ids)))
        shuffled = [ids[i] for i in order]
        key = natural_key
        return UserGroups(
            pretrain=tuple(sorted(shuffled[:n_pre], key=key)),
            heldout=tuple(sorted(shuffled[n_pre:n_pre + n_held], key=key)),
            finetune=tuple(sorted(shuffled[n_pre + n_held:], key=key)),
        )

    def negatives(self, user_id: str, n: int, seed: int, sampling: str = "uniform") -> list[str]:
        """``n`` item ids the user never interacted with, without replacement (seeded per user):
        ``uniform``, or ``popularity``: with probability proportional to the item's training
        interactions + 1 (popular negatives, which popularity alone cannot rank below the held-out item)."""
        seen = set(self.sequences[user_id].full)
        pool = [i for i in self.items["item_id"].astype(str) if i not in seen]
        if n > len(pool):
            raise ValueError(f"user {user_id} has only {len(pool)} unseen items, {n} negatives asked")
        rng = np.random.default_rng([seed, _stable_int(user_id)])
        if sampling == "uniform":
            return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
        if sampling != "popularity":
            raise ValueError(f"negative sampling must be 'uniform' or 'popularity', got {sampling!r}")
        pop = self.item_popularity
        weights = np.array([pop.get(i, 0) + 1.0 for i in pool])
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False, p=weights / weights.sum())]

    def subset_users(self, user_ids: Iterable[str], name: str | None = None) -> "Dataset":
        """The same catalog with only the given users' interactions (and profiles)."""
        keep = set(map(str, user_ids))
        inter = self.interactions[self.interactions["user_id"].isin(keep)].reset_index(drop=True)
        users = None if self.users is None else self.users[self.users["user_id"].isin(keep)].reset_index(drop=True)
        return Dataset(name or self.name, inter, self.items, users, self.source, dict(self.meta))


def natural_key(uid: str) -> tuple[int, str]:
    """Sort key of a user or item id: numbers numerically ("9" < "10"), then other ids as text."""
    return (int(uid), uid) if uid.isdigit() else (1 << 62, uid)


def _stable_int(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")
