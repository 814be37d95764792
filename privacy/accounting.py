"""Privacy accounting for the DP-SGD and federated variants.

Two mechanisms, two accountants:

- **DP-SGD** (Opacus): Poisson-subsampled Gaussian mechanism over *users* (add/remove one
  user's whole history). Calibrated and accounted with Opacus's PRV accountant (searched
  down from the RDP noise, never on a grid beyond :data:`PRV_MAX_POINTS`), falling back to its
  RDP accountant only where PRV's grid is too large even at the RDP noise or PRV fails (large
  epsilon, extreme sampling rates). :func:`calibrate_dp_sgd` returns the noise multiplier for a target epsilon and
  the epsilon that noise actually buys (never above the target).
- **Federated + central DP** (Flower's server-side fixed clipping): each round the server
  samples a fixed number ``m`` of the ``N`` clients without replacement, clips every
  client's model update to L2 norm ``C``, averages the clipped updates uniformly and adds
  Gaussian noise of standard deviation ``z * C / m``. One user's data lives in one client,
  so changing it changes one client's clipped update: *replace-one* adjacency, whose
  sensitivity on the average is ``2C / m``. Flower's wrappers do not account for sampling,
  so recaudit does, with Google's maintained ``dp-accounting`` library: its RDP accountant
  for subsampling without replacement under replace-one adjacency (Wang, Balle and
  Kasiviswanathan, AISTATS 2019), composed over rounds and converted to (epsilon, delta).

``delta`` defaults to 1 / (10 x number of private users) rounded down to a power of ten.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from audit.errors import ConfigError

Accountant = Literal["prv", "rdp"]

_MAX_NOISE = 1e4
#: PRV discretises the privacy loss on a grid; up to this many points one evaluation takes about
#: a second, beyond it (large epsilon: little noise, heavy tails) minutes or a failure. PRV is never
#: evaluated on a larger grid; RDP is used where even the RDP noise would need one
PRV_MAX_POINTS = 1_000_000


def default_delta(n_private: int) -> float:
    """1 / (10 ``n_private``) rounded down to a power of ten (e.g. 377 users -> 1e-4, 578 -> 1e-4,
    1000 -> 1e-4): delta well below 1/n, so "leak one user's whole record" stays improbable."""
    if n_private < 2:
        raise ConfigError(f"the private group has {n_private} users; DP training needs at least 2")
    return 10.0 ** -math.ceil(math.log10(10 * n_private) - 1e-12)


@dataclass(frozen=True)
class PrivacyAccount:
    """What a DP training spent: ``epsilon`` at ``delta`` for one ``unit`` of privacy.

    ``unit``: ``"user"`` (one user's whole history is one record) or ``"example"``
    (one training window, weaker; labelled as such). ``mechanism`` names the sampled
    mechanism the accountant composed; ``sample_rate`` is the Poisson rate (DP-SGD) or the
    client sampling ratio m / N (federated); ``steps`` are optimiser steps or rounds.
    ``randomness``: ``"seeded"`` (sampling and noise from a seeded generator: reproducible,
    and the guarantee assumes the seed stays secret) or ``"secure"`` (a cryptographic RNG)."""

    epsilon: float
    delta: float
    target_epsilon: float | None
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    unit: str
    mechanism: str
    max_grad_norm: float
    n_private: int
    note: str = ""
    randomness: str = "seeded"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = float(self.epsilon)
        return out


# -- DP-SGD (Opacus) -------------------------------------------------------------------------
def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                   accountant: Accountant = "prv") -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (Opacus accountant ``accountant``)."""
    from opacus.accountants import create_accountant

    if steps == 0:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


@dataclass(frozen=True)
class Calibration:
    """A noise multiplier and the epsilon it buys (``accountant`` says which one computed it;
    ``fallback_reason`` is set when PRV failed and RDP was used instead)."""

    noise_multiplier: float
    epsilon: float
    accountant: str
    fallback_reason: str = ""


def prv_domain_points(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                      eps_error: float = 0.01) -> float:
    """Grid points Opacus's PRV accountant would discretise for this history (its own
    domain size and mesh rules, ``delta_error = delta / 1000``)."""
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size

    delta_error = delta / 1000
    half_width = compute_safe_domain_size(prvs=[PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)],
                                          max_self_compositions=[steps], eps_error=eps_error,
                                          delta_error=delta_error)
    mesh = eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
    return float(2 * half_width / mesh)


