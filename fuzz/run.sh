#!/bin/sh
# Deep fuzzing: FUZZ_SECONDS (default 600) of fuzz/fuzz_images.py over every format reader and
# every architecture's walker (the kinds are in fuzz/harness.py). It runs in rounds of
# FUZZ_ROUND seconds, each in a fresh process on a random FUZZ_SUBSET of the corpus (new inputs
# are merged back), because under atheris the process RSS creeps up by several MB per input
# although pagewalk frees its memory (the same inputs in a plain loop stay flat), and replaying a
# whole corpus of real cores costs minutes. A crash, a timeout (> FUZZ_TIMEOUT s for one input)
# or the RSS limit is a finding, written to fuzz/findings/ and counted; the run goes on
# (slow-unit-* files, inputs slower than 30 s, are kept but not counted). Inputs ending in a
# finding already reported and not yet fixed (fuzz/harness.py KNOWN_OPEN) are counted apart.
# Prints the figures for the README table; exits 1 if there was a new finding.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TOTAL=${FUZZ_SECONDS:-600}
ROUND=${FUZZ_ROUND:-60}
SUBSET=${FUZZ_SUBSET:-30}
RUNS=${FUZZ_RUNS:-500}  # inputs per round: bounds the instrumentation's RSS creep
TIMEOUT=${FUZZ_TIMEOUT:-60}
CORPUS=fuzz/corpus/v2
FINDINGS=fuzz/findings
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOG=$FINDINGS/run-$STAMP.log
mkdir -p "$CORPUS" "$FINDINGS"
$PY fuzz/seeds.py "$CORPUS" fuzz/pagewalk.dict >/dev/null || exit 2
touch "$LOG.start"
rm -f "$FINDINGS/known.log"  # harness.KNOWN_OPEN hits of this run
end=$(( $(date +%s) + TOTAL ))
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
  left=$(( end - $(date +%s) )); [ "$left" -gt "$ROUND" ] && left=$ROUND
  sub=$(mktemp -d /tmp/pagewalk-fuzz-round.XXXXXX)
  ls "$CORPUS" | shuf -n "$SUBSET" | while read -r f; do cp "$CORPUS/$f" "$sub/"; done
  PAGEWALK_FUZZ_TOLERATE_KNOWN=1 nice -n 10 $PY fuzz/fuzz_images.py -max_total_time="$left" -runs="$RUNS" -rss_limit_mb=4096 -timeout="$TIMEOUT" \
    -max_len=1100000 -dict=fuzz/pagewalk.dict -artifact_prefix="$FINDINGS/" -print_final_stats=1 -report_slow_units=30 \
    "$sub" >>"$LOG" 2>&1
  cp -n "$sub"/* "$CORPUS/" 2>/dev/null
  rm -rf "$sub"
  rounds=$((rounds + 1))
done
inputs=$(grep -E '^stat::number_of_executed_units:' "$LOG" | awk '{s += $2} END {print s + 0}')
# every new artifact is re-run in a plain process (fuzz/triage.py): only what reproduces counts;
# an artifact that does not (the instrumented process's RSS creep) goes to fuzz/findings/unreproduced/
new=$(ls "$FINDINGS" | grep -E '^(crash|timeout|oom|leak)-' | while read -r f; do
  [ "$FINDINGS/$f" -nt "$LOG.start" ] && echo "$FINDINGS/$f"; done)
reproduced=0; unreproduced=0
if [ -n "$new" ]; then
  mkdir -p "$FINDINGS/unreproduced"
  $PY fuzz/triage.py $new | tee -a "$LOG" | while IFS="$(printf '\t')" read -r verdict name how; do
    [ "$verdict" = "not reproduced" ] && mv "$FINDINGS/$name" "$FINDINGS/unreproduced/"; done
  reproduced=$(grep -c '^reproduced' "$LOG" || true)
  unreproduced=$(grep -c '^not reproduced' "$LOG" || true)
fi
rm -f "$LOG.start"
known=$(cat "$FINDINGS/known.log" 2>/dev/null | wc -l)
echo "fuzz: ${TOTAL}s, $rounds rounds, $inputs inputs executed, $(ls "$CORPUS" | wc -l) corpus files;" \
     "findings reproduced: $reproduced (crash/timeout/oom artifacts kept in $FINDINGS), not reproduced" \
     "(fuzzer RSS creep): $unreproduced; inputs ending in a known open finding: $known; log $LOG"
[ "$reproduced" -eq 0 ]
