"""Catalog matching: exact after normalisation, fuzzy with a threshold, nearest item always."""

from __future__ import annotations

import time

import pytest

from audit.catalog import Catalog, drop_leading_article
from audit.errors import ConfigError

TITLES = {
    "1": "Toy Story (1995)",
    "2": "Godfather, The (1972)",
    "3": "Godfather: Part II, The (1974)",
    "4": "Chasing Amy (1997)",
    "5": "Chasing Amy (1997)",      # listed twice, as in ML-100k (246 / 268)
    "6": "Sabrina (1954)",
    "7": "Sabrina (1995)",          # a remake: same title, another year
    "8": "Lion King, The (1994)",
    "9": "Postino, Il (1994)",
}


@pytest.fixture()
def catalog() -> Catalog:
    return Catalog(TITLES)


@pytest.mark.parametrize("query", ["Godfather, The (1972)", "The Godfather", "the godfather",
                                   "THE GODFATHER (1972)", "Godfather"])
def test_surface_forms_match_exactly(catalog: Catalog, query: str) -> None:
    m = catalog.match(query)
    assert (m.item_id, m.kind, m.score, m.distance) == ("2", "exact", 100.0, 0.0)


def test_misspelling_matches_fuzzily_above_threshold(catalog: Catalog) -> None:
    m = catalog.match("The Lion Kng (1994)")
    assert m.kind == "fuzzy" and m.item_id == "8"
    assert 90 <= m.score < 100 and m.distance == pytest.approx(1 - m.score / 100)


def test_invented_title_is_none_but_reports_nearest(catalog: Catalog) -> None:
    m = catalog.match("Toy Soldiers of the Galaxy")
    assert m.kind == "none" and m.item_id is None and not m.matched and m.item_ids == ()
    assert m.nearest_id is not None and m.nearest_title == TITLES[m.nearest_id]
    assert 0.0 < m.distance <= 1.0 and m.score < catalog.threshold


def test_threshold_is_configurable(catalog: Catalog) -> None:
    query = "Toy Stori Two"
    strict, loose = Catalog(TITLES, threshold=99), Catalog(TITLES, threshold=60)
    assert strict.match(query).kind == "none"
    assert loose.match(query).kind == "fuzzy" and loose.match(query).item_id == "1"
    assert strict.match(query).nearest_id == loose.match(query).nearest_id == "1"


def test_bad_scorer_or_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scorer"):
        Catalog(TITLES, scorer="levenshtein_magic")
    with pytest.raises(ConfigError, match="threshold"):
        Catalog(TITLES, threshold=150)


def test_duplicate_titles_map_to_all_ids_with_first_canonical(catalog: Catalog) -> None:
    m = catalog.match("Chasing Amy")
    assert m.item_id == "4" and m.item_ids == ("4", "5")
    assert catalog.canonical("5") == "4"
    assert catalog.same_item("4", "5") and not catalog.same_item("4", "1")
    assert catalog.aliases("1") == ("1",)


def test_year_picks_among_same_title_items(catalog: Catalog) -> None:
    assert catalog.match("Sabrina (1995)").item_ids == ("7",)
    assert catalog.match("Sabrina (1954)").item_ids == ("6",)
    assert catalog.match("Sabrina").item_ids == ("6", "7")


def test_similar_but_distinct_titles_are_not_merged(catalog: Catalog) -> None:
    assert catalog.match("The Godfather: Part II").item_id == "3"
    assert catalog.match("The Godfather").item_id == "2"


def test_batch_matches_equal_single_matches(catalog: Catalog) -> None:
    queries = ["godfather", "Lion Kng", "nonsense words here", "", "Il Postino", "Postino"]
    assert catalog.match_many(queries) == [catalog.match(q) for q in queries]
    assert catalog.item_ids_for(queries) == [m.item_id for m in catalog.match_many(queries)]
    assert catalog.match("").kind == "none" and catalog.match("").nearest_id is None


def test_drop_leading_article() -> None:
    assert drop_leading_article("the godfather") == "godfather"
    assert drop_leading_article("the") == "the"


def test_catalog_of_dataset_titles(tiny_dataset) -> None:
    cat = Catalog.from_dataset(tiny_dataset)
    assert len(cat) == len(tiny_dataset.item_titles)
    assert cat.match("film number 7").item_id == "7"


def test_builds_and_matches_quickly_at_ml100k_scale() -> None:
    titles = {str(i): f"Synthetic Picture {i} of the Catalog ({1930 + i % 70})" for i in range(1, 1683)}
    t0 = time.perf_counter()
    cat = Catalog(titles)
    queries = [f"Synthetic Pictur {i} of the Catalog" for i in range(1, 501)]
    matches = cat.match_many(queries)
    elapsed = time.perf_counter() - t0
    assert all(m.kind == "fuzzy" for m in matches)
    assert elapsed < 5.0, f"building + 500 fuzzy matches took {elapsed:.2f}s"


