#!/usr/bin/env bash
# Live fleet on the ClickHouse store: `stackwatch-fleet-sim fake` serves TARGETS simulated
# targets (10 s windows, the collector benchmark's stack shape), two release
# `stackwatch server` collectors (ids c1, c2) share one ClickHouse and split the targets
# by rendezvous hashing (both configs list every target), scraping every 10 s. After a
# warm-up, the CPU time of each collector, of clickhouse-server and of the simulator is
# read from /proc/<pid>/stat over MEASURE seconds, and the collectors' /metrics tell
# whether a scrape fell behind (stackwatch_target_scrapes_skipped_total) or failed.
#
#   CLICKHOUSE_URL=http://127.0.0.1:18123 CLICKHOUSE_PASSWORD=secret \
#     TARGETS=10000 scripts/clickhouse_fleet_bench.sh
#
# Variables: TARGETS (10000), MEASURE (60 s), WARMUP (40 s), CLICKHOUSE_URL
# (http://127.0.0.1:8123), CLICKHOUSE_USER (default), CLICKHOUSE_PASSWORD (empty),
# CLICKHOUSE_DB (stackwatch_fleet; dropped and created again), CLICKHOUSE_PID (found from
# the URL's port with `ss` when unset; its CPU is only reported when known), COLLECTORS (2).
set -euo pipefail

TARGETS=${TARGETS:-10000}
MEASURE=${MEASURE:-60}
WARMUP=${WARMUP:-40}
COLLECTORS=${COLLECTORS:-2}
CH_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
CH_USER=${CLICKHOUSE_USER:-default}
CH_PASSWORD=${CLICKHOUSE_PASSWORD:-}
CH_DB=${CLICKHOUSE_DB:-stackwatch_fleet}

cd "$(dirname "$0")/.."
cargo build --release -q -p stackwatch-cli --bins
BIN=target/release

ch() {
	curl -sfS -H "X-ClickHouse-User: $CH_USER" -H "X-ClickHouse-Key: $CH_PASSWORD" \
		--data-binary "$1" "$CH_URL/"
}
ch "DROP DATABASE IF EXISTS $CH_DB"
ch "CREATE DATABASE $CH_DB"

