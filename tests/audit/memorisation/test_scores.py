"""Membership scores from token log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from audit.memorisation.scores import (kept_count, loss_score, mean_nll, min_k, min_k_plus_plus, next_token_stats,
                                       reference_calibrated, zlib_bytes, zlib_ratio)


@pytest.fixture(scope="module")
def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    return model.eval()


def _model_logprobs(model: GPT2LMHeadModel, ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-token log p(x_t | x_<t) for t >= 1, the full next-token log-distributions, and the
    mean NLL that the model itself reports through ``labels=``."""
    with torch.no_grad():
        out = model(ids, labels=ids)
    log_dist = torch.log_softmax(out.logits[0, :-1].double(), dim=-1)
    token_lp = log_dist.gather(1, ids[0, 1:, None]).squeeze(1)
    return token_lp.numpy(), log_dist.numpy(), float(out.loss)


def test_min_k_at_full_share_equals_minus_the_models_mean_token_nll(tiny_gpt2):
    ids = torch.tensor([[3, 17, 5, 42, 8, 8, 19, 23, 1, 30, 11, 4]])
    token_lp, _, model_loss = _model_logprobs(tiny_gpt2, ids)
    assert min_k(token_lp, k=1.0) == pytest.approx(-model_loss, abs=1e-5)
    assert loss_score(token_lp) == pytest.approx(-model_loss, abs=1e-5)


def test_min_k_averages_only_the_lowest_share():
    logp = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    assert min_k(logp, k=0.2) == pytest.approx(-4.0)  # the two lowest of ten
    assert min_k(logp, k=0.01) == pytest.approx(-5.0)  # never fewer than one token
    with pytest.raises(ValueError):
        min_k(logp, k=0.0)


def test_min_k_floor_count_keeps_int_k_n_tokens_as_the_authors_code():
    """zjysteven/mink-plus-plus keeps int(len * ratio) tokens; recaudit's default rounds up, at least one."""
    logp = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8, -0.9, -1.0, -2.0])
    assert [kept_count(13, 0.2, c) for c in ("ceil", "floor")] == [3, 2]
    assert min_k(logp, k=0.2, count="floor") == pytest.approx(-4.0)  # int(2.6) = 2: -5, -3
    assert min_k(logp, k=0.2) == pytest.approx(-10.0 / 3)           # ceil(2.6) = 3: -5, -3, -2
    assert kept_count(10, 0.2, "floor") == kept_count(10, 0.2, "ceil") == 2, "whole k n: the rules agree"
    assert math.isnan(min_k(logp[:4], k=0.2, count="floor")), "int(0.8) = 0 tokens: no score, as theirs"
    assert min_k(logp[:4], k=0.2) == pytest.approx(-5.0)
    mu, sigma = np.zeros(13), np.ones(13)
    assert min_k_plus_plus(logp, mu, sigma, k=0.2, count="floor") == pytest.approx(-4.0)


def test_min_k_plus_plus_matches_standardisation_by_the_models_own_distribution(tiny_gpt2):
    ids = torch.tensor([[7, 2, 9, 33, 21, 5, 5, 14]])
    token_lp, log_dist, _ = _model_logprobs(tiny_gpt2, ids)
    mu, sigma = next_token_stats(log_dist)
    # a direct, slow computation of E[log p] and Std[log p] at each position
    for t in range(log_dist.shape[0]):
        p = np.exp(log_dist[t])
        m = float(np.sum(p * log_dist[t]))
        assert mu[t] == pytest.approx(m, abs=1e-9)
        assert sigma[t] == pytest.approx(float(np.sqrt(np.sum(p * (log_dist[t] - m) ** 2))), abs=1e-9)
    z = (token_lp - mu) / sigma
    assert min_k_plus_plus(token_lp, mu, sigma, k=1.0) == pytest.approx(z.mean())
    assert min_k_plus_plus(token_lp, mu, sigma, k=0.25) == pytest.approx(np.sort(z)[:2].mean())


def test_a_memorised_sequence_scores_higher_than_a_surprising_one_on_every_score():
    confident = np.full(10, -0.05)
    surprised = np.full(10, -3.0)
    flat_mu, flat_sigma = np.full(10, -2.0), np.full(10, 1.0)
    text = "<item_1><item_2><item_3>"
    assert loss_score(confident) > loss_score(surprised)
    assert zlib_ratio(confident, text) > zlib_ratio(surprised, text)
    assert min_k(confident) > min_k(surprised)
    assert min_k_plus_plus(confident, flat_mu, flat_sigma) > min_k_plus_plus(surprised, flat_mu, flat_sigma)
    assert reference_calibrated(confident, surprised) > 0 > reference_calibrated(surprised, confident)


def test_zlib_ratio_divides_the_mean_log_likelihood_by_the_compressed_size():
    logp = np.array([-1.0, -2.0, -3.0])
    text = "The Godfather (1972) The Godfather (1972)"
    assert zlib_ratio(logp, text) == pytest.approx(-2.0 / zlib_bytes(text))
    assert mean_nll(logp) == pytest.approx(2.0)


def test_empty_sequence_is_refused():
    with pytest.raises(ValueError, match="empty"):
        loss_score([])
