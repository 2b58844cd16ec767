#!/usr/bin/env bash
# The README's test command on a busy machine: runs scripts/test.sh several times in a
# row while a CPU hog keeps every core busy, and says how long each run took. The suite
# must pass so: its tests wait for conditions (samples, windows, rows) with generous
# deadlines, never a fixed time followed by a count.
#
#   scripts/test-busy.sh          3 runs beside one busy loop per core
#   scripts/test-busy.sh N        N runs
#
# The hog is one `while :; do :; done` shell loop per core at normal priority (the tests
# compete with it as with any other work); it is stopped when the script ends, however
# it ends. Stops at the first failing run and exits with its status.
set -euo pipefail
cd "$(dirname "$0")/.."

me="scripts/test-busy.sh"
runs="${1:-3}"
case "$runs" in
  '' | *[!0-9]*)
    echo "$me: usage: $me [RUNS]" >&2
    exit 2
    ;;
esac

cores=$(nproc)
hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_hogs EXIT
for _ in $(seq "$cores"); do
  bash -c 'while :; do :; done' &
  hogs+=("$!")
done
echo "$me: $cores busy loops running (pids ${hogs[*]})"

# Build first (not timed as a run): the runs measure the tests, not the compiler.
cargo test --workspace --no-run --quiet

total_start=$(date +%s)
for i in $(seq "$runs"); do
  start=$(date +%s)
  log="target/test-busy-run-$i.log"
  echo "$me: run $i of $runs (log: $log)"
  if scripts/test.sh >"$log" 2>&1; then
    status=0
  else
    status=$?
  fi
  took=$(($(date +%s) - start))
  summary=$(grep -E '^test result:' "$log" | awk '{p += $4; f += $6; i += $8} END {print p " passed, " f " failed, " i " ignored"}')
  echo "$me: run $i: exit $status in ${took} s ($summary over every test binary)"
  if [ "$status" -ne 0 ]; then
    grep -E '^(test .* FAILED|failures:|---- )' "$log" | head -40 || true
    exit "$status"
  fi
done
echo "$me: $runs runs passed beside $cores busy loops in $(($(date +%s) - total_start)) s"
