"""The ``reference`` adapter: built through the registry, cached, and every declared capability works."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor

from audit.adapters.reference import ReferenceAdapter, ReferenceConfig
from audit.build import build_recommender
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import RecRequest
from audit.reference import store
from audit.reference.presets import make_recipe
from audit.variants import BuildContext, Variant

ENTRY = {"adapter": "reference", "size": "tiny"}


@pytest.fixture(scope="module")
def ctx(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> BuildContext:
    return BuildContext(dataset=tiny_dataset, cache_dir=tmp_path_factory.mktemp("cache"), seed=0, progress=False)


@pytest.fixture(scope="module")
def rec(ctx: BuildContext) -> ReferenceAdapter:
    built = build_recommender("ref", ENTRY, ctx)
    assert isinstance(built, ReferenceAdapter)
    return built


def request(dataset: Dataset, user: str, *, profile: bool = True, candidates: tuple[str, ...] = ()) -> RecRequest:
    seq = dataset.sequences[user]
    return RecRequest(history=tuple(dataset.item_titles[i] for i in seq.test_history),
                      profile=dataset.user_profiles[user] if profile else {}, candidates=candidates, user=user)


def test_build_trains_once_then_loads_with_identical_scores(rec: ReferenceAdapter, ctx: BuildContext,
                                                             tiny_dataset: Dataset) -> None:
    assert rec.info["trained_now"] is True and rec.info["parameters"] > 0
    again = build_recommender("ref2", ENTRY, ctx)
    assert again.info["trained_now"] is False and again.info["model_dir"] == rec.info["model_dir"]
    titles = list(tiny_dataset.item_titles.values())
    reqs = [request(tiny_dataset, "1"), request(tiny_dataset, "2", profile=False)]
    for a, b in zip(rec.score(reqs, [titles, titles]), again.score(reqs, [titles, titles])):
        np.testing.assert_array_equal(a, b)


def test_open_generation_returns_k_decoded_titles_for_profile_and_neutral_prompts(
        rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    reqs = [request(tiny_dataset, "1"), request(tiny_dataset, "1", profile=False)]
    gens = rec.generate_detailed(reqs, 5)
    assert gens[0].prompt.startswith("<bos>age: ") and gens[0].prompt.endswith("<rec>")
    assert gens[1].prompt.startswith("<bos><hist><item_")
    for g in gens:
        assert g.raw.count("<sep>") == 5
        assert len(g.items) == 5
        assert g.raw.startswith("<item_")
        for item in g.items:
            assert item in g.raw and "<" not in item
    assert rec.generate(reqs[:1], 3) == [list(rec.generate_detailed(reqs[:1], 3)[0].items)]


def test_generation_spells_catalog_titles_it_was_trained_on(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    """The tiny model is trained enough that most of its top items are real catalog titles."""
    catalog = set(tiny_dataset.item_titles.values())
    gens = rec.generate_detailed([request(tiny_dataset, u) for u in ("1", "2", "3", "4")], 5)
    items = [t for g in gens for t in g.items]
    assert np.mean([t in catalog for t in items]) >= 0.5


def test_ranking_requests_return_the_top_k_candidates_by_score(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    cands = tuple(list(tiny_dataset.item_titles.values())[:10])
    req = request(tiny_dataset, "5", candidates=cands)
    scores = rec.score([req], [cands])[0]
    gen = rec.generate_detailed([req], 4)[0]
    assert list(gen.items) == [cands[i] for i in np.argsort(-scores, kind="stable")[:4]]
    assert "ranked 10 candidates" in gen.raw


def test_scores_are_log_likelihoods_that_match_token_logprobs(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    rec = ReferenceAdapter(rec.trained, ReferenceConfig(size="tiny", score_mode="item+title"))
    req = request(tiny_dataset, "6")
    titles = [tiny_dataset.item_titles["3"], "A Film Nobody Made (2033)"]
    scores = rec.score([req], [titles])[0]
    assert scores.dtype == np.float64 and np.all(scores < 0)
    prompt = rec.fmt.decode(rec.prompt_ids(req))
    for title, s in zip(titles, scores):
        cont = rec.fmt.output_ids(title)
        lp = rec.token_logprobs([prompt + rec.fmt.decode(cont)])[0]
        assert abs(lp[-len(cont):].sum() - s) < 1e-4
    # a title outside the catalog has no item token: it is scored as its text
    assert rec.fmt.output_ids(titles[1])[0] != rec.fmt.vocab.token_of["3"]


def test_item_mode_scores_the_item_token_alone(tiny_dataset: Dataset, rec: ReferenceAdapter) -> None:
    item_rec = ReferenceAdapter(rec.trained, ReferenceConfig(size="tiny", score_mode="item"))
    rec = ReferenceAdapter(rec.trained, ReferenceConfig(size="tiny", score_mode="item+title"))
    req = request(tiny_dataset, "6")
    titles = [tiny_dataset.item_titles["3"], tiny_dataset.item_titles["4"], "A Film Nobody Made (2033)"]
    item_scores = item_rec.score([req], [titles])[0]
    full_scores = rec.score([req], [titles])[0]
    prompt = rec.fmt.decode(rec.prompt_ids(req))
    for j, item in enumerate(("3", "4")):
        lp = rec.token_logprobs([prompt + f"<item_{item}>"])[0]
        assert abs(lp[-1] - item_scores[j]) < 1e-4
        assert item_scores[j] > full_scores[j]  # the title's own log-prob is < 0
    assert abs(item_scores[2] - full_scores[2]) < 1e-9  # text-only in both modes


def test_token_logprobs_have_one_value_per_token(rec: ReferenceAdapter) -> None:
    texts = ["<bos><hist><item_1><item_2><rec>", "Film Number 3", "<item_7> Film Number 7 (1997)<sep>"]
    out = rec.token_logprobs(texts)
    for text, lp in zip(texts, out):
        ids = rec.tokenizer.encode(text, add_special_tokens=False)
        n = len(ids) - 1 if ids[0] == rec.fmt.bos else len(ids)
        assert lp.shape == (n,) and np.all(lp <= 0)


def test_embeddings_have_one_row_per_input(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    reqs = [request(tiny_dataset, "1"), request(tiny_dataset, "1", profile=False), request(tiny_dataset, "2")]
    users = rec.embed_user(reqs)
    d = rec.model.config.n_embd
    assert users.shape == (3, d) and np.isfinite(users).all()
    assert not np.allclose(users[0], users[1])  # the profile changes the representation
    items = rec.embed([tiny_dataset.item_titles["1"], "Never Made (1900)"])
    assert items.shape == (2, d) and np.isfinite(items).all()


def test_complete_continues_raw_prompts_greedily(rec: ReferenceAdapter) -> None:
    prompts = ["<bos><hist><item_1><item_2>", "<bos><hist><rec><item_3>"]
    outs = rec.complete(prompts, max_new_tokens=6)
    assert len(outs) == 2 and all(isinstance(o, str) and o for o in outs)
    assert outs == rec.complete(prompts, max_new_tokens=6)
    with pytest.raises(ValueError, match="positions"):
        rec.complete(prompts, max_new_tokens=10_000)


def test_unknown_history_titles_are_written_as_text(rec: ReferenceAdapter) -> None:
    req = RecRequest(history=("Film Number 1 (1991)", "Some Unlisted Film (1990)"), profile={})
    prompt = rec.fmt.decode(rec.prompt_ids(req))
    assert "Some Unlisted Film (1990)<sep>" in prompt and "<item_1>" in prompt
    assert rec.info["unknown_history_titles"] >= 1


class OnlyThese(LogitsProcessor):
    """Allows only the token sequences given (a miniature prefix tree), from ``prompt_length`` on."""

    def __init__(self, sequences: list[list[int]], prompt_length: int) -> None:
        self.sequences = sequences
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, -float("inf"))
        for row in range(input_ids.shape[0]):
            done = input_ids[row, self.prompt_length:].tolist()
            for seq in self.sequences:
                if seq[:len(done)] == done and len(done) < len(seq):
                    mask[row, seq[len(done)]] = 0.0
        return scores + mask


def test_the_generation_constraint_hook_restricts_what_is_decoded(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    allowed = [tiny_dataset.item_titles[i] for i in ("2", "11", "29")]
    seqs = [rec.fmt.output_ids(t) for t in allowed]
    reqs = [request(tiny_dataset, "1"), request(tiny_dataset, "8", profile=False)]
    rec.generation_constraint = lambda prompt_length: OnlyThese(seqs, prompt_length)
    try:
        gens = rec.generate_detailed(reqs, 3)
    finally:
        rec.generation_constraint = None
    for g in gens:
        assert sorted(g.items) == sorted(allowed)
    # the same through the call argument, and fewer items when fewer are allowed
    gens = rec.generate_detailed(reqs, 3, logits_processor=[OnlyThese(seqs[:2], len(max(
        (rec.prompt_ids(r) for r in reqs), key=len)))])
    for g in gens:
        assert sorted(g.items) == sorted(allowed[:2])


def test_a_soft_prefix_changes_prompts_but_not_the_model(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    rec = ReferenceAdapter(rec.trained, ReferenceConfig(size="tiny", score_mode="item+title"))
    fmt = rec.fmt
    prefix = rec.model.transformer.wte(torch.tensor([fmt.sep])).detach()
    prefixed = rec.with_soft_prefix(prefix)
    assert prefixed.model is rec.model and rec.soft_prefix is None
    req = request(tiny_dataset, "3")
    spliced = dataclasses.replace  # noqa: F841 - readability
    titles = list(tiny_dataset.item_titles.values())[:5]
    manual = [fmt.bos, fmt.sep, *rec.prompt_ids(req)[1:]]
    from audit.reference.inference import score_continuations

    expect = score_continuations(rec.model, manual, [fmt.output_ids(t) for t in titles])
    np.testing.assert_allclose(prefixed.score([req], [titles])[0], expect, atol=1e-5)
    gens = prefixed.generate_detailed([req], 3)
    assert len(gens[0].items) == 3
    assert prefixed.embed_user([req]).shape == (1, rec.model.config.n_embd)
    with pytest.raises(ValueError, match="shape"):
        rec.with_soft_prefix(torch.zeros(2, 3))


def test_path_loads_a_saved_model_and_refuses_training_variants(rec: ReferenceAdapter, ctx: BuildContext,
                                                                 tiny_dataset: Dataset) -> None:
    loaded = build_recommender("ref-path", {"adapter": "reference", "path": rec.info["model_dir"]}, ctx)
    req = request(tiny_dataset, "9")
    titles = list(tiny_dataset.item_titles.values())
    np.testing.assert_array_equal(loaded.score([req], [titles])[0], rec.score([req], [titles])[0])

    class Trains(Variant):
        name = "trains"
        trains = True

    with pytest.raises(ConfigError, match="path"):
        ReferenceAdapter.build(ReferenceConfig(path=rec.info["model_dir"]), ctx, [Trains(Variant.Config())])
    with pytest.raises(ConfigError, match="does not exist"):
        build_recommender("x", {"adapter": "reference", "path": str(Path(rec.info["model_dir"]) / "nope")}, ctx)


def test_training_variants_edit_the_recipe_and_get_their_own_cache_entry(ctx: BuildContext,
                                                                          rec: ReferenceAdapter) -> None:
    class FewerEpochs(Variant):
        name = "fewer-epochs"
        trains = True

        def modify_recipe(self, recipe, ctx):
            return recipe.replace_stage("full", epochs=1)

    built = ReferenceAdapter.build(ReferenceConfig(size="tiny"), ctx, [FewerEpochs(Variant.Config())])
    assert built.info["model_dir"] != rec.info["model_dir"]
    assert built.manifest["recipe"]["stages"][0]["epochs"] == 1
    expected = make_recipe(ReferenceConfig(size="tiny"), seed=0).replace_stage("full", epochs=1)
    assert built.info["key"] == store.recipe_key(expected, ctx.dataset)


def test_config_rejects_unknown_options(ctx: BuildContext) -> None:
    with pytest.raises(ConfigError, match="unknown option 'layers'"):
        build_recommender("bad", {"adapter": "reference", "layers": 3}, ctx)
    with pytest.raises(ConfigError, match="score_mode"):
        build_recommender("bad", {"adapter": "reference", "score_mode": "title"}, ctx)


def test_sequences_render_in_the_reference_format(rec: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    from audit.memorisation.sequences import render

    context, body = render(rec, ["3", "17"], {"gender": "F", "age": "18-24"}, tiny_dataset.item_titles, "reference")
    assert rec.sequence_format == "reference"
    assert context == "age: 18-24, gender: F<hist>"
    assert body == "<item_3><item_17>"
