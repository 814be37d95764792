"""Model, data and local training for the federated simulation, in one plain module
(the Flower quickstart's ``task.py``).

The federated trainer writes a *work directory* that every simulated client reads:

- ``model/``: the model before federated training (``save_pretrained``, safetensors) and
  ``tokenizer/`` (``tokenizer.json``);
- ``task.json``: titles, prompt settings, the local stage settings, and the users of every
  partition (one partition per client) with their training sequences and profiles.

A client process loads the directory once (memoised by path), then for each round sets the
global weights, trains ``local_epochs`` with the reference model's ``plain`` trainer on its
own users, and returns its weights. :func:`client_seed` derives each client's seed from the
run seed, the round and the partition, so runs are reproducible.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from audit.reference.examples import StageData
from audit.reference.prompts import PromptFormat
from audit.reference.recipe import StageSpec
from audit.reference.tokenizer import ItemVocab
from audit.reference.trainable import ReferenceTrainable
from audit.reference.trainers import train_plain

TASK_FILE = "task.json"


# -- weights as named arrays -----------------------------------------------------------------
def get_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters by name (tied weights once), detached CPU copies."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


def set_weights(model: torch.nn.Module, weights: dict[str, Any]) -> None:
    """Copy ``weights`` (name -> tensor or array) into the model's parameters, all of them."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    extra = sorted(set(weights) - set(params))
    if missing or extra:
        raise ValueError(f"weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.as_tensor(np.asarray(weights[name])).to(p.dtype).view_as(p))


# -- the work directory ----------------------------------------------------------------------
def write_workdir(path: Path, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, data: StageData,
                  partitions: list[list[str]], local_stage: StageSpec) -> None:
    """Everything a client needs (see the module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path / "model", safe_serialization=True)
    tokenizer.save_pretrained(path / "tokenizer")
    task = {
        "titles": data.fmt.vocab.titles, "max_history": data.fmt.max_history,
        "attribute_dropout": data.attribute_dropout, "catalog_titles": data.catalog_titles,
        "stage": {**dataclasses.asdict(local_stage), "options": dict(local_stage.options)},
        "partitions": [{"users": users,
                        "sequences": {u: list(data.sequences[u]) for u in users},
                        "profiles": {u: data.profiles.get(u, {}) for u in users}} for users in partitions],
    }
    (path / TASK_FILE).write_text(json.dumps(task))


@dataclasses.dataclass
class ClientTask:
    """What one client process holds: the model skeleton, its prompt format and the task."""

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    fmt: PromptFormat
    task: dict[str, Any]

    @property
    def num_partitions(self) -> int:
        return len(self.task["partitions"])

    def stage(self) -> StageSpec:
        spec = dict(self.task["stage"])
        spec["options"] = tuple(spec.get("options", {}).items())
        return StageSpec(**spec)

    def partition_data(self, partition: int) -> StageData:
        part = self.task["partitions"][partition]
        return StageData(self.fmt, {u: tuple(s) for u, s in part["sequences"].items()},
                         {u: dict(p) for u, p in part["profiles"].items()},
                         float(self.task["attribute_dropout"]), bool(self.task["catalog_titles"]))


@functools.lru_cache(maxsize=2)
def load_client_task(workdir: str) -> ClientTask:
    """Load a work directory once per process."""
    path = Path(workdir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer", local_files_only=True)
    task = json.loads((path / TASK_FILE).read_text())
    fmt = PromptFormat(ItemVocab(tokenizer, task["titles"]), int(task["max_history"]))
    model = GPT2LMHeadModel.from_pretrained(path / "model", local_files_only=True)
    return ClientTask(model, tokenizer, fmt, task)


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """The local-training seed of one client in one round (32-bit, stable)."""
    h = hashlib.sha256(f"{seed}/{server_round}/{partition}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def local_train(task: ClientTask, weights: dict[str, Any], partition: int, seed: int,
                threads: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Set ``weights``, train the partition's users for the local epochs, return the new
    weights and metrics (``num-examples``: windows per epoch; ``train-loss``: final loss)."""
    torch.set_num_threads(threads)
    set_weights(task.model, weights)
    data = task.partition_data(partition)
    summary = train_plain(ReferenceTrainable(task.model, task.tokenizer), data, task.stage(), seed, False)
    metrics = {"num-examples": float(summary["examples_per_epoch"]), "unit-weight": 1.0,
               "train-loss": float(summary["final_loss"]), "steps": float(summary["steps"])}
    return get_weights(task.model), metrics
