"""A request that got no answer (``Generation.failed``) is never read as the model's answer:
the counterfactual-fairness, extraction and target-exposure measurements leave its user out
(an empty list would read as maximal unfairness, as nothing extracted, as a target not pushed),
and the runner reports the failed share beside every probe that generated."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from audit.executors import Job, RunContext, run_job
from audit.interface import Generation, RecRequest, Recommender
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.extraction import ExtractionConfig, ExtractionProbe
from audit.probes.fairness import CounterfactualFairnessProbe, FairnessConfig
from audit.probes.hallucination import HallucinationConfig, HallucinationProbe
from audit.suite import ProbeSpec
from tests.audit.probes.fairness_testkit import make_gendered_dataset


class ProfileBlind(Recommender):
    """Recommends the user's own history, newest first, whatever the prompt's profile says;
    requests for users in ``failing`` (with ``female_only``, only those whose prompt says
    gender F) get no answer (like an endpoint time-out), or, with ``as_empty``, the old
    behaviour: an empty answer."""

    capabilities = frozenset({"generate"})

    def __init__(self, failing: set[str], as_empty: bool = False, female_only: bool = True) -> None:
        super().__init__()
        self.failing, self.as_empty, self.female_only = failing, as_empty, female_only

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        out = []
        for r in reqs:
            if r.user in self.failing and (r.profile.get("gender") == "F" or not self.female_only):
                out.append(Generation(prompt="p", raw="[request failed] timeout", items=(),
                                      failed=None if self.as_empty else "read timeout"))
            else:
                out.append(Generation(prompt="p", raw="", items=tuple(reversed(r.history))[:k]))
        return out


def fairness(rec: Recommender) -> tuple[dict, ProbeContext]:
    ds = make_gendered_dataset(40)
    ctx = ProbeContext(dataset=ds, users=ds.evaluable_users(), seed=0, recorder=OutputRecorder("r", "fairness"))
    cfg = FairnessConfig(attributes=[["gender"]], k=5, placebo=False, permutations=50, bootstrap=100)
    result = CounterfactualFairnessProbe(cfg).run(rec, ctx)
    return result.to_json(), ctx


def test_a_failed_counterfactual_request_leaves_its_user_out_instead_of_reading_as_unfair() -> None:
    failing = {"1", "2", "3"}
    fixed, ctx = fairness(ProfileBlind(failing))
    assert fixed["metrics"]["snsr_jaccard_gender"]["value"] == 0.0
    assert fixed["details"]["users_left_out_failed_requests"] == 3
    assert ctx.failed_requests == 3 and ctx.requests == 3 * 40  # neutral + F + M per user
    # read as empty answers (the old behaviour) the same outages look like a profile-sensitive model
    old, _ = fairness(ProfileBlind(failing, as_empty=True))
    assert old["metrics"]["snsr_jaccard_gender"]["value"] > 0.0


class Extractor(Recommender):
    """Continues every history with the user's true next training items (perfect extraction);
    requests for users in ``failing`` get no answer."""

    capabilities = frozenset({"generate"})

    def __init__(self, ds, failing: set[str]) -> None:
        super().__init__()
        self.ds, self.failing = ds, failing

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        titles = self.ds.item_titles
        out = []
        for r in reqs:
            if r.user in self.failing:
                out.append(Generation(prompt="p", raw="[request failed]", items=(), failed="HTTP 500"))
                continue
            train = self.ds.sequences[r.user].train
            nxt = train[len(r.history):len(r.history) + k]
            out.append(Generation(prompt="p", raw="", items=tuple(titles[i] for i in nxt)))
        return out


def test_failed_extraction_requests_do_not_count_as_nothing_extracted() -> None:
    ds = make_gendered_dataset(40)
    users = ds.evaluable_users()
    failing = set(users[::2])
    ctx = ProbeContext(dataset=ds, users=users, seed=0, recorder=OutputRecorder("r", "extraction"))
    cfg = ExtractionConfig(prefix_items=3, next_items=2, users=40, mode="generate", parts=["history"])
    result = ExtractionProbe(cfg).run(Extractor(ds, failing), ctx).to_json()
    exact = result["metrics"]["extraction_exact_heldout"]
    assert exact["value"] == 1.0  # every answered user is extracted exactly
    assert exact["n"] == result["details"]["history"]["users"]["heldout"] < 40 * 0.6
    assert ctx.failed_requests > 0


def test_the_runner_reports_the_failed_share_beside_the_probes_metrics(tmp_path: Path) -> None:
    ds = make_gendered_dataset(40)
    users = ds.evaluable_users()
    rec = ProfileBlind(failing=set(users[:10]), female_only=False)
    probe = ProbeSpec("hallucination", "hallucination", HallucinationProbe,
                      HallucinationConfig(k=5))
    ctx = RunContext(dataset=ds, users=users, seed=0, cache_dir=tmp_path, entries={}, base_dir=tmp_path)
    outcome = run_job(rec, Job("r", probe, "key"), ctx)
    share = outcome.result.metrics["failed_requests"]
    assert np.isclose(share.value, 10 / 40) and share.n == 40
    assert share.spec is not None and share.spec.direction == "lower"
    assert outcome.result.details["failed_requests"] == {"failed": 10, "requests": 40}
    assert sum(1 for o in outcome.outputs if o.get("failed")) == 10
    # missing answers count against the model where that cannot flatter it: the slots over k
    assert outcome.result.metrics["compliance_rate"].value <= 30 / 40