def rdp_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Opacus's RDP calibration: the noise multiplier for ``target_epsilon`` (fast at any epsilon)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant="rdp"))


def _prv_ruled_out(z_rdp: float, target_epsilon: float, delta: float, sample_rate: float, steps: int) -> str:
    """Why PRV cannot be used ('' when it can): PRV is the tighter accountant, so its noise for
    the target lies at or below RDP's and its grid is at least the one at the RDP noise."""
    points = prv_domain_points(z_rdp, sample_rate, steps, delta)
    if points > PRV_MAX_POINTS:
        return (f"PRV not used at epsilon {target_epsilon}: its grid would need {points:.3g} points "
                f"(> {PRV_MAX_POINTS:.0e}) even at the RDP noise; RDP accountant instead")
    return ""


def choose_accountant(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      preferred: Accountant = "prv") -> tuple[str, str]:
    """(accountant, reason): PRV unless RDP is asked for, or PRV's grid at the RDP noise
    multiplier (more noise than PRV needs, so the smallest grid PRV could work on) would exceed
    :data:`PRV_MAX_POINTS` -- the large-epsilon regime where PRV takes minutes or fails."""
    if preferred == "rdp":
        return "rdp", ""
    _check_target(target_epsilon, delta, sample_rate, steps)
    reason = _prv_ruled_out(rdp_noise(target_epsilon, delta, sample_rate, steps), target_epsilon, delta,
                            sample_rate, steps)
    return ("rdp", reason) if reason else ("prv", "")


def prv_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, z_rdp: float,
              tolerance: float = 0.01) -> tuple[float, float]:
    """(noise multiplier, PRV epsilon): the smallest noise (to ``tolerance`` in epsilon, Opacus's
    default) whose PRV epsilon is at most ``target_epsilon``, searched from the RDP noise
    ``z_rdp`` downwards. Unlike Opacus's search (which starts at noise 20 and halves, visiting
    noise levels near half the answer), it never evaluates PRV where its grid would exceed
    :data:`PRV_MAX_POINTS`: such a level counts as too little noise, so the answer is at worst a
    little noisier than needed, never an RDP fallback."""
    def eps_at(z: float) -> float:
        return dp_sgd_epsilon(z, sample_rate, steps, delta, "prv")

    hi = z_rdp
    eps_hi = eps_at(hi)
    for _ in range(20):  # PRV's 0.01 error margin can put it above RDP at tiny epsilon
        if eps_hi <= target_epsilon:
            break
        hi *= 1.25
        eps_hi = eps_at(hi)
    else:
        raise ValueError(f"PRV epsilon stays above {target_epsilon} up to noise {hi:.4g}")
    lo = hi / 2
    while prv_domain_points(lo, sample_rate, steps, delta) <= PRV_MAX_POINTS:
        eps_lo = eps_at(lo)
        if eps_lo > target_epsilon:
            break
        hi, eps_hi, lo = lo, eps_lo, lo / 2
    while target_epsilon - eps_hi > tolerance and hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        if prv_domain_points(mid, sample_rate, steps, delta) > PRV_MAX_POINTS:
            lo = mid
            continue
        eps_mid = eps_at(mid)
        if eps_mid <= target_epsilon:
            hi, eps_hi = mid, eps_mid
        else:
            lo = mid
    if not math.isfinite(eps_hi):
        raise ValueError(f"prv returned epsilon {eps_hi}")
    return hi, eps_hi


