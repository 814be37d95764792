"""The canary probe: exposure by repetition and epsilon lower bounds from audit canaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.config import validate_config
from audit.probes.canary import CanaryConfig, CanaryExposureProbe
from tests.audit.probes.memorisation_testkit import (AnswerMemoryModel, LineModel, SequenceMemoryModel, canary_manifest,
                                                     probe_context)


def run_probe(rec, dataset, **options):
    probe = CanaryExposureProbe(validate_config(CanaryConfig, options, "canary"))
    ctx = probe_context(dataset, name=rec.name)
    return probe.run(rec, ctx), ctx


@pytest.fixture(scope="module")
def manifest(tiny_dataset):
    return canary_manifest(tiny_dataset, repetitions=(1, 4, 16), per_repetition=6, length=8,
                           audit_canaries=200, seed=3)


def test_exposure_rises_with_the_repetition_count_of_a_memorising_model(tiny_dataset, manifest):
    result, ctx = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=0.1), tiny_dataset,
                            references=400)
    assert result.status == "pass"
    e1, e4, e16 = (result.metrics[f"exposure_rep{r}"] for r in (1, 4, 16))
    assert e1.value < e4.value < e16.value
    assert e16.value == pytest.approx(math.log2(400))  # every 16-copy canary beats every reference
    assert e16.n == 6 and e16.unit == "canaries"
    assert result.metrics["exposure_extrapolated_rep16"].value > math.log2(400)
    assert result.details["max_exposure_bits"] == pytest.approx(math.log2(400))
    # one raw record per scored sequence: 18 exposure + 200 audit canaries + 400 references
    assert len(ctx.recorder.records) == 618


def test_a_memorising_model_gets_a_positive_epsilon_lower_bound(tiny_dataset, manifest):
    result, _ = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=2.0), tiny_dataset,
                          references=100)
    assert result.metrics["epsilon_lb_one_run"].value > 0.5
    assert result.metrics["epsilon_lb_clopper_pearson"].value > 0.5
    assert result.metrics["epsilon_lb_one_run"].ci is None
    assert result.metrics["canary_auroc"].ci[0] > 0.9
    assert result.details["epsilon"]["selection"] == "split"


def test_a_model_that_memorises_nothing_shows_no_exposure_and_no_epsilon(tiny_dataset, manifest):
    result, _ = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=0.0), tiny_dataset,
                          references=400)
    for r in (1, 4, 16):
        lo, hi = result.metrics[f"exposure_rep{r}"].ci
        # a random canary's expected exposure is E[-log2 U] = 1/ln 2 = 1.44 bits
        assert lo <= 1 / math.log(2) <= hi or hi < 3
    assert result.metrics["epsilon_lb_one_run"].value == 0.0
    assert result.metrics["epsilon_lb_clopper_pearson"].value == 0.0
    lo, hi = result.metrics["canary_auroc"].ci
    assert lo <= 0.5 <= hi


def test_a_model_trained_without_canaries_is_skipped_with_the_fix(tiny_dataset):
    result, _ = run_probe(LineModel(tiny_dataset, tiny_dataset.user_ids()[:20]), tiny_dataset)
    assert result.status == "skip"
    assert "'canaries' variant" in result.reason


def test_saturated_exposure_is_a_lower_bound_and_the_margin_keeps_resolving(tiny_dataset, manifest):
    """Issue 14: when every canary outranks every reference, rank exposure is flat at log2 |R|
    for more repetitions; it is labelled a lower bound and the standardised margin still grows."""
    result, _ = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=2.0), tiny_dataset,
                          references=100)
    e4, e16 = result.metrics["exposure_rep4"], result.metrics["exposure_rep16"]
    assert e4.value == pytest.approx(e16.value) == pytest.approx(math.log2(100))  # saturated: flat
    assert result.metrics["exposure_saturated_rep16"].value == 1.0
    assert result.details["exposure_summary"]["rep16"].startswith(">= 6.6 bits, saturated")
    assert result.metrics["exposure_margin_rep4"].value < result.metrics["exposure_margin_rep16"].value
    # the extrapolation is either rejected by its fit check or capped at 2 log2 |R|
    if "exposure_extrapolated_rep16" in result.metrics:
        assert result.metrics["exposure_extrapolated_rep16"].value <= 2 * math.log2(100) + 1e-9
    assert "fit_check" in result.details
    assert result.undeclared() == []


def test_epsilon_bound_uses_the_accounts_delta_and_clopper_pearson_is_labelled_heuristic(tiny_dataset, manifest):
    """Issue 14: a delta = 0 bound cannot be set against a Gaussian mechanism's epsilon; the
    default delta is the DP account's; the Clopper-Pearson figure is context, not a bound."""
    rec = SequenceMemoryModel(tiny_dataset, manifest, strength=2.0)
    rec.info["privacy"] = {"epsilon": 8.0, "delta": 1e-4, "unit": "user"}
    result, _ = run_probe(rec, tiny_dataset, references=100)
    assert result.details["epsilon_delta"] == {"delta": 1e-4, "source": "the DP account"}
    cp = result.metrics["epsilon_lb_clopper_pearson"]
    assert cp.spec is not None and cp.spec.direction is None and "HEURISTIC" in cp.spec.meaning
    plain, _ = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=2.0), tiny_dataset, references=100)
    assert plain.details["epsilon_delta"] == {"delta": 0.0, "source": "no DP account: 0"}


