#!/usr/bin/env bash
# recaudit release gate for a repository that uses recaudit (any CI, or by hand): run the audit
# suite, then compare the new report with the last release's report and fail on a regression.
# The same steps as examples/github-actions.yml, for GitLab, Jenkins, Buildkite or a laptop.
#
#   release_gate.sh [--baseline DIR] [--out DIR] [--promote] SUITE.yaml
#
#   SUITE.yaml       the suite to run (or $RECAUDIT_SUITE)
#   --baseline DIR   the last release's report directory, holding report.json
#                    (or $RECAUDIT_BASELINE; default recaudit-baseline). Absent or without
#                    report.json: the compare step is skipped with a message (a first release).
#   --out DIR        where the new report goes (or $RECAUDIT_OUT; default recaudit-report):
#                    report.json, summary.md, junit.xml, outputs.jsonl, and compare.txt / compare.md
#   --promote        when the gate passes, the new report replaces the baseline directory
#                    (for runners that keep a directory between releases; CI systems with
#                    artifacts or release assets store $RECAUDIT_OUT themselves instead)
#
#   $RECAUDIT               the recaudit command (default: recaudit on PATH)
#   $RECAUDIT_FETCH         data sets / models to `recaudit fetch` first (e.g. "ml-100k"; cached)
#   $RECAUDIT_RUN_ARGS      extra words for `recaudit run` (e.g. "--limit-users 200")
#   $RECAUDIT_COMPARE_ARGS  extra words for `recaudit compare` (e.g. "--changed-only")
#   $GITHUB_STEP_SUMMARY    when set, the comparison is appended to it as Markdown
#                           (`recaudit run` appends its own summary there too)
#
# Exit codes, passed through from recaudit: 0 the suite's gates passed and nothing regressed;
# 1 a gate failed or a metric regressed against the baseline; 2 a usage, suite or config error
# (also: baseline and new report not comparable, e.g. different data); 3 a runtime error.
set -euo pipefail

die() {  # die CODE MESSAGE: one line naming what to fix, exit with the documented code
  echo "release gate: error: $2" >&2
  exit "$1"
}

suite="${RECAUDIT_SUITE:-}"
baseline="${RECAUDIT_BASELINE:-recaudit-baseline}"
out="${RECAUDIT_OUT:-recaudit-report}"
promote=0
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) [ $# -ge 2 ] || die 2 "--baseline needs a directory"; baseline="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || die 2 "--out needs a directory"; out="$2"; shift 2 ;;
    --promote) promote=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; positional+=("$@"); break ;;
    -*) die 2 "unknown option '$1' (allowed: --baseline DIR, --out DIR, --promote, --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
if [ "${#positional[@]}" -gt 1 ]; then
  die 2 "one suite file, got ${#positional[@]}: ${positional[*]}"
elif [ "${#positional[@]}" -eq 1 ]; then
  suite="${positional[0]}"
fi
[ -n "$suite" ] || die 2 "no suite file: give SUITE.yaml or set RECAUDIT_SUITE"
[ -n "$out" ] && [ -n "$baseline" ] || die 2 "--out and --baseline must not be empty"

recaudit_cmd="${RECAUDIT:-recaudit}"
command -v "$recaudit_cmd" >/dev/null 2>&1 \
  || die 2 "'$recaudit_cmd' not found: install recaudit (pip install recaudit, or a git URL) or set RECAUDIT"

same_dir() {  # true when both paths name the same existing directory
  [ -d "$1" ] && [ -d "$2" ] && [ "$(cd "$1" && pwd -P)" = "$(cd "$2" && pwd -P)" ]
}
if same_dir "$out" "$baseline"; then
  die 2 "--out '$out' is the baseline directory '$baseline': the new report must go elsewhere"
fi

# 1. Run the suite. 2 (suite error) and 3 (runtime error) stop here: there is no sound report to
#    compare. 1 (a gate failed) still compares, so the log shows what changed, and exits 1.
for name in ${RECAUDIT_FETCH:-}; do
  "$recaudit_cmd" fetch "$name" || { code=$?; echo "release gate: FAILED: recaudit fetch $name exited $code" >&2; exit "$code"; }
done

rm -f "$out/compare.txt" "$out/compare.md"  # never leave an earlier run's comparison beside this report
set +e
# shellcheck disable=SC2086  # RECAUDIT_RUN_ARGS are words on purpose
"$recaudit_cmd" run "$suite" --out "$out" --junit "$out/junit.xml" ${RECAUDIT_RUN_ARGS:-}
run_code=$?
set -e
case "$run_code" in
  0) ;;
  1) echo "release gate: a gate of $suite failed (recaudit run exited 1); comparing anyway" >&2 ;;
  *) echo "release gate: FAILED: recaudit run exited $run_code (2 = suite or config error, 3 = runtime error)" >&2
     exit "$run_code" ;;
esac

# 2. Compare with the last release's report, when there is one.
compare_code=0
if [ ! -f "$baseline/report.json" ]; then
  echo "release gate: no baseline report ($baseline/report.json does not exist): compare skipped;" \
       "this run's report in $out is the first baseline"
else
  set +e
  # shellcheck disable=SC2086
  "$recaudit_cmd" compare "$baseline" "$out" --fail-on-regression ${RECAUDIT_COMPARE_ARGS:-} > "$out/compare.txt"
  compare_code=$?
  set -e
  cat "$out/compare.txt"
  if [ "$compare_code" -le 1 ]; then
    # the same comparison as Markdown, for a job summary or a pull-request comment
    # shellcheck disable=SC2086
    "$recaudit_cmd" compare "$baseline" "$out" --format markdown ${RECAUDIT_COMPARE_ARGS:-} > "$out/compare.md" || true
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -s "$out/compare.md" ]; then
      cat "$out/compare.md" >> "$GITHUB_STEP_SUMMARY"
    fi
  fi
  case "$compare_code" in
    0) ;;
    1) echo "release gate: FAILED: a metric regressed against the baseline $baseline (recaudit compare exited 1)" >&2 ;;
    *) echo "release gate: FAILED: recaudit compare exited $compare_code (2 = the reports cannot be compared," \
            "e.g. different data; 3 = runtime error)" >&2
       exit "$compare_code" ;;
  esac
fi

if [ "$run_code" -ne 0 ] || [ "$compare_code" -ne 0 ]; then
  exit 1
fi
echo "release gate: PASSED: the gates of $suite hold and no metric regressed (report: $out)"

# 3. Optionally keep this report as the next baseline: copied beside the baseline, then swapped in.
if [ "$promote" -eq 1 ]; then
  parent="$(dirname "$baseline")"
  mkdir -p "$parent"
  staged="$(mktemp -d "$parent/.recaudit-baseline.XXXXXX")"
  cp -R "$out/." "$staged/"
  if [ -e "$baseline" ]; then
    old="$staged.old"
    mv "$baseline" "$old"
    mv "$staged" "$baseline"
    rm -rf "$old"
  else
    mv "$staged" "$baseline"
  fi
  echo "release gate: $out promoted to the baseline $baseline"
fi
