"""The privacy-utility table joins the probes' results per recommender."""

from __future__ import annotations

import json

from privacy.table import paired_entries, pairs_markdown, privacy_utility_table, to_markdown


def _m(v, ci=None, n=300):
    return {"value": v, "ci": ci, "n": n}


def _result(rec, probe, metrics, details=None, status="pass"):
    return {"recommender": rec, "probe": probe, "probe_name": probe, "status": status, "metrics": metrics,
            "details": details or {}, "reason": ""}


REPORT = {
    "recommenders": [{"name": "plain", "variant": {"finetune": {}}}, {"name": "dp1", "variant": {"dp": {"epsilon": 1}}},
                     {"name": "dp8", "variant": {"dp": {"epsilon": 8}}}],
    "results": [
        _result("plain", "utility", {"hr@10": _m(0.6, [0.55, 0.65]), "ndcg@10": _m(0.35, [0.3, 0.4])}),
        _result("dp1", "utility", {"hr@10": _m(0.45, [0.4, 0.5]), "ndcg@10": _m(0.25, [0.2, 0.3])}),
        _result("dp8", "utility", {"hr@10": _m(0.5, [0.45, 0.55])}),
        _result("plain", "privacy", {}, status="skip"),
        _result("dp1", "privacy", {"epsilon": _m(0.99, n=377), "delta": _m(1e-3, n=377)}, {"privacy_unit": "user"}),
        _result("dp8", "privacy", {"epsilon": _m(7.9, n=377), "delta": _m(1e-3, n=377)}, {"privacy_unit": "user"}),
        _result("plain", "membership", {"mia_auroc_loss": _m(0.7, [0.65, 0.75]), "mia_auroc_ref": _m(0.8, [0.75, 0.85])}),
        _result("plain", "membership", {"mia_auroc_loss": _m(0.5, [0.45, 0.55])}, {"control": True}),
        _result("dp1", "membership", {"mia_auroc_loss": _m(0.52, [0.47, 0.57])}),
        _result("dp1", "canary", {"exposure_rep1": _m(1.0, [0.5, 1.5], 5), "exposure_rep16": _m(2.0, [1, 3], 5),
                                  "epsilon_lb_one_run": _m(0.0), "epsilon_lb_clopper_pearson": _m(0.2)}),
    ],
}


def test_rows_join_the_probes_and_sort_as_an_epsilon_series():
    rows = privacy_utility_table(REPORT)
    assert [r.recommender for r in rows] == ["plain", "dp8", "dp1"]
    plain, dp8, dp1 = rows
    assert plain.epsilon is None and plain.hr["value"] == 0.6
    assert (plain.mia_attack, plain.mia_auroc["value"]) == ("ref", 0.8)  # strongest attack, not the control
    # issue 14: the heuristic Clopper-Pearson figure (0.2) is not set against epsilon; the one-run bound is
    assert dp1.epsilon == 0.99 and dp1.unit == "user" and dp1.epsilon_lb == 0.0
    assert dp1.exposure["16"]["value"] == 2.0 and dp8.ndcg is None and dp8.mia_auroc is None


def test_markdown_has_a_row_per_recommender_with_cis_and_dashes():
    text = to_markdown(privacy_utility_table(REPORT))
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert "exposure rep1 (bits)" in lines[0] and "exposure rep16 (bits)" in lines[0]
    assert "0.600 [0.550, 0.650]" in lines[2] and "| – |" in lines[2]
    assert "0.99" in lines[4] and "1e-03" in lines[4]


def test_each_epsilon_is_labelled_with_its_adjacency():
    """Issue 14: DP-SGD (add/remove) and federated (replace-one) epsilons share the table's
    column, so each row names the neighbouring relation its epsilon is for."""
    report = {
        "recommenders": [{"name": "dp8", "variant": {"dp": {"epsilon": 8}}},
                         {"name": "fed8", "variant": {"federated": {"dp": {"epsilon": 8}}}}],
        "results": [
            _result("dp8", "privacy", {"epsilon": _m(7.9, n=377)}, {"privacy_unit": "user", "adjacency": "add/remove"}),
            _result("fed8", "privacy", {"epsilon": _m(7.8, n=377)}, {"privacy_unit": "user", "adjacency": "replace-one"}),
        ],
    }
    units = {r.recommender: r.unit for r in privacy_utility_table(report)}
    assert units == {"dp8": "user, add/remove", "fed8": "user, replace-one"}
    text = to_markdown(privacy_utility_table(report))
    assert "user, add/remove" in text and "user, replace-one" in text


