"""Matching free-text titles to catalog items: exact after normalisation, then fuzzy,
never across a different year, sequel number or subtitle.

A :class:`Catalog` indexes the normalised titles (:func:`audit.parsing.normalize_title`)
once. :meth:`Catalog.match` then tries, in order:

1. **exact**: the query's normalised title equals a catalog title's (score 100, distance 0),
   or, failing that, equals it once a leading article is dropped from both
   ("Lion King" = "Lion King, The (1994)");
2. **fuzzy**: the catalog titles by a rapidfuzz scorer (default ``token_sort_ratio``, 0..100)
   on normalised strings without a leading article, best first; the first one with a score of
   at least ``threshold`` (default 90) that is *compatible* (below) is the match;
3. **none**: nothing compatible reaches the threshold. The nearest item by string similarity,
   its score and its distance are still reported, so probes can show a grounding-distance
   distribution; ``reason`` says why a close title was refused.

**Compatibility — the matching rule.** A query names a catalog item only when all hold:

- *year*: when both state a year, they are at most :data:`YEAR_TOLERANCE` (1) apart (release
  vs. festival year). A stated year further off is a different film, unless the catalog has a
  film of that title in that year ("Sabrina (1954)" and "Sabrina (1995)" are both real);
  "Toy Story (2019)" does not match "Toy Story (1995)". A query without a year matches any year;
- *sequel number*: the numbers in the title are the same set: digits ("Toy Story 4"), Roman
  numerals II-XX ("Part IV"), and the word or numeral after part / chapter / episode / volume
  ("Part Two", "Part I"). "Toy Story 4 (2019)" does not match "Toy Story (1995)", "The
  Godfather Part IV" does not match "The Godfather: Part II";
- *subtitle* (the text after ``:`` or `` - ``): when both have one, the subtitles must also
  reach the threshold on their own ("Star Trek: Insurrection" is not "Star Trek: First
  Contact"); when only one has one, the other must not be just its main title ("Alien" is not
  "Alien: Resurrection").

These rules apply to exact matches too (year) and to fuzzy ones (all three). Paraphrases still
match: an article moved or dropped ("Godfather, The"), case, accents, punctuation ("Alien:
Resurrection" = "Alien Resurrection"), "&" for "and", a missing year, small misspellings.

``distance = 1 - score / 100`` (0 = identical after normalisation, 1 = nothing in common); a
title refused only for its year has distance 0 and is still unmatched.

Duplicate titles: catalogs list some items twice (ML-100k has a few films under two ids)
and normalisation removes years, so remakes share a key ("Sabrina (1954)" / "Sabrina (1995)").
A match carries ``item_ids``: every catalog item the title may mean, in catalog order;
when the query has a year, only those within the tolerance. ``item_id``
is the canonical one: the first of ``item_ids``. :meth:`Catalog.same_item` and
:meth:`Catalog.aliases` let probes count a hit on any id sharing the title.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Sequence

import re

import numpy as np
from rapidfuzz import fuzz, process

from audit.errors import ConfigError
from audit.parsing import ARTICLES, normalize_title, strip_year, title_year, unmove_article

MatchKind = Literal["exact", "fuzzy", "none"]

#: rapidfuzz scorers a user may name (all return 0..100 similarities).
SCORERS: dict[str, Callable[..., float]] = {
    "token_sort_ratio": fuzz.token_sort_ratio,
    "token_set_ratio": fuzz.token_set_ratio,
    "ratio": fuzz.ratio,
    "partial_ratio": fuzz.partial_ratio,
    "WRatio": fuzz.WRatio,
    "QRatio": fuzz.QRatio,
}
DEFAULT_SCORER = "token_sort_ratio"
DEFAULT_THRESHOLD = 90.0

_NORMALISED_ARTICLES = frozenset(normalize_title(a + " x").split()[0] for a in ARTICLES)

#: a stated year this far from the catalog's (or closer) is the same film
YEAR_TOLERANCE = 1
_ROMAN = {r: i for i, r in enumerate(
    ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv",
     "xvi", "xvii", "xviii", "xix", "xx"], start=1)}
_WORDS = {w: i for i, w in enumerate(
    ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"], start=1)}
_SEQUEL_MARKERS = frozenset({"part", "chapter", "episode", "volume", "vol", "pt"})
_SUBTITLE_SPLIT = re.compile(r"\s*:\s+|\s+[-\u2013\u2014]\s+")


def title_numbers(key: str) -> frozenset[int]:
    """The numbers a normalised title carries (sequel numbers and numbers in the name):
    digits, Roman numerals II-XX, and a numeral/word after part/chapter/episode/volume.

    >>> sorted(title_numbers("the godfather part iv")), sorted(title_numbers("toy story"))
    ([4], [])
    """
    tokens = key.split()
    out: set[int] = set()
    for j, tok in enumerate(tokens):
        after_marker = j > 0 and tokens[j - 1] in _SEQUEL_MARKERS
        if tok.isdigit():
            out.add(int(tok))
        elif tok in _ROMAN and (tok != "i" or after_marker) and (tok not in ("v", "x") or after_marker
                                                                  or j == len(tokens) - 1):
            out.add(_ROMAN[tok])
        elif after_marker and tok in _WORDS:
            out.add(_WORDS[tok])
    return frozenset(out)


@dataclass(frozen=True)
class TitleParts:
    """What the compatibility rule compares: normalised main title, subtitle, numbers, year."""

    main: str
    subtitle: str
    numbers: frozenset[int]
    year: int | None

    @classmethod
    def of(cls, title: str) -> "TitleParts":
        text = unmove_article(strip_year(title.strip())) if isinstance(title, str) else ""
        head, *rest = _SUBTITLE_SPLIT.split(text, maxsplit=1)
        main = drop_leading_article(normalize_title(head))
        sub = drop_leading_article(normalize_title(rest[0])) if rest else ""
        return cls(main, sub, title_numbers(normalize_title(text)),
                   title_year(title) if isinstance(title, str) else None)


def drop_leading_article(key: str) -> str:
    """'the godfather' -> 'godfather' (a normalised key; a lone article stays)."""
    head, _, rest = key.partition(" ")
    return rest if head in _NORMALISED_ARTICLES and rest else key


@dataclass(frozen=True)
class Match:
    """The catalog item a title refers to, if any, and how close the nearest one is.

    ``item_id`` is None when ``kind == "none"``. ``nearest_id``/``nearest_title`` are set
    whenever the catalog is non-empty and the query has a normalised form, even below the
    threshold. ``score`` is the similarity to the nearest title (0..100) and ``distance``
    ``1 - score/100`` (0..1)."""

    query: str
    item_id: str | None
    kind: MatchKind
    score: float
    distance: float
    nearest_id: str | None = None
    nearest_title: str | None = None
    item_ids: tuple[str, ...] = ()
    reason: str = ""  # why the nearest title was refused (year, sequel number, subtitle), if it was

    @property
    def matched(self) -> bool:
        return self.item_id is not None


class Catalog:
    """Catalog titles indexed for matching. ``titles`` maps item id -> display title
    (e.g. ``Dataset.item_titles``: 'Godfather, The (1972)')."""

    def __init__(self, titles: Mapping[str, str], *, threshold: float = DEFAULT_THRESHOLD,
                 scorer: str = DEFAULT_SCORER) -> None:
        if scorer not in SCORERS:
            raise ConfigError(f"unknown fuzzy scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
        if not 0.0 <= float(threshold) <= 100.0:
            raise ConfigError(f"fuzzy threshold must be within 0..100, got {threshold!r}")
        self.threshold = float(threshold)
        self.scorer_name = scorer
        self._scorer = SCORERS[scorer]
        self.titles: dict[str, str] = {str(i): str(t) for i, t in titles.items()}
        self._year: dict[str, int | None] = {i: title_year(t) for i, t in self.titles.items()}
        by_key: dict[str, list[str]] = {}
        for item_id, title in self.titles.items():
            key = normalize_title(title)
            if key:
                by_key.setdefault(key, []).append(item_id)
        self._ids_by_key: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in by_key.items()}
        self._keys: list[str] = list(self._ids_by_key)
        by_bare: dict[str, str] = {}
        for key in self._keys:
            by_bare.setdefault(drop_leading_article(key), key)
        self._key_by_bare = by_bare
        self._bare_keys: list[str] = [drop_leading_article(k) for k in self._keys]
        self._key_of: dict[str, str] = {i: k for k, ids in self._ids_by_key.items() for i in ids}
        self._parts: dict[str, TitleParts] = {i: TitleParts.of(t) for i, t in self.titles.items()}

    @classmethod
    def from_dataset(cls, dataset: object, **kwargs: float | str) -> "Catalog":
        """A catalog of ``dataset.item_titles`` (titles with years)."""
        return cls(getattr(dataset, "item_titles"), **kwargs)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.titles)

    def __contains__(self, title: object) -> bool:
        return isinstance(title, str) and normalize_title(title) in self._ids_by_key

    # -- identities -----------------------------------------------------------------------
    def aliases(self, item_id: str) -> tuple[str, ...]:
        """Every id whose title normalises like ``item_id``'s (itself included), catalog order."""
        key = self._key_of.get(str(item_id))
        return self._ids_by_key[key] if key is not None else (str(item_id),)

    def canonical(self, item_id: str) -> str:
        """The first id in catalog order sharing ``item_id``'s normalised title."""
        return self.aliases(item_id)[0]

    def same_item(self, a: str, b: str) -> bool:
        """True when two ids name the same title (duplicates and same-title remakes count)."""
        ka, kb = self._key_of.get(str(a)), self._key_of.get(str(b))
        return str(a) == str(b) or (ka is not None and ka == kb)

    # -- matching ---------------------------------------------------------------------------
    def match(self, title: str) -> Match:
        """Match one free-text title (see the module docstring for the rules)."""
        return self.match_many([title])[0]

    def match_many(self, titles: Sequence[str]) -> list[Match]:
        """Match many titles; the fuzzy step runs once for all non-exact queries (rapidfuzz cdist)."""
        keys = [normalize_title(t) if isinstance(t, str) else "" for t in titles]
        out: list[Match | None] = [None] * len(titles)
        fuzzy_rows: list[int] = []
        refused: dict[int, str] = {}
        for row, (title, key) in enumerate(zip(titles, keys)):
            if key not in self._ids_by_key and drop_leading_article(key) in self._key_by_bare:
                key = self._key_by_bare[drop_leading_article(key)]
            if key in self._ids_by_key:
                ids = self._pick_ids(self._ids_by_key[key], title)
                if ids:
                    out[row] = Match(str(title), ids[0], "exact", 100.0, 0.0, ids[0],
                                     self.titles[ids[0]], ids)
                    continue
                refused[row] = self._year_reason(title, self._ids_by_key[key])
            if not key or not self._keys:
                out[row] = Match(str(title), None, "none", 0.0, 1.0)
            else:
                fuzzy_rows.append(row)
        if fuzzy_rows:
            scores = process.cdist([drop_leading_article(keys[r]) for r in fuzzy_rows], self._bare_keys,
                                   scorer=self._scorer,
                                   processor=None, dtype=np.float32, workers=1)
            for j, row in enumerate(fuzzy_rows):
                out[row] = self._fuzzy(str(titles[row]), scores[j], refused.get(row, ""))
        return [m for m in out if m is not None]

    def _fuzzy(self, title: str, scores: np.ndarray, reason: str) -> Match:
        """The best compatible catalog title at or above the threshold, else 'none' (nearest kept)."""
        order = np.argsort(-scores, kind="stable")
        nearest_key = self._keys[int(order[0])]
        nearest_score = float(scores[order[0]])
        query = TitleParts.of(title)
        for idx in order:
            score = float(scores[idx])
            if score < self.threshold:
                break
            key = self._keys[int(idx)]
            ids = self._pick_ids(self._ids_by_key[key], title)
            why = self._incompatible(query, self._parts[ids[0]] if ids else None, title, key)
            if not why:
                return Match(title, ids[0], "fuzzy", score, 1.0 - score / 100.0, ids[0], self.titles[ids[0]], ids)
            if key == nearest_key and not reason:
                reason = why
        ids = self._ids_by_key[nearest_key]
        return Match(title, None, "none", nearest_score, 1.0 - nearest_score / 100.0, ids[0],
                     self.titles[ids[0]], (), reason)

    def _incompatible(self, query: TitleParts, item: TitleParts | None, title: str, key: str) -> str:
        """Why a fuzzy candidate is another film ('' when compatible)."""
        if item is None:
            return self._year_reason(title, self._ids_by_key[key])
        if query.numbers != item.numbers:
            return (f"numbers {sorted(query.numbers)} vs {sorted(item.numbers)} "
                    "(another sequel or another title)")
        if query.subtitle and item.subtitle:
            if float(self._scorer(query.subtitle, item.subtitle)) < self.threshold:
                return f"subtitle {query.subtitle!r} vs {item.subtitle!r}"
        elif query.subtitle and item.main == query.main:
            return f"subtitle {query.subtitle!r} added to {item.main!r}"
        elif item.subtitle and query.main == item.main:
            return f"subtitle {item.subtitle!r} missing"
        return ""

    def _pick_ids(self, ids: tuple[str, ...], query: str) -> tuple[str, ...]:
        """``ids`` compatible with the query's year: all when it states none; else those within
        :data:`YEAR_TOLERANCE` (the exact year first); () when none is (another film)."""
        year = title_year(query) if isinstance(query, str) else None
        if year is None:
            return ids
        exact = tuple(i for i in ids if self._year.get(i) == year)
        near = tuple(i for i in ids if i not in exact and (self._year.get(i) is None
                                                            or abs(self._year[i] - year) <= YEAR_TOLERANCE))
        return exact + near

    def _year_reason(self, query: str, ids: tuple[str, ...]) -> str:
        years = sorted({y for i in ids if (y := self._year.get(i)) is not None})
        return f"year {title_year(query)} vs the catalog's {', '.join(map(str, years))}"

    def names_a_title(self, text: str) -> bool:
        """True when ``text`` can be a title: it has a letter, or is a catalog title as written
        ("1941"). A bare number or year ("1996") is not a title."""
        return isinstance(text, str) and (any(ch.isalpha() for ch in text) or text in self)

    def item_ids_for(self, titles: Iterable[str]) -> list[str | None]:
        """The canonical matched id per title (None when unmatched)."""
        return [m.item_id for m in self.match_many(list(titles))]
