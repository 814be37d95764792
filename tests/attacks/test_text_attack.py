"""Item-text rewrites stay within the edit budget, the black-box search finds a rewrite that a
text-sensitive recommender rewards, and canonical titles take the gain back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from poisoning_testkit import LengthBiasedScorer, PopularityScorer, TextSensitiveScorer, probe_context

from attacks.probe import PoisoningConfig, PoisoningProbe
from attacks.targets import TargetSpec
from attacks.text_attack import (
    CanonicalTitlesConfig,
    CanonicalTitlesRecommender,
    CanonicalTitlesVariant,
    ItemTextAttackConfig,
    ItemTextAttackRecommender,
    ItemTextAttackVariant,
    candidate_rewrites,
    split_year,
    word_edit_distance,
)
from audit.catalog import Catalog
from audit.errors import ConfigError
from audit.interface import Generation, RecRequest, Recommender
from audit.variants import BuildContext

SPEC = TargetSpec(n=3, seed=1)


def test_word_edit_distance_counts_word_edits():
    assert word_edit_distance("Heat (1995)", "Heat (1995)") == 0
    assert word_edit_distance("The Big Sleep", "The Large Sleep") == 1
    assert word_edit_distance("The Big Sleep", "The Big Sleep!") == 1
    assert word_edit_distance("The Big Sleep", "A Large Sleep") == 2


@pytest.mark.parametrize("budget", [1, 2])
def test_rewrites_respect_the_budget_and_keep_the_year(budget):
    title = "Little Film Story (1996)"
    rewrites = candidate_rewrites(title, max_edits=budget, min_edits=1, limit=500)
    assert rewrites and all(1 <= r.edits <= budget for r in rewrites)
    assert all(r.edits == word_edit_distance(title, r.text) for r in rewrites)
    assert all(split_year(r.text)[1] == " (1996)" for r in rewrites)
    assert any("Small" in r.text or "Tiny" in r.text for r in rewrites)  # synonym substitutions
    assert any("!" in r.text for r in rewrites)  # inserted punctuation
    assert len(candidate_rewrites(title, max_edits=2, limit=5, seed=3)) == 5


def test_deletions_keep_the_year_and_a_word_that_names_the_item():
    title = "Wedding Gift, The (1994)"
    rewrites = candidate_rewrites(title, max_edits=2, limit=500, operations=["delete"])
    texts = {r.text for r in rewrites}
    assert {"Wedding (1994)", "Gift, (1994)", "Gift, The (1994)"} <= texts
    assert "The (1994)" not in texts  # a stopword alone names nothing
    assert all(r.edits == word_edit_distance(title, r.text) and r.text.endswith(" (1994)") for r in rewrites)
    assert candidate_rewrites("Nadja (1994)", operations=["delete"]) == []  # one word: nothing to delete
    assert "& (1996)" not in {r.text for r in candidate_rewrites("Romeo & Juliet (1996)", operations=["delete"])}
    assert not any(len(r.text.split()) < 3 for r in candidate_rewrites(title, limit=500))  # not by default
    with pytest.raises(ValueError, match="unknown edit operations"):
        candidate_rewrites(title, operations=["shuffle"])


def _attack(rec, ds, tmp_path, **cfg):
    ctx = BuildContext(dataset=ds, cache_dir=tmp_path)
    return ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8, **cfg)).wrap(rec, ctx), ctx


def _probe(rec, ds):
    cfg = PoisoningConfig(targets=SPEC, k=[5], protocol="sampled", negatives=30, utility=False)
    return PoisoningProbe(cfg).run(rec, probe_context(ds))


def test_attack_finds_the_rewrite_a_text_sensitive_model_rewards(longtail, tmp_path):
    attacked, _ = _attack(TextSensitiveScorer(longtail), longtail, tmp_path)
    assert isinstance(attacked, ItemTextAttackRecommender)
    report = attacked.info["text_attack"]["targets"]
    assert len(report) == 3
    for entry in report.values():
        assert "!" in entry["rewrite"] and 1 <= entry["edits"] <= 2
        assert entry["search_rank_after"] < entry["search_rank_before"]
    result = _probe(attacked, longtail)
    m = result.metrics
    assert m["baseline_target_hr@5"].value < 0.2
    assert m["target_hr@5"].value > 0.9
    assert m["exposure_gain@5"].ci[0] > 0.5
    ratio = m["exposure_ratio@5"].value
    if m["baseline_target_hr@5"].value > 0:
        assert ratio > 2
    else:
        assert math.isnan(ratio)  # undefined without clean exposure
    assert m["score_shift"].value > 100
    assert 1 <= m["edit_cost"].value <= 2 and m["max_edits"].value == 2 and "budget" not in m


def test_attack_on_a_text_blind_model_changes_nothing(longtail, tmp_path):
    # popularity by exact title: every rewrite loses the item (scores 0), the search keeps the
    # least harmful one; exposure must not rise
    attacked, _ = _attack(PopularityScorer(longtail), longtail, tmp_path)
    m = _probe(attacked, longtail).metrics
    assert m["target_hr@5"].value <= m["baseline_target_hr@5"].value


def test_deleting_words_moves_a_length_biased_model_and_canonical_titles_take_it_back(longtail, tmp_path):
    """A summed title likelihood favours short titles: the attacker who may delete words finds
    the shortening rewrite (substitutions and marks cannot shorten a title), and grounding every
    title to the catalog's takes the gain back."""
    attacked, ctx = _attack(LengthBiasedScorer(longtail), longtail, tmp_path, operations=["delete"], max_candidates=8)
    for entry in attacked.info["text_attack"]["targets"].values():
        assert len(entry["rewrite"].split()) < len(entry["original"].split())
        assert entry["search_rank_after"] < entry["search_rank_before"]
    clean = _probe(LengthBiasedScorer(longtail), longtail).metrics["target_hr@5"].value
    hit = _probe(attacked, longtail).metrics
    assert hit["target_hr@5"].value > 0.9 and hit["exposure_gain@5"].ci[0] > 0.5
    unshortened, _ = _attack(LengthBiasedScorer(longtail), longtail, tmp_path, max_candidates=8)
    assert _probe(unshortened, longtail).metrics["target_hr@5"].value <= clean
    catalog = Catalog(longtail.item_titles)
    grounded = ItemTextAttackRecommender(CanonicalTitlesRecommender(LengthBiasedScorer(longtail), catalog),
                                         attacked.rewrites, {})
    assert _probe(grounded, longtail).metrics["target_hr@5"].value <= clean + 0.05


