"""Federated fine-tuning with Flower: the ``federated`` trainer and the ``federated`` variant.

The private (fine-tune) users are split across ``clients`` simulated clients, IID (a
seeded shuffle cut into equal parts) or non-IID by a user attribute (every value of, e.g.,
``occupation`` lives wholly in one client; values are dealt largest first to the client
with the fewest users). Each round ``clients_per_round`` clients are drawn without
replacement; each trains ``local_epochs`` of the plain trainer on its users from the global
trained state; the server averages (FedAvg, weighted by examples). Any
:class:`~audit.training.protocol.Trainable` with the ``federated`` feature works: clients and
server exchange its trained part only (every weight of the reference GPT-2; the LoRA weights of
an ``hf`` model, whose frozen base never travels: the FlowerTune LLM pattern). The simulation is
Flower's Message API (``ServerApp``/``ClientApp``, ``run_simulation`` on the Ray backend, one
CPU per client, ``ray_cpus`` in all). The summary records the bytes of trained state sent each
round and in total, server -> clients and clients -> server.

FL + DP (``dp: {epsilon: ...}`` or ``dp: {noise_multiplier: ...}``) is central DP with
Flower's ``DifferentialPrivacyServerSideFixedClipping``: each client's model update is
clipped to ``clipping_norm`` (L2), the clipped updates are averaged uniformly and Gaussian
noise of std ``z * C / clients_per_round`` is added. Flower does not account for it;
:mod:`privacy.accounting` does (RDP for sampling without replacement, replace-one: any
change to one client's data, so to any one user's history).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from audit.config import StrictConfig, validate_config
from audit.errors import ConfigError, RecauditError
from audit.training.recipe import StageSpec
from audit.training.protocol import require_feature
from audit.variants import BuildContext, Variant
from privacy.accounting import PrivacyAccount, calibrate_federated, default_delta, federated_epsilon
from privacy.finetune import private_finetune_recipe, stage_changes

if TYPE_CHECKING:
    from audit.training.data import TrainingData
    from audit.training.protocol import Trainable

Partition = Literal["iid", "attribute"]


class FederatedDPConfig(StrictConfig):
    """Central DP for FL, exactly one of ``epsilon`` / ``noise_multiplier``. ``epsilon``: the target
    epsilon (noise calibrated by recaudit); ``noise_multiplier``: a fixed noise multiplier z (epsilon then
    accounted, not targeted); ``clipping_norm``: C, the L2 bound of each client's model update (in weight
    units); ``delta``: None = 1 / n_private users rounded down to a power of ten."""

    epsilon: float | None = Field(default=None, gt=0)
    noise_multiplier: float | None = Field(default=None, ge=0)
    clipping_norm: float = Field(default=0.05, gt=0)
    delta: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_of(self) -> FederatedDPConfig:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of epsilon (a target) or noise_multiplier")
        return self


Clients = int | Literal["users"]


class FederatedOptions(StrictConfig):
    """Options of the ``federated`` trainer (``StageSpec.options``, flat so the recipe stays
    hashable): the federation, the partition, Ray's CPUs, and ``dp_*`` (central DP, see
    :class:`FederatedDPConfig`; ``dp`` False = none). ``clients: users`` = one client per
    private user (cross-device FL: client-level DP is then user-level DP exactly)."""

    clients: Clients = 10
    clients_per_round: int = Field(default=5, ge=1)
    rounds: int = Field(default=10, ge=1)
    partition: Partition = "iid"
    attribute: str = "occupation"
    client_threads: int = Field(default=1, ge=1)
    ray_cpus: int = Field(default=2, ge=1)
    dp: bool = False
    dp_epsilon: float | None = None
    dp_noise_multiplier: float | None = None
    dp_clipping_norm: float = 0.05
    dp_delta: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FederatedOptions:
        _check_clients(self.clients, self.clients_per_round)
        return self

    def n_clients(self, n_users: int) -> int:
        """The number of clients for ``n_users`` private users."""
        n = n_users if self.clients == "users" else int(self.clients)
        if self.clients_per_round > n:
            raise ConfigError(f"federated: clients_per_round ({self.clients_per_round}) exceeds the {n} clients")
        return n


def _check_clients(clients: Clients, per_round: int) -> None:
    if isinstance(clients, int) and clients < 1:
        raise ValueError(f"clients must be >= 1 or 'users', got {clients}")
    if isinstance(clients, int) and per_round > clients:
        raise ValueError(f"clients_per_round ({per_round}) exceeds clients ({clients})")


class FederatedConfig(StrictConfig):
    """The ``federated`` variant. ``clients``: how many simulated clients share the private
    users (or ``users``: one client per user); ``clients_per_round``: drawn without
    replacement each round; ``local_epochs``: plain-trainer passes over a client's windows
    per round; ``rounds``: FedAvg rounds; ``partition``: ``iid`` or ``attribute`` (non-IID by
    ``attribute``); ``attribute``: the user attribute a non-IID partition splits by (each value
    wholly in one client); ``lr`` / ``batch_size``: local AdamW settings (None = the recipe's);
    ``pretrain_epochs``: the public stage (None = the recipe's); ``client_threads``: torch threads
    each client trains with; ``ray_cpus``: CPUs of the simulation's Ray instance (one per client, so
    at most this many clients train at once); ``dp``: central DP (see FederatedDPConfig)."""

    clients: Clients = 10
    clients_per_round: int = Field(default=5, ge=1)
    rounds: int = Field(default=10, ge=1)
    local_epochs: int = Field(default=1, ge=1)
    partition: Partition = "iid"
    attribute: str = "occupation"
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    pretrain_epochs: int | None = Field(default=None, ge=1)
    client_threads: int = Field(default=1, ge=1)
    ray_cpus: int = Field(default=2, ge=1)
    dp: FederatedDPConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> FederatedConfig:
        _check_clients(self.clients, self.clients_per_round)
        return self

    def trainer_options(self) -> dict[str, Any]:
        opts = self.model_dump(include={"clients", "clients_per_round", "rounds", "partition", "attribute",
                                        "client_threads", "ray_cpus"})
        if self.dp is not None:
            opts.update(dp=True, dp_epsilon=self.dp.epsilon, dp_noise_multiplier=self.dp.noise_multiplier,
                        dp_clipping_norm=self.dp.clipping_norm, dp_delta=self.dp.delta)
        return opts


class FederatedVariant(Variant):
    """Fine-tune a public pretrained model on the private users with FedAvg (optionally central
    DP) across simulated Flower clients: the reference (public pretrain stage, private fine-tune
    stage) or an ``hf`` LLM (its checkpoint is the public part; its LoRA stage is private)."""

    requires: ClassVar[frozenset[str]] = frozenset({"train-federated"})

    name = "federated"
    Config = FederatedConfig
    trains = True

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        cfg: FederatedConfig = self.config  # type: ignore[assignment]
        if cfg.partition == "attribute" and cfg.attribute not in ctx.dataset.attributes:
            raise ConfigError(f"variant 'federated': attribute {cfg.attribute!r} is not a user attribute "
                              f"of data set {ctx.dataset.name!r} (it has {list(ctx.dataset.attributes)})")
        return private_finetune_recipe(
            recipe, variant=self.name, pretrain_epochs=cfg.pretrain_epochs,
            **stage_changes(trainer="federated", epochs=cfg.local_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                            catalog_titles=False, options=tuple(cfg.trainer_options().items())))


# -- partitions ------------------------------------------------------------------------------
def partition_users(users: list[str], profiles: dict[str, dict[str, str]], clients: int, how: Partition,
                    attribute: str, seed: int) -> list[list[str]]:
    """Split ``users`` into ``clients`` non-empty lists (see the module docstring)."""
    if len(users) < clients:
        raise ConfigError(f"federated: {clients} clients but only {len(users)} private users; lower clients")
    rng = np.random.default_rng(seed)
    if how == "iid":
        order = [users[i] for i in rng.permutation(len(users))]
        return [sorted(part.tolist()) for part in np.array_split(np.array(order, dtype=object), clients)]
    by_value: dict[str, list[str]] = {}
    for u in users:
        by_value.setdefault(profiles.get(u, {}).get(attribute, "<missing>"), []).append(u)
    if len(by_value) < clients:
        raise ConfigError(f"federated: partition by {attribute!r} gives {len(by_value)} groups for "
                          f"{clients} clients; lower clients to at most {len(by_value)}")
    parts: list[list[str]] = [[] for _ in range(clients)]
    for value in sorted(by_value, key=lambda v: (-len(by_value[v]), v)):
        target = min(range(clients), key=lambda c: (len(parts[c]), c))
        parts[target].extend(by_value[value])
    return [sorted(p) for p in parts]


# -- the trainer ------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_flower(verbose: bool) -> Iterator[None]:
    logger = logging.getLogger("flwr")
    before = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _ray_backend(opts: FederatedOptions) -> dict[str, Any]:
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": opts.ray_cpus, "num_gpus": 0, "include_dashboard": False,
                          "logging_level": logging.ERROR, "log_to_driver": False}}


def _noise(opts: FederatedOptions, delta: float, n_clients: int) -> tuple[float | None, float | None]:
    """(noise multiplier, the target it was calibrated for) -- (None, None) without DP."""
    if not opts.dp:
        return None, None
    if opts.dp_noise_multiplier is not None:
        return float(opts.dp_noise_multiplier), None
    if opts.dp_epsilon is None:
        raise ConfigError("federated dp: give epsilon or noise_multiplier")
    cal = calibrate_federated(opts.dp_epsilon, delta, opts.clients_per_round, n_clients, opts.rounds)
    return cal.noise_multiplier, float(opts.dp_epsilon)


def run_federated(trainable: Trainable, data: TrainingData, partitions: list[list[str]], local_stage: StageSpec,
                  opts: FederatedOptions, seed: int, noise_multiplier: float | None = None,
                  verbose: bool = False) -> dict[str, Any]:
    """Run the Flower simulation from ``trainable``'s trained state and load the final global
    state into it. Returns the server's outcome (metrics, sampled partitions, bytes, timings)."""
    import ray
    from flwr.simulation import run_simulation

    from privacy.flower_app import ServerPlan, make_client_app, make_server_app
    from privacy.task import state_arrays, write_workdir

    if ray.is_initialized():  # Flower would reuse it and shut it down at the end of the simulation
        raise RecauditError("federated training starts (and stops) its own local Ray instance, but Ray is "
                            "already initialised in this process; train the federated recommender in a fresh "
                            "process (e.g. run the suite with the local executor once to fill the model cache)")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs here; silences Ray's warning
    workdir = Path(tempfile.mkdtemp(prefix="recaudit-fl-"))
    outcome: dict[str, Any] = {}
    try:
        write_workdir(workdir, trainable, data, partitions, local_stage)
        plan = ServerPlan(rounds=opts.rounds, clients=len(partitions), clients_per_round=opts.clients_per_round,
                          seed=seed, noise_multiplier=noise_multiplier,
                          clipping_norm=opts.dp_clipping_norm if noise_multiplier is not None else None)
        t0 = time.perf_counter()
        with _quiet_flower(verbose):
            run_simulation(server_app=make_server_app(plan, state_arrays(trainable.trained_state()), outcome),
                           client_app=make_client_app(str(workdir), opts.client_threads),
                           num_supernodes=len(partitions), backend_name="ray", backend_config=_ray_backend(opts))
        outcome["simulation_seconds"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "weights" not in outcome:
        raise RuntimeError("the federated simulation ended without a global model (see the Flower log above)")
    trainable.load_trained_state(outcome.pop("weights"))
    return outcome


def train_federated_stage(trainable: Trainable, data: TrainingData, stage: StageSpec, seed: int,
                          progress: bool) -> dict[str, Any]:
    """FedAvg (optionally central DP) over simulated clients; returns the summary with the
    bytes exchanged and, when DP is on, the privacy account."""
    require_feature(trainable, "federated", "the 'federated' trainer")
    opts = validate_config(FederatedOptions, dict(stage.options), f"stage {stage.name!r} (trainer 'federated')")
    users = [u for u in data.users if len(data.sequences[u]) >= 2]
    n_clients = opts.n_clients(len(users))
    partitions = partition_users(users, data.profiles, n_clients, opts.partition, opts.attribute, seed)
    delta = opts.dp_delta if opts.dp_delta is not None else default_delta(len(users))
    noise, target = _noise(opts, delta, n_clients)
    local_stage = dataclasses.replace(stage, trainer="plain", options=())
    t0 = time.perf_counter()
    outcome = run_federated(trainable, data, partitions, local_stage, opts, seed, noise, verbose=progress)
    trainable.module.eval()
    rounds = outcome.get("train_metrics", {})
    last = rounds.get(max(rounds)) if rounds else {}
    summary: dict[str, Any] = {
        "trainer": "federated", "rounds": opts.rounds, "clients": n_clients,
        "clients_per_round": opts.clients_per_round, "local_epochs": stage.epochs, "partition": opts.partition,
        "partition_attribute": opts.attribute if opts.partition == "attribute" else None,
        "partition_sizes": [len(p) for p in partitions], "steps": opts.rounds,
        "seconds": round(time.perf_counter() - t0, 2),
        "simulation_seconds": round(outcome.get("simulation_seconds", float("nan")), 2),
        "startup_seconds": round(outcome.get("startup_seconds", float("nan")), 2),
        "rounds_seconds": round(outcome.get("rounds_seconds", float("nan")), 2),
        "final_loss": float(last.get("train-loss", float("nan"))),
        "round_losses": [float(rounds[r].get("train-loss", float("nan"))) for r in sorted(rounds)],
        "sampled": {str(r): p for r, p in sorted(outcome.get("sampled", {}).items())},
        "trained_state_bytes": state_bytes(trainable),
        "bytes": outcome.get("bytes"),
    }
    if noise is not None:
        eps, order = federated_epsilon(noise, opts.clients_per_round, n_clients, opts.rounds, delta)
        summary["privacy"] = PrivacyAccount(
            epsilon=eps, delta=delta, target_epsilon=target, noise_multiplier=noise,
            sample_rate=opts.clients_per_round / n_clients, steps=opts.rounds,
            accountant="rdp-wor (dp-accounting RdpAccountant, replace-one)", unit="user",
            mechanism="DP-FedAvg: fixed-size client sampling without replacement, server-side fixed "
                      "clipping (Flower), Gaussian noise on the uniform average; replace-one client",
            max_grad_norm=opts.dp_clipping_norm, n_private=len(users),
            note=("holds for any change to one client's data ("
                  + ("one client per user" if n_clients == len(users) else "each user's history is in one client")
                  + f"); RDP order {order:g}"),
        ).to_json()
    return summary


def state_bytes(trainable: Trainable) -> int:
    """Raw bytes of the trained state one message carries (values only, no headers)."""
    from privacy.task import state_arrays

    return int(sum(a.nbytes for a in state_arrays(trainable.trained_state()).values()))

