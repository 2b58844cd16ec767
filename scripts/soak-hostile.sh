#!/usr/bin/env bash
# The hostile soak of docs/benchmarks.md (issue 24): `cargo bench -p stackwatch-cli
# --bench soak` (the demo's fleet beside 20 hostile pushers, legitimate pushers and query
# bursts; an hour by default), then scripts/soak_report.py's table and plot of the RSS
# per process. The bench itself checks that every worker window and every acknowledged
# push is stored exactly once, and exits non-zero otherwise.
#
#   scripts/soak-hostile.sh             3 600 s, output in target/soak-hostile/
#   scripts/soak-hostile.sh SECONDS     another length
#   SOAK_OUT=DIR scripts/soak-hostile.sh   output in DIR instead
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-3600}"
out="${SOAK_OUT:-$PWD/target/soak-hostile}"
mkdir -p "$out"
echo "scripts/soak-hostile.sh: $secs s, commit $(git rev-parse --short=12 HEAD), $(nproc) cores, started $(date -u +%FT%TZ)" | tee "$out/report.txt"
status=0
STACKWATCH_SOAK_SECONDS="$secs" STACKWATCH_SOAK_CSV="$out/rss.csv" \
  cargo bench -q -p stackwatch-cli --bench soak 2>&1 | tee -a "$out/report.txt" || status=$?
echo "scripts/soak-hostile.sh: ended $(date -u +%FT%TZ), exit $status" | tee -a "$out/report.txt"
python3 scripts/soak_report.py "$out/rss.csv" "$out/rss.svg" | tee -a "$out/report.txt"
exit "$status"
