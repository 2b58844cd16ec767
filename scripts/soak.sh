#!/usr/bin/env bash
# Soak: `stackwatch demo` for an hour, the RSS of every process (the demo: collector and
# dashboard; and each of its three worker children) sampled every minute into a CSV, then
# a plot and the least-squares slope per process over the second half of the run
# (scripts/soak_report.py).
#
#   scripts/soak.sh                      # one hour, output in /tmp/soak
#   SOAK_SECONDS=600 SOAK_OUT=/tmp/s scripts/soak.sh
#
# Environment (defaults in brackets):
#   SOAK_SECONDS  length of the run [3600]
#   SOAK_EVERY    seconds between samples [60]
#   SOAK_OUT      output directory [/tmp/soak]: rss.csv, rss.svg, report.txt, demo.log,
#                 and work/ (the demo's working directory and data dir)
#   SOAK_PORT     dashboard port [a free one]
#   SOAK_QUERY    1: at each sample, also GET /api/top and /api/profile.svg over the last
#                 15 minutes (someone looking at the dashboard), timed; 0: no queries [1]
#   SOAK_BIN      a built `stackwatch` binary to run instead of building the repo's
#   SOAK_COMMIT   with SOAK_BIN: the commit it was built from (printed in the CSV header)
#
# The binary is copied into SOAK_OUT first, so rebuilding the repository during the run
# does not touch the process under test. Everything listens on 127.0.0.1 only; the run
# ends by itself after SOAK_SECONDS (SIGTERM to the demo, which stops its workers).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${SOAK_SECONDS:-3600}"
every="${SOAK_EVERY:-60}"
out="${SOAK_OUT:-/tmp/soak}"
query="${SOAK_QUERY:-1}"

mkdir -p "$out/work"
if [ -n "${SOAK_BIN:-}" ]; then
    cp "$SOAK_BIN" "$out/stackwatch"
else
    (cd "$repo" && cargo build --release -p stackwatch-cli)
    cp "$repo/target/release/stackwatch" "$out/stackwatch"
fi
if [ -n "${SOAK_BIN:-}" ]; then
    # The binary was built elsewhere: SOAK_COMMIT says from what.
    commit="${SOAK_COMMIT:-unknown (SOAK_BIN=$SOAK_BIN)}"
    dirty=0
else
    commit="$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
fi

port="${SOAK_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
rm -rf "$out/work/stackwatch-data"
cd "$out/work"
"$out/stackwatch" demo --port "$port" --data-dir "$out/work/stackwatch-data" \
    > "$out/demo.log" 2>&1 &
demo=$!
cleanup() {
    if kill -0 "$demo" 2>/dev/null; then
        kill -TERM "$demo" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$demo" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$demo" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

# The demo prints one line per worker: "  worker main-1   version=main ... pid 1234 http://...".
names=()
pids=()
for _ in $(seq 1 300); do
    if grep -q '^dashboard:' "$out/demo.log" 2>/dev/null; then break; fi
    kill -0 "$demo" 2>/dev/null || { echo "soak: the demo exited:"; cat "$out/demo.log"; exit 1; }
    sleep 0.1
done
while read -r name pid; do
    names+=("$name")
    pids+=("$pid")
done < <(sed -n 's/^ *worker \([^ ]*\) .* pid \([0-9]*\) .*/\1 \2/p' "$out/demo.log")
if [ "${#pids[@]}" -eq 0 ]; then
    # Fallback: the demo's child processes, named by their --seed.
    sleep 2
    for p in $(pgrep -P "$demo"); do
        seed="$(tr '\0' ' ' < "/proc/$p/cmdline" | sed -n 's/.*--seed \([0-9]*\).*/\1/p')"
        names+=("worker-seed${seed:-$p}")
        pids+=("$p")
    done
fi
if [ "${#pids[@]}" -eq 0 ]; then
    echo "soak: found no worker processes of the demo:"; cat "$out/demo.log"; exit 1
fi

kib() { # VmRSS or VmHWM of a pid, KiB ("" when gone)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

{
    echo "# stackwatch demo soak: commit $commit$([ "$dirty" -gt 0 ] && echo " + uncommitted changes in $dirty tracked files"), $(nproc) cores, started $(date -u +%Y-%m-%dT%H:%M:%SZ), $seconds s, sample every $every s, queries $query"
    header="elapsed_s,demo_rss_kib"
    for n in "${names[@]}"; do header+=",${n}_rss_kib"; done
    header+=",demo_hwm_kib"
    for n in "${names[@]}"; do header+=",${n}_hwm_kib"; done
    header+=",store_bytes,top_status,top_ms,svg_status,svg_ms"
    echo "$header"
} > "$out/rss.csv"
echo "soak: demo pid $demo on port $port, workers ${names[*]} (pids ${pids[*]}), commit $commit, writing $out/rss.csv"

get() { # status and milliseconds of a GET
    curl -s -o /dev/null -m 60 -w '%{http_code},%{time_total}' "$1" 2>/dev/null \
        | awk -F, '{ printf "%s,%.0f", $1, $2 * 1000 }' || echo "000,0"
}

start=$(date +%s)
next=$start
end=$((start + seconds))
while :; do
    now=$(date +%s)
    kill -0 "$demo" 2>/dev/null || { echo "soak: the demo died at $((now - start)) s"; break; }
    row="$((now - start)),$(kib "$demo" VmRSS)"
    for p in "${pids[@]}"; do row+=",$(kib "$p" VmRSS)"; done
    row+=",$(kib "$demo" VmHWM)"
    for p in "${pids[@]}"; do row+=",$(kib "$p" VmHWM)"; done
    row+=",$(du -sb "$out/work/stackwatch-data" 2>/dev/null | cut -f1)"
    if [ "$query" = 1 ]; then
        row+=",$(get "http://127.0.0.1:$port/api/top?from=now-15m&limit=20")"
        row+=",$(get "http://127.0.0.1:$port/api/profile.svg?from=now-15m")"
    else
        row+=",,,,"
    fi
    echo "$row" >> "$out/rss.csv"
    [ "$now" -ge "$end" ] && break
    next=$((next + every))
    [ "$next" -gt "$end" ] && next=$end
    sleep $((next > $(date +%s) ? next - $(date +%s) : 0))
done

cleanup
trap - EXIT INT TERM
echo "soak: finished $(date -u +%Y-%m-%dT%H:%M:%SZ)"
python3 "$repo/scripts/soak_report.py" "$out/rss.csv" "$out/rss.svg" | tee "$out/report.txt"
