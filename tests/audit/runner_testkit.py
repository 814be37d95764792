"""Plain-Python plug-ins of known behaviour and small suite files for the runner, CLI and report tests.

Nothing here is a mock: the probes are real :class:`Probe` subclasses, the adapters real
:class:`Recommender` subclasses, registered in the real registries under ``test-`` names,
and the data set is written to CSV files and loaded by the real CSV loader.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import yaml

from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.errors import EndpointError
from audit.interface import Adapter, RecRequest, Recommender
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.registry import ADAPTERS, PROBES
from audit.results import ProbeResult
from audit.stats import mean_metric
from audit.variants import BuildContext

# -- recommenders ---------------------------------------------------------------------------------


class EchoHistory(Adapter):
    """Recommends the user's own history, newest first (so the test item is never in it: hit rate 0)."""

    capabilities = frozenset({"generate"})

    class Config(StrictConfig):
        reverse: bool = True

    builds: ClassVar[int] = 0
    alive: ClassVar[int] = 0  # built and not yet closed
    most_alive: ClassVar[int] = 0

    def __init__(self, reverse: bool = True) -> None:
        super().__init__()
        self.reverse = reverse

    @classmethod
    def build(cls, config: "EchoHistory.Config", ctx: BuildContext, training_variants: Sequence[Any]) -> "EchoHistory":
        EchoHistory.builds += 1
        EchoHistory.alive += 1
        EchoHistory.most_alive = max(EchoHistory.most_alive, EchoHistory.alive)
        rec = cls(config.reverse)
        rec.info["trained_on"] = ctx.dataset.fingerprint
        return rec

    def close(self) -> None:
        EchoHistory.alive -= 1
        super().close()

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [list(reversed(r.history))[:k] if self.reverse else list(r.history)[:k] for r in reqs]


class Unreachable(Adapter):
    """An adapter whose build fails like an endpoint that is down."""

    capabilities = frozenset({"generate"})

    class Config(StrictConfig):
        base_url: str = "http://127.0.0.1:9/v1"

    @classmethod
    def build(cls, config: "Unreachable.Config", ctx: BuildContext, training_variants: Sequence[Any]) -> "Unreachable":
        raise EndpointError(f"cannot reach {config.base_url} after 3 attempts")


# -- probes -----------------------------------------------------------------------------------------


class HitConfig(ProbeConfig):
    k: int = 5


class HitProbe(Probe):
    """Hit rate of the held-out item in the top-k generated list; counts its runs."""

    name = "test-hit"
    description = "test probe: hit rate of the held-out item in the generated top-k"
    requires = frozenset({"generate"})
    Config = HitConfig
    headline = "hit"
    calls: ClassVar[int] = 0
    #: raise KeyboardInterrupt when ``calls`` reaches this number (None = never)
    interrupt_at: ClassVar[int | None] = None

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        HitProbe.calls += 1
        if HitProbe.interrupt_at is not None and HitProbe.calls >= HitProbe.interrupt_at:
            raise KeyboardInterrupt
        users = ctx.probe_users(self.config)
        reqs = [ctx.request(u) for u in users]
        gens = ctx.generate(rec, reqs, self.config.k, "neutral")
        titles = ctx.dataset.item_titles
        hits = [float(titles[ctx.dataset.sequences[u].test] in g.items) for u, g in zip(users, gens)]
        lengths = [float(len(g.items)) for g in gens]
        return ProbeResult(status="pass", metrics={"list_length": mean_metric(lengths, seed=ctx.seed),
                                                   "hit": mean_metric(hits, seed=ctx.seed)},
                           details={"users": len(users), "per_user_hit": hits})


class BrokenProbe(Probe):
    name = "test-broken"
    description = "test probe: raises inside run"
    requires = frozenset({"generate"})

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        raise ValueError("planted failure inside the probe")


class NeedsScoreProbe(Probe):
    name = "test-needs-score"
    description = "test probe: requires the score capability"
    requires = frozenset({"generate", "score"})

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        scores = rec.score([ctx.request(u) for u in ctx.users], [["x"]] * len(ctx.users))
        return ProbeResult(status="pass", metrics={"mean_score": mean_metric([float(np.mean(s)) for s in scores])})


def register() -> None:
    """Register the test plug-ins (idempotent)."""
    ADAPTERS.register("test-echo", EchoHistory, "test adapter: recommends the user's history")
    ADAPTERS.register("test-unreachable", Unreachable, "test adapter: build fails with EndpointError")
    PROBES.register("test-hit", HitProbe, HitProbe.description)
    PROBES.register("test-broken", BrokenProbe, BrokenProbe.description)
    PROBES.register("test-needs-score", NeedsScoreProbe, NeedsScoreProbe.description)


def reset_counters() -> None:
    HitProbe.calls = 0
    HitProbe.interrupt_at = None
    EchoHistory.builds = EchoHistory.alive = EchoHistory.most_alive = 0


# -- files -------------------------------------------------------------------------------------------

#: a python-adapter module: ``oracle`` ranks candidates as given (the held-out item comes first in the
#: utility probe), ``reverse`` ranks them backwards (held-out item last), ``crash`` raises.
RECS_MODULE = textwrap.dedent('''
    def oracle(requests, k):
        return [list(r.candidates)[:k] if r.candidates else list(r.history)[:k] for r in requests]

    def reverse(requests, k):
        return [list(reversed(r.candidates))[:k] if r.candidates else list(r.history)[:k] for r in requests]

    def crash(requests, k):
        raise RuntimeError("planted crash inside the user's recommender")
''')
RECS_MODULE_NAME = "recaudit_testrecs"


def write_csv_dataset(dataset: Dataset, directory: Path) -> dict[str, Any]:
    """Write ``dataset`` as CSV files; return the suite ``dataset:`` spec that loads them."""
    directory.mkdir(parents=True, exist_ok=True)
    dataset.interactions.to_csv(directory / "interactions.csv", index=False)
    dataset.items.to_csv(directory / "items.csv", index=False)
    assert dataset.users is not None
    dataset.users.to_csv(directory / "users.csv", index=False)
    return {"name": "csv", "interactions": f"{directory.name}/interactions.csv",
            "items": f"{directory.name}/items.csv", "users_file": f"{directory.name}/users.csv"}


def write_suite(directory: Path, suite: dict[str, Any], *, name: str = "suite.yaml",
                dataset: Dataset | None = None) -> Path:
    """Write a suite file (and, with ``dataset``, its CSV data and the python-adapter module)."""
    directory.mkdir(parents=True, exist_ok=True)
    suite = dict(suite)
    if dataset is not None:
        suite["dataset"] = {**write_csv_dataset(dataset, directory / "data"), **suite.get("dataset", {})}
    (directory / f"{RECS_MODULE_NAME}.py").write_text(RECS_MODULE)
    path = directory / name
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def utility_suite(name: str = "clitest", gates: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """The real utility probe on two python-adapter recommenders of known quality:
    ``oracle`` (HR@5 = 1) and ``reverse`` (HR@5 = 0), 10 negatives, 12 audited users."""
    return {
        "name": name,
        "dataset": {"users": 12, "seed": 0},
        "recommenders": {
            "oracle": {"adapter": "python", "generate": f"{RECS_MODULE_NAME}:oracle"},
            "reverse": {"adapter": "python", "generate": f"{RECS_MODULE_NAME}:reverse"},
        },
        "probes": {"utility": {"k": [5], "negatives": 10}},
        "gates": gates or [],
        **extra,
    }
