"""The trained part, client state and local training of the federated simulation, in one plain
module (the Flower quickstart's ``task.py``). Nothing here knows the model's class: it works on
any :class:`~audit.training.protocol.Trainable` with the ``federated`` feature.

- What travels between server and clients is the trainable's :meth:`trained_state` as named
  arrays (:func:`state_arrays`): every weight of the reference GPT-2, only the LoRA weights of an
  ``hf`` model (the frozen base never travels: the FlowerTune LLM pattern).
- The federated trainer writes a *work directory* every simulated client reads: ``task.pkl``,
  the pickled :class:`ClientTask` (the trainable with its frozen part, the stage's training data,
  the users of every partition, the local stage settings). It is the simulation's stand-in for
  each client already holding the base model and its own users' data; a client trains on its
  partition's users only.

A client process loads the directory once (memoised by path), then for each round loads the
global trained state, trains ``local_epochs`` with the ``plain`` trainer on its users, and
returns its trained state. :func:`client_seed` derives each client's seed from the run seed,
the round and the partition, so runs are reproducible.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.training.recipe import StageSpec
from audit.training.trainers import train_plain
from audit.training.data import TrainingData

TASK_FILE = "task.pkl"


# -- the trained part as named arrays --------------------------------------------------------
def get_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by name (tied weights once), detached CPU copies."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


def state_arrays(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A trained state as contiguous CPU numpy arrays (what Flower's ``ArrayRecord`` carries);
    bfloat16, which numpy lacks, travels as float32."""
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        out[name] = np.ascontiguousarray(t.numpy())
    return out


# -- the work directory ----------------------------------------------------------------------
@dataclasses.dataclass
class ClientTask:
    """What one client process holds: the trainable (frozen part included), the stage data of
    the federation's users, each partition's users and the local stage settings."""

    trainable: Any
    data: TrainingData
    partitions: list[list[str]]
    stage: StageSpec

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    def partition_data(self, partition: int) -> TrainingData:
        return self.data.subset(self.partitions[partition])


def write_workdir(path: Path, trainable: Any, data: TrainingData, partitions: list[list[str]],
                  local_stage: StageSpec) -> None:
    """Everything a client needs (see the module docstring), pickled in one piece so the model
    the data's encoders refer to is stored once."""
    path.mkdir(parents=True, exist_ok=True)
    task = ClientTask(trainable, data.subset([u for part in partitions for u in part]), partitions, local_stage)
    (path / TASK_FILE).write_bytes(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))


@functools.lru_cache(maxsize=2)
def load_client_task(workdir: str) -> ClientTask:
    """Load a work directory once per process."""
    task: ClientTask = pickle.loads((Path(workdir) / TASK_FILE).read_bytes())
    return task


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """The local-training seed of one client in one round (32-bit, stable)."""
    h = hashlib.sha256(f"{seed}/{server_round}/{partition}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def local_train(task: ClientTask, state: Mapping[str, Any], partition: int, seed: int,
                threads: int = 1) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Load the global trained ``state``, train the partition's users for the local epochs,
    return the new trained state and metrics (``num-examples``: examples per epoch;
    ``train-loss``: final loss)."""
    torch.set_num_threads(threads)
    task.trainable.load_trained_state(state)
    summary = train_plain(task.trainable, task.partition_data(partition), task.stage, seed, False)
    metrics = {"num-examples": float(summary["examples_per_epoch"]), "unit-weight": 1.0,
               "train-loss": float(summary["final_loss"]), "steps": float(summary["steps"])}
    return state_arrays(task.trainable.trained_state()), metrics
