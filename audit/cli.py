"""The ``recaudit`` command line.

Exit codes (CI can tell them apart):

- 0: the run finished and every gate passed;
- 1: a gate failed (``run``), or a regression was found (``compare --fail-on-regression``);
- 2: usage or configuration error (bad arguments, bad suite file, unknown name, missing data set);
- 3: runtime error (a job ended in ``error``, an endpoint is down, an unexpected exception);
- 130: interrupted (Ctrl-C); finished jobs are kept and the next ``run`` resumes from them.

Errors print one line ``recaudit: error: <message>`` on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Sequence

from audit.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, RecauditError

EXIT_INTERRUPTED = 130

log = logging.getLogger("audit")


def _err(message: str) -> None:
    """One ``recaudit: error:`` line per line of ``message`` (a message lists one problem a line)."""
    lines = [" ".join(line.split()) for line in str(message).splitlines() if line.strip()]
    for line in lines or ["(no message)"]:
        print(f"recaudit: error: {line}", file=sys.stderr)


def _progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal; in a non-terminal log (CI) plain progress lines instead."""
    from audit import progress

    tty = sys.stderr.isatty()
    progress.configure(log=not args.quiet and not tty)
    if not tty:  # no carriage-return bars (model loading, downloads) in a CI log; read when transformers loads
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported: its switch was read at import time
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    return not args.quiet and tty


# -- sub-commands -----------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from audit.suite import load_suite

    suite = load_suite(args.suite)  # a config error ends here, before the runner's imports
    from audit.report import render_summary_text
    from audit.runner import run_suite

    if not args.quiet:  # one line per recommender built and per job finished, on stderr
        logging.getLogger("audit").setLevel(logging.INFO)
    outcome = run_suite(suite, out=args.out, no_cache=args.no_cache, limit_users=args.limit_users,
                        fail_on=args.fail_on, junit=args.junit, progress=_progress_enabled(args))
    if not args.quiet:
        print(render_summary_text(outcome.report))
        print()
    failed = sum(1 for g in outcome.gates if not g.passed)
    errors = len(outcome.errors)
    print(f"report: {outcome.out} (gates: {len(outcome.gates) - failed}/{len(outcome.gates)} passed"
          f"{f'; {errors} job error(s)' if errors else ''})")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write((outcome.out / "summary.md").read_text(encoding="utf-8") + "\n")
    return outcome.exit_code


