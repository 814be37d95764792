"""Executors: where the probe jobs of a run execute.

- ``local`` (default): in this process, one job after another, with a progress bar.
- ``ray``: each job is a Ray task. ``address`` connects to a running cluster
  (``ray://head:10001`` or ``auto``); without it a local Ray instance with
  ``num_cpus`` CPUs is started for the run and shut down after it.

The runner builds (and so trains) every recommender in the driver first; a Ray
task then re-builds its recommender inside the worker, which loads the trained
model from the on-disk model cache instead of training again. On a multi-node
cluster ``$RECAUDIT_HOME`` must therefore be on a shared file system, and any
Python modules a suite names (``python`` adapter targets, probes registered
outside recaudit) must be importable on the workers.

Executors are named in :data:`audit.registry.EXECUTORS` (lazy targets into this module, so a
suite's ``executor:`` is checked without importing it first); Ray is imported only when a run
uses it.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from pydantic import Field

from audit.build import build_recommender, parse_variants
from audit.cache import to_jsonable
from audit.config import StrictConfig
from audit.interface import Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.registry import ADAPTERS, PROBES, VARIANTS, Registry
from audit.registry import EXECUTORS as EXECUTORS  # re-exported: the executors by name
from audit.results import Metric, MetricSpec, ProbeResult
from audit.suite import ProbeSpec
from audit.variants import BuildContext

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+@=-]")
TRACEBACK_FRAMES = 6


@dataclass(frozen=True)
class Job:
    """One recommender x one probe, identified by its cache ``key``."""

    recommender: str
    probe: ProbeSpec
    key: str

    @property
    def file_stem(self) -> str:
        """``<recommender>__<probe>`` with characters unsafe in file names replaced by ``_``."""
        return f"{_UNSAFE.sub('_', self.recommender)}__{_UNSAFE.sub('_', self.probe.alias)}"


@dataclass
class JobOutcome:
    """A finished job: its result, the raw outputs it recorded, its wall time in seconds,
    whether it came from the cache, and the report info of its recommender."""

    recommender: str
    probe: str
    probe_name: str
    key: str
    result: ProbeResult
    outputs: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    cached: bool = False
    recommender_info: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSON record stored in the cache and in ``<out>/jobs/`` (outputs go beside it)."""
        return {"key": self.key, "recommender": self.recommender, "probe": self.probe,
                "probe_name": self.probe_name, "result": self.result.to_json(),
                "elapsed_s": round(self.elapsed_s, 6), "recommender_info": self.recommender_info}

    @classmethod
    def from_record(cls, record: dict[str, Any], outputs: list[dict[str, Any]], *,
                    cached: bool) -> "JobOutcome":
        return cls(recommender=record["recommender"], probe=record["probe"],
                   probe_name=record["probe_name"], key=record["key"],
                   result=ProbeResult.from_json(record["result"]), outputs=outputs,
                   elapsed_s=float(record.get("elapsed_s", 0.0)), cached=cached,
                   recommender_info=record.get("recommender_info", {}))


@dataclass
class RunContext:
    """What every job of a run shares: data, audited users, seed, model cache, suite entries."""

    dataset: Dataset
    users: list[str]
    seed: int
    cache_dir: Path
    entries: dict[str, dict[str, Any]]
    base_dir: Path
    progress: bool = False
    #: recommender -> the users its probes report on (:meth:`audit.probes.base.Probe.audited_users`);
    #: a recommender not listed: every run user
    audited: dict[str, frozenset[str]] = field(default_factory=dict)

    def build_context(self, recommender: str | None = None, progress: bool | None = None) -> BuildContext:
        """The build context of ``recommender``: its ``audit_users`` are the users its own probes
        report on (every run user when not known), the users a user-fitting variant must leave out."""
        audit_users = self.audited.get(recommender, frozenset(self.users)) if recommender else frozenset(self.users)
        return BuildContext(dataset=self.dataset, cache_dir=self.cache_dir, seed=self.seed,
                            progress=self.progress if progress is None else progress, suite_dir=self.base_dir,
                            audit_users=audit_users)


OnDone = Callable[[JobOutcome], None]


