#!/usr/bin/env bash
# Runs every CMocka suite given on the command line, then prints one summary line:
# "tests: N passed, N failed".  Exit status is non-zero if any suite failed or crashed.
set -u
passed=0; failed=0; broken=""
for t in "$@"; do
  name=$(basename "$t")
  log=$(mktemp)
  "$t" >"$log" 2>&1
  rc=$?
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
  if [ $rc -ne 0 ] || [ "$f" -ne 0 ]; then
    cat "$log"
    broken="$broken $name"
    [ "$f" -eq 0 ] && failed=$((failed + 1))
  else
    echo "ok   $name ($p tests)"
  fi
  rm -f "$log"
done
echo "tests: $passed passed, $failed failed"
[ -z "$broken" ] || { echo "failing suites:$broken"; exit 1; }
