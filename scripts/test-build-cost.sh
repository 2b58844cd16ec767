#!/usr/bin/env bash
# What building the test suite costs, per revision: the cold build of every test binary
# (what CI builds before it runs a test) and the disk its target directory takes.
#
#   scripts/test-build-cost.sh REV [REV ...]
#
# Each revision is checked out in a temporary `git worktree` with its own empty target
# directory and built with `CARGO_INCREMENTAL=0 cargo test --workspace --no-run` (as
# .ci/run builds); one line per revision: build seconds, MiB of target/ and of
# target/debug/deps, and how many executables target/debug/deps holds. Give the
# revisions twice in opposite orders to see the machine's noise. The worktrees are
# removed when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

me="scripts/test-build-cost.sh"
if [ "$#" -eq 0 ]; then
  echo "$me: usage: $me REV [REV ...]" >&2
  exit 2
fi
export CARGO_INCREMENTAL=0
work=$(mktemp -d)
cleanup() {
  for tree in "$work"/tree-*; do
    [ -d "$tree" ] && git worktree remove --force "$tree" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

i=0
for rev in "$@"; do
  i=$((i + 1))
  tree="$work/tree-$i"
  git worktree add --detach --quiet "$tree" "$rev"
  start=$(date +%s)
  if ! (cd "$tree" && cargo test --workspace --no-run --quiet) >"$work/build-$i.log" 2>&1; then
    echo "$me: $rev: the build failed:" >&2
    tail -20 "$work/build-$i.log" >&2
    exit 1
  fi
  secs=$(($(date +%s) - start))
  target_mib=$(du -sm "$tree/target" | cut -f1)
  deps_mib=$(du -sm "$tree/target/debug/deps" | cut -f1)
  executables=$(find "$tree/target/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' | wc -l)
  echo "$(git rev-parse --short "$rev"): cold build ${secs} s, target/ ${target_mib} MiB, target/debug/deps ${deps_mib} MiB, ${executables} executables in deps"
  git worktree remove --force "$tree"
done
