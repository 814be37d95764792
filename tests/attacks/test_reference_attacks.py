"""The attacks and defenses on the real reference model (tiny config, synthetic long-tail data;
one slow test on ML-100k): zero budgets change nothing, exposure does not fall as the budget
grows, detection moves exposure back toward clean, and bandwagon fakes promote the targets."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attacks.probe import PoisoningConfig, PoisoningProbe
from audit.build import build_recommender
from audit.data.dataset import Dataset
from audit.probes.base import OutputRecorder, ProbeContext
from audit.results import ProbeResult
from audit.variants import BuildContext

TARGETS = {"n": 3, "seed": 0, "min_interactions": 2}
TINY = {"adapter": "reference", "size": "tiny", "score_mode": "item"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private $RECAUDIT_HOME shared by this module's tests (the training cache)."""
    path = tmp_path_factory.mktemp("recaudit-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECAUDIT_HOME", str(path))
        yield path


def build(ds: Dataset, home: Path, *variants: Any, **options: Any):
    entry = {**TINY, **options, "variant": [{"finetune": {"epochs": 4, "pretrain_epochs": 4}}, *variants]}
    return build_recommender("rec", entry, BuildContext(dataset=ds, cache_dir=home / "models", progress=False))


def measure(rec, ds: Dataset, **cfg: Any) -> ProbeResult:
    ctx = ProbeContext(dataset=ds, users=ds.evaluable_users(), seed=0, recorder=OutputRecorder("rec", "poisoning"))
    options = {"targets": TARGETS, "k": [5], "utility_negatives": 20, **cfg}
    return PoisoningProbe(PoisoningConfig(**options)).run(rec, ctx)


def test_zero_budgets_leave_target_exposure_unchanged(longtail, home):
    clean = measure(build(longtail, home), longtail).metrics
    for variant in ({"fake-users": {"share": 0.0, "targets": TARGETS}},
                    {"backdoor": {"rate": 0.0, "targets": TARGETS}}):
        zero = measure(build(longtail, home, variant), longtail).metrics
        for name in ("target_hr@5", "target_percentile", "target_score", "hr@5"):
            assert zero[name].value == pytest.approx(clean[name].value, abs=1e-6), (variant, name)
        assert zero["budget"].value == 0.0


def _exposure(result: ProbeResult) -> tuple[float, float, float]:
    m = result.metrics["target_percentile"]
    return m.value, m.ci[0], m.ci[1]


@pytest.mark.parametrize("attack,grid", [("fake-users", [0.0, 0.1, 0.3]), ("backdoor", [0.0, 0.05, 0.2])])
def test_target_exposure_does_not_fall_as_the_budget_grows(longtail, home, attack, grid):
    """Fake users in the fine-tune corpus; the backdoored pre-trained model used as it is (its
    budget acts there; clean fine-tuning is the defense, measured separately)."""
    key = "share" if attack == "fake-users" else "rate"
    extra = {"finetune": False} if attack == "backdoor" else {}
    points = []
    for budget in grid:
        result = measure(build(longtail, home, {attack: {key: budget, "targets": TARGETS, **extra}}), longtail)
        assert result.metrics["budget"].value == budget
        points.append(_exposure(result))
    for (v0, lo0, _hi0), (v1, _lo1, hi1) in itertools.pairwise(points):
        assert v1 >= v0 or hi1 >= lo0, f"{attack}: exposure fell beyond noise along {grid}: {points}"
    assert points[-1][1] > points[0][2], f"{attack}: the largest budget did not raise exposure: {points}"


def test_detection_finds_fakes_and_moves_exposure_back_toward_clean(longtail, home):
    fakes = {"fake-users": {"share": 0.3, "targets": TARGETS, "kind": "bandwagon"}}
    clean = _exposure(measure(build(longtail, home), longtail))[0]
    attacked = _exposure(measure(build(longtail, home, fakes), longtail))[0]
    for method in ("popularity", "pca"):
        result = measure(build(longtail, home, fakes, {"detect-fakes": {"method": method, "flag_share": 0.3}}),
                         longtail)
        m = result.metrics
        assert m["detector_precision"].value > m["fake_base_rate"].value, method
        defended = m["target_percentile"].value
        assert abs(defended - clean) < abs(attacked - clean), (method, clean, attacked, defended)


def test_clean_finetuning_takes_back_most_of_a_pretraining_backdoor(longtail, home):
    backdoor = {"rate": 0.2, "targets": TARGETS}
    pretrained = _exposure(measure(build(longtail, home, {"backdoor": {**backdoor, "rate": 0.0, "finetune": False}}),
                                   longtail))[0]
    as_is = _exposure(measure(build(longtail, home, {"backdoor": {**backdoor, "finetune": False}}), longtail))[0]
    clean = _exposure(measure(build(longtail, home), longtail))[0]
    tuned = _exposure(measure(build(longtail, home, {"backdoor": backdoor}), longtail))[0]
    assert as_is > pretrained + 0.05
    assert abs(tuned - clean) < abs(as_is - pretrained), (pretrained, as_is, clean, tuned)


ML_TARGETS = {"n": 5, "popularity": "low", "seed": 0}


@pytest.mark.slow
def test_bandwagon_fakes_at_one_percent_raise_target_hr_on_ml100k(ml100k, ml100k_home, monkeypatch):
    """1% bandwagon fakes (4 among the 377 fine-tune users), each holding every target 10
    times and ending with one: target HR@10 among 99 sampled unseen items rises from the clean
    model's value, for the same targets and seed. (Classic one-occurrence profiles raise the
    targets' percentile but not into any top 10 at this budget -- see the issue note.) The public
    pretrain stage is the ML-100k privacy test's (tests/privacy), trained once per session."""
    def entry(*variants: Any) -> dict[str, Any]:
        return {"adapter": "reference", "size": "small", "bf16": False, "score_mode": "item",
                "variant": [{"finetune": {"pretrain_epochs": 3, "epochs": 4}}, *variants]}

    monkeypatch.setenv("RECAUDIT_HOME", str(ml100k_home))  # the training cache: a shared pretrain prefix
    ctx = BuildContext(dataset=ml100k, cache_dir=ml100k_home / "models", progress=False)
    fakes = {"fake-users": {"kind": "bandwagon", "share": 0.01, "target_repeats": 10, "targets": ML_TARGETS}}
    probe = PoisoningProbe(PoisoningConfig(targets=ML_TARGETS, k=[10], protocol="sampled", users=300,
                                           utility=False))
    results = {}
    for name, e in (("clean", entry()), ("attacked", entry(fakes))):
        rec = build_recommender(name, e, ctx)
        results[name] = probe.run(rec, ProbeContext(dataset=ml100k, users=ml100k.evaluable_users(), seed=0,
                                                    recorder=OutputRecorder(name, "poisoning"))).metrics
    clean, attacked = results["clean"], results["attacked"]
    for name in ("target_hr@10", "target_percentile"):  # shown with -s
        print(name, {k: (round(r[name].value, 4), r[name].ci) for k, r in results.items()})
    assert attacked["fake_users"].value == 4
    assert attacked["target_hr@10"].ci[0] > clean["target_hr@10"].value, (clean["target_hr@10"], attacked["target_hr@10"])
    assert attacked["target_percentile"].ci[0] > clean["target_percentile"].ci[1]
