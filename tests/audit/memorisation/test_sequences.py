"""Sequence log-probabilities through a real transformers model behind the hf adapter."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.memorisation.scores import min_k
from audit.memorisation.sequences import render, score_by_items, score_by_tokens, score_sequences
from tests.audit.adapters.hf_tiny_models import build_tiny_lm


@pytest.fixture(scope="module")
def hf_rec(tmp_path_factory: pytest.TempPathFactory) -> HFAdapter:
    directory = build_tiny_lm(tmp_path_factory.mktemp("memo-lm"))
    return HFAdapter.build(HFConfig(path=str(directory)))


def test_body_log_probs_are_the_models_own_for_the_body_tokens_given_the_context(hf_rec, tiny_dataset):
    users = tiny_dataset.user_ids()[:3]
    seqs = [list(tiny_dataset.sequences[u].train[:5]) for u in users]
    profiles = [tiny_dataset.user_profiles[u] for u in users]
    scored, note = score_by_tokens(hf_rec, seqs, profiles, tiny_dataset.item_titles, "titles")
    assert note == ""
    tok, model = hf_rec.tokenizer, hf_rec.model
    for s, seq, prof in zip(scored, seqs, profiles):
        context, body = render(hf_rec, seq, prof, tiny_dataset.item_titles, "titles")
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
        body_ids = tok(context + body, add_special_tokens=False)["input_ids"][len(ctx_ids):]
        ids = torch.tensor([[tok.bos_token_id, *ctx_ids, *body_ids]])
        with torch.no_grad():
            labels = ids.clone()
            labels[0, : 1 + len(ctx_ids)] = -100  # the loss the model reports, over the body only
            out = model(ids, labels=labels)
        assert s.logp.size == len(body_ids)
        # Min-K% at k = 100% is minus the mean token NLL the model reports for the same tokens
        assert min_k(s.logp, k=1.0) == pytest.approx(-float(out.loss), abs=1e-4)


def test_min_k_plus_plus_statistics_come_from_the_model_and_match_its_log_probs(hf_rec, tiny_dataset):
    users = tiny_dataset.user_ids()[:2]
    seqs = [list(tiny_dataset.sequences[u].train[:4]) for u in users]
    scored, note = score_by_tokens(hf_rec, seqs, [{}, {}], tiny_dataset.item_titles, "titles", want_stats=True)
    assert note == ""
    for s in scored:
        assert s.mu is not None and s.mu.shape == s.logp.shape and np.all(s.sigma > 0)
        assert np.all(s.mu < 0)


def test_the_items_path_scores_each_next_item_by_score(hf_rec, tiny_dataset):
    seq = list(tiny_dataset.sequences["1"].train[:6])
    scored = score_by_items(hf_rec, [seq], [{}], tiny_dataset.item_titles, max_positions=3)
    assert scored[0].logp.size == 3
    assert np.all(scored[0].logp < 0)
    auto, path, _ = score_sequences(hf_rec, [seq], [{}], tiny_dataset.item_titles, path="items", max_positions=3)
    assert path.startswith("items") and np.allclose(auto[0].logp, scored[0].logp)


def test_a_format_the_model_does_not_declare_is_refused(hf_rec, tiny_dataset):
    assert hf_rec.sequence_format == "titles"
    with pytest.raises(ValueError, match="writes sequences as 'titles'"):
        render(hf_rec, ["3", "17"], {}, tiny_dataset.item_titles, "reference")