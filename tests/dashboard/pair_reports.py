"""A report with paired differences, written by the real runner for the dashboard tests.

The real utility probe on python-adapter recommenders of known behaviour (``tests/audit/runner_testkit``):
``oracle`` ranks the held-out item first (HR@5 = 1), ``reverse`` last (HR@5 = 0), ``oracle+grounding`` is
``oracle`` through the grounding variant (same lists). Pairs: ``oracle -> oracle+grounding`` derived from
the variant, ``oracle -> reverse`` declared in ``compare:``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit.data.dataset import Dataset
from audit.runner import run_suite_file
from tests.audit import runner_testkit as kit

RUN_ID = "pairs-dash"
VARIANT = "oracle+grounding"


def pair_suite() -> dict[str, Any]:
    spec = kit.utility_suite(name="pairs-dash", compare=[{"a": "oracle", "b": "reverse"}])
    spec["recommenders"][VARIANT] = {**spec["recommenders"]["oracle"], "variant": "grounding"}
    return spec


def write_pair_run(reports: Path, work: Path, dataset: Dataset) -> Path:
    """Run the suite into ``reports/RUN_ID``; returns that run directory."""
    path = kit.write_suite(work / "suite", pair_suite(), dataset=dataset)
    out = reports / RUN_ID
    run_suite_file(path, out=out, home=work / "home", no_cache=True)
    return out


def read_report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
