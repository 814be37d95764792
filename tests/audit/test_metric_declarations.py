"""Metric declarations: specs round-trip through report.json, emitted names resolve to their declarations,
and every probe declares what it emits (docs/metrics.md is generated from these: tests/audit/test_docs_reference.py)."""

from __future__ import annotations

from audit.results import Metric, MetricSpec


def test_spec_round_trips_through_report_json() -> None:
    spec = MetricSpec("lower", range=(0.0, None), chance=0.5, unit="AUROC", sampled=True, meaning="m")
    m = Metric(0.7, n=10, ci=(0.6, 0.8)).declare(spec).with_units(["a", "b"], [1.0, 0.0])
    back = Metric.from_json(m.to_json())
    assert back.spec == spec and back.per_unit == {"a": 1.0, "b": 0.0}


def test_extraction_leakage_and_privacy_names_resolve_to_declarations() -> None:
    from audit.probes.extraction import extraction_spec
    from audit.probes.leakage import leakage_spec
    from privacy.probe import PRIVACY_SPECS

    assert extraction_spec("extraction_exact_members").direction == "lower"
    assert extraction_spec("extraction_items_heldout").direction is None
    assert extraction_spec("recall_rate").direction == "lower"
    assert leakage_spec("auc_embed_gender").chance == 0.5 and leakage_spec("f1_list_age").direction == "lower"
    assert PRIVACY_SPECS["epsilon"].sampled is False and PRIVACY_SPECS["epsilon"].range == (0.0, None)


def test_every_builtin_probe_declares_the_metrics_it_emits() -> None:
    """Probe.metric_specs is the declaration gates, compare and docs/metrics.md read: no built-in
    probe leaves it empty, and every entry is a MetricSpec with a meaning."""
    from audit.registry import PROBES

    for name in PROBES.names():
        if PROBES.origin(name) != "recaudit" or name.startswith("test-"):  # test plug-ins: runner_testkit
            continue
        specs = PROBES.get(name).metric_specs
        assert specs, f"probe {name!r} declares no metric_specs"
        for family, spec in specs.items():
            assert isinstance(spec, MetricSpec) and spec.meaning, f"{name}.{family}: no declared meaning"


def test_name_families_match_their_names_only() -> None:
    """MetricNames (a probe's declared emitted names): exact names, and families whose parameters
    are integers or condition values (never across a condition's '=' / '&' separators)."""
    from audit.results import MetricNames, NameFamily

    reps = NameFamily(("exposure_rep", ""), ("repetitions",), integer=True)
    cond = NameFamily(("hr_gender=", "&age=", ""), ("gender value", "age value"))
    names = MetricNames(("hr_neutral", "hr_neutral", "mrr"), (reps, cond))
    assert names.names == ("hr_neutral", "mrr"), "each name once, in the declared order"
    assert "exposure_rep16" in names and "exposure_rep" not in names and "exposure_rep1x" not in names
    assert "hr_gender=F&age=25-34" in names and "hr_gender=F" not in names and "hr_gender=F&age=" not in names
    assert "hr_gender=F=G&age=1" not in names and 3 not in names
    assert names.shown() == ["hr_neutral", "mrr", "exposure_rep<repetitions>",
                             "hr_gender=<gender value>&age=<age value>"]
    assert names.closest("hr_gendr=F&age=25-34", 1) == ["hr_gender=<gender value>&age=<age value>"]
    assert names.closest("mrr_x", 1, cutoff=0.9) == []