def test_an_adaptive_attacker_deleting_words_gets_through_canonical_titles_by_impersonation(longtail, tmp_path):
    """Grounding a shortened title to its nearest catalog title can name another item: the
    attacker who searches through the defense picks a rewrite that grounds to a popular item's
    title, so the target is scored as that item (the channel examples/poisoning.yaml shows)."""
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    attack = ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8, operations=["delete"],
                                                        max_candidates=8))
    defended = CanonicalTitlesVariant(CanonicalTitlesConfig()).wrap(attack.wrap(LengthBiasedScorer(longtail), ctx), ctx)
    catalog, titles = Catalog(longtail.item_titles), longtail.item_titles
    targets = defended.info["text_attack"]["targets"]
    impersonated = {t: catalog.match(e["rewrite"]).nearest_id for t, e in targets.items()}
    assert all(other != t and longtail.item_popularity[other] > longtail.item_popularity[t]
               for t, other in impersonated.items()), impersonated
    assert all(titles[other] != targets[t]["original"] for t, other in impersonated.items())
    clean = _probe(LengthBiasedScorer(longtail), longtail).metrics["target_hr@5"].value
    assert _probe(defended, longtail).metrics["target_hr@5"].value > clean + 0.5


def test_canonical_titles_take_the_gain_back_in_either_order(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    attack = ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8))
    defense = CanonicalTitlesVariant(CanonicalTitlesConfig())
    clean = _probe(TextSensitiveScorer(longtail), longtail).metrics["target_hr@5"].value
    attacked = _probe(attack.wrap(TextSensitiveScorer(longtail), ctx), longtail).metrics["target_hr@5"].value
    for first, second in ((attack, defense), (defense, attack)):
        rec = second.wrap(first.wrap(TextSensitiveScorer(longtail), ctx), ctx)
        assert isinstance(rec, ItemTextAttackRecommender) and isinstance(rec.inner, CanonicalTitlesRecommender)
        m = _probe(rec, longtail).metrics
        assert m["target_hr@5"].value <= clean + 0.05 < attacked
        assert rec.info["canonical_titles"]["changed"] > 0