def cmd_fetch(args: argparse.Namespace) -> int:
    from audit.llm.fetch import fetch_model, is_model_name

    if is_model_name(args.name):
        result = fetch_model(args.name, args.source, progress=_progress_enabled(args))
    else:
        from audit.data.fetch import fetch_dataset

        result = fetch_dataset(args.name, args.source)
    print(f"{args.name}: {result}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from audit.data.spec import DATASETS
    from audit.registry import ADAPTERS, EXECUTORS, PROBES, VARIANTS

    sections = [("adapters", ADAPTERS), ("variants", VARIANTS), ("probes", PROBES), ("executors", EXECUTORS),
                ("datasets", DATASETS)]
    for title, registry in sections:
        names = registry.names()
        print(f"{title}:")
        width = max((len(n) for n in names), default=0)
        for name in names:
            print(f"  {name:<{width}}  {registry.description(name)}".rstrip())
        print()
    print("variants each adapter supports (the capabilities a variant requires, declared by the adapter):")
    print(render_support_table())
    problems = [p for reg in (ADAPTERS, VARIANTS, PROBES) for p in reg.plugin_problems()]
    if problems:
        print("\nplugin entries left out:")
        for problem in problems:
            print(f"  {problem}")
    return EXIT_OK


def render_support_table() -> str:
    """One row per adapter: the variants it supports (``Variant.requires`` <= adapter capabilities)."""
    from audit.build import supports
    from audit.registry import ADAPTERS, VARIANTS

    rows = []
    width = max((len(n) for n in ADAPTERS.names()), default=0)
    for name in ADAPTERS.names():
        adapter = ADAPTERS.get(name)
        ok = [v for v in VARIANTS.names() if supports(adapter, VARIANTS.get(v))]
        rows.append(f"  {name:<{width}}  {', '.join(ok) or '(none)'}")
    return "\n".join(rows)


def cmd_compare(args: argparse.Namespace) -> int:
    from audit.compare import compare_reports, render_comparison_markdown, render_comparison_text

    cmp = compare_reports(args.run_a, args.run_b, allow_different_data=args.allow_different_data)
    render = render_comparison_markdown if args.format == "markdown" else render_comparison_text
    rows = "changed" if args.changed_only else "all" if args.all else "default"
    print(render(cmp, rows))
    return EXIT_GATE_FAILED if args.fail_on_regression and cmp.regressions else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from audit.suite import load_suite

    suite = load_suite(args.suite, validate_dataset=False)
    from audit.plan import check_report, parse_targets, plan_rows, render_plan
    from audit.report import load_report

    halfwidth, halfwidths = parse_targets(args.halfwidth, "halfwidth", 0.03)
    mde, mdes = parse_targets(args.mde, "mde", None)
    source = args.from_report if args.from_report is not None else Path("reports") / suite.name
    report = load_report(source)
    check_report(report, suite.name, str(source))
    print(render_plan(plan_rows(report, halfwidth=halfwidth, halfwidths=halfwidths, mde=mde, mdes=mdes,
                                all_metrics=args.all), report))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from audit.errors import ConfigError
    from audit.suite import did_you_mean, load_suite

    for flag, value in (("--request-timeout", args.request_timeout), ("--body-timeout", args.body_timeout),
                        ("--max-connections", args.max_connections), ("--max-body-bytes", args.max_body_bytes)):
        if not value > 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    suite = load_suite(args.suite)
    if args.recommender not in suite.recommenders:
        names = list(suite.recommenders)
        raise ConfigError(f"--recommender {args.recommender!r} is not in {args.suite}."
                          f"{did_you_mean(args.recommender, names)} Recommenders: {', '.join(names)}")
    try:
        from audit.serve import serve
    except ImportError as exc:
        raise RecauditError(f"the server module is not available ({exc})") from None
    from audit.build import build_recommender
    from audit.paths import models_dir
    from audit.runner import load_suite_dataset
    from audit.variants import BuildContext

    dataset = load_suite_dataset(suite)
    rec = build_recommender(args.recommender, suite.recommenders[args.recommender],
                            BuildContext(dataset=dataset, cache_dir=models_dir(), seed=suite.seed,
                                         progress=_progress_enabled(args), suite_dir=suite.base_dir))
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            rec.close()
            raise ConfigError(f"--api-key-env {args.api_key_env!r}: that environment variable is not set; "
                              "export the key clients must send as 'Authorization: Bearer <key>'")
    serve(rec, host=args.host, port=args.port, model_name=args.model_name, api_key=api_key,  # closes rec
          tokenizer=args.tokenizer, request_timeout=args.request_timeout, max_connections=args.max_connections,
          max_body_bytes=args.max_body_bytes, serialize=not args.concurrent, body_timeout=args.body_timeout)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard import launch_command, run_server

    command = launch_command(args.reports, streamlit_args=["--server.address", args.host,
                                                           "--server.port", str(args.port)])
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"recaudit dashboard: listening on {args.host}:{args.port}; the dashboard has no "
              "authentication and shows users' histories and attributes", file=sys.stderr)
    if args.print_command:
        print(" ".join(command))
        return EXIT_OK
    return run_server(command)  # stops the server on SIGTERM / SIGINT to recaudit


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars and no summary table")

    parser = argparse.ArgumentParser(prog="recaudit", description="Trustworthiness audits of LLM-based recommenders.",
                                     epilog="exit codes: 0 ok, 1 gate failed / regression, 2 usage or config error, "
                                            "3 runtime error, 130 interrupted")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars and no summary table")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run a suite file and write its report")
    p.add_argument("suite", type=Path, metavar="SUITE.yaml")
    p.add_argument("--out", type=Path, help="report directory (default: reports/<suite name>)")
    p.add_argument("--no-cache", action="store_true", help="recompute every job and overwrite the cache")
    p.add_argument("--limit-users", type=int, metavar="N", help="audit at most N users")
    p.add_argument("--junit", type=Path, metavar="PATH", help="also write JUnit XML here")
    p.add_argument("--fail-on", action="append", default=[], metavar="[REC:]PROBE.METRIC<=X",
                   help="an extra gate (repeatable), e.g. 'utility.ndcg@10>=0.05'")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("fetch", parents=[common], help="put a data set or a pretrained LLM into the cache")
    p.add_argument("name", help="data set name (e.g. ml-100k) or model name (e.g. smollm2-135m)")
    p.add_argument("--source", help="a local copy instead of downloading: a directory or zip (data sets), "
                                    "a .gguf file or Hugging Face directory (models)")
    p.set_defaults(handler=cmd_fetch)

    p = sub.add_parser("list", parents=[common], help="list adapters, variants, probes and executors")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "compare", parents=[common], help="compare two report directories metric by metric",
        description="Compare run B (candidate) with run A (baseline), metric by metric. The runs must have "
                    "measured the same data (fingerprint), audited users, seeds and probe options, else exit 2 "
                    "naming what differs. A change counts when it is beyond the uncertainty: with per-user "
                    "values in both runs, the paired test (its 95% CI of B-A excludes 0 and p < 0.05); else "
                    "the two 95% CIs do not overlap (the interval rule). Better or worse comes from each "
                    "metric's declared direction; a metric without one is 'changed', never a regression. "
                    "Metrics in one run only are listed apart, never regressions. Exit 0; 1 with "
                    "--fail-on-regression when a metric got worse beyond the uncertainty; 2 when the runs "
                    "cannot be compared.")
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="baseline report directory (or its report.json)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="candidate report directory (or its report.json)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a metric with a declared direction got worse beyond the uncertainty")
    p.add_argument("--allow-different-data", action="store_true",
                   help="compare runs of different data, users, seeds or probe options anyway (a note says "
                        "what differs; with different data no paired test, intervals only; metrics declared "
                        "differently are listed apart)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--changed-only", action="store_true",
                       help="list only the metrics changed beyond the uncertainty (default: those and each "
                            "job's headline metric, with a count of the unchanged ones)")
    shown.add_argument("--all", action="store_true", help="list every compared metric")
    p.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="text (default) or markdown (for a CI job summary or a pull-request comment)")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("plan", parents=[common],
                       help="users needed per probe and pair for a target CI half-width or MDE, from a pilot report")
    p.add_argument("suite", type=Path, metavar="SUITE.yaml")
    p.add_argument("--from", dest="from_report", type=Path, metavar="REPORT",
                   help="a report directory of this suite (default: reports/<suite name>)")
    p.add_argument("--halfwidth", action="append", metavar="[PROBE=]H",
                   help="target 95%% CI half-width (default 0.03; repeatable per probe, e.g. membership=0.05)")
    p.add_argument("--mde", action="append", metavar="[PROBE=]M",
                   help="target minimum detectable effect at 80%% power (repeatable per probe)")
    p.add_argument("--all", action="store_true", help="every paired metric, not only each probe's headline")
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("serve", parents=[common], help="serve one recommender of a suite over an OpenAI-compatible API")
    p.add_argument("--recommender", required=True, metavar="NAME")
    p.add_argument("--suite", required=True, type=Path, metavar="SUITE.yaml")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="the model id clients must send (default: the recommender's name)")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="require 'Authorization: Bearer <key>' with the key in this environment variable")
    p.add_argument("--tokenizer", metavar="DIR", help="a local Hugging Face tokenizer directory: token usage "
                                                      "and exact max_tokens")
    p.add_argument("--request-timeout", type=float, default=300.0, metavar="S",
                   help="longest a recommender call may take (504 after it)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="requests in progress at most (503 with the OpenAI error shape past it)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="longest a client may take to send its request body (408 after it)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="larger request bodies get 413")
    p.add_argument("--concurrent", action="store_true",
                   help="call the recommender from several requests at once (only for thread-safe ones)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("dashboard", parents=[common], help="open the Streamlit dashboard on a reports directory")
    p.add_argument("reports", nargs="?", type=Path, default=Path("reports"), metavar="REPORTS_DIR")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network: "
                        "the dashboard has no authentication)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--print-command", action="store_true", help="print the streamlit command instead of running it")
    p.set_defaults(handler=cmd_dashboard)
    return parser


def _version() -> str:
    from audit import __version__

    return f"recaudit {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else (EXIT_USAGE if exc.code else EXIT_OK)
    logging.basicConfig(level=logging.WARNING, format="recaudit: %(message)s")
    # peft (0.21) asks transformers (>= 5.2x) for a renamed attribute on every LoRA attach; the
    # deprecation is theirs, not the user's, and it would repeat in every CLI log
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        return args.handler(args)
    except RecauditError as exc:
        _err(str(exc))
        if args.debug:
            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        print("recaudit: interrupted; finished jobs are kept (run again to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on --debug
        _err(f"unexpected {type(exc).__name__}: {exc}" + ("" if args.debug else " (run with --debug for the traceback)"))
        if args.debug:
            traceback.print_exc()
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