# -- running one job ----------------------------------------------------------------------
def skip_reason(probe: ProbeSpec, rec: Recommender) -> str | None:
    """Why ``probe`` cannot run on ``rec`` (missing capabilities), or None."""
    missing = sorted(set(getattr(probe.cls, "requires", frozenset())) - set(rec.capabilities))
    if not missing:
        return None
    return (f"{rec.name!r} lacks capabilit{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
            f"needed by probe {probe.name!r} (it has: {', '.join(sorted(rec.capabilities)) or 'none'})")


def error_outcome(job: Job, exc: BaseException, *, context: str = "") -> JobOutcome:
    """An ``error`` outcome with the exception's message and a short traceback in details."""
    message = f"{type(exc).__name__}: {exc}"
    result = ProbeResult.errored(f"{context}{message}")
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-TRACEBACK_FRAMES)
    result.details["traceback"] = "".join(tb)[-4000:]
    return JobOutcome(job.recommender, job.probe.alias, job.probe.name, job.key, result)


FAILED_REQUESTS = MetricSpec(
    direction="lower", range=(0.0, 1.0), unit="requests", sampled=False,
    meaning="share of the probe's generate requests that got no answer (an endpoint's time-out or error); "
            "rates count them as empty answers or leave their users out, never as the model's answer")



def add_failed_requests(result: ProbeResult, probe_ctx: ProbeContext) -> None:
    """Report the probe's failed generate requests (count, share, a warning) beside its metrics."""
    n = probe_ctx.requests
    if n == 0 or result.status in ("skip", "error"):
        return
    failed = probe_ctx.failed_requests
    result.metrics["failed_requests"] = Metric(value=failed / n, n=n, ci=None, unit="requests",
                                               spec=FAILED_REQUESTS)
    result.details["failed_requests"] = {"failed": failed, "requests": n}
    if failed:
        result.details.setdefault("warnings", []).append(
            f"{failed} of {n} generate requests failed (no answer): see outputs.jsonl 'failed'")


def run_job(rec: Recommender, job: Job, ctx: RunContext) -> JobOutcome:
    """Run one probe on a built recommender; exceptions become an ``error`` outcome."""
    reason = skip_reason(job.probe, rec)
    if reason is not None:
        return JobOutcome(job.recommender, job.probe.alias, job.probe.name, job.key,
                          ProbeResult.skipped(reason), recommender_info=to_jsonable(rec.info))
    recorder = OutputRecorder(recommender=job.recommender, probe=job.probe.alias)
    probe_ctx = ProbeContext(dataset=ctx.dataset, users=list(ctx.users), seed=ctx.seed,
                             recorder=recorder, progress=False)
    start = time.perf_counter()
    try:
        result = job.probe.cls(job.probe.config).run(rec, probe_ctx)
        if not isinstance(result, ProbeResult):
            raise TypeError(f"probe {job.probe.name!r} returned {type(result).__name__}, not a ProbeResult")
    except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the run
        outcome = error_outcome(job, exc)
        outcome.outputs, outcome.recommender_info = to_jsonable(recorder.records), to_jsonable(rec.info)
        outcome.elapsed_s = time.perf_counter() - start
        return outcome
    add_failed_requests(result, probe_ctx)
    result.details = to_jsonable(result.details)
    return JobOutcome(job.recommender, job.probe.alias, job.probe.name, job.key, result,
                      outputs=to_jsonable(recorder.records), elapsed_s=time.perf_counter() - start,
                      recommender_info=to_jsonable(rec.info))


# -- executors ----------------------------------------------------------------------------
class Executor:
    """Base class: ``Config`` (its suite options) and :meth:`run`. ``in_process``: :meth:`run`
    uses the recommenders the runner built (it is then called once per recommender, which the
    runner closes afterwards); False when workers build their own (``recommenders`` is empty)."""

    name: ClassVar[str] = "executor"
    Config: ClassVar[type[StrictConfig]] = StrictConfig
    in_process: ClassVar[bool] = True

    def __init__(self, config: StrictConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def run(self, jobs: Sequence[Job], ctx: RunContext, recommenders: dict[str, Recommender],
            on_done: OnDone) -> None:
        """Run ``jobs`` (their recommenders are built in ``recommenders``) and call ``on_done``
        with each outcome as soon as it is finished."""
        raise NotImplementedError


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="job", leave=False, file=sys.stderr)


