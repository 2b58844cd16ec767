#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test,
# the ignored ones (which need those tools) included. `.ci/run` calls this script.
#
#   scripts/test.sh            install what is missing, then cargo test --workspace -- --include-ignored
#   scripts/test.sh --dry-run  say what would be installed and run, change nothing
#
# Idempotent: a tool already present is not installed again (apt-get update runs only
# when something is missing). Installing needs apt-get and root (or password-less sudo);
# without them it names what is missing and stops. Add a tool here when a test needs one.
set -euo pipefail
cd "$(dirname "$0")/.."

me="scripts/test.sh"
dry_run=false
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=true ;;
  -h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "$me: unknown argument '$1' (usage: $me [--dry-run])" >&2
    exit 2
    ;;
esac

say() { echo "$me: $*"; }
die() {
  echo "$me: error: $*" >&2
  exit 1
}

# cargo-installed tools (inferno-flamegraph) land here; the tests run them from PATH.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH:/usr/sbin:/sbin"

# Debian package :: what shows it is present :: what needs it (split on "::", since a
# probe may hold a pipe or "||")
apt_tools=(
  "golang-go::command -v go::go tool pprof reads our profiles; a Go net/http/pprof target is scraped"
  "zlib1g::ldconfig -p | grep -q 'libz\.so\.1 '::libz.so.1, the library the dlopen tests load at run time"
  "chromium::command -v chromium::the dashboard end-to-end test (driven by playwright-core)"
  "mariadb-server::command -v mariadbd && command -v mariadb-install-db::binlog-streamer's replica tests start their own server"
  "redis-server::command -v redis-server::binlog-streamer's Redis sink tests start their own server"
  "curl::command -v curl::the demo's printed curl line and the README/docs curl lines"
  "libc6-dbg::dpkg -s libc6-dbg::libc's detached debug symbols: the demo's profile names libc's internals, not [libc.so.6]"
  "binutils::command -v objcopy && command -v nm && command -v readelf && command -v strip::the symbolizer's tests strip a library and move its symbols to a debug file"
  "xz-utils::command -v xz::the symbolizer's MiniDebugInfo test compresses a symbol table into .gnu_debugdata"
  "clickhouse-server::command -v clickhouse-server || test -x /usr/sbin/clickhouse-server::the ClickHouse store's tests start their own servers (single node and a 2-shard cluster)"
)
# Node.js and npm come with the machine's Rust image; from Debian's apt where they do not.
node_tools=(
  "nodejs::command -v node::runs tests/e2e/dashboard.mjs"
  "npm::command -v npm::installs playwright-core into tests/e2e (npm ci)"
)

missing=()
for entry in "${apt_tools[@]}" "${node_tools[@]}"; do
  pkg=${entry%%::*}
  rest=${entry#*::}
  probe=${rest%%::*}
  why=${rest#*::}
  if bash -c "$probe" >/dev/null 2>&1; then
    say "have $pkg"
  else
    say "missing $pkg: $why"
    missing+=("$pkg")
  fi
done
need_inferno=false
if command -v inferno-flamegraph >/dev/null 2>&1; then
  say "have inferno-flamegraph"
else
  say "missing inferno-flamegraph: the README pipes a profile into it (cargo install --locked inferno)"
  need_inferno=true
fi
need_chdb=false
if python3 -c 'import chdb' >/dev/null 2>&1; then
  say "have chdb-core"
else
  say "missing chdb-core: the ClickHouse store's tests need the current ClickHouse engine in-process (PyPI's chdb-core, import chdb)"
  need_chdb=true
fi
need_pyroscope=false
if python3 -c 'import pyroscope' >/dev/null 2>&1; then
  say "have pyroscope-io"
else
  say "missing pyroscope-io: the Pyroscope SDK test profiles a Python program with Grafana's SDK (PyPI's pyroscope-io, import pyroscope)"
  need_pyroscope=true
fi

install_cmd=()
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${missing[*]}, and there is no apt-get here: this script installs with Debian's apt. Install them by other means, then run: cargo test --workspace -- --include-ignored"
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      install_cmd=(sudo)
    elif ! $dry_run; then
      die "missing ${missing[*]}; installing them needs root: run $me as root (or with password-less sudo), or run 'apt-get install -y ${missing[*]}' as root first"
    fi
  fi
fi

if $dry_run; then
  if [ "${#missing[@]}" -gt 0 ]; then
    say "would run: apt-get update && apt-get install -y ${missing[*]}"
  fi
  if $need_inferno; then say "would run: cargo install --locked inferno"; fi
  if $need_chdb; then say "would run: python3 -m pip install --quiet chdb-core"; fi
  if $need_pyroscope; then say "would run: python3 -m pip install --quiet pyroscope-io"; fi
  say "would run: (cd tests/e2e && npm ci --no-audit --no-fund)"
  say "would run: cargo test --workspace -- --include-ignored"
  exit 0
fi

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  say "installing with apt: ${missing[*]}"
  "${install_cmd[@]}" apt-get update -qq || die "apt-get update failed (is a Debian mirror reachable?)"
  "${install_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install -y ${missing[*]} failed"
fi
if $need_inferno; then
  say "installing inferno-flamegraph: cargo install --locked inferno"
  cargo install --locked --quiet inferno || die "cargo install --locked inferno failed"
fi
if $need_chdb; then
  say "installing chdb-core (ClickHouse's engine as a Python module, import chdb): python3 -m pip install --quiet chdb-core"
  python3 -m pip install --quiet chdb-core || die "python3 -m pip install --quiet chdb-core failed (is python3 with pip here, and PyPI reachable?)"
fi
if $need_pyroscope; then
  say "installing pyroscope-io (Grafana's Pyroscope SDK for Python): python3 -m pip install --quiet pyroscope-io"
  python3 -m pip install --quiet pyroscope-io || die "python3 -m pip install --quiet pyroscope-io failed (is python3 with pip here, and PyPI reachable?)"
fi

# playwright-core only drives the system chromium; it downloads no browser.
say "installing tests/e2e's node modules: npm ci"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/e2e failed"

say "running: cargo test --workspace -- --include-ignored"
exec cargo test --workspace -- --include-ignored
