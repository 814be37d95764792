"""The layout's import contract (pyproject's ``[tool.importlinter]``: the training path knows no
model, the two models are independent leaves that import no domain package, and the domain
packages reach models only through the interface), and no import cycle between any two modules.
Both checks are shown to fail on a copy of the packages with a planted violation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "attacks", "privacy", "dashboard")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` with the project's contracts."""
    code = ("import sys\nfrom importlinter.cli import lint_imports_command\n"
            f"sys.argv = ['lint-imports', '--config', {str(ROOT / 'pyproject.toml')!r}, '--no-cache', '--no-logo']\n"
            "sys.exit(lint_imports_command())")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "", "COLUMNS": "200"})


def import_cycles(root: Path) -> list[list[str]]:
    """Every set of modules that import each other in a cycle (Tarjan's strongly connected
    components over grimp's graph: in-function imports count, ``TYPE_CHECKING`` ones do not)."""
    code = ("import grimp, json, sys\n"
            f"g = grimp.build_graph(*{list(PACKAGES)!r}, exclude_type_checking_imports=True, cache_dir=None)\n"
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(root), "PATH": ""}, check=True).stdout
    edges: dict[str, list[str]] = json.loads(out)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # iterative enough for a few hundred modules
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(cycles)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages with a forbidden import (a model leaf importing a privacy trainer)
    and an import cycle (two new attack modules importing each other inside functions)."""
    root = tmp_path_factory.mktemp("planted")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "audit" / "llm" / "planted_leak.py").write_text("import privacy.dp  # forbidden\n")
    (root / "attacks" / "planted_a.py").write_text("def f():\n    import attacks.planted_b\n")
    (root / "attacks" / "planted_b.py").write_text("def g():\n    import attacks.planted_a\n")
    return root


def test_the_import_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_contract_fails_on_a_planted_forbidden_import(planted: Path):
    result = lint_imports(planted)
    assert result.returncode != 0
    assert "a model leaf imports no domain package" in result.stdout
    assert "audit.llm.planted_leak -> privacy.dp" in result.stdout


def test_no_module_is_part_of_an_import_cycle():
    assert import_cycles(ROOT) == []


def test_the_cycle_check_finds_a_planted_cycle(planted: Path):
    assert ["attacks.planted_a", "attacks.planted_b"] in import_cycles(planted)
