"""The probe contract: metadata as class attributes, one ``run`` method, no training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from audit.config import StrictConfig
from audit.interface import Generation, RecRequest, Recommender, history_id
from audit.results import MetricNames, MetricSpec, ProbeResult

if TYPE_CHECKING:
    from audit.data.dataset import Dataset


class ProbeConfig(StrictConfig):
    """Options every probe accepts. ``users``: at most this many of the run's sampled
    users (None = all of them); ``seed``: the probe's own sampling seed offset;
    ``recommenders``: run this probe on these recommenders only (None = all of them)."""

    users: int | None = None
    seed: int = 0
    recommenders: list[str] | None = None


@dataclass
class OutputRecorder:
    """Collects one record per model call for ``outputs.jsonl``.

    A call made for a request records the request's ``history_id``
    (:attr:`~audit.interface.RecRequest.history_id`) and, on the first record with that id only,
    the ``history`` itself (titles, oldest first): a user's history is stored once however many
    calls (conditions, probes) send it, and the report writer keeps one copy per file."""

    recommender: str
    probe: str
    records: list[dict[str, Any]] = field(default_factory=list)
    _histories: set[str] = field(default_factory=set, repr=False)

    def record(self, *, user: str | None, condition: str, prompt: str, raw: str,
               parsed: Sequence[str], history: Sequence[str] | None = None, **extra: Any) -> None:
        rec = {"recommender": self.recommender, "probe": self.probe, "user": user,
               "condition": condition, "prompt": prompt, "raw": raw, "parsed": list(parsed)}
        if history is not None:
            hid = history_id(history)
            rec["history_id"] = hid
            if hid not in self._histories:
                self._histories.add(hid)
                rec["history"] = list(history)
        rec.update(extra)
        self.records.append(rec)


def sample_probe_users(config: ProbeConfig, dataset: Dataset, users: Sequence[str], seed: int) -> list[str]:
    """The run's ``users`` cut to ``config.users`` by a seeded sample (seed: the run's + the probe's)."""
    return dataset.sample_users(config.users, seed + config.seed, among=users)


@dataclass
class ProbeContext:
    """What a probe may use besides the recommender: data, the users to audit, a seed,
    and the recorder of raw outputs."""

    dataset: Dataset
    users: list[str]
    seed: int
    recorder: OutputRecorder
    progress: bool = False
    #: generate requests sent through :meth:`generate` and how many of them failed
    requests: int = 0
    failed_requests: int = 0

    def probe_users(self, config: ProbeConfig) -> list[str]:
        """The run's users, cut to ``config.users`` by a seeded sample."""
        return sample_probe_users(config, self.dataset, self.users, self.seed)

    def titles(self, item_ids: Sequence[str]) -> tuple[str, ...]:
        t = self.dataset.item_titles
        return tuple(t[i] for i in item_ids)

    def request(self, user: str, *, profile: dict[str, str] | None = None,
                candidates: Sequence[str] = (), target: str = "test") -> RecRequest:
        """The request that predicts the user's ``test`` item (history = train + valid) or,
        with ``target='valid'``, the validation item (history = train)."""
        seq = self.dataset.sequences[user]
        hist = seq.test_history if target == "test" else seq.train
        return RecRequest(history=self.titles(hist), profile=profile or {},
                          candidates=tuple(candidates), user=user)

    def generate(self, rec: Recommender, reqs: Sequence[RecRequest], k: int,
                 conditions: Sequence[str] | str, **extra: Any) -> list[Generation]:
        """Call ``rec.generate_detailed`` and record every call's prompt, raw text and list.

        A generation whose ``failed`` is set (the endpoint gave no answer) is counted in
        :attr:`failed_requests` and recorded with its cause; the runner reports the failed share
        beside the probe's metrics. Probes treat a failed request one of two ways, and never as
        evidence for the model: where missing output can only count against the model (a miss in
        HR, missing slots and non-compliance in hallucination) it is an empty answer; where an
        empty answer would count *for* the model or compare against another list (extraction,
        list membership attack, target exposure, counterfactual fairness) the user is left out."""
        return self.recorded(rec, reqs, rec.generate_detailed(reqs, k), conditions, **extra)

    def recorded(self, rec: Recommender, reqs: Sequence[RecRequest], gens: list[Generation],
                 conditions: Sequence[str] | str, **extra: Any) -> list[Generation]:
        """``gens`` (one per request, from any generating call, e.g. ``answer_generate``) checked,
        recorded and counted as :meth:`generate` does."""
        if len(gens) != len(reqs):
            raise RuntimeError(f"{rec.name}: generate returned {len(gens)} lists for {len(reqs)} requests")
        conds = [conditions] * len(reqs) if isinstance(conditions, str) else list(conditions)
        for req, gen, cond in zip(reqs, gens, conds):
            more = dict(extra, failed=gen.failed) if gen.failed is not None else extra
            self.recorder.record(user=req.user, condition=cond, prompt=gen.prompt, raw=gen.raw,
                                 parsed=gen.items, history=req.history, **more)
        self.requests += len(gens)
        self.failed_requests += sum(g.failed is not None for g in gens)
        return gens


class Probe:
    """Base class. Subclasses set ``name``, ``requires``, ``Config``, ``description``
    and implement :meth:`run`."""

    name: ClassVar[str] = "probe"
    description: ClassVar[str] = ""
    #: capabilities of which the recommender needs all ...
    requires: ClassVar[frozenset[str]] = frozenset({"generate"})
    #: the declared meaning of every metric (family) this probe emits, keyed by family name
    #: (``hr@K``: one entry for every cut-off; the probe's module doc says how emitted names are
    #: formed); docs/metrics.md is generated from these
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {}
    Config: ClassVar[type[ProbeConfig]] = ProbeConfig

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames | None:
        """The metric names this probe can emit with ``config`` (validated), declared before it runs:
        a gate naming any other name is a configuration error at load. Names that depend on the
        recommender are the union over what any recommender could make it emit; names with a part
        known only from the data or the model are :class:`~audit.results.NameFamily` entries. The
        runner's own ``failed_requests`` is not listed here. None (the default, e.g. a plug-in
        probe that declares nothing): not known before running, so gates on it are checked only
        when the report is read."""
        return None

    @classmethod
    def audited_users(cls, config: ProbeConfig, dataset: Dataset, users: Sequence[str], seed: int) -> list[str]:
        """The users whose results this probe reports, known before it runs (the runner gives a
        variant that fits something on users, e.g. the fair prompt, only users outside the union of
        these over the recommender's probes). Default: :meth:`ProbeContext.probe_users`'s sample. A
        probe that picks its users otherwise (members and non-members) overrides it; every run user
        is the safe answer."""
        return sample_probe_users(config, dataset, users, seed)

    def missing_capabilities(self, rec: Recommender) -> list[str]:
        return sorted(self.requires - set(rec.capabilities))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        raise NotImplementedError(f"{type(self).__name__} must implement run(rec, ctx)")
