"""compare: runs of different data or protocols refused (exit 2), one-sided metrics listed apart,
the paired test on per-user values for a deterministic recommender, declared directions, and a
short output (``--changed-only``, ``--all``, ``--format markdown``).

The end-to-end tests run real suites (the real utility probe on ``python``-adapter recommenders over
CSV files) and call ``recaudit compare`` in a subprocess for its exit code and output.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import runner_testkit as kit
from audit.compare import (beyond_uncertainty, compare_reports, declared_direction, judge, paired_difference,
                           protocol_differences)
from audit.data.dataset import Dataset
from audit.report import write_report_dir
from audit.runner import run_suite_file
from tests.conftest import make_tiny_dataset

REPO = Path(__file__).resolve().parents[2]

# -- real runs -------------------------------------------------------------------------------------

#: ``oracle`` ranks the held-out item (the utility probe's first candidate) first for every user;
#: ``planted`` is the same except for the users whose id is a multiple of 6 (6 of the 40), whose
#: list leaves the held-out item out: HR@5 1.000 -> 0.850, a change the Wilson intervals of the two
#: runs ([0.912, 1.000] and [0.709, 0.929]) overlap on, and the paired sign test (6 discordant users,
#: none the other way: McNemar p = 2 / 2**6 = 0.031) sees.
RECS = textwrap.dedent('''
    def oracle(requests, k):
        return [list(r.candidates)[:k] for r in requests]

    def planted(requests, k):
        return [list(r.candidates)[1:k + 1] if int(r.user) % 6 == 0 else list(r.candidates)[:k]
                for r in requests]

    def reverse(requests, k):
        return [list(reversed(r.candidates))[:k] for r in requests]
''')
MODULE = "recaudit_comparerecs"
PLANTED_USERS = 6  # of 40


def _suite(*, recommenders: dict[str, str], negatives: int = 10, users: int | None = None,
           seed: int = 0) -> dict[str, Any]:
    return {
        "name": "cmp", "seed": seed,
        "dataset": {"seed": 0, **({"users": users} if users is not None else {})},
        "recommenders": {name: {"adapter": "python", "generate": f"{MODULE}:{fn}"} for name, fn in recommenders.items()},
        "probes": {"utility": {"k": [5], "negatives": negatives}},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> dict[str, Path]:
    """Report directories of small real runs (40 users, the utility probe, HR@5 with 10 negatives):

    - ``base``: ``model`` = oracle; ``rerun``: the same suite run again from an empty cache;
    - ``planted``: ``model`` = planted (6 users lose their hit);
    - ``two_recs``: ``model`` = oracle and ``legacy`` = reverse (HR@5 0);
    - ``other_data``: the base suite on another data set (the tiny catalogue with another seed);
    - ``other_protocol``: the base data with 20 audited users, 15 negatives and run seed 1."""
    root = tmp_path_factory.mktemp("compare-runs")
    specs = {
        "base": (_suite(recommenders={"model": "oracle"}), tiny_dataset),
        "rerun": (_suite(recommenders={"model": "oracle"}), tiny_dataset),
        "planted": (_suite(recommenders={"model": "planted"}), tiny_dataset),
        "two_recs": (_suite(recommenders={"model": "oracle", "legacy": "reverse"}), tiny_dataset),
        "other_data": (_suite(recommenders={"model": "oracle"}), make_tiny_dataset(seed=1)),
        "other_protocol": (_suite(recommenders={"model": "oracle"}, negatives=15, users=20, seed=1), tiny_dataset),
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for label, (spec, data) in specs.items():
            mp.setenv("RECAUDIT_HOME", str(root / f"home-{label}"))  # no run reuses another's results
            path = kit.write_suite(root / label, spec, dataset=data)
            (path.parent / f"{MODULE}.py").write_text(RECS)
            out[label] = run_suite_file(path, out=root / label / "report").out
            statuses = {r["status"] for r in compare_reports(out[label], out[label]).report_a["results"]}
            assert statuses == {"pass"}, f"{label}: every job of a fixture run passes, got {statuses}"
    return out


def compare(*args: Any) -> subprocess.CompletedProcess[str]:
    """``recaudit compare ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "audit.cli", "compare", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def table(stdout: str) -> dict[str, list[str]]:
    """The text table's rows by metric name (each row split on runs of 2+ spaces)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("-----")), None)
    if start is None:
        return {}
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("test: "):
            break
        cells = [c for c in line.split("  ") if c.strip()]
        rows[cells[2].strip()] = [c.strip() for c in cells]
    return rows


def test_different_data_is_refused_with_exit_2_naming_the_fingerprints(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["other_data"], "--fail-on-regression")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("recaudit: error: ") and "cannot be compared: data set csv " in line
    assert "--allow-different-data" in line
    a, b = (compare_reports(runs[x], runs[x]).report_a["dataset"]["fingerprint"] for x in ("base", "other_data"))
    assert a != b and f"{a} vs csv {b}" in line


def test_different_users_negatives_and_seed_are_refused_naming_each(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["other_protocol"])
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "cannot be compared: audited users 40 vs 20; run seed 0 vs 1; probe 'utility': negatives 10 vs 15." in line
    assert "data set" not in line, "the data are the same file"


def test_allow_different_data_compares_with_a_note_and_intervals_only(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["other_data"], "--allow-different-data", "--all")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "note: compared although the runs differ (--allow-different-data): data set csv" in out
    assert "the users are not the same units, so no paired test (intervals only)" in out
    rows = table(out)
    assert rows["hr@5"][6] == "intervals", "user '1' of one data set is not user '1' of the other"
    assert not any(r[6].startswith("paired") for r in rows.values())
    assert "data A: csv" in out and "data B: csv" in out


def test_allow_different_protocol_compares_only_metrics_declared_alike(runs: dict[str, Path]) -> None:
    """With 15 negatives instead of 10, HR@5's declared chance level is 5/16, not 5/11: a different
    measurement, listed apart and never a regression, even with --fail-on-regression."""
    done = compare(runs["base"], runs["other_protocol"], "--allow-different-data", "--all", "--fail-on-regression")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "declared differently in A and B" in done.stdout and "model x utility.hr@5 (chance 0.4545 vs 0.3125)" in done.stdout
    assert "hr@5" not in table(done.stdout)


def test_metrics_in_one_run_only_are_listed_apart_and_never_regressions(runs: dict[str, Path]) -> None:
    """A has a recommender (``legacy``) that B dropped: its 7 metrics are 'only in A', not the
    7 'missing' regressions an exit 1 with --fail-on-regression would report."""
    done = compare(runs["two_recs"], runs["base"], "--fail-on-regression")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "only in A (not compared, never a regression): 7 metric(s): legacy x utility (all 7 metrics)" in done.stdout
    assert "only in B" not in done.stdout and "0 regression(s)" in done.stdout
    assert "no change beyond the uncertainty in 7 compared metric(s)" in done.stdout
    back = compare(runs["base"], runs["two_recs"], "--fail-on-regression")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "only in B (not compared, never a regression): 7 metric(s): legacy x utility (all 7 metrics)" in back.stdout


def test_a_planted_regression_is_found_by_the_paired_test(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["planted"], "--fail-on-regression")
    assert done.returncode == 1, done.stdout + done.stderr
    hr = table(done.stdout)["hr@5"]
    assert hr[3:5] == ["1.000 [0.912, 1.000]", "0.850 [0.709, 0.929]"], "the two Wilson intervals overlap"
    assert hr[5].startswith("-0.150 [") and hr[6] == "paired n=40 p=0.031" and hr[7] == "worse (REGRESSION)"
    assert "by the paired test on per-user values (n=40)" in done.stdout
    assert "regression(s): model x utility.hr@5" in done.stdout
    # the same two records without their per-user values: the interval rule calls it no change
    cmp = compare_reports(runs["base"], runs["planted"])
    d = next(x for x in cmp.deltas if x.metric == "hr@5")
    assert d.paired is not None and d.paired.n == 40 and d.paired.value == pytest.approx(-PLANTED_USERS / 40)
    strip = {k: v for k, v in d.a.items() if k != "per_unit"}, {k: v for k, v in d.b.items() if k != "per_unit"}
    assert judge(*strip, None) == (False, "intervals")


def test_an_identical_rerun_is_no_change_and_exits_0(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["rerun"], "--fail-on-regression")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same data and protocol in A and B" in done.stdout
    assert "no change beyond the uncertainty in 7 compared metric(s)" in done.stdout
    assert "0 regression(s)" in done.stdout
    # the default table: the job's headline metric only, unchanged
    assert list(table(done.stdout)) == ["hr@5"] and table(done.stdout)["hr@5"][6:] == ["paired n=40 p=1", "same"]


def test_changed_only_lists_only_changed_rows_and_the_default_is_short(runs: dict[str, Path]) -> None:
    changed = compare(runs["base"], runs["planted"], "--changed-only")
    assert changed.returncode == 0, changed.stderr
    rows = table(changed.stdout)
    assert set(rows) == {"hr@5", "ndcg@5", "mrr"}, "the popularity baseline rows did not change"
    assert all(r[7] == "worse (REGRESSION)" for r in rows.values())
    assert "3 metric(s) changed beyond the uncertainty (3 worse); 4 unchanged" in changed.stdout
    every = compare(runs["base"], runs["planted"], "--all")
    assert len(table(every.stdout)) == 7 and "same" in {r[7] for r in table(every.stdout).values()}
    nothing = compare(runs["base"], runs["rerun"], "--changed-only")
    assert nothing.returncode == 0 and table(nothing.stdout) == {}
    assert "no change beyond the uncertainty" in nothing.stdout
    assert len(compare(runs["base"], runs["planted"]).stdout.splitlines()) <= 15


def test_better_and_worse_follow_the_declared_direction(runs: dict[str, Path]) -> None:
    worse = compare(runs["base"], runs["planted"])
    better = compare(runs["planted"], runs["base"], "--fail-on-regression")
    assert worse.returncode == 0 and better.returncode == 0, better.stdout + better.stderr
    assert table(worse.stdout)["hr@5"][7] == "worse (REGRESSION)"
    assert table(better.stdout)["hr@5"][7] == "better" and "0 regression(s)" in better.stdout
    assert "significant" not in worse.stdout + better.stdout


def test_markdown_format(runs: dict[str, Path]) -> None:
    done = compare(runs["base"], runs["planted"], "--format", "markdown", "--fail-on-regression")
    assert done.returncode == 1
    assert done.stdout.startswith("## recaudit compare\n")
    assert "| model | utility | hr@5 | 1.000 [0.912, 1.000] | 0.850 [0.709, 0.929] |" in done.stdout
    assert "**3 regression(s): model x utility.hr@5" in done.stdout


def test_compare_refuses_a_directory_without_a_report(tmp_path: Path, runs: dict[str, Path]) -> None:
    done = compare(runs["base"], tmp_path / "missing")
    assert done.returncode == 2 and done.stderr.startswith("recaudit: error: no report at")


# -- rules on written reports ------------------------------------------------------------------------


def make_report(metrics: dict[str, dict[str, Any]], status: str = "pass", **dataset: Any) -> dict[str, Any]:
    return {
        "schema_version": 2, "suite": "cmp", "created": "2026-01-01T00:00:00+00:00", "seed": 0,
        "dataset": {"name": "tiny", "fingerprint": "f", "n_users": 40, "n_items": 30, "source": "s",
                    "sampled_users": 100, "users_seed": 0, **dataset},
        "recommenders": [{"name": "m", "variant": None, "config": {"adapter": "python"}}],
        "probes": [{"name": "p", "probe": "p", "config": {"users": None, "seed": 0, "recommenders": None}}],
        "results": [{"recommender": "m", "probe": "p", "status": status, "metrics": metrics,
                     "details": {}, "reason": "" if status == "pass" else "endpoint down"}],
        "gates": [],
    }


def write(tmp_path: Path, name: str, metrics: dict[str, dict[str, Any]], status: str = "pass") -> Path:
    out = tmp_path / name
    write_report_dir(out, make_report(metrics, status), [], junit_xml="<testsuites/>", summary_md="")
    return out


DIRECTIONS = {"ndcg@10": "higher", "mrr": "higher", "hallucination_rate": "lower", "something": None,
              "mia_auroc_loss": "lower", "hr@10": "higher"}


def m(value: float, lo: float | None = None, hi: float | None = None, n: int = 100,
      direction: str | None | bool = False, **extra: Any) -> dict[str, Any]:
    """A metric record; ``direction`` False = undeclared, else its declared better direction."""
    out = {"value": value, "ci": None if lo is None else [lo, hi], "n": n, **extra}
    if direction is not False:
        out["spec"] = {"direction": direction, "range": [0, 1], "chance": None, "unit": "share",
                       "sampled": lo is not None}
    return out


def d(name: str, value: float, lo: float | None = None, hi: float | None = None, **extra: Any) -> dict[str, Any]:
    """A metric declared with the direction of :data:`DIRECTIONS`."""
    return m(value, lo, hi, direction=DIRECTIONS[name], **extra)


def test_direction_comes_from_the_declaration_not_the_name() -> None:
    assert declared_direction(m(0.5, direction="lower")) == "lower"
    assert declared_direction(None, m(0.5, direction="higher")) == "higher"
    assert declared_direction(m(0.5)) is None, "an undeclared hr@10 is not guessed from its name"
    assert declared_direction(m(0.5, direction=None)) is None


@pytest.mark.parametrize("a, b, beyond", [
    (m(0.30, 0.25, 0.35), m(0.20, 0.15, 0.24), True),     # CIs apart
    (m(0.30, 0.25, 0.35), m(0.22, 0.15, 0.26), False),    # CIs overlap
    (m(8.0), m(8.0), False), (m(8.0), m(4.0), True),      # unsampled numbers: any change counts
    (m(0.30, 0.25, 0.35), m(0.40), True),                 # one CI: the other value outside it
    (m(0.30, 0.25, 0.35), m(0.33), False),
    ({"value": None, "ci": None, "n": 0}, m(0.3), None),
])
def test_interval_rule_without_per_user_values(a: dict, b: dict, beyond: bool | None) -> None:
    assert beyond_uncertainty(a, b) is beyond
    assert judge(a, b, None)[1] == ("values" if a.get("ci") is None and b.get("ci") is None else "intervals")


def test_regression_only_beyond_the_uncertainty_and_in_the_worse_direction(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"ndcg@10": d("ndcg@10", 0.30, 0.25, 0.35),
                              "hallucination_rate": d("hallucination_rate", 0.10, 0.08, 0.12),
                              "mrr": d("mrr", 0.30, 0.25, 0.35), "something": d("something", 1.0, 0.9, 1.1)})
    b = write(tmp_path, "b", {"ndcg@10": d("ndcg@10", 0.20, 0.15, 0.24),
                              "hallucination_rate": d("hallucination_rate", 0.05, 0.03, 0.07),
                              "mrr": d("mrr", 0.27, 0.22, 0.31), "something": d("something", 3.0, 2.9, 3.1)})
    cmp = compare_reports(a, b)
    by_metric = {x.metric: x for x in cmp.deltas}
    assert by_metric["ndcg@10"].delta == pytest.approx(-0.10) and by_metric["ndcg@10"].change == "worse"
    assert by_metric["hallucination_rate"].change == "better", "lower is better, declared"
    assert by_metric["mrr"].change == "same", "within overlapping CIs"
    assert by_metric["something"].change == "changed" and not by_metric["something"].regression
    assert [x.metric for x in cmp.regressions] == ["ndcg@10"]


def test_an_undirected_change_is_changed_and_exits_0(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"something": d("something", 1.0, 0.9, 1.1)})
    b = write(tmp_path, "b", {"something": d("something", 3.0, 2.9, 3.1)})
    done = compare(a, b, "--fail-on-regression")
    assert done.returncode == 0, done.stdout + done.stderr
    assert table(done.stdout)["something"][7] == "changed" and "0 regression(s)" in done.stdout
    assert "1 metric(s) changed beyond the uncertainty (1 changed)" in done.stdout


def test_a_job_lost_to_an_error_is_listed_apart_with_its_status(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"ndcg@10": d("ndcg@10", 0.30, 0.25, 0.35)})
    b = write(tmp_path, "b", {}, status="error")
    cmp = compare_reports(a, b)
    assert cmp.regressions == [] and cmp.only_a == [("m", "p", "ndcg@10")]
    assert any("status pass -> error (endpoint down)" in n for n in cmp.notes)


def test_fail_on_regression_sees_a_worse_mia_auroc(tmp_path: Path) -> None:
    """Only the membership-inference AUROC got worse (declared 'lower is better'): exit 1."""
    same = {"hr@10": d("hr@10", 0.60, 0.57, 0.63)}
    a = write(tmp_path, "a", {**same, "mia_auroc_loss": d("mia_auroc_loss", 0.52, 0.48, 0.56)})
    b = write(tmp_path, "b", {**same, "mia_auroc_loss": d("mia_auroc_loss", 0.81, 0.77, 0.85)})
    assert [x.metric for x in compare_reports(a, b).regressions] == ["mia_auroc_loss"]
    assert compare(a, b, "--fail-on-regression").returncode == 1
    assert compare(b, a, "--fail-on-regression").returncode == 0, "an improvement is no regression"


def test_undeclared_metrics_are_never_gated(tmp_path: Path) -> None:
    a = write(tmp_path, "a", {"hr@10": m(0.60, 0.57, 0.63)})
    b = write(tmp_path, "b", {"hr@10": m(0.20, 0.17, 0.23)})
    cmp = compare_reports(a, b)
    assert cmp.regressions == [] and cmp.deltas[0].change == "changed"
    assert any("without a declared meaning" in n and "p.hr@10" in n for n in cmp.notes)


def test_paired_test_finds_a_regression_that_overlapping_cis_hide() -> None:
    """200 users: B loses the hit of 16 users that A had and gains none. The means (0.50 vs 0.42)
    have overlapping 95% CIs, but the paired difference's CI excludes 0 (McNemar p < 1e-4)."""
    users = [f"u{i}" for i in range(200)]
    hits_a = {u: float(i % 2 == 0) for i, u in enumerate(users)}
    hits_b = dict(hits_a)
    for u in users[0:32:2]:
        hits_b[u] = 0.0
    ma = d("hr@10", 0.50, 0.43, 0.57, per_unit=hits_a)
    mb = d("hr@10", 0.42, 0.35, 0.49, per_unit=hits_b)
    assert judge(ma, mb, None) == (False, "intervals")
    paired = paired_difference(ma, mb)
    assert paired is not None and paired.n == 200 and paired.value == pytest.approx(-0.08)
    assert paired.ci[1] < 0 and paired.p_value < 1e-4
    assert judge(ma, mb, paired) == (True, "paired") and beyond_uncertainty(ma, mb) is True


def test_a_constant_shift_on_every_user_is_a_change_and_none_is_none() -> None:
    """A deterministic recommender whose per-user value moves by the same +0.01 for every user:
    zero-variance differences, a real change (CI [0.01, 0.01], p 0); the same values: no change."""
    base = {f"u{i}": 0.5 + 0.001 * i for i in range(50)}
    shifted = {u: v + 0.01 for u, v in base.items()}
    a, b = m(0.5245, 0.50, 0.55, per_unit=base), m(0.5345, 0.51, 0.56, per_unit=shifted)
    assert judge(a, b, None)[0] is False, "the two CIs overlap"
    assert beyond_uncertainty(a, b) is True
    assert beyond_uncertainty(a, dict(a)) is False


def test_protocol_differences_ignore_where_a_probe_runs() -> None:
    ra, rb = make_report({}), make_report({})
    rb["probes"][0]["config"]["recommenders"] = ["m"]
    assert protocol_differences(ra, rb) == []
    rb["probes"][0]["config"]["seed"] = 3
    assert protocol_differences(ra, rb) == ["probe 'p': seed 0 vs 3"]