def test_audit_canaries_inserted_several_times_bound_epsilon_per_record(tiny_dataset):
    """Issue 14: with audit_repetitions = 4 each audit canary is a group of 4 records; the probe
    reports the per-record bound (the group's / 4 at delta 0), not the group's."""
    options = dict(repetitions=(1,), per_repetition=2, length=8, audit_canaries=200, seed=3)
    grouped_manifest = canary_manifest(tiny_dataset, audit_repetitions=4, **options)
    single_manifest = canary_manifest(tiny_dataset, audit_repetitions=1, **options)
    grouped, _ = run_probe(SequenceMemoryModel(tiny_dataset, grouped_manifest, strength=2.0), tiny_dataset,
                           references=100)
    single, _ = run_probe(SequenceMemoryModel(tiny_dataset, single_manifest, strength=2.0), tiny_dataset,
                          references=100)
    one = single.metrics["epsilon_lb_one_run"].value
    assert one > 0.5
    assert grouped.metrics["epsilon_lb_one_run"].value == pytest.approx(one / 4)
    assert grouped.metrics["epsilon_lb_clopper_pearson"].value == pytest.approx(
        single.metrics["epsilon_lb_clopper_pearson"].value / 4)
    assert "group of 4 records" in grouped.details["epsilon_group"]
    assert "epsilon_group" not in single.details


def test_a_rejected_fit_reports_no_extrapolation_and_says_why():
    """Issue 14: no extrapolated exposure without a fit that passes its goodness-of-fit test."""
    rng = np.random.default_rng(0)
    humps = np.concatenate([rng.normal(3.0, 0.2, 500), rng.normal(6.0, 0.2, 500)])
    details: dict = {}
    assert CanaryExposureProbe._fit(humps, CanaryConfig(), details) is None
    assert details["fit_check"]["rejected"] and "rejected by a Kolmogorov-Smirnov" in details["extrapolation"]


def test_saturated_canaries_extrapolate_to_the_cap_not_beyond(tiny_dataset, manifest):
    result, _ = run_probe(SequenceMemoryModel(tiny_dataset, manifest, strength=2.0), tiny_dataset, references=100)
    assert not result.details["fit_check"]["rejected"]
    assert result.details["extrapolation_capped"] == 18
    assert result.metrics["exposure_extrapolated_rep16"].value == pytest.approx(2 * math.log2(100))


def test_a_fine_tune_scored_on_its_answers_shows_exposure_rising_with_copies(tiny_dataset, manifest):
    """Canaries of 8 items trained as 5-item prompts with 3-item answers: the answers path (auto
    for ``answer-logprobs``) ranks them by the answer's log-probs; a null fine-tune shows none."""
    result, _ = run_probe(AnswerMemoryModel(tiny_dataset, manifest=manifest, strength=0.1), tiny_dataset,
                          references=400)
    assert result.details["path"].startswith("answers (last 3 items")
    e1, e4, e16 = (result.metrics[f"exposure_rep{r}"].value for r in (1, 4, 16))
    assert e1 < e4 < e16 and e16 > 6.0  # measured: 2.55 / 4.60 / 7.26 bits of 8.64
    null, _ = run_probe(AnswerMemoryModel(tiny_dataset, manifest=manifest, strength=0.0), tiny_dataset,
                        references=400)
    # a null canary's rank among the references is uniform: 1.44 bits expected, 18 canaries
    assert np.mean([c["exposure"] for c in null.details["canaries"]]) < 2.5
    lo, hi = null.metrics["canary_auroc"].ci
    assert lo <= 0.5 <= hi