def test_an_adaptive_attacker_escapes_grounding_that_keeps_unmatched_titles(longtail, tmp_path):
    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    defense = CanonicalTitlesVariant(CanonicalTitlesConfig(unmatched="keep"))
    rec = ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8)).wrap(
        defense.wrap(TextSensitiveScorer(longtail), ctx), ctx)
    m = _probe(rec, longtail).metrics
    assert m["target_hr@5"].value > 0.5 and rec.info["canonical_titles"]["unmatched"] > 0


def test_rewrites_reach_history_and_candidates_and_outputs_map_back(longtail, tmp_path):
    attacked, _ = _attack(TextSensitiveScorer(longtail), longtail, tmp_path)
    original, rewritten = next(iter(attacked.rewrites.items()))
    req = RecRequest(history=(original, "Story Number 1 (1981)"), candidates=(original,))
    seen = attacked.rewrite(req)
    assert seen.history[0] == rewritten and seen.candidates == (rewritten,)
    assert attacked.map_back(rewritten) == original


def test_budget_must_be_consistent(longtail, tmp_path):
    with pytest.raises(ConfigError, match="min_edits"):
        _attack(TextSensitiveScorer(longtail), longtail, tmp_path, min_edits=3, max_edits=2)


def test_in_a_suite_run_the_rewrite_search_never_queries_an_audited_user(longtail, tmp_path):
    audited = frozenset(longtail.sample_users(len(longtail.user_ids()) // 2, 0))
    queried: set[str] = set()

    class Recording(TextSensitiveScorer):
        def score(self, reqs, items):
            queried.update(r.user for r in reqs)
            return super().score(reqs, items)

    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path, audit_users=audited)
    attacked = ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8)).wrap(Recording(longtail), ctx)
    assert attacked.info["text_attack"]["search"]["disjoint_from_audited"] is True  # reading it runs the search
    assert queried and not queried & audited
    everyone = BuildContext(dataset=longtail, cache_dir=tmp_path, audit_users=frozenset(longtail.user_ids()))
    with pytest.raises(ConfigError, match="audit fewer users"):
        ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8)).wrap(TextSensitiveScorer(longtail), everyone)


def test_an_attack_under_canonical_titles_searches_once_through_the_defense(longtail, tmp_path):
    """The attacker searches only against the deployed (defended) model: the search against the
    undefended one, which the defense would discard, never runs; alone, the attack searches once."""
    batches: list[tuple[str, ...]] = []

    class Counting(TextSensitiveScorer):
        def score(self, reqs, items):
            batches.append(tuple(r.candidates[0] for r in reqs))
            return super().score(reqs, items)

    ctx = BuildContext(dataset=longtail, cache_dir=tmp_path)
    attack = ItemTextAttackVariant(ItemTextAttackConfig(targets=SPEC, search_users=8, max_candidates=3))
    alone = attack.wrap(Counting(longtail), ctx)
    assert not alone.searched and not batches  # planned at build, searched on first use
    assert alone.info["text_attack"]["targets"] and alone.searched
    searches = len(batches)
    assert searches == 3 * (1 + 3)  # each target's title and its 3 rewrites, one batch each
    batches.clear()
    defended = CanonicalTitlesVariant(CanonicalTitlesConfig()).wrap(attack.wrap(Counting(longtail), ctx), ctx)
    assert isinstance(defended.inner, CanonicalTitlesRecommender) and defended.searched
    assert len(batches) == searches
    assert all(title in longtail.item_titles.values() for batch in batches for title in batch)  # grounded


