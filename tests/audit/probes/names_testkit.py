"""The check that a probe's declared metric names (:meth:`audit.probes.base.Probe.emitted_metrics`)
match what its runs emit: the gates' load-time check is only as good as this."""

from __future__ import annotations

from collections.abc import Iterable

from audit.results import MetricNames


def assert_declared_as_emitted(declared: MetricNames | None, emitted: Iterable[str],
                               absent_ok: Iterable[str] = ()) -> None:
    """Every emitted name is declared (a gate on it is never refused at load); every declared exact
    name but ``absent_ok`` (names whose absence the declaration documents) was emitted, and every
    declared family matched an emitted name (the declaration is not looser than the runs)."""
    assert declared is not None, "the probe declares no emitted metric names"
    emitted = set(emitted)
    undeclared = sorted(n for n in emitted if n not in declared)
    assert not undeclared, f"emitted but not declared: {undeclared}"
    never = sorted(set(declared.names) - emitted - set(absent_ok))
    assert not never, f"declared but never emitted: {never}"
    unmatched = [f.shown for f in declared.families if not any(f.matches(n) for n in emitted)]
    assert not unmatched, f"declared families no emitted name belongs to: {unmatched}"
