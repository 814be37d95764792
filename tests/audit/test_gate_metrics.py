"""A gate naming a metric its probe cannot emit ends at load: exit 2, one line, "did you mean" and a
short selection of the probe's names, before any job runs (the probe's declared
``emitted_metrics``); every gate of the example suites passes that check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runner_testkit as kit
from audit.cli import main
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.gates import GateSpec
from audit.suite import load_suite, suite_from_mapping

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _gate(probe: str, metric: str, **extra: Any) -> dict[str, Any]:
    return {"probe": probe, "metric": metric, "op": "<=", "threshold": 0.1, **extra}


def _run(tmp_path: Path, dataset: Dataset, capsys: pytest.CaptureFixture[str], **extra: Any) -> tuple[int, str]:
    path = kit.write_suite(tmp_path / "s", kit.utility_suite(**extra), dataset=dataset)
    code = main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"])
    return code, capsys.readouterr().err


FAIRNESS = {"utility": {"k": [5], "negatives": 10}, "fairness": {"attributes": [["gender"], ["gender", "age"]]}}


@pytest.mark.parametrize("extra, suggestion", [
    ({"gates": [_gate("utility", "hr@1O")]}, "Did you mean 'hr@5'?"),
    ({"probes": {"utility": {"k": [10], "negatives": 20}}, "gates": [_gate("utility", "hr@1O")]},
     "Did you mean 'hr@10'?"),
    ({"probes": FAIRNESS, "gates": [_gate("fairness", "snsr_gender", recommender="oracle")]},
     "Did you mean 'snsr_jaccard_gender'"),
    ({"probes": {"fair_age": {"probe": "fairness", "attributes": ["age"]}},
      "gates": [_gate("fair_age", "sim_jacard_age=25-34")]}, "Did you mean 'sim_jaccard_age=<age value>'"),
    ({"compare": [{"a": "reverse", "b": "oracle"}],
      "gates": [_gate("utility", "ndcg@50", pair=["reverse", "oracle"], on="ci_low")]}, "Did you mean 'ndcg@5'"),
], ids=["hr@1O", "hr@1O-k10", "snsr_gender", "family", "pair-gate"])
def test_a_metric_the_probe_cannot_emit_exits_2_at_load_with_did_you_mean(
        tmp_path: Path, tiny_dataset: Dataset, recaudit_home: Path, capsys: pytest.CaptureFixture[str],
        extra: dict[str, Any], suggestion: str) -> None:
    code, err = _run(tmp_path, tiny_dataset, capsys, **extra)
    assert code == 2
    assert err.count("recaudit: error:") == 1 and len(err.strip().splitlines()) == 1, err
    metric = extra["gates"][0]["metric"]
    assert f"does not emit '{metric}' with its options." in err and suggestion in err
    assert not (tmp_path / "r").exists(), "no job ran, no report was written"


def test_the_names_listed_are_a_short_selection_of_the_probes_own(tmp_path: Path, tiny_dataset: Dataset,
                                                                  recaudit_home: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _run(tmp_path, tiny_dataset, capsys, probes=FAIRNESS, gates=[_gate("fairness", "snsr_gender")])
    listed = err.split("Other names it emits: ")[1].split(" (")[0].split(", ")
    assert 1 <= len(listed) <= 6 and all(n.endswith("gender") or "gender" in n for n in listed), listed
    assert "in all; docs/metrics.md" in err


def test_names_the_probe_emits_load_whatever_their_family(tiny_dataset: Dataset, tmp_path: Path) -> None:
    """Exact names, data-dependent families, the runner's failed_requests, --fail-on gates alike."""
    probes = {**FAIRNESS, "canary": {}, "membership": {"attacks": ["loss"]}, "poisoning": {"k": [10]}}
    ok = [_gate("utility", "popularity_mrr"), _gate("fairness", "hr_gender=F&age=25-34"),
          _gate("fairness", "pvalue_holm_snsr_serp_gender"), _gate("fairness", "failed_requests"),
          _gate("canary", "exposure_rep16"), _gate("membership", "assumed_tpr@0.1%fpr_loss"),
          _gate("poisoning", "target_hr@10_gender=F"), _gate("poisoning", "target_hr@10=1682")]
    suite = suite_from_mapping({**kit.utility_suite(), "probes": probes, "gates": ok}, validate_dataset=False)
    with pytest.raises(ConfigError, match=r"--fail-on\[0\].*does not emit 'mia_auroc_zlib'.*'mia_auroc_loss'"):
        suite.check_gates([GateSpec(**_gate("membership", "mia_auroc_zlib"))], where="--fail-on")


def test_a_probe_that_declares_no_names_keeps_the_report_time_message(tmp_path: Path, tiny_dataset: Dataset,
                                                                       recaudit_home: Path) -> None:
    """A plug-in probe without emitted_metrics (None) is not checked at load: its gate fails at the
    end as before, naming what was reported."""
    kit.register()
    spec = kit.utility_suite(probes={"test-hit": {"k": 3}}, gates=[_gate("test-hit", "hr@3x")])
    path = kit.write_suite(tmp_path / "s", spec, dataset=tiny_dataset)
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "'hr@3x' not reported" in (tmp_path / "r" / "summary.md").read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_gate_of_the_example_suites_names_a_metric_its_probe_emits(path: Path) -> None:
    suite = load_suite(path, validate_dataset=False)  # the load-time check raises on any other name
    for gate in suite.gates:
        probe = suite.probe(gate.probe)
        declared = probe.cls.emitted_metrics(probe.config)
        assert declared is not None and gate.metric in declared, f"{path.name}: {gate.describe()}"


def test_the_suite_reference_example_loads_gates_included(tmp_path: Path) -> None:
    """The example at the top of audit/suite.py (docs/suite-reference.md) is a valid suite."""
    import audit.suite

    path = tmp_path / "quick.yaml"
    path.write_text(audit.suite.__doc__.split("```yaml\n")[1].split("```")[0])
    data = audit.suite.read_yaml(path)
    data.pop("include")
    suite = suite_from_mapping(data, validate_dataset=False)
    assert [g.metric for g in suite.gates] == ["ndcg@10", "hr@10"]