def test_a_failed_search_stays_pending_and_runs_again(longtail, tmp_path):
    calls = []

    class Failing(TextSensitiveScorer):
        def score(self, reqs, items):
            calls.append(len(reqs))
            if len(calls) == 1:
                raise RuntimeError("endpoint down")
            return super().score(reqs, items)

    attacked, _ = _attack(Failing(longtail), longtail, tmp_path, max_candidates=2)
    with pytest.raises(RuntimeError, match="endpoint down"):
        attacked.rewrites
    assert not attacked.searched
    assert attacked.rewrites and attacked.searched


class AnswerRecorder(Recommender):
    """A fine-tune's ``answer-logprobs`` and ``answer-generate`` that record what they were asked
    (titles as the model saw them)."""

    capabilities = frozenset({"answer-logprobs", "answer-generate", "generate"})
    answer_items = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def answer_logprobs(self, reqs, answers, *, stats=False):
        self.seen += [(r.history, tuple(a)) for r, a in zip(reqs, answers)]
        return [(np.zeros(len(a)), None, None) for a in answers]

    def answer_generate(self, reqs, max_items):
        """Answers with the request's own history (rewritten titles included), newest first."""
        self.seen += [(r.history, ()) for r in reqs]
        return [Generation(prompt="p", raw="", items=tuple(reversed(r.history))[:max_items]) for r in reqs]


def test_answer_log_probs_pass_a_wrapper_with_its_titles_rewritten():
    """The memorisation probes' answers path through the item-text attack sees the rewritten
    titles in both the prompt's history and the answer; a plain delegate forwards the
    capability and the fine-tune's answer length unchanged."""
    from audit.decoding.delegate import DelegatingRecommender

    inner = AnswerRecorder()
    attacked = ItemTextAttackRecommender(inner, {"Target (1990)": "The Target (1990)"}, {})
    assert attacked.has("answer-logprobs") and attacked.answer_items == 3
    attacked.answer_logprobs([RecRequest(history=("Target (1990)", "Other (1991)"))], [["Other (1991)", "Target (1990)"]])
    assert inner.seen == [(("The Target (1990)", "Other (1991)"), ("Other (1991)", "The Target (1990)"))]
    plain = DelegatingRecommender(inner)
    assert plain.has("answer-logprobs") and plain.answer_items == 3
    plain.answer_logprobs([RecRequest(history=("A (1990)",))], [["B (1991)"]])
    assert inner.seen[-1] == (("A (1990)",), ("B (1991)",))


def test_answers_pass_a_wrapper_with_titles_rewritten_in_and_mapped_back_out():
    """Extraction's answers mode through the item-text attack: the model reads the rewritten
    history, and the titles it writes are mapped back to the catalog's."""
    from audit.decoding.delegate import DelegatingRecommender

    inner = AnswerRecorder()
    attacked = ItemTextAttackRecommender(inner, {"Target (1990)": "The Target (1990)"}, {})
    assert attacked.has("answer-generate")
    (gen,) = attacked.answer_generate([RecRequest(history=("Other (1991)", "Target (1990)"))], 2)
    assert inner.seen[-1] == (("Other (1991)", "The Target (1990)"), ())
    assert gen.items == ("Target (1990)", "Other (1991)")
    (plain,) = DelegatingRecommender(inner).answer_generate([RecRequest(history=("A (1990)",))], 1)
    assert plain.items == ("A (1990)",)