@pytest.mark.slow
def test_ml100k_titles_match_themselves_and_duplicates_are_grouped(ml100k) -> None:
    cat = Catalog.from_dataset(ml100k)
    titles = ml100k.item_titles
    matches = cat.match_many(list(titles.values()))
    assert all(m.kind == "exact" for m in matches)
    assert all(iid in m.item_ids for iid, m in zip(titles, matches))
    assert cat.same_item("246", "268")  # Chasing Amy, listed twice
    assert cat.match("The Godfather").item_id == "127"


# -- the matching rule: year, sequel number and subtitle (issue 14) ----------------------------
RULE_TITLES = {
    "1": "Toy Story (1995)", "2": "Godfather, The (1972)", "3": "Godfather: Part II, The (1974)",
    "6": "Sabrina (1954)", "7": "Sabrina (1995)", "8": "Star Trek: First Contact (1996)",
    "9": "Alien: Resurrection (1997)", "10": "Shawshank Redemption, The (1994)",
    "11": "Home Alone (1990)", "12": "Apollo 13 (1995)", "13": "Lion King, The (1994)",
    "14": "Monty Python and the Holy Grail (1974)", "15": "Amélie (2001)", "16": "Rocky (1976)",
}

#: queries that name another film than the nearest catalog title: each must stay unmatched
DIFFERENT_FILMS = [
    "Toy Story 4 (2019)", "Toy Story 4", "Toy Story 2", "Toy Story (2019)", "The Godfather Part IV",
    "The Godfather: Part III", "Godfather Part 3 (1990)", "Sabrina (2010)", "Star Trek: Insurrection",
    "Star Trek: Generations (1994)", "Alien", "Shawshank Redemption (1990)", "Home Alone 2: Lost in New York",
    "Home Alone 3", "Apollo 18 (2011)", "Rocky II", "Rocky V (1990)", "Rocky Balboa - The Return",
    "The Lion King (2019)", "The Lion King II: Simba's Pride",
]

#: paraphrases of catalog titles (query, id): each must still match that id
PARAPHRASES = [
    ("Godfather, The", "2"), ("the godfather", "2"), ("THE GODFATHER (1972)", "2"), ("Godfather (1973)", "2"),
    ("The Godfather: Part II", "3"), ("The Godfather Part II (1974)", "3"), ("Godfather Part II", "3"),
    ("toy story", "1"), ("Toy Story (1996)", "1"), ("Toy-Story!", "1"), ("Sabrina (1954)", "6"),
    ("Sabrina (1995)", "7"), ("Star Trek - First Contact", "8"), ("Star Trek First Contact (1996)", "8"),
    ("Alien Resurrection", "9"), ("The Shawshank Redemption", "10"), ("Shawshank Redemtion (1994)", "10"),
    ("Apollo 13", "12"), ("Apolo 13 (1995)", "12"), ("Lion King", "13"), ("The Lion King (1994)", "13"),
    ("Monty Python & the Holy Grail", "14"), ("Amelie", "15"), ("amélie (2001)", "15"), ("Rocky", "16"),
]


@pytest.mark.parametrize("query", DIFFERENT_FILMS)
def test_other_year_sequel_or_subtitle_is_another_film(query: str) -> None:
    m = Catalog(RULE_TITLES).match(query)
    assert not m.matched, f"{query!r} matched {m.nearest_title!r} ({m.kind}, {m.score:.0f})"
    assert m.nearest_id is not None


@pytest.mark.parametrize("query, item_id", PARAPHRASES)
def test_paraphrases_still_match(query: str, item_id: str) -> None:
    m = Catalog(RULE_TITLES).match(query)
    assert m.item_id == item_id, f"{query!r} -> {m.item_id} ({m.kind}, {m.score:.0f}, {m.reason})"


def test_refusals_say_why() -> None:
    cat = Catalog(RULE_TITLES)
    assert "year 2019" in cat.match("Toy Story (2019)").reason
    assert "numbers [4] vs [2]" in cat.match("The Godfather Part IV").reason
    assert "subtitle" in cat.match("Star Trek: Insurrection (1998)").reason or \
        cat.match("Star Trek: Insurrection (1998)").score < 90


def test_bare_numbers_do_not_name_a_title() -> None:
    cat = Catalog({**RULE_TITLES, "20": "1941 (1979)"})
    assert not cat.names_a_title("1996") and not cat.names_a_title("  ")
    assert cat.names_a_title("1941") and cat.names_a_title("Toy Story 4")