def calibrate_dp_sgd(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                     accountant: Accountant = "prv") -> Calibration:
    """Smallest noise multiplier (to Opacus's tolerance 0.01 in epsilon) whose accounted
    epsilon is at most ``target_epsilon`` after ``steps`` steps at ``sample_rate``.

    PRV (tighter, :func:`prv_noise`) unless RDP is asked for or PRV's grid is too large even at
    the RDP noise (:func:`choose_accountant`); RDP if PRV raises or its answer is not finite."""
    _check_target(target_epsilon, delta, sample_rate, steps)
    try:
        z_rdp = rdp_noise(target_epsilon, delta, sample_rate, steps)
    except (ValueError, RuntimeError, OverflowError, FloatingPointError) as exc:
        raise ConfigError(f"cannot reach epsilon {target_epsilon} at delta {delta} with sample rate "
                          f"{sample_rate:.4g} over {steps} steps ({exc}); raise epsilon or lower the steps") from None
    reason = "" if accountant == "rdp" else _prv_ruled_out(z_rdp, target_epsilon, delta, sample_rate, steps)
    if accountant == "prv" and not reason:
        try:
            z, eps = prv_noise(target_epsilon, delta, sample_rate, steps, z_rdp)
            return Calibration(z, eps, "prv", "")
        except (ValueError, RuntimeError, OverflowError, FloatingPointError, MemoryError) as exc:
            reason = f"prv failed: {type(exc).__name__}: {exc}"
    return Calibration(z_rdp, dp_sgd_epsilon(z_rdp, sample_rate, steps, delta, "rdp"), "rdp", reason)


def _check_target(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> None:
    if not target_epsilon > 0:
        raise ConfigError(f"epsilon must be > 0, got {target_epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ConfigError(f"need at least one step, got {steps}")


# -- federated: subsampling without replacement, replace-one adjacency ---------------------------
def federated_epsilon(noise_multiplier: float, clients_per_round: int, num_clients: int, rounds: int,
                      delta: float, orders: Sequence[float] | None = None) -> tuple[float, float]:
    """(epsilon, best order) after ``rounds`` rounds of DP-FedAvg with fixed-size client
    sampling without replacement (replace-one adjacency, any one client's data changed).

    Accounted by Google's ``dp-accounting`` (``RdpAccountant`` with ``NeighborRel.REPLACE_ONE``
    and ``SampledWithoutReplacementDpEvent``: Wang, Balle, Kasiviswanathan 2019, Theorem 27),
    not hand-written privacy math. Flower adds noise of std ``z * C / m`` to the average of ``m``
    clipped updates; replacing one client moves the average by up to ``2C / m``, so the
    Gaussian event's noise multiplier relative to that sensitivity is ``z / 2``."""
    from dp_accounting import GaussianDpEvent, SampledWithoutReplacementDpEvent, SelfComposedDpEvent
    from dp_accounting.rdp import RdpAccountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    if not 1 <= clients_per_round <= num_clients:
        raise ConfigError(f"clients per round must be in 1..{num_clients}, got {clients_per_round}")
    if rounds == 0:
        return 0.0, float("nan")
    if noise_multiplier <= 0:
        return math.inf, float("nan")
    acc = (RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE) if orders is None else
           RdpAccountant(list(orders), neighboring_relation=NeighboringRelation.REPLACE_ONE))
    event = SampledWithoutReplacementDpEvent(num_clients, clients_per_round, GaussianDpEvent(noise_multiplier / 2))
    acc.compose(SelfComposedDpEvent(event, rounds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, order = acc.get_epsilon_and_optimal_order(delta)
    return float(max(eps, 0.0)), float(order)


def calibrate_federated(target_epsilon: float, delta: float, clients_per_round: int, num_clients: int,
                        rounds: int, tolerance: float = 0.01) -> Calibration:
    """Smallest noise multiplier (bisection to ``tolerance`` in epsilon) whose federated
    epsilon (:func:`federated_epsilon`) is at most ``target_epsilon``."""
    _check_target(target_epsilon, delta, clients_per_round / max(1, num_clients), rounds)
    lo, hi = 0.0, 1.0
    eps_hi, _ = federated_epsilon(hi, clients_per_round, num_clients, rounds, delta)
    while eps_hi > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > _MAX_NOISE:
            raise ConfigError(f"cannot reach epsilon {target_epsilon} at delta {delta} with "
                              f"{clients_per_round}/{num_clients} clients over {rounds} rounds")
        eps_hi, _ = federated_epsilon(hi, clients_per_round, num_clients, rounds, delta)
    while target_epsilon - eps_hi > tolerance and hi - lo > 1e-6:
        mid = (lo + hi) / 2
        eps_mid, _ = federated_epsilon(mid, clients_per_round, num_clients, rounds, delta)
        if eps_mid <= target_epsilon:
            hi, eps_hi = mid, eps_mid
        else:
            lo = mid
    return Calibration(hi, eps_hi, "rdp-wor")
