"""How long the CLI takes to answer: ``--help``, ``list`` and one-line config errors.

Each case runs ``python -m audit.cli ARGS`` as a fresh subprocess (the cost a user pays at the
prompt: interpreter start, imports, the command), ``--repeats`` times, the cases interleaved
round by round so every case sees the same machine load (the cores are shared). Wall time
per run and the child's peak RSS (``os.wait4``) are recorded; min and median are printed.
Every case's exit code and message are checked, so a case that stops failing the way it should
(and measures something else) is reported instead of timed.

Cases:

- ``--help``, ``list``;
- config errors, exit 2: a malformed YAML file, an unknown adapter, an unknown probe, a
  misspelt top-level key, a misspelt probe option (this one imports the adapter and probe
  modules to read their ``Config``), a missing suite file.

``--compare ROOT`` also runs every case from another checkout (e.g. ``git worktree add
/tmp/before HEAD~1``), interleaved with this one, and prints the ratio. ``--importtime N``
prints, for ``list`` and one config error, the N costliest imports from ``-X importtime``
(each package counted once, where it was first imported, with the project module that
imported it; a registry target is loaded with ``importlib``, which ``-X importtime`` does not
list, so its imports show up as imported "at top level").

Run: ``.venv/bin/python benchmarks/bench_cli_startup.py [--repeats 7] [--importtime 15]``
(target: every case within 3 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
PROJECT = ("audit", "privacy", "attacks", "dashboard")

GOOD_HEAD = "name: bench\ndataset: {name: ml-100k, users: 10}\n"
SUITES = {
    "malformed-yaml.yaml": "name: bench\nprobes: {utility: {k: 10}\n",
    "unknown-adapter.yaml": GOOD_HEAD + "recommenders:\n  r: {adapter: refrence}\nprobes:\n  utility: {}\n",
    "unknown-probe.yaml": GOOD_HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utilty: {}\n",
    "bad-key.yaml": GOOD_HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utility: {}\n"
                                "gate:\n  - {probe: utility, metric: hr@10, op: '>=', threshold: 0.1}\n",
    "bad-probe-option.yaml": GOOD_HEAD + "recommenders:\n  r: {adapter: reference}\nprobes:\n  utility: {kk: 10}\n",
}


@dataclass
class Case:
    name: str
    args: list[str]
    exit_code: int
    expect: str  # a substring of stdout + stderr
    walls: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)


def cases(suites: Path) -> list[Case]:
    return [
        Case("--help", ["--help"], 0, "usage: recaudit"),
        Case("list", ["list"], 0, "variants each adapter supports"),
        Case("malformed YAML", ["run", str(suites / "malformed-yaml.yaml")], 2, "invalid YAML"),
        Case("unknown adapter", ["run", str(suites / "unknown-adapter.yaml")], 2, "Unknown adapter 'refrence'"),
        Case("unknown probe", ["run", str(suites / "unknown-probe.yaml")], 2, "Unknown probe 'utilty'"),
        Case("misspelt key", ["run", str(suites / "bad-key.yaml")], 2, "unknown option 'gate'"),
        Case("misspelt probe option", ["run", str(suites / "bad-probe-option.yaml")], 2, "'kk'"),
        Case("missing suite file", ["run", str(suites / "no-such-suite.yaml")], 2, "suite file not found"),
    ]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["RECAUDIT_HOME"] = env.get("RECAUDIT_HOME", str(Path(tempfile.gettempdir()) / "recaudit-bench-home"))
    return env


def run_once(root: Path, args: list[str], python_args: tuple[str, ...] = ()) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, stdout + stderr) of one ``python -m audit.cli``.

    ``cwd=root`` puts that checkout's packages first on ``sys.path``."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *python_args, "-m", "audit.cli", *args], cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return wall, usage.ru_maxrss / 1024, proc.returncode, text  # ru_maxrss is KiB on Linux


def importtime_top(root: Path, args: list[str], n: int) -> list[str]:
    """The ``n`` costliest first imports of each package under ``-X importtime``, with their importer."""
    _, _, _, text = run_once(root, args, ("-X", "importtime"))
    rows: list[tuple[int, str, int]] = []  # (level, module, cumulative us), in the order printed
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        rows.append(((len(name) - len(name.lstrip()) - 1) // 2, name.strip(), int(cumulative)))
    parent: dict[int, str] = {}  # children are printed before their parent: find each row's parent
    pending: dict[int, list[int]] = {}
    for i, (level, _, _) in enumerate(rows):
        for child in pending.pop(level + 1, []):
            parent[child] = rows[i][1]
        pending.setdefault(level, []).append(i)
    seen: set[str] = set()
    found: list[tuple[int, str, str]] = []
    for i, (level, module, cumulative) in enumerate(rows):
        top = module.split(".")[0]
        importer = parent.get(i, "")
        if top in PROJECT or importer.split(".")[0] == top:
            continue  # project modules are listed by what they import; a package once, at its outermost row
        if top in seen:
            continue
        seen.add(top)
        found.append((cumulative, module, importer or "(top level)"))
    found.sort(reverse=True)
    return [f"    {us / 1e6:6.3f} s  {module:<34} imported by {importer}" for us, module, importer in found[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of every case (default 5)")
    parser.add_argument("--compare", type=Path, metavar="ROOT",
                        help="another checkout to run every case from as well, interleaved")
    parser.add_argument("--importtime", type=int, default=0, metavar="N",
                        help="print the N costliest imports of 'list' and of a config error")
    args = parser.parse_args()
    roots = {"this": ROOT}
    if args.compare is not None:
        roots["compare"] = args.compare.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        suites = Path(tmp)
        for file_name, text in SUITES.items():
            (suites / file_name).write_text(text)
        all_cases = cases(suites)
        problems: list[str] = []
        for round_no in range(args.repeats):
            order = all_cases if round_no % 2 == 0 else list(reversed(all_cases))
            for case in order:
                for label, root in (roots.items() if round_no % 2 == 0 else reversed(list(roots.items()))):
                    wall, rss, code, text = run_once(root, case.args)
                    if code != case.exit_code or case.expect not in text:
                        problems.append(f"{label} {case.name}: exit {code} (expected {case.exit_code}), "
                                        f"output {' '.join(text.split())[-300:]!r}")
                    case.walls.setdefault(label, []).append(wall)
                    case.rss_mb.setdefault(label, []).append(rss)

        load = os.getloadavg()
        print(f"python -m audit.cli, {args.repeats} runs per case, interleaved; {os.cpu_count()} CPUs, "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
        for label, root in roots.items():
            print(f"\n{label}: {root}")
            print(f"  {'case':<24} {'exit':>4} {'min s':>7} {'median s':>9} {'max s':>7} {'peak RSS MiB':>13}")
            for case in all_cases:
                walls = case.walls[label]
                rss = max(case.rss_mb[label])
                mark = "" if statistics.median(walls) <= TARGET_S else f"  (median over {TARGET_S:g} s)"
                print(f"  {case.name:<24} {case.exit_code:>4} {min(walls):7.2f} {statistics.median(walls):9.2f} "
                      f"{max(walls):7.2f} {rss:13.0f}{mark}")
        if "compare" in roots:
            print("\nmedian wall, compare / this:")
            for case in all_cases:
                ratio = statistics.median(case.walls["compare"]) / statistics.median(case.walls["this"])
                print(f"  {case.name:<24} {ratio:6.1f}x")
        if args.importtime:
            for case in (all_cases[1], all_cases[6]):
                for label, root in roots.items():
                    print(f"\ncostliest imports, {case.name} ({label}):")
                    print("\n".join(importtime_top(root, case.args, args.importtime)))
        if problems:
            print("\ncases that did not end as expected (their timings measure something else):")
            for problem in dict.fromkeys(problems):
                print(f"  {problem}")
            sys.exit(1)


if __name__ == "__main__":
    main()
