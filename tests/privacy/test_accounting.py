"""Privacy accounting: calibrated epsilon never exceeds the target, the PRV -> RDP fallback,
delta's default, and the federated bound (sampling without replacement, replace-one)."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from audit.errors import ConfigError
from privacy.accounting import (
    PRV_MAX_POINTS,
    calibrate_dp_sgd,
    calibrate_federated,
    choose_accountant,
    default_delta,
    dp_sgd_epsilon,
    federated_epsilon,
    gaussian_rdp_replace_one,
    prv_domain_points,
    subsampled_rdp_without_replacement,
)


@pytest.mark.parametrize("n, delta", [(2, 0.01), (10, 0.01), (11, 1e-3), (377, 1e-4), (578, 1e-4),
                                      (1000, 1e-4), (1001, 1e-5)])
def test_default_delta_is_at_most_a_tenth_of_one_over_n(n, delta):
    # issue 14: 578 private users used to get delta 1e-3 (> 1/(10 n)); now 1e-4
    assert default_delta(n) == pytest.approx(delta)
    assert default_delta(n) <= 1 / (10 * n)


def test_default_delta_needs_two_private_users():
    with pytest.raises(ConfigError, match="at least 2"):
        default_delta(1)


@pytest.mark.parametrize("target", [0.5, 1.0, 4.0, 8.0])
def test_calibrated_dp_sgd_epsilon_never_exceeds_the_target(target):
    cal = calibrate_dp_sgd(target, 1e-3, sample_rate=0.2, steps=50)
    assert cal.accountant == "prv"
    assert cal.epsilon <= target
    assert cal.epsilon > target - 0.05  # and is not needlessly noisy
    # the same history accounted again (as the trainer does after training) agrees
    assert dp_sgd_epsilon(cal.noise_multiplier, 0.2, 50, 1e-3, "prv") <= target
    # more noise, less epsilon
    assert dp_sgd_epsilon(cal.noise_multiplier * 1.5, 0.2, 50, 1e-3, "prv") < cal.epsilon


def test_large_epsilon_falls_back_to_rdp_and_still_meets_the_target():
    """At epsilon 1000 PRV's grid explodes (minutes, or failure): RDP is used and said so."""
    name, reason = choose_accountant(1000.0, 1e-3, 0.5, 10)
    assert name == "rdp" and "PRV not used" in reason
    cal = calibrate_dp_sgd(1000.0, 1e-3, 0.5, 10)
    assert cal.accountant == "rdp" and cal.fallback_reason
    assert cal.epsilon <= 1000.0
    assert prv_domain_points(0.5 * cal.noise_multiplier, 0.5, 10, 1e-3) > PRV_MAX_POINTS


def test_rdp_is_used_when_asked():
    cal = calibrate_dp_sgd(4.0, 1e-3, 0.2, 50, accountant="rdp")
    assert cal.accountant == "rdp" and cal.epsilon <= 4.0


def test_impossible_targets_are_config_errors():
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        calibrate_dp_sgd(0.0, 1e-3, 0.2, 10)
    with pytest.raises(ConfigError, match="delta"):
        calibrate_dp_sgd(1.0, 1.5, 0.2, 10)


# -- federated: Wang, Balle, Kasiviswanathan (2019), replace-one ------------------------------
def test_without_replacement_rdp_is_the_gaussian_at_full_sampling_and_amplified_below():
    z = 1.5
    for order in (2, 5, 32):
        base = gaussian_rdp_replace_one(z, order)
        assert base == pytest.approx(2 * order / z ** 2)
        assert subsampled_rdp_without_replacement(z, 1.0, order) == pytest.approx(base)
        values = [subsampled_rdp_without_replacement(z, g, order) for g in (0.01, 0.05, 0.2, 0.5, 1.0)]
        assert all(a <= b + 1e-12 for a, b in pairwise(values)), values
        assert values[-2] <= base
        if order <= 5:  # at high orders the bound's e^{(j-1) eps(j)} terms dominate: no amplification left
            assert values[0] < base / 10, values  # real amplification at a 1% sampling ratio


def test_without_replacement_rdp_small_ratio_matches_the_leading_term():
    """gamma -> 0: the bound is log(1 + gamma^2 C(a,2) min{4(e^eps2 - 1), 2 e^eps2}) / (a - 1)."""
    z, order, g = 2.0, 4, 1e-4
    eps2 = gaussian_rdp_replace_one(z, 2)
    lead = math.log1p(g ** 2 * math.comb(order, 2) * min(4 * math.expm1(eps2), 2 * math.exp(eps2))) / (order - 1)
    assert subsampled_rdp_without_replacement(z, g, order) == pytest.approx(lead, rel=1e-3)


def test_federated_epsilon_falls_with_noise_and_rises_with_rounds():
    eps = [federated_epsilon(z, 10, 100, 20, 1e-3)[0] for z in (0.8, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in pairwise(eps)), eps
    assert federated_epsilon(1.0, 10, 100, 10, 1e-3)[0] < federated_epsilon(1.0, 10, 100, 40, 1e-3)[0]
    assert federated_epsilon(0.0, 10, 100, 10, 1e-3)[0] == math.inf


@pytest.mark.parametrize("target", [1.0, 4.0, 8.0])
def test_calibrated_federated_epsilon_never_exceeds_the_target(target):
    cal = calibrate_federated(target, 1e-3, clients_per_round=5, num_clients=20, rounds=10)
    assert cal.epsilon <= target < cal.epsilon + 0.02
    assert federated_epsilon(cal.noise_multiplier, 5, 20, 10, 1e-3)[0] <= target
