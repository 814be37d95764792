"""The hallucination probe finds invented, repeated, consumed and off-length answers in the
amounts planted by plain Python recommenders, and flags nothing on clean ones."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pytest

from audit.data.dataset import Dataset
from audit.interface import RecRequest, Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.hallucination import HallucinationConfig, HallucinationProbe

REAL_TITLES = [
    ("Godfather, The", 1972), ("Usual Suspects, The", 1995), ("Big Lebowski, The", 1998),
    ("Graduate, The", 1967), ("Apartment, The", 1960), ("Toy Story", 1995), ("Heat", 1995),
    ("Casablanca", 1942), ("Fargo", 1996), ("Vertigo", 1958), ("Alien", 1979), ("Brazil", 1985),
    ("Amadeus", 1984), ("Psycho", 1960), ("Rocky", 1976), ("Jaws", 1975), ("Braveheart", 1995),
    ("Clueless", 1995), ("Gattaca", 1997), ("Titanic", 1997), ("Contact", 1997), ("Scream", 1996),
    ("Twister", 1996), ("Sabrina", 1954), ("Rebecca", 1940), ("Notorious", 1946), ("Gandhi", 1982),
    ("Platoon", 1986), ("Ran", 1985), ("Unforgiven", 1992),
]
INVENTED = [f"Zorblax Quantum Saga Part {n}" for n in range(1, 40)]


def mixed_form(title: str, year: int, variant: int) -> str:
    """The same catalog title written in different surface forms."""
    from audit.parsing import unmove_article

    forms = [f"{title} ({year})", unmove_article(title).lower(), f"  {unmove_article(title).upper()} ",
             f"{unmove_article(title)} ({year})", title]
    return forms[variant % len(forms)]


@pytest.fixture(scope="module")
def films() -> Dataset:
    """30 real film titles (moved articles included), 40 users with 10 interactions each."""
    rng = np.random.default_rng(3)
    items = pd.DataFrame({"item_id": [str(i + 1) for i in range(len(REAL_TITLES))],
                          "title": [t for t, _ in REAL_TITLES],
                          "year": pd.array([y for _, y in REAL_TITLES], dtype="Int64"),
                          "genres": ["Drama"] * len(REAL_TITLES)})
    rows = []
    for u in range(1, 41):
        for t, i in enumerate(rng.choice(len(REAL_TITLES), size=10, replace=False) + 1):
            rows.append((str(u), str(i), 4.0, 1000 * u + t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Dataset("films", inter, items)


def context(ds: Dataset, seed: int = 0) -> ProbeContext:
    return ProbeContext(dataset=ds, users=ds.evaluable_users(), seed=seed,
                        recorder=OutputRecorder("rec", "hallucination"))


def run(rec: Recommender, ds: Dataset, **cfg: object) -> tuple[dict, ProbeContext]:
    ctx = context(ds)
    result = HallucinationProbe(HallucinationConfig(**cfg)).run(rec, ctx)
    assert result.status == "pass", result.reason
    return result, ctx


class ListRecommender(Recommender):
    """Generate-only: ``make(request, k, user_index) -> list of titles``."""

    capabilities = frozenset({"generate"})

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [self.make(r, k, int(r.user)) for r in reqs]


def unseen_titles(ds: Dataset, req: RecRequest) -> list[tuple[str, int]]:
    hist = {t.lower() for t in req.history}
    return [(t, y) for t, y in REAL_TITLES if f"{t} ({y})".lower() not in hist]


def test_catalog_titles_in_mixed_forms_have_zero_hallucination(films: Dataset) -> None:
    def make(req, k, u):
        pool = unseen_titles(films, req)
        return [mixed_form(t, y, u + j) for j, (t, y) in enumerate(pool[:k])]

    result, ctx = run(ListRecommender(make), films, k=10, fuzzy_threshold=90)
    m = result.metrics
    assert m["hallucination_rate"].value == 0.0
    assert m["hallucination_rate"].ci[0] == 0.0 and m["hallucination_rate"].ci[1] > 0.05, "never a zero-width CI at 0"
    assert m["hallucination_rate"].n == 40
    assert m["compliance_rate"].value == 1.0
    assert m["duplicate_rate"].value == 0.0
    assert m["consumed_rate"].value == 0.0
    assert result.details["slot_kinds"]["none"] == 0
    assert any("the godfather" == r for rec in ctx.recorder.records for r in rec["parsed"])
    assert {rec["condition"] for rec in ctx.recorder.records} == {"open"}


def test_half_invented_slots_give_rate_one_half_within_ci(films: Dataset) -> None:
    rng = np.random.default_rng(11)
    coins = rng.random((41, 10)) < 0.5

    def make(req, k, u):
        pool = unseen_titles(films, req)
        return [INVENTED[j] + f" {u}" if coins[u, j] else f"{pool[j][0]} ({pool[j][1]})" for j in range(k)]

    result, _ = run(ListRecommender(make), films, k=10)
    rate = result.metrics["hallucination_rate"]
    lo, hi = rate.ci
    assert lo < 0.5 < hi
    assert abs(rate.value - coins[1:].mean()) < 1e-12  # the planted share, exactly
    assert 0.0 < lo and hi < 1.0


def test_exactly_half_invented_gives_exactly_one_half(films: Dataset) -> None:
    def make(req, k, u):
        pool = unseen_titles(films, req)
        return [INVENTED[j] if j % 2 else f"{pool[j][0]} ({pool[j][1]})" for j in range(k)]

    result, _ = run(ListRecommender(make), films, k=10)
    assert result.metrics["hallucination_rate"].value == 0.5
    assert result.metrics["hallucination_rate"].ci == (0.5, 0.5)


def test_only_invented_titles_give_rate_one(films: Dataset) -> None:
    result, _ = run(ListRecommender(lambda req, k, u: INVENTED[:k]), films, k=10)
    m = result.metrics
    assert m["hallucination_rate"].value == 1.0
    assert m["compliance_rate"].value == 1.0
    assert m["grounding_distance_mean"].value > 0.3
    assert len(result.details["hallucinated_examples"]) > 0


def test_misspelt_titles_match_fuzzily_and_count_as_real(films: Dataset) -> None:
    def make(req, k, u):
        pool = unseen_titles(films, req)
        # drop the third letter of longer titles: close enough for token_sort_ratio >= 85
        return [f"{t[:2]}{t[3:]} ({y})" if len(t) > 12 else f"{t} ({y})" for t, y in pool[:k]]

    result, _ = run(ListRecommender(make), films, k=10, fuzzy_threshold=85)
    m = result.metrics
    assert m["hallucination_rate"].value == 0.0
    assert m["fuzzy_match_rate"].value > 0.0
    assert 0.0 < m["grounding_distance_mean"].value < 0.15


def test_duplicates_and_consumed_items_are_counted(films: Dataset) -> None:
    def repeat_history(req, k, u):
        return [req.history[0]] * k  # one consumed title, repeated

    result, _ = run(ListRecommender(repeat_history), films, k=10)
    m = result.metrics
    assert m["duplicate_rate"].value == pytest.approx(0.9)
    assert m["consumed_rate"].value == 1.0
    assert m["hallucination_rate"].value == 0.0


def test_short_answers_fail_compliance(films: Dataset) -> None:
    def short(req, k, u):
        pool = unseen_titles(films, req)
        return [f"{t} ({y})" for t, y in pool[: (k if u % 2 else 3)]]

    result, _ = run(ListRecommender(short), films, k=10)
    assert result.metrics["compliance_rate"].value == pytest.approx(0.5)
    assert result.metrics["hallucination_rate"].value == 0.0


def test_grounding_finds_the_held_out_item_behind_a_misspelling(films: Dataset) -> None:
    test_title = {u: films.item_titles[s.test] for u, s in films.sequences.items()}

    def make(req, k, u):
        t = test_title[req.user]
        return [t.replace("(", "").replace(")", "") + " xq"] + INVENTED[: k - 1]

    result, _ = run(ListRecommender(make), films, k=10, fuzzy_threshold=99)
    m = result.metrics
    assert m["hallucination_rate"].value == 1.0  # nothing is an exact/accepted match
    assert m["grounded_hr@10"].value == pytest.approx(1.0)
    assert m["grounded_ndcg@10"].value == pytest.approx(1.0)


def test_embedding_grounding_uses_the_recommenders_embed(films: Dataset) -> None:
    """A recommender whose embedding of an invented code word equals the held-out item's
    vector: only embedding grounding (not string distance) finds the item."""
    titles = list(films.item_titles.values())
    test_index = {u: titles.index(films.item_titles[s.test]) for u, s in films.sequences.items()}

    class Embedder(ListRecommender):
        capabilities = frozenset({"generate", "embed"})

        def embed(self, texts):
            vecs = []
            for t in texts:
                v = np.zeros(len(titles))
                if t.startswith("Codeword Q"):
                    v[int(t.removeprefix("Codeword Q"))] = 1.0
                elif t in titles:
                    v[titles.index(t)] = 1.0
                vecs.append(v)
            return np.array(vecs)

    rec = Embedder(lambda req, k, u: [f"Codeword Q{test_index[req.user]}"] + INVENTED[: k - 1])
    plain, _ = run(rec, films, k=10)
    grounded, _ = run(rec, films, k=10, embed_grounding=True)
    assert grounded.metrics["grounded_hr@10"].value == 1.0
    assert plain.metrics["grounded_hr@10"].value < 1.0
    assert "own embed" in grounded.details["grounding"]


def test_garbage_output_does_not_crash(films: Dataset) -> None:
    result, _ = run(ListRecommender(lambda req, k, u: []), films, k=5)
    m = result.metrics
    assert m["compliance_rate"].value == 0.0
    assert m["hallucination_rate"].n == 0  # no slots: the rate is undefined, not 0
    assert np.isnan(m["hallucination_rate"].value)
    assert m["grounded_hr@5"].value == 0.0


def test_probe_is_reproducible(films: Dataset) -> None:
    rng_make = lambda req, k, u: [INVENTED[(u * j) % 30] if (u + j) % 3 == 0 else req.history[j % 3]
                                  for j in range(k)]
    a, _ = run(ListRecommender(rng_make), films, k=10, users=25)
    b, _ = run(ListRecommender(rng_make), films, k=10, users=25)
    assert a.to_json() == b.to_json()
    assert a.metrics["hallucination_rate"].n == 25


# -- issue 14: invented sequels and wrong years, title-less lines, short answers -----------------
def test_invented_sequels_and_wrong_years_are_hallucinated(films: Dataset) -> None:
    """Every slot names a catalog title with another year (> 1 off) or an invented sequel
    number: all ten are hallucinated (the old fuzzy match ignored year and number: rate 0)."""
    fakes = ["Toy Story 4 (2019)", "Toy Story (2019)", "The Godfather Part IV", "Rocky V (1990)",
             "Heat 2 (2022)", "Alien (2024)", "Jaws 5", "Scream 4 (2011)", "Titanic II (2010)",
             "Psycho (1998)"]
    result, _ = run(ListRecommender(lambda req, k, u: fakes[:k]), films, k=10)
    m = result.metrics
    assert m["hallucination_rate"].value == 1.0 and m["hallucination_rate_of_k"].value == 1.0
    assert result.details["refused_near_matches"], "refusals are shown with their reason"


def test_lines_without_a_title_are_not_compliant(films: Dataset) -> None:
    """'1. 1996\\n2. 1997 ...' (SmolLM2 via llama.cpp) parses to ten slots but names no title."""
    from audit.parsing import parse_item_list

    years = parse_item_list("\n".join(f"{i + 1}. {1996 + i}" for i in range(10)))
    assert len(years) == 10
    result, _ = run(ListRecommender(lambda req, k, u: years[:k]), films, k=10)
    assert result.metrics["compliance_rate"].value == 0.0
    assert result.metrics["hallucination_rate"].value == 1.0


def test_short_answers_do_not_lower_the_rate_over_requested_slots(films: Dataset) -> None:
    """Half the users answer one invented title, the other half nothing at all: the rate over
    returned items is 1 over the half that answered; over the k requested slots it is 1 for all
    40 users; nobody is dropped."""
    result, _ = run(ListRecommender(lambda req, k, u: INVENTED[:1] if u % 2 else []), films, k=10)
    m = result.metrics
    assert m["hallucination_rate"].value == 1.0 and m["hallucination_rate"].n == 20
    assert m["hallucination_rate_of_k"].value == 1.0 and m["hallucination_rate_of_k"].n == 40
    assert m["empty_answer_rate"].value == 0.5 and m["compliance_rate"].value == 0.0
    assert result.details["users_returning_nothing"] == 20


def test_every_metric_is_declared(films: Dataset) -> None:
    result, _ = run(ListRecommender(lambda req, k, u: INVENTED[:k]), films, k=10)
    assert result.undeclared() == []
    assert result.metrics["hallucination_rate_of_k"].spec.direction == "lower"
    assert len(result.metrics["hallucination_rate_of_k"].per_unit) == 40, "per-user values for paired tests"
