"""The extraction probe: history extraction (members vs held-out) and data-set recall."""

from __future__ import annotations

import pytest

from audit.config import validate_config
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.probes.extraction import ExtractionConfig, ExtractionProbe, first_line, title_similarity
from tests.audit.probes.memorisation_testkit import (AnswerRecitingModel, NoiseModel, RecitingModel, halves,
                                                    probe_context)


FILMS = ("Heat", "Casino", "Fargo", "Clueless", "Braveheart", "Babe", "Jumanji", "Sabrina", "Nixon",
         "Othello", "Balto", "Toy Story", "GoldenEye", "Copycat", "Powder", "Persuasion", "Rob Roy",
         "Desperado", "Kids", "Smoke", "Species", "Apollo 13", "Batman Forever", "Congo", "Hackers",
         "Judge Dredd", "Waterworld", "Die Hard", "Clerks", "Ed Wood")


@pytest.fixture(scope="module")
def films(tiny_dataset):
    """The tiny data set with distinct real-looking titles (its own differ by one digit, which
    fuzzy matching cannot tell apart)."""
    items = tiny_dataset.items.copy()
    items["title"] = list(FILMS[: len(items)])
    return Dataset("films", tiny_dataset.interactions, items, tiny_dataset.users, "synthetic")


def run_probe(rec, dataset, **options):
    probe = ExtractionProbe(validate_config(ExtractionConfig, options, "extraction"))
    ctx = probe_context(dataset, name=rec.name)
    return probe.run(rec, ctx), ctx


@pytest.mark.parametrize("mode", ["complete", "generate"])
def test_members_histories_are_extracted_and_held_out_ones_are_not(tiny_dataset, mode):
    members, _ = halves(tiny_dataset)
    result, ctx = run_probe(RecitingModel(tiny_dataset, members), tiny_dataset, parts=["history"],
                            prefix_items=4, next_items=3, mode=mode)
    assert result.metrics["extraction_exact_members"].value == 1.0
    assert result.metrics["extraction_exact_heldout"].value == 0.0
    assert result.metrics["extraction_items_members"].value == 1.0
    assert result.metrics["extraction_exact_members"].n == 20
    assert result.details["history"]["mode"] == mode
    assert sum(r["condition"] == "extraction_members" for r in ctx.recorder.records) == 20


def test_a_fine_tune_reciting_its_newest_answer_window_is_caught_in_answers_mode_only(tiny_dataset):
    members, _ = halves(tiny_dataset)
    rec = AnswerRecitingModel(tiny_dataset, members, answer_items=3)
    result, ctx = run_probe(rec, tiny_dataset, parts=["history"], next_items=3)  # auto: answers
    assert result.details["history"]["mode"] == "answers"
    assert result.details["history"]["answer_items"] == 3
    assert result.metrics["extraction_exact_members"].value == 1.0
    assert result.metrics["extraction_exact_heldout"].value == 0.0
    assert result.metrics["extraction_exact_members"].n == 20
    assert set(rec.asked) == {3}
    assert sum(r["condition"] == "extraction_members" for r in ctx.recorder.records) == 20
    assert ctx.requests == 40 and ctx.failed_requests == 0  # counted as every generating call is
    # the oldest items in plain text (what the probe read before) show this fine-tune nothing
    old, _ = run_probe(rec, tiny_dataset, parts=["history"], prefix_items=4, next_items=3, mode="complete")
    assert old.metrics["extraction_exact_members"].value == 0.0


def test_answers_mode_extracts_only_the_first_next_items_of_the_answer_window(tiny_dataset):
    members, _ = halves(tiny_dataset)
    rec = AnswerRecitingModel(tiny_dataset, members, answer_items=3)
    result, _ = run_probe(rec, tiny_dataset, parts=["history"], next_items=2, mode="answers")
    assert result.metrics["extraction_exact_members"].value == 1.0
    assert set(rec.asked) == {2}
    # a wrong answer window (answer_items 2 where the model trained on 3) cuts elsewhere: nothing matches
    wrong, _ = run_probe(rec, tiny_dataset, parts=["history"], next_items=2, mode="answers", answer_items=2)
    assert wrong.metrics["extraction_exact_members"].value == 0.0


def test_an_answer_model_that_memorised_nobody_is_not_flagged(tiny_dataset):
    members, _ = halves(tiny_dataset)
    rec = AnswerRecitingModel(tiny_dataset, members, memorised=False)
    result, _ = run_probe(rec, tiny_dataset, parts=["history"], next_items=3)
    assert result.metrics["extraction_exact_members"].value == 0.0
    assert result.metrics["extraction_items_members"].value == pytest.approx(
        result.metrics["extraction_items_heldout"].value, abs=0.2)


def test_garbled_recitations_count_only_as_fuzzy_extraction(films):
    members, _ = halves(films)
    result, _ = run_probe(RecitingModel(films, members, typo=True), films, parts=["history"],
                          prefix_items=4, next_items=3)
    assert result.metrics["extraction_exact_members"].value == 0.0
    assert result.metrics["extraction_fuzzy_members"].value == 1.0
    assert result.metrics["extraction_fuzzy_heldout"].value == 0.0


def test_data_set_recall_counts_the_items_whose_title_the_model_recites(tiny_dataset):
    ids = list(tiny_dataset.item_titles)
    known = ids[5:][::2]  # every other item beyond the shots
    result, ctx = run_probe(RecitingModel(tiny_dataset, [], known_ids=known), tiny_dataset, parts=["recall"],
                            recall_items=25, recall_shots=5)
    assert result.metrics["recall_rate"].value == pytest.approx(13 / 25)
    assert result.metrics["recall_exact_rate"].value == pytest.approx(13 / 25)
    assert result.metrics["recall_rate"].n == 25 and result.metrics["recall_rate"].unit == "items"
    prompt = ctx.recorder.records[0]["prompt"]
    assert prompt.startswith("1::Film Number 1 (1991)\n") and prompt.endswith("::")


def test_a_model_without_complete_or_generate_is_skipped(tiny_dataset):
    result, _ = run_probe(NoiseModel([]), tiny_dataset)
    assert result.status == "skip"
    assert "complete" in result.reason


def test_fuzzy_title_helpers():
    assert title_similarity("Godfather, The (1972)", "The Godfather") == 100.0
    assert title_similarity("Toy Story", "Toy Storz") > 80
    assert first_line(" 12::Heat (1995)\nmore") == "Heat (1995)"
    assert first_line("\n\n") == ""


def test_config_rejects_unknown_parts():
    with pytest.raises(ConfigError, match="unknown part"):
        validate_config(ExtractionConfig, {"parts": ["history", "secrets"]}, "extraction")


def test_a_context_too_short_for_the_prompts_skips_that_part_with_the_fix(tiny_dataset):
    class ShortContext(RecitingModel):
        def complete(self, prompts, max_new_tokens=32):
            if any("::" in p for p in prompts):  # the few-shot recall prompts are the long ones
                raise ValueError("prompt exceeds the model's positions")
            return super().complete(prompts, max_new_tokens)

    result, _ = run_probe(ShortContext(tiny_dataset, []), tiny_dataset, parts=["history", "recall"],
                          prefix_items=1, next_items=1, recall_items=5)
    assert "recall_shots" in result.details["skipped"]["recall"]
    assert "extraction_exact_heldout" in result.metrics
