#!/usr/bin/env bash
# Runs each libFuzzer target built by `make fuzz-build` for SECONDS, seeded with its committed
# corpus.  Fails on a crash, a leak, a sanitizer report, an input slower than 1 s (-timeout=1) or
# more than 2 GB of RSS; the reproducer is kept as build-fuzz/artifacts/<target>-* (add it to
# tests/fuzz/corpus/<target>/ with the fix).  New inputs land in build-fuzz/corpus-<target>/.
# Prints, per target, executions per second and total executions (also build-fuzz/fuzz-stats.txt).
# Usage: tests/fuzz/run.sh SECONDS TARGET...
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=$1; shift
mkdir -p build-fuzz/artifacts
stats=build-fuzz/fuzz-stats.txt
printf '%-12s %10s %12s %8s %s\n' target exec/s executions coverage result > $stats
fail=""
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "$@"; do
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  log=build-fuzz/fuzz-$t.log
  # the first folder receives new inputs; the committed corpus is read only
  build-fuzz/fuzz_$t -max_total_time="$secs" -timeout=1 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/$t- "$work" tests/fuzz/corpus/$t >"$log" 2>&1
  rc=$?
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  result=ok
  if [ $rc -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    result="FAILED (rc $rc)"; fail="$fail $t"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
  fi
  printf '%-12s %10s %12s %8s %s\n' "$t" "${eps:-?}" "${runs:-?}" "cov ${cov:-?}" "$result" | tee -a $stats
done
[ -z "$fail" ] || { echo "fuzz: failing targets:$fail (reproducers in build-fuzz/artifacts/)"; exit 1; }
echo "fuzz: all $# targets clean for $secs s each"