class LocalExecutor(Executor):
    """In-process, sequential."""

    name = "local"

    class Config(StrictConfig):
        pass

    def run(self, jobs: Sequence[Job], ctx: RunContext, recommenders: dict[str, Recommender],
            on_done: OnDone) -> None:
        with progress_bar(len(jobs), ctx.progress, "probes") as bar:
            for job in jobs:
                bar.set_postfix_str(f"{job.recommender} x {job.probe.alias}", refresh=False)
                on_done(run_job(recommenders[job.recommender], job, ctx))
                bar.update(1)


def registry_snapshot(jobs: Sequence[Job], entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The resolved adapter, variant and probe objects the jobs use, by registry kind and name
    (shipped to Ray workers, whose registries only hold the built-in entries)."""
    snap: dict[str, dict[str, Any]] = {"adapter": {}, "variant": {}, "probe": {}}
    for job in jobs:
        entry = entries[job.recommender]
        snap["adapter"][entry["adapter"]] = ADAPTERS.get(entry["adapter"])
        for name, _ in parse_variants(entry.get("variant"), f"recommenders.{job.recommender}"):
            snap["variant"][name] = VARIANTS.get(name)
        snap["probe"][job.probe.name] = job.probe.cls
    return snap


def install_snapshot(snapshot: dict[str, dict[str, Any]]) -> None:
    registries: dict[str, Registry[Any]] = {"adapter": ADAPTERS, "variant": VARIANTS, "probe": PROBES}
    for kind, objects in snapshot.items():
        for name, obj in objects.items():
            if name not in registries[kind]:
                registries[kind].register(name, obj)


def run_job_in_worker(job: Job, entry: dict[str, Any], snapshot: dict[str, dict[str, Any]],
                      ctx: RunContext) -> JobOutcome:
    """Body of a Ray task: re-build the recommender (from the model cache) and run the probe."""
    install_snapshot(snapshot)
    try:
        rec = build_recommender(job.recommender, entry, ctx.build_context(job.recommender, progress=False))
    except Exception as exc:  # noqa: BLE001
        return error_outcome(job, exc, context=f"building recommender {job.recommender!r} in a worker: ")
    try:
        return run_job(rec, job, ctx)
    finally:
        rec.close()


class RayExecutor(Executor):
    """Each job a Ray task, gathered as they finish."""

    name = "ray"
    in_process = False

    class Config(StrictConfig):
        #: a running cluster to join (``HOST:PORT`` or ``ray://HOST:PORT``); None = start a Ray instance in the run
        address: str | None = None
        #: CPUs of the instance the run starts (None = Ray's default: every CPU; ignored with ``address``)
        num_cpus: int | None = Field(default=None, ge=1)
        #: CPUs each job task reserves
        cpus_per_job: float = Field(default=1.0, gt=0)

    def run(self, jobs: Sequence[Job], ctx: RunContext, recommenders: dict[str, Recommender],
            on_done: OnDone) -> None:
        if not jobs:
            return
        # keep today's behaviour and silence Ray's FutureWarning about it (CPU-only jobs)
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        import ray

        config: Any = self.config
        started = False
        if not ray.is_initialized():
            if config.address:
                ray.init(address=config.address, logging_level="warning", log_to_driver=False)
            else:
                ray.init(num_cpus=config.num_cpus, include_dashboard=False, logging_level="warning",
                         log_to_driver=False)
            started = True
        try:
            task = ray.remote(num_cpus=config.cpus_per_job, max_retries=0)(run_job_in_worker)
            snapshot = registry_snapshot(jobs, ctx.entries)
            ctx_ref = ray.put(RunContext(ctx.dataset, ctx.users, ctx.seed, ctx.cache_dir, ctx.entries,
                                         ctx.base_dir, progress=False))
            pending = {task.remote(job, ctx.entries[job.recommender], snapshot, ctx_ref): job for job in jobs}
            try:
                with progress_bar(len(jobs), ctx.progress, "probes (ray)") as bar:
                    while pending:
                        done, _ = ray.wait(list(pending), num_returns=1)
                        for ref in done:
                            job = pending.pop(ref)
                            try:
                                outcome = ray.get(ref)
                            except Exception as exc:  # noqa: BLE001 - a worker died or failed to unpickle
                                outcome = error_outcome(job, exc, context="ray task failed: ")
                            on_done(outcome)
                            bar.update(1)
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()

