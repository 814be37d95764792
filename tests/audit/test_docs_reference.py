"""The generated reference pages of docs/: current with the code, complete, and read from the declarations."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from audit.config import StrictConfig
from audit.docs_reference import PAGES, docstring_fields, model_doc, options_table, render_pages

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_committed_reference_pages_equal_a_fresh_generation(tmp_path: Path) -> None:
    """Regenerate every page into a temporary directory with the module's command line and compare
    with docs/: a config option, metric declaration, docstring or CLI flag changed without `make docs`
    fails here, naming the page and the first differing lines."""
    out = tmp_path / "docs"
    proc = subprocess.run([sys.executable, "-m", "audit.docs_reference", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                               "COLUMNS": "40"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stale = []
    for name in PAGES:
        fresh = (out / name).read_text(encoding="utf-8")
        committed = DOCS / name
        old = committed.read_text(encoding="utf-8") if committed.is_file() else ""
        if fresh != old:
            diff = list(difflib.unified_diff(old.splitlines(), fresh.splitlines(), f"docs/{name}", "generated",
                                             lineterm="", n=0))[:12]
            stale.append(f"docs/{name} is stale:\n" + "\n".join(diff))
    assert not stale, "run `make docs` (python -m audit.docs_reference) and commit docs/:\n" + "\n\n".join(stale)


def test_every_option_of_every_builtin_config_model_has_a_description() -> None:
    _, undocumented = render_pages()
    assert not undocumented, ("options without a description (add a `#:` comment above the field, "
                              "Field(description=...), or a ``name``: entry in the model's docstring): "
                              + ", ".join(undocumented))


def test_docstring_entries_colon_grouped_and_parenthesised_forms() -> None:
    doc = ("Options of the thing. ``k``: cut-offs (each 1..100); ``a`` / ``b``: the two ends. "
           "``rate`` (0..1), ``mode``: ``iid`` or ``seed`` (a value, not an entry); "
           "``seed``: the draw's seed. Defaults were chosen on ML-100k.")
    described, notes, intro = docstring_fields(doc, ["k", "a", "b", "rate", "mode", "seed"])
    assert described == {"k": "cut-offs (each 1..100)", "a": "the two ends", "b": "the two ends",
                         "rate": "0..1", "mode": "``iid`` or ``seed`` (a value, not an entry)",
                         "seed": "the draw's seed"}
    assert notes == ["Defaults were chosen on ML-100k."]
    assert intro == "Options of the thing."


def test_description_precedence_and_table_of_constraints_choices_and_defaults() -> None:
    class Demo(StrictConfig):
        """``n``: from the docstring; ``mode``: the docstring's mode."""

        #: from the comment
        n: int = Field(3, ge=1, le=5)
        mode: Literal["fast", "exact"] = Field("fast", description="from Field")
        names: list[str] = ["a"]
        limit: float | None = None

    doc = model_doc(Demo)
    assert doc.descriptions == {"n": "from the comment", "mode": "from Field"}
    undocumented: list[str] = []
    table = options_table(Demo, undocumented=undocumented)
    assert "| `n` | int | `3` | >= 1; <= 5 | from the comment |" in table
    assert "| `mode` | str | `fast` | one of `fast`, `exact` | from Field |" in table
    assert '| `names` | list of str | `["a"]` |  |  |' in table
    assert "| `limit` | float or null | `null` |  |  |" in table
    assert [u.rsplit(".", 1)[1] for u in undocumented] == ["names", "limit"]


def test_metric_catalogue_lists_every_declared_family_of_every_probe() -> None:
    from audit.registry import PROBES

    pages, _ = render_pages()
    text = pages["metrics.md"]
    for name in PROBES.names():
        if PROBES.origin(name) != "recaudit":
            continue
        section = text.split(f"\n## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for family, spec in PROBES.get(name).metric_specs.items():
            better = {"higher": "higher", "lower": "lower", None: "– (context)"}[spec.direction]
            assert f"| `{family}` | {better} |" in section, f"{name}.{family} missing from docs/metrics.md"


def test_suite_reference_documents_every_builtin_adapter_variant_probe_and_executor() -> None:
    from audit.registry import ADAPTERS, EXECUTORS, PROBES, VARIANTS

    pages, _ = render_pages()
    for registry, page in ((VARIANTS, "suite-reference.md"), (PROBES, "suite-reference.md"),
                           (EXECUTORS, "suite-reference.md"), (ADAPTERS, "adapters.md")):
        for name in registry.names():
            if registry.origin(name) == "recaudit":
                assert f"## `{name}`\n" in pages[page], f"{registry.kind} {name!r} missing from docs/{page}"


def test_a_fenced_block_in_a_docstring_is_kept_as_written() -> None:
    from audit.docs_reference import rst_to_markdown

    doc = 'Intro with ``code``.\n\n```yaml\nname: x\nprobes:\n  utility: {k: [10]}   # ``not markup``\n```\n\nAfter ``y``.'
    assert rst_to_markdown(doc) == ('Intro with `code`.\n\n```yaml\nname: x\nprobes:\n  utility: {k: [10]}   '
                                    '# ``not markup``\n```\n\nAfter `y`.')


def test_the_suite_reference_shows_the_suite_example_as_a_yaml_block_line_for_line() -> None:
    """The example at the top of audit/suite.py reaches docs/suite-reference.md as a fenced YAML
    block with its own line breaks (it was once flattened into one inline code span)."""
    import inspect

    from audit import suite

    doc = inspect.getdoc(suite) or ""
    example = doc.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert example.count("\n") >= 10
    pages, _ = render_pages()
    assert f"\n```yaml\n{example}\n```\n" in pages["suite-reference.md"]
    assert f"\n```yaml\n{example}\n```\n" in (DOCS / "suite-reference.md").read_text(encoding="utf-8")