def test_a_saturated_exposure_is_shown_as_a_lower_bound_beside_the_margin_that_still_resolves():
    """Issue 14: when every canary outranks all references the exposure is log2(references) for
    1, 4 and 16 repetitions alike; the table says so ("≥ ...") and shows the margin column."""
    report = {
        "recommenders": [{"name": "plain", "variant": {"finetune": {}}}],
        "results": [_result("plain", "canary", {
            "exposure_rep1": _m(13.288, [13.288, 13.288], 5), "exposure_saturated_rep1": _m(1.0, [0.57, 1.0], 5),
            "exposure_margin_rep1": _m(6.12, [5.31, 6.95], 5),
            "exposure_rep16": _m(13.288, [13.288, 13.288], 5), "exposure_saturated_rep16": _m(1.0, [0.57, 1.0], 5),
            "exposure_margin_rep16": _m(14.57, [14.29, 14.83], 5),
            "exposure_rep4": _m(9.5, [8.0, 11.0], 5), "exposure_saturated_rep4": _m(0.0, [0.0, 0.43], 5)})],
    }
    text = to_markdown(privacy_utility_table(report))
    head, row = text.splitlines()[0], text.splitlines()[2]
    assert "margin rep1 (SD)" in head and "margin rep16 (SD)" in head
    assert "≥ 13.29 (5/5 saturated)" in row and "6.12 [5.31, 6.95]" in row and "14.57 [14.29, 14.83]" in row
    assert "9.50 [8.00, 11.00]" in row  # not saturated: a plain estimate


# -- paired differences (issue 27) ---------------------------------------------------------------------
def _pair(a, b, probe, metric, value=-0.1, ci=(-0.2, -0.05)):
    return {"a": a, "b": b, "origin": "variant", "probe": probe, "metric": metric, "method": "paired-bootstrap-mean",
            "value": value, "ci": list(ci), "n": 300, "unit": "users", "p_value": 0.01, "p_holm": 0.03,
            "p_bh": 0.02, "mde": 0.05, "better": None}


def test_the_paired_differences_listed_are_those_of_the_figures_the_table_shows():
    report = {**REPORT, "results": [*REPORT["results"],
                                    {**_result("dp1", "membership", {"mia_auroc_loss": _m(0.5)}, {"control": True}),
                                     "probe": "membership-null"}]}
    report["pairs"] = [
        _pair("plain", "dp1", "utility", "hr@10"), _pair("plain", "dp1", "utility", "mrr"),
        _pair("plain", "dp1", "membership", "mia_auroc_loss"),  # the attack shown for dp1
        _pair("plain", "dp1", "membership", "mia_auroc_ref"),  # dp1 has no ref attack in the table
        _pair("plain", "dp1", "membership-null", "mia_auroc_loss"),  # the null-audit control
        _pair("plain", "dp1", "canary", "exposure_rep16"), _pair("plain", "dp1", "canary", "epsilon_lb_one_run"),
    ]
    shown = [(e["probe"], e["metric"]) for e in paired_entries(report)]
    assert shown == [("utility", "hr@10"), ("membership", "mia_auroc_loss"), ("canary", "exposure_rep16")]
    text = pairs_markdown(report)
    assert "| dp1 vs plain | utility | hr@10 | -0.100 [-0.200, -0.050] n=300 | 0.010 (0.030, 0.020) |" in text
    assert pairs_markdown(REPORT) == ""


def test_a_real_runs_paired_differences_are_printed_under_the_table(tmp_path, tiny_dataset, recaudit_home, capsys):
    """The real runner on python-adapter recommenders of known behaviour (oracle HR@5 = 1, reverse 0),
    oracle -> reverse declared: the table's command prints the report's hr@5 / ndcg@5 differences."""
    from tests.audit import runner_testkit as kit

    from audit.runner import run_suite_file
    from privacy.table import main

    suite = kit.write_suite(tmp_path / "suite", kit.utility_suite(compare=[{"a": "oracle", "b": "reverse"}]),
                            dataset=tiny_dataset)
    run_suite_file(suite, out=tmp_path / "run", no_cache=True)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    main([str(tmp_path / "run"), "--k", "5"])
    out = capsys.readouterr().out
    table, _, paired = out.partition("Paired differences")
    assert "| oracle | undefended | 1.000 [" in table
    lines = {line.split(" | ")[2]: line for line in paired.splitlines() if line.startswith("| reverse vs oracle")}
    assert set(lines) == {"hr@5", "ndcg@5"}  # mrr and the popularity baseline are not figures of the table
    for e in report["pairs"]:
        if e["metric"] in lines:
            cell = f"{e['value']:+.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}] n={e['n']}"
            assert cell in lines[e["metric"]] and "worse than oracle" in lines[e["metric"]]
