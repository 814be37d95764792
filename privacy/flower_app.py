"""Thin Flower glue (Message API): the ServerApp and ClientApp of the federated trainer.

- ClientApp: ``query`` answers with the client's partition id; ``train`` loads the global
  trained state (the trainable's trained part only: LoRA weights for an ``hf`` model), trains
  locally (:func:`privacy.task.local_train`) and returns its trained state with
  ``num-examples`` (FedAvg's weight), ``unit-weight`` (1, for uniform averaging under DP)
  and ``train-loss``.
- ServerApp: first asks every node for its partition id (the simulation gives nodes random
  ids; this makes client sampling reproducible), then runs FedAvg (:class:`SeededFedAvg`:
  ``clients_per_round`` partitions drawn without replacement by a seeded generator each
  round), wrapped in Flower's ``DifferentialPrivacyServerSideFixedClipping`` for FL + DP.
  The final weights, per-round metrics, timings and the bytes exchanged go into the
  ``outcome`` dict given to :func:`make_server_app`. Bytes are counted by
  :class:`CountingGrid` on the messages actually sent and received: the serialised array
  payloads (Flower's ``Array.data``: the values plus a ~128-byte .npy header per array),
  not the message framing. Under DP a round with fewer replies than ``clients_per_round``
  fails (:func:`check_round`): the noise is sized for m updates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from privacy.task import client_seed, load_client_task, local_train

PARTITION_KEY = "partition-id"


@dataclass(frozen=True)
class ServerPlan:
    """How the server runs: ``rounds``, ``clients`` (= partitions = supernodes),
    ``clients_per_round``, the run ``seed``, and central DP (``noise_multiplier`` z and
    ``clipping_norm`` C, both None without DP). ``timeout``: seconds to wait for a round's
    replies; ``startup_timeout``: seconds for every simulated client to come up and answer
    (a Ray worker that dies at start-up fails the run then, instead of after a round's timeout)."""

    rounds: int
    clients: int
    clients_per_round: int
    seed: int
    noise_multiplier: float | None = None
    clipping_norm: float | None = None
    timeout: float = 3600.0
    startup_timeout: float = 600.0

    @property
    def dp(self) -> bool:
        return self.noise_multiplier is not None


def sample_partitions(seed: int, server_round: int, clients: int, per_round: int) -> list[int]:
    """The partitions trained in ``server_round``: ``per_round`` of ``clients`` without
    replacement, uniformly, from a generator seeded by (seed, round); sorted."""
    rng = np.random.default_rng([seed, server_round])
    return sorted(int(p) for p in rng.choice(clients, size=per_round, replace=False))


class SeededFedAvg(FedAvg):
    """FedAvg whose client sampling is :func:`sample_partitions` (reproducible)."""

    def __init__(self, plan: ServerPlan, node_of_partition: dict[int, int], **kwargs: Any) -> None:
        super().__init__(fraction_evaluate=0.0, min_available_nodes=plan.clients,
                         min_train_nodes=plan.clients_per_round, **kwargs)
        self.plan = plan
        self.node_of_partition = node_of_partition
        self.sampled: dict[int, list[int]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        parts = sample_partitions(self.plan.seed, server_round, self.plan.clients, self.plan.clients_per_round)
        self.sampled[server_round] = parts
        config["server-round"] = server_round
        config["seed"] = self.plan.seed
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, [self.node_of_partition[p] for p in parts], MessageType.TRAIN)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's aggregation over the replies in partition order (arrival order would make the float
        sums, and so the model, depend on which client finished first); under central DP a short
        round fails (see :func:`check_round`)."""
        partition_of = {node: p for p, node in self.node_of_partition.items()}
        replies = sorted(replies, key=lambda r: partition_of.get(r.metadata.src_node_id, len(partition_of)))
        check_round(self.plan, server_round, sum(not r.has_error() for r in replies))
        return super().aggregate_train(server_round, replies)


class ShortRoundError(RuntimeError):
    """A DP round got fewer client updates than the noise was sized for."""


def check_round(plan: ServerPlan, server_round: int, replies: int) -> None:
    """Under central DP, Flower's noise is sized for ``clients_per_round`` (std z C / m) but it
    averages over however many clients reply: with fewer replies each update weighs more than
    the accountant assumed, so the round's privacy loss is larger than accounted. Such a round
    raises :class:`ShortRoundError` instead of being released."""
    if plan.dp and replies != plan.clients_per_round:
        raise ShortRoundError(f"round {server_round}: {replies} of {plan.clients_per_round} sampled clients replied; "
                              f"the central DP noise is sized for {plan.clients_per_round} updates, so this round "
                              "would spend more privacy than accounted -- stopping (raise the timeout or fix the "
                              "failing clients)")


def make_client_app(workdir: str, threads: int = 1) -> ClientApp:
    """The ClientApp: every simulated client reads ``workdir`` (see :mod:`privacy.task`)."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config[PARTITION_KEY])
        return Message(RecordDict({"info": MetricRecord({PARTITION_KEY: pid})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config[PARTITION_KEY])
        cfg = msg.content["config"]
        task = load_client_task(workdir)
        state = {name: array.numpy() for name, array in msg.content["arrays"].items()}
        seed = client_seed(int(cfg["seed"]), int(cfg["server-round"]), pid)
        new_state, metrics = local_train(task, state, pid, seed, threads)
        metrics[PARTITION_KEY] = float(pid)
        return Message(RecordDict({"arrays": array_record(new_state), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    return app


def discover_partitions(grid: Grid, clients: int, timeout: float) -> dict[int, int]:
    """Ask every node for its partition id; returns partition id -> node id."""
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(node_ids)} of {clients} simulated clients came up within {timeout:g} s "
                               "(see the Ray log above: a worker may have died at start-up)")
        time.sleep(0.2)
    msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    out: dict[int, int] = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"client {reply.metadata.src_node_id} failed: {reply.error.reason}")
        out[int(reply.content["info"][PARTITION_KEY])] = reply.metadata.src_node_id
    if sorted(out) != list(range(clients)):
        raise RuntimeError(f"expected partitions 0..{clients - 1}, got {sorted(out)}")
    return out


def array_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays as Flower's ``ArrayRecord`` (names kept, in order)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in state.items()})


def record_bytes(content: RecordDict) -> int:
    """Serialised bytes of every array in a message's content (``Array.data``)."""
    return sum(len(a.data) for rec in content.array_records.values() for a in rec.values())


class CountingGrid:
    """A Grid that counts the array bytes of the train messages it sends and of the replies it
    receives, by round (``config['server-round']`` of the messages sent); everything else is the
    wrapped grid's."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        rounds = {int(m.content["config"]["server-round"]) for m in messages if "config" in m.content}
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if len(rounds) == 1:
            (r,) = rounds
            self.sent[r] = self.sent.get(r, 0) + sum(record_bytes(m.content) for m in messages)
            self.received[r] = self.received.get(r, 0) + sum(record_bytes(m.content) for m in replies
                                                             if not m.has_error())
        return replies

    def bytes_report(self) -> dict[str, Any]:
        """Per round and in total: server -> clients and clients -> server bytes."""
        rounds = sorted(set(self.sent) | set(self.received))
        per_round = [{"round": r, "server_to_clients": self.sent.get(r, 0),
                      "clients_to_server": self.received.get(r, 0)} for r in rounds]
        return {"per_round": per_round,
                "server_to_clients": sum(x["server_to_clients"] for x in per_round),
                "clients_to_server": sum(x["clients_to_server"] for x in per_round),
                "total": sum(x["server_to_clients"] + x["clients_to_server"] for x in per_round)}


def make_server_app(plan: ServerPlan, initial: Mapping[str, np.ndarray], outcome: dict[str, Any]) -> ServerApp:
    """The ServerApp; fills ``outcome`` with ``weights`` (name -> array), ``train_metrics``
    (round -> metrics), ``sampled`` (round -> partitions), ``bytes``
    (:meth:`CountingGrid.bytes_report`), ``startup_seconds`` (until every client answered the
    query: Ray start, actors, first task load) and ``rounds_seconds``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        grid = CountingGrid(grid)  # type: ignore[assignment]
        t0 = time.perf_counter()
        node_of_partition = discover_partitions(grid, plan.clients, plan.startup_timeout)
        outcome["startup_seconds"] = time.perf_counter() - t0
        fedavg = SeededFedAvg(plan, node_of_partition,
                              weighted_by_key="unit-weight" if plan.dp else "num-examples")
        strategy: Any = fedavg
        if plan.dp:
            strategy = DifferentialPrivacyServerSideFixedClipping(
                fedavg, noise_multiplier=float(plan.noise_multiplier),  # type: ignore[arg-type]
                clipping_norm=float(plan.clipping_norm), num_sampled_clients=plan.clients_per_round)  # type: ignore[arg-type]
            np.random.seed(plan.seed % (2 ** 32))  # Flower draws the central noise from numpy's global RNG
        t1 = time.perf_counter()
        result = strategy.start(grid=grid, initial_arrays=array_record(initial), num_rounds=plan.rounds,
                                timeout=plan.timeout, train_config=ConfigRecord({"seed": plan.seed}))
        outcome["rounds_seconds"] = time.perf_counter() - t1
        outcome["weights"] = {name: array.numpy() for name, array in result.arrays.items()}
        outcome["bytes"] = grid.bytes_report()  # type: ignore[attr-defined]
        outcome["train_metrics"] = {int(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
        outcome["sampled"] = dict(fedavg.sampled)

    return app
