"""Each built-in probe's declared metric names (``Probe.emitted_metrics``, what gates are checked
against at load) are the names its runs emit: every emitted name declared, every declared name
emitted by some recommender (or its absence documented), for a few configs per probe."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from audit.config import validate_config
from audit.data.dataset import Dataset
from audit.interface import RecRequest, Recommender
from audit.registry import PROBES
from tests.audit.probes.memorisation_testkit import (LineModel, NoiseModel, RecitingModel, SequenceMemoryModel,
                                                     canary_manifest, halves, probe_context)
from tests.audit.probes.names_testkit import assert_declared_as_emitted


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


class Lists(Recommender):
    """Deterministic lists that depend on the history and the profile: the candidates (or the
    catalog) in a hash order. Generate only."""

    name = "lists"
    capabilities = frozenset({"generate"})

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.titles = list(dataset.item_titles.values())

    def _key(self, req: RecRequest) -> str:
        return f"{req.history[-3:]}{sorted(req.profile.items())}"

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [sorted(r.candidates or self.titles, key=lambda t: _hash(t, self._key(r)))[:k] for r in reqs]


class ScoringLists(Lists):
    """:class:`Lists` that also scores candidates and embeds users (hash features)."""

    name = "scoring-lists"
    capabilities = frozenset({"generate", "score", "embed-user"})

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [np.array([_hash(t, self._key(r)) % 1000 for t in its], float) for r, its in zip(reqs, items)]

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        return np.array([[_hash(self._key(r), j) % 97 for j in range(4)] for r in reqs], float)


def _members(ds: Dataset) -> list[str]:
    return halves(ds)[0]


Case = tuple[str, dict[str, Any], list[Callable[[Dataset], Recommender]], Callable[[str], bool]]
NONE_ABSENT: Callable[[str], bool] = lambda name: False  # noqa: E731

CASES: dict[str, Case] = {
    "utility": ("utility", {"k": [1, 5], "negatives": 10, "users": 12}, [Lists, ScoringLists], NONE_ABSENT),
    "utility-one-k": ("utility", {"k": [3], "negatives": 5, "sampling": "popularity", "users": 8}, [Lists],
                      NONE_ABSENT),
    "hallucination": ("hallucination", {"k": 3, "users": 12}, [Lists], NONE_ABSENT),
    "ranking": ("ranking", {"candidates": 6, "k": 3, "positions": [0, "last"], "users": 10},
                [Lists, ScoringLists], NONE_ABSENT),
    "ranking-all-positions": ("ranking", {"candidates": 4, "k": 2, "positions": "all", "shuffle_history": False,
                                          "users": 8}, [Lists], lambda n: n.startswith("score_")),
    "ranking-one-position": ("ranking", {"candidates": 5, "k": 2, "positions": ["mid"], "users": 8},
                             [ScoringLists], NONE_ABSENT),
    # hr_diff_* / ndcg_diff_* only for a set with exactly two real groups (gender; not age or gender x age)
    "fairness": ("fairness", {"attributes": [["gender"], ["gender", "age"]], "bootstrap": 100, "permutations": 20,
                              "min_group_users": 2, "users": 24}, [Lists],
                 lambda n: "_diff_" in n and n.endswith("gender_age")),
    "fairness-no-placebo": ("fairness", {"attributes": ["age"], "placebo": False, "bootstrap": 100,
                                         "permutations": 0, "min_group_users": 2, "users": 18}, [Lists],
                            lambda n: "_diff_" in n),
    "leakage": ("leakage", {"attributes": [["gender"], ["age"]], "attackers": ["logistic", "mlp"], "repeats": 1,
                            "folds": 2, "bootstrap": 100, "min_users": 4}, [Lists, ScoringLists], NONE_ABSENT),
    "leakage-one-attacker": ("leakage", {"attributes": [["gender", "age"]], "sources": ["list"],
                                         "attackers": ["logistic"], "repeats": 1, "folds": 2, "bootstrap": 100,
                                         "min_users": 2}, [Lists], NONE_ABSENT),
    # declared training users (LineModel) and assumed ones (a model that does not declare them);
    # 'ref' needs a calibration model, and TPR@50% needs 20 non-members: the declared split has 20, the
    # list attack's target half 10, the assumed (default) split fewer
    "membership": ("membership", {"attacks": ["loss", "zlib", "mink", "minkpp", "list", "ref"], "fprs": [0.5],
                                  "list_k": 3},
                   [lambda ds: LineModel(ds, _members(ds)), lambda ds: _Undeclared(ds)],
                   lambda n: n.endswith("_ref") or "tpr@" in n and (n.endswith("_list") or n.startswith("assumed_"))),
    "membership-control": ("membership", {"attacks": ["loss", "mink"], "fprs": [0.25, 0.5], "control": True},
                           [lambda ds: NoiseModel(_members(ds))], lambda n: n.startswith("tpr@")),
    "canary": ("canary", {"references": 60}, [lambda ds: SequenceMemoryModel(ds, _canaries(ds), strength=0.5)],
               NONE_ABSENT),
    "canary-no-extrapolation": ("canary", {"references": 30, "extrapolate": False},
                                [lambda ds: SequenceMemoryModel(ds, _canaries(ds))], NONE_ABSENT),
    "extraction": ("extraction", {"prefix_items": 4, "next_items": 2, "recall_items": 10, "recall_shots": 2,
                                  "users": 8}, [lambda ds: RecitingModel(ds, _members(ds))], NONE_ABSENT),
    "extraction-recall": ("extraction", {"parts": ["recall"], "recall_items": 5, "recall_shots": 1},
                          [lambda ds: RecitingModel(ds, _members(ds))], NONE_ABSENT),
}


class _Undeclared(LineModel):
    """A LineModel that does not say whom it trained on: membership is assumed (``assumed_*``)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, _members(dataset))
        del self.info["trained_users"]


_CANARIES: dict[str, dict] = {}


def _canaries(ds: Dataset) -> dict:
    if ds.name not in _CANARIES:
        _CANARIES[ds.name] = canary_manifest(ds, repetitions=(1, 4), per_repetition=3, length=6, audit_canaries=40,
                                             seed=1)
    return _CANARIES[ds.name]


@pytest.mark.parametrize("case", list(CASES))
def test_declared_names_are_the_names_the_probe_emits(case: str, tiny_dataset: Dataset) -> None:
    probe_name, options, recommenders, absent_ok = CASES[case]
    cls = PROBES.get(probe_name)
    config = validate_config(cls.Config, options, f"probes.{probe_name}")
    emitted: set[str] = set()
    for make in recommenders:
        rec = make(tiny_dataset)
        result = cls(config).run(rec, probe_context(tiny_dataset, name=rec.name))
        assert result.status == "pass", f"{rec.name}: {result.reason}"
        emitted |= set(result.metrics)
    declared = cls.emitted_metrics(config)
    assert_declared_as_emitted(declared, emitted, {n for n in declared.names if absent_ok(n)})


def test_every_builtin_probe_declares_its_names() -> None:
    """No built-in probe leaves the load-time gate check off (None); each declares names for its defaults."""
    for name in PROBES.names():
        if PROBES.origin(name) != "recaudit" or name.startswith("test-"):  # test plug-ins: runner_testkit
            continue
        cls = PROBES.get(name)
        declared = cls.emitted_metrics(validate_config(cls.Config, {}, name))
        assert declared is not None and len(declared) > 0, f"probe {name!r} declares no emitted names"