CH_PID=${CLICKHOUSE_PID:-}
if [ -z "$CH_PID" ]; then
	port=${CH_URL##*:}
	port=${port%%/*}
	CH_PID=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
fi

WORK=$(mktemp -d /tmp/stackwatch-chfleet.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	# A collector drains its queue on SIGTERM; past 20 s it is killed (safe: the store
	# counts every window once, and the next run starts from a fresh database).
	for _ in $(seq 100); do
		alive=0
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.2
	done
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$BIN/stackwatch-fleet-sim" fake --targets "$TARGETS" >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM=$!
PIDS+=("$SIM")
until grep -q 'listening on' "$WORK/sim.out" 2>/dev/null; do sleep 0.2; done
ADDR=$(sed -n 's/^listening on //p' "$WORK/sim.out" | head -1)

TARGET_LIST="$WORK/targets.toml"
: >"$TARGET_LIST"
for ((i = 0; i < TARGETS; i++)); do
	printf '[[targets]]\nurl = "http://%s/t/%d"\nlabels = { service = "svc-%d", instance = "i-%d" }\n' \
		"$ADDR" "$i" $((i % 20)) "$i" >>"$TARGET_LIST"
done

CPIDS=()
URLS=()
for ((c = 1; c <= COLLECTORS; c++)); do
	{
		printf 'listen = "127.0.0.1:0"\ndata_dir = "%s"\n' "$WORK/data-c$c"
		printf '[scrape]\ninterval = "10s"\ntimeout = "5s"\n'
		printf '[store]\nkind = "clickhouse"\nurl = "%s"\ndatabase = "%s"\nuser = "%s"\npassword = "%s"\n' \
			"$CH_URL" "$CH_DB" "$CH_USER" "$CH_PASSWORD"
		printf '[collector]\nid = "c%d"\n' "$c"
		cat "$TARGET_LIST"
	} >"$WORK/c$c.toml"
	RUST_LOG=${STACKWATCH_FLEET_LOG:-warn} "$BIN/stackwatch" server --config "$WORK/c$c.toml" \
		>"$WORK/c$c.out" 2>"$WORK/c$c.log" &
	CPIDS+=($!)
	PIDS+=($!)
done
for ((c = 1; c <= COLLECTORS; c++)); do
	until grep -q 'listening on' "$WORK/c$c.out" 2>/dev/null; do sleep 0.2; done
	URLS+=("$(grep -o 'http://[^ ]*' "$WORK/c$c.out" | head -1)")
done

ticks() { # utime + stime of a pid, in clock ticks
	awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}
metric() { # sum of a metric (name prefix) over every collector
	local sum=0 v
	for u in "${URLS[@]}"; do
		v=$(curl -sf "$u/metrics" | awk -v n="$1" 'index($0, n) == 1 { s += $NF } END { printf "%.0f", s }')
		sum=$((sum + v))
	done
	echo "$sum"
}

echo "# $TARGETS targets, $COLLECTORS collectors, ClickHouse $(ch 'SELECT version()') at $CH_URL (pid ${CH_PID:-unknown}), $(nproc) cores"
sleep "$WARMUP"
skipped_warm=$(metric stackwatch_target_scrapes_skipped_total)
HZ=$(getconf CLK_TCK)
declare -A T0
for p in "${CPIDS[@]}" "$SIM" ${CH_PID:+"$CH_PID"}; do T0[$p]=$(ticks "$p"); done
rows0=$(metric stackwatch_ingest_rows_total)
skipped0=$skipped_warm
failed0=$(metric stackwatch_target_scrape_failures_total)
w0=$(date +%s.%N)
sleep "$MEASURE"
w1=$(date +%s.%N)
declare -A T1
for p in "${CPIDS[@]}" "$SIM" ${CH_PID:+"$CH_PID"}; do T1[$p]=$(ticks "$p"); done
rows1=$(metric stackwatch_ingest_rows_total)
skipped1=$(metric stackwatch_target_scrapes_skipped_total)
failed1=$(metric stackwatch_target_scrape_failures_total)
up=$(metric 'stackwatch_target_up{')
wall=$(echo "$w1 - $w0" | bc -l)
pct() { echo "scale=1; ($2 - $1) * 100 / $HZ / $wall" | bc -l; }

echo "| measure | value |"
echo "|---|---:|"
echo "| targets up (sum over collectors) | $up of $TARGETS |"
total=0
for ((c = 1; c <= COLLECTORS; c++)); do
	p=${CPIDS[$((c - 1))]}
	owned=$(curl -sf "${URLS[$((c - 1))]}/metrics" | awk 'index($0, "stackwatch_target_up{") == 1 { n++ } END { print n + 0 }')
	echo "| collector c$c: CPU, % of one core ($MEASURE s); target_up series | $(pct "${T0[$p]}" "${T1[$p]}") | $owned |"
	total=$((total + ${T1[$p]} - ${T0[$p]}))
done
all=$(echo "scale=1; $total * 100 / $HZ / $wall" | bc -l)
echo "| collectors together, % of one core | $all |"
echo "| collectors, % of one core per 1 000 targets | $(echo "scale=2; $all * 1000 / $TARGETS" | bc -l) |"
if [ -n "$CH_PID" ]; then
	echo "| clickhouse-server CPU, % of one core | $(pct "${T0[$CH_PID]}" "${T1[$CH_PID]}") |"
fi
echo "| fleet simulator CPU, % of one core | $(pct "${T0[$SIM]}" "${T1[$SIM]}") |"
echo "| stack-rows ingested/s (both collectors) | $(echo "scale=0; ($rows1 - $rows0) / $wall" | bc -l) |"
echo "| scrapes skipped (fell behind) / failed during the $MEASURE s | $((skipped1 - skipped0)) / $((failed1 - failed0)) |"
echo "| scrapes skipped during the $WARMUP s warm-up | $skipped_warm |"
echo "| raw rows in ClickHouse at the end | $(ch "SELECT count() FROM $CH_DB.samples_raw") |"
echo "logs: $WORK"
