"""Third-party entries through entry points: a real installed distribution (a ``*.dist-info``
directory with ``entry_points.txt`` on the path, which is what pip writes) adds a probe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runner_testkit as kit
from audit.errors import ConfigError
from audit.registry import Registry

PLUGIN_PROBE = textwrap.dedent('''
    """A third-party probe: the share of users whose generated list is non-empty."""
    from audit.probes.base import Probe
    from audit.results import ProbeResult
    from audit.stats import mean_metric


    class NonEmptyProbe(Probe):
        name = "nonempty"
        description = "plugin probe: share of non-empty lists"

        def run(self, rec, ctx):
            users = ctx.probe_users(self.config)
            gens = ctx.generate(rec, [ctx.request(u) for u in users], 3, "neutral")
            shares = [float(bool(g.items)) for g in gens]
            return ProbeResult(status="pass", metrics={"nonempty": mean_metric(shares, seed=ctx.seed)})
''')


def install_plugin(root: Path, entries: str, module: str = PLUGIN_PROBE, dist: str = "recaudit_demo_plugin") -> Path:
    """Write a package and its dist-info (METADATA + entry_points.txt) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "demo_plugin.py").write_text(module)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entries)
    return root


def test_a_plugin_probe_is_listed_and_loaded_and_a_clash_with_a_builtin_is_reported(tmp_path, monkeypatch) -> None:
    root = install_plugin(tmp_path / "site", "[recaudit.probes]\nnonempty = demo_plugin:NonEmptyProbe\n"
                                             "utility = demo_plugin:NonEmptyProbe\n")
    monkeypatch.syspath_prepend(str(root))
    registry: Registry = Registry("probe", "recaudit.probes")
    registry.register("utility", "audit.probes.utility:UtilityProbe", "built-in")
    assert registry.names() == ["nonempty", "utility"]
    assert registry.origin("nonempty") == "recaudit_demo_plugin" and registry.origin("utility") == "recaudit"
    assert registry.get("nonempty").__name__ == "NonEmptyProbe"
    assert registry.get("utility").__name__ == "UtilityProbe"  # the built-in wins
    [problem] = registry.plugin_problems()
    assert "'utility' from recaudit_demo_plugin is ignored" in problem


def test_a_plugin_that_cannot_be_imported_is_an_error_naming_its_distribution(tmp_path, monkeypatch) -> None:
    root = install_plugin(tmp_path / "site", "[recaudit.adapters]\nbroken = demo_plugin:NoSuchClass\n")
    monkeypatch.syspath_prepend(str(root))
    registry: Registry = Registry("adapter", "recaudit.adapters")
    with pytest.raises(ConfigError, match="recaudit_demo_plugin cannot be loaded"):
        registry.get("broken")


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    root = install_plugin(tmp_path / "site", "[recaudit.probes]\nnonempty = demo_plugin:NonEmptyProbe\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path.cwd())])}


def test_recaudit_list_and_run_use_an_installed_plugin_probe(tmp_path, tiny_dataset, plugin_env) -> None:
    cli = [sys.executable, "-m", "audit.cli"]
    listed = subprocess.run([*cli, "list"], env=plugin_env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "nonempty" in listed.stdout and "plugin from recaudit_demo_plugin" in listed.stdout
    suite = kit.write_suite(tmp_path / "suite", {
        "name": "plugin", "dataset": {"users": 6, "seed": 0},
        "recommenders": {"oracle": {"adapter": "python", "generate": f"{kit.RECS_MODULE_NAME}:oracle"}},
        "probes": {"nonempty": {}}}, dataset=tiny_dataset)
    run = subprocess.run([*cli, "run", str(suite), "--out", str(tmp_path / "report"), "--no-cache", "--quiet"],
                         env=plugin_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "nonempty" in (tmp_path / "report" / "summary.md").read_text()


def test_a_plugin_adapter_that_is_not_an_adapter_subclass_is_refused_at_load(tmp_path, tiny_dataset) -> None:
    from audit.build import adapter_class
    from audit.registry import ADAPTERS

    ADAPTERS.register("test-not-an-adapter", "audit.interface:Recommender", "a Recommender without Config/build")
    with pytest.raises(ConfigError, match="not an audit.interface.Adapter subclass"):
        adapter_class("test-not-an-adapter", "recommenders.x")
    assert adapter_class("python", "recommenders.y").__name__ == "PythonAdapter"


def test_a_name_registered_from_outside_recaudit_is_not_a_builtin() -> None:
    """What `docs_reference.builtin` lists (the generated docs): a name registered at run time by a
    user's module or a test kit is not documented as part of recaudit."""
    from audit.docs_reference import builtin

    registry: Registry = Registry("probe")
    registry.register("utility", "audit.probes.utility:UtilityProbe")
    registry.register("mine", "my_company.probes:Mine")
    registry.register("kit", kit.HitConfig)
    assert registry.origin("utility") == "recaudit"
    assert registry.origin("mine") == "module my_company.probes" and registry.origin("kit") == "module runner_testkit"
    assert builtin(registry) == ["utility"]
