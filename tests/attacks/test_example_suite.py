"""The poisoning example suite loads, and every recommender's variants and probe options validate."""

from __future__ import annotations

from pathlib import Path

from attacks.probe import PoisoningConfig
from audit.build import make_variants
from audit.suite import load_suite

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "poisoning.yaml"


def test_example_suite_validates_and_measures_the_attacked_targets():
    suite = load_suite(EXAMPLE, validate_dataset=False)
    probe_targets = {p.alias: p.config.targets for p in suite.probes}
    assert set(probe_targets) == {"poisoning", "poisoning_sampled"}
    assert all(isinstance(p.config, PoisoningConfig) for p in suite.probes)
    for name, entry in suite.recommenders.items():
        variants = make_variants(entry.get("variant"), name)
        for v in variants:
            spec = getattr(v.config, "targets", None)
            if spec is not None:
                assert all(spec == t for t in probe_targets.values()), name
    names = set(suite.recommenders)
    assert {"clean", "pretrained", "fake-1pct", "backdoor-as-is", "backdoor+clean-finetune",
            "item-text", "item-text+canonical", "fake-1pct-rep10+dp8"} <= names
