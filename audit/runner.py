"""The suite runner: suite -> jobs (recommender x probe) -> cached results -> gates -> report.

Order of work:

1. gates from the suite and ``--fail-on`` are checked against the suite's names;
2. the data set is loaded and the audited users sampled (``dataset.users``, seeded
   by ``dataset.seed``; ``limit_users`` caps it);
3. each job gets a key (see :func:`audit.cache.job_key`); a job whose key has a
   finished ``pass``/``fail`` record in the result cache or in ``<out>/jobs/`` is not
   run again (so an interrupted run resumes). ``no_cache`` recomputes everything
   and overwrites the cache; ``cache: false`` in the suite neither reads nor writes
   the shared cache (the run directory still resumes). ``skip`` and ``error``
   results are never reused: they are retried on the next run;
4. recommenders with work left are built once, in this process (training caches
   itself on disk), one at a time: an in-process executor runs a recommender's jobs
   and the recommender is closed before the next is built (so a suite of LLM
   fine-tunes holds one model at a time); a build failure gives ``error`` results
   for that recommender's jobs and the others go on; probes whose capabilities are
   missing give ``skip``;
5. the executor runs the remaining jobs (an executor whose workers build their own
   recommenders, ``in_process = False``, gets them all at once); each outcome is written to
   ``<out>/jobs/<recommender>__<probe>.json`` (+ ``.outputs.jsonl``) and to the
   cache as soon as it is finished, atomically;
6. gates are evaluated and the report directory written (:mod:`audit.report`).

A ``KeyboardInterrupt`` propagates after the finished jobs are on disk; the report
is then not (re)written.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from audit.build import build_recommender, make_variants, parse_variants
from audit.cache import (ResultCache, atomic_write_json, atomic_write_jsonl, atomic_write_text, code_version,
                         job_key, load_job_files, recommender_identity, to_jsonable)
from audit.data.dataset import Dataset, natural_key
from audit.data.loaders import load_dataset_from_spec
from audit.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_RUNTIME, ConfigError, RecauditError
from audit.executors import EXECUTORS, Job, JobOutcome, RunContext, error_outcome, skip_reason
from audit.gates import GateOutcome, GateSpec, evaluate_gates, parse_fail_on
from audit.interface import Recommender
from audit.pairs import pair_entries
from audit.junit import render_junit
from audit.paths import models_dir, recaudit_home
from audit.report import SCHEMA_VERSION, now_iso, render_summary_markdown, write_report_dir
from audit.results import ProbeResult
from audit.variants import Variant
from audit.suite import Suite, load_suite, validate_dataset_spec

log = logging.getLogger(__name__)
REUSABLE = ("pass", "fail")


@dataclass
class RunOutcome:
    """What a run produced: its report (as written), job outcomes in suite order and gates."""

    suite: Suite
    out: Path
    report: dict[str, Any]
    jobs: list[JobOutcome]
    gates: list[GateOutcome]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def errors(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.result.status == "error"]

    @property
    def exit_code(self) -> int:
        """1 when a gate failed; else 3 when a job ended in ``error``; else 0."""
        if not self.gates_passed:
            return EXIT_GATE_FAILED
        return EXIT_RUNTIME if self.errors else EXIT_OK


def default_out(suite: Suite) -> Path:
    return Path("reports") / suite.name


def sample_users(suite: Suite, dataset: Dataset, limit_users: int | None) -> list[str]:
    """The audited users: ``dataset.users`` of the suite (None = all), capped by ``limit_users``."""
    n = suite.users
    if limit_users is not None:
        if limit_users < 1:
            raise ConfigError(f"--limit-users must be at least 1, got {limit_users}")
        n = limit_users if n is None else min(n, limit_users)
    users = dataset.sample_users(n, suite.users_seed)
    if not users:
        raise RecauditError(f"data set {dataset.name!r} has no user with a test item to audit")
    return users


def audited_by_recommender(suite: Suite, dataset: Dataset, users: Sequence[str]) -> dict[str, frozenset[str]]:
    """recommender -> the union of the users its probes report on (:meth:`Probe.audited_users`)."""
    out: dict[str, frozenset[str]] = {}
    for rec in suite.recommenders:
        picked: set[str] = set()
        for probe in suite.probes:
            if probe.config.recommenders is None or rec in probe.config.recommenders:
                picked.update(probe.cls.audited_users(probe.config, dataset, users, suite.seed))
        out[rec] = frozenset(picked)
    return out


def user_fitting_variants(entry: dict[str, Any]) -> list[Variant]:
    """The variants of a recommender entry that fit something on users (:attr:`Variant.fits_on_users`)."""
    return [v for v in make_variants(entry.get("variant"), "variant") if v.fits_on_users]


def preflight(suite: Suite, ctx: RunContext) -> None:
    """Every user-fitting variant's :meth:`~audit.variants.Variant.preflight` in its recommender's build
    context: a ConfigError (exit 2) names the recommender before any job runs."""
    for rec, entry in suite.recommenders.items():
        for variant in user_fitting_variants(entry):
            try:
                variant.preflight(ctx.build_context(rec, progress=False))
            except ConfigError as exc:
                raise ConfigError(f"recommenders.{rec}: {exc}") from None


def plan_jobs(suite: Suite, dataset: Dataset, users: Sequence[str],
              audited: Mapping[str, frozenset[str]] | None = None) -> list[Job]:
    """All jobs in suite order (recommenders outer, probes inner) with their cache keys. A
    recommender with a user-fitting variant is also keyed on ``audited[rec]``: its build (the users
    it fits on) changes when another of its probes reports on other users."""
    version = code_version()
    dirs = [Path(suite.base_dir).resolve(), Path.cwd().resolve()]  # where the python adapter looks
    audited = audited if audited is not None else audited_by_recommender(suite, dataset, users)
    identity: dict[str, dict[str, Any]] = {}
    for rec, entry in suite.recommenders.items():
        identity[rec] = dict(recommender_identity(entry, dirs))
        if user_fitting_variants(entry):
            identity[rec]["fit_excludes"] = hashlib.sha256(
                "\n".join(sorted(audited.get(rec, ()), key=natural_key)).encode()).hexdigest()
    return [Job(recommender=rec, probe=probe,
                key=job_key(dataset_fingerprint=dataset.fingerprint, recommender=rec, entry=entry,
                            probe=probe.alias, probe_name=probe.name, probe_config=probe.config_json(),
                            seed=suite.seed, users=users, version=version, identity=identity[rec]))
            for rec, entry in suite.recommenders.items() for probe in suite.probes
            if probe.config.recommenders is None or rec in probe.config.recommenders]


def variant_label(entry: dict[str, Any]) -> str | None:
    """``'constrained-decoding'``, ``'dp+grounding'`` ... or None for a plain adapter."""
    names = [name for name, _ in parse_variants(entry.get("variant"), "variant")]
    return "+".join(names) if names else None


class _Progress:
    """Writes each finished job to the run directory and the cache."""

    def __init__(self, jobs_dir: Path, cache: ResultCache | None) -> None:
        self.jobs_dir = jobs_dir
        self.cache = cache
        self.outcomes: dict[tuple[str, str], JobOutcome] = {}
        self.pending = 0  # jobs to run (not reused); for the progress log
        self.reused: list[str] = []  # "rec x probe (source)" of every reused job
        self.finished = 0

    def paths(self, job: Job) -> tuple[Path, Path]:
        return self.jobs_dir / f"{job.file_stem}.json", self.jobs_dir / f"{job.file_stem}.outputs.jsonl"

    def resume(self, job: Job) -> JobOutcome | None:
        found = load_job_files(*self.paths(job), key=job.key)
        source = "run directory"
        if found is None and self.cache is not None:
            found, source = self.cache.load(job.key), "cache"
        if found is None or found[0].get("result", {}).get("status") not in REUSABLE:
            return None
        outcome = JobOutcome.from_record(*found, cached=True)
        log.info("%s x %s: reused from the %s", job.recommender, job.probe.alias, source)
        self.reused.append(f"{job.recommender} x {job.probe.alias} ({source})")
        if source == "cache":
            self._write_run_dir(job, outcome)
        return outcome

    def _write_run_dir(self, job: Job, outcome: JobOutcome) -> None:
        record_path, outputs_path = self.paths(job)
        atomic_write_jsonl(outputs_path, outcome.outputs)
        atomic_write_json(record_path, outcome.record())

    def done(self, job: Job, outcome: JobOutcome) -> None:
        self.outcomes[(job.recommender, job.probe.alias)] = outcome
        self.finished += 1
        log.info("[%d/%d] %s x %s: %s in %.1f s", self.finished, self.pending, job.recommender, job.probe.alias,
                 outcome.result.status, outcome.elapsed_s)
        self._write_run_dir(job, outcome)
        if self.cache is not None and outcome.result.status in REUSABLE:
            self.cache.store(job.key, outcome.record(), outcome.outputs)


def run_suite(suite: Suite, *, out: Path | None = None, dataset: Dataset | None = None,
              no_cache: bool = False, limit_users: int | None = None,
              fail_on: Iterable[str | GateSpec] = (), junit: Path | None = None,
              progress: bool = False, home: Path | None = None) -> RunOutcome:
    """Run every job of ``suite`` and write the report into ``out`` (default ``reports/<name>``).

    ``dataset`` replaces loading the suite's data set spec (tests, notebooks). ``home``
    replaces ``$RECAUDIT_HOME`` (the result cache is ``home/results``, models ``home/models``).
    Returns the :class:`RunOutcome`; its ``exit_code`` is what the CLI exits with.
    """
    extra = [g if isinstance(g, GateSpec) else parse_fail_on(g) for g in fail_on]
    suite.check_gates(extra, where="--fail-on")
    gates = list(suite.gates) + extra
    out = Path(out) if out is not None else default_out(suite)
    home = recaudit_home(home)
    executor = EXECUTORS.get(suite.executor_type)(suite.executor_config)

    if dataset is None:
        dataset = load_suite_dataset(suite, home)
    users = sample_users(suite, dataset, limit_users)
    audited = audited_by_recommender(suite, dataset, users)
    ctx = RunContext(dataset=dataset, users=users, seed=suite.seed, cache_dir=models_dir(home),
                     entries=suite.recommenders, base_dir=suite.base_dir, progress=progress, audited=audited)
    preflight(suite, ctx)
    jobs = plan_jobs(suite, dataset, users, audited)
    shared_cache = ResultCache(home / "results") if suite.cache else None
    state = _Progress(out / "jobs", shared_cache)

    pending: list[Job] = []
    for job in jobs:
        reused = None if no_cache else state.resume(job)
        if reused is not None:
            state.outcomes[(job.recommender, job.probe.alias)] = reused
        else:
            pending.append(job)
    state.pending = len(pending)
    if state.reused:
        log.warning("reused %d of %d job(s) whose inputs are unchanged (data, users, seed, recommender entry "
                    "and code/endpoint, probe config, recaudit code): %s; --no-cache recomputes them",
                    len(state.reused), len(jobs), ", ".join(state.reused))
    log.info("%s: %d jobs, %d reused, %d to run", suite.name, len(jobs), len(jobs) - len(pending), len(pending))

    infos: dict[str, dict[str, Any]] = {}
    by_name = {(j.recommender, j.probe.alias): j for j in pending}

    def on_done(o: JobOutcome) -> None:
        state.done(by_name[(o.recommender, o.probe)], o)

    groups = [[j for j in pending if j.recommender == name] for name in dict.fromkeys(j.recommender for j in pending)]
    if executor.in_process:
        # one recommender alive at a time: build it, run its jobs, close it (an LLM suite with ten
        # fine-tunes would otherwise hold ten model copies in memory at once)
        for mine in groups:
            with _built(mine, ctx, state, infos) as (built, runnable):
                executor.run(runnable, ctx, built, on_done)
    else:  # the workers build their own: here each is built (and closed) only to triage its jobs
        runnable = []
        for mine in groups:
            with _built(mine, ctx, state, infos) as (_, triaged):
                runnable += triaged
        executor.run(runnable, ctx, {}, on_done)

    outcomes = [state.outcomes[(j.recommender, j.probe.alias)] for j in jobs]
    results = {(o.recommender, o.probe): o.result for o in outcomes}
    pairs = pair_entries([{"recommender": o.recommender, "probe": o.probe, **o.result.to_json()} for o in outcomes],
                         suite.pairs, seed=suite.seed)
    gate_outcomes = evaluate_gates(gates, results, list(suite.recommenders), pairs)
    report = build_report(suite, dataset, users, outcomes, gate_outcomes, infos, pairs)
    files = write_report_dir(out, report, (r for o in outcomes for r in o.outputs),
                             junit_xml=render_junit(report), summary_md=render_summary_markdown(report))
    if junit is not None:
        atomic_write_text(Path(junit), render_junit(report))
        files["junit"] = Path(junit)
    return RunOutcome(suite=suite, out=out, report=report, jobs=outcomes, gates=gate_outcomes, files=files)


@contextmanager
def _built(mine: Sequence[Job], ctx: RunContext, state: _Progress, infos: dict[str, dict[str, Any]],
           ) -> Iterator[tuple[dict[str, Recommender], list[Job]]]:
    """Build the recommender of ``mine`` (one recommender's pending jobs); record a build error or
    a skip as those jobs' outcomes; yield ({name: recommender} or {}, the jobs to run); on exit
    keep its ``info`` for the report and close it."""
    name = mine[0].recommender
    try:
        log.info("building recommender %r", name)
        rec = build_recommender(name, ctx.entries[name], ctx.build_context(name))
    except Exception as exc:  # noqa: BLE001 - e.g. EndpointError: the other recommenders go on
        for job in mine:
            state.done(job, error_outcome(job, exc, context=f"building recommender {name!r} failed: "))
        yield {}, []
        return
    runnable: list[Job] = []
    for job in mine:
        reason = skip_reason(job.probe, rec)
        if reason is None:
            runnable.append(job)
        else:
            state.done(job, JobOutcome(job.recommender, job.probe.alias, job.probe.name, job.key,
                                       ProbeResult.skipped(reason), recommender_info=to_jsonable(rec.info)))
    try:
        yield {name: rec}, runnable
    finally:
        infos[name] = to_jsonable(rec.info)
        try:
            rec.close()
        except Exception:  # noqa: BLE001 - closing must not hide the run's outcome
            log.warning("closing recommender %r failed", name, exc_info=True)


def load_suite_dataset(suite: Suite, home: Path | None = None) -> Dataset:
    """Load the data set the suite's ``dataset:`` spec names (CSV paths relative to the suite file)."""
    spec = suite.dataset_spec
    if spec is None:
        spec = suite.dataset_spec = validate_dataset_spec(suite.dataset)
    return load_dataset_from_spec(spec, suite.base_dir, home=home)


def pick_headline(metrics: Sequence[str], preferred: str | None) -> str | None:
    """The metric summaries show first: ``preferred`` when present, else the first metric
    that starts with ``preferred`` (a prefix such as ``snsr_jaccard_``), else the first one."""
    if not metrics:
        return None
    if isinstance(preferred, str):
        if preferred in metrics:
            return preferred
        for name in metrics:
            if name.startswith(preferred):
                return name
    return next(iter(metrics))


def _headline(outcome: JobOutcome, suite: Suite) -> str | None:
    return pick_headline(list(outcome.result.metrics), getattr(suite.probe(outcome.probe).cls, "headline", None))


def build_report(suite: Suite, dataset: Dataset, users: Sequence[str], outcomes: Sequence[JobOutcome],
                 gates: Sequence[GateOutcome], built: dict[str, dict[str, Any]],
                 pairs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The ``report.json`` mapping (see :data:`audit.report.REPORT_SCHEMA`); ``built``: the
    ``info`` of each recommender built in this run (the others' comes from their cached outcomes);
    ``pairs``: the paired differences (:func:`audit.pairs.pair_entries`)."""
    info: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o.recommender_info and o.recommender not in info:
            info[o.recommender] = o.recommender_info
    info.update(built)
    results = []
    for o in outcomes:
        results.append({"recommender": o.recommender, "probe": o.probe, "probe_name": o.probe_name,
                        **o.result.to_json(), "headline": _headline(o, suite), "cached": o.cached,
                        "elapsed_s": round(max(o.elapsed_s, 0.0), 6), "key": o.key})
    gates_json = [g.to_json() for g in gates]
    gates_passed = all(g.passed for g in gates)
    errors = any(o.result.status == "error" for o in outcomes)
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite.name,
        "description": suite.description,
        "created": now_iso(),
        "seed": suite.seed,
        "code_version": code_version(),
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint,
                    "n_users": int(dataset.interactions["user_id"].nunique()),
                    "n_items": int(len(dataset.items)), "n_interactions": int(len(dataset.interactions)),
                    "tied_next_share": round(dataset.tied_next_share, 6), "source": str(dataset.source), "sampled_users": len(users),
                    "order": dataset.meta.get("reading", {}).get("order", "timestamp"),
                    **({"duplicates": dataset.meta["duplicates"]} if "duplicates" in dataset.meta else {}),
                    "users_seed": suite.users_seed, "spec": to_jsonable(suite.dataset)},
        "recommenders": [{"name": name, "variant": variant_label(entry), "config": to_jsonable(entry),
                          "info": info.get(name, {})} for name, entry in suite.recommenders.items()],
        "probes": [{"name": p.alias, "probe": p.name, "config": p.config_json(),
                    "description": str(getattr(p.cls, "description", ""))} for p in suite.probes],
        "results": results,
        "pairs": list(pairs),
        "gates": gates_json,
        "gates_passed": gates_passed,
        "exit_code": EXIT_GATE_FAILED if not gates_passed else (EXIT_RUNTIME if errors else EXIT_OK),
    }


def run_suite_file(path: str | Path, *, out: Path | None = None, dataset: Dataset | None = None,
                   **options: Any) -> RunOutcome:
    """Load the suite file at ``path`` and run it (see :func:`run_suite` for ``options``)."""
    suite = load_suite(path, validate_dataset=dataset is None)
    return run_suite(suite, out=out, dataset=dataset, **options)
