#!/usr/bin/env bash
# Builds ferrio as an earlier release left it (PREVIOUS, a landed commit from before monitor
# protocol versioning: its monitors speak protocol 0), for tests/upgrade.rs: a daemon of this tree restored over
# containers whose monitors an older release started. Prints the binary's path. The commit
# comes from this clone's history (`git archive`); without it (a shallow clone) this exits 77.
# Built in its own target dir (target/previous), once: later calls only print the path.
set -euo pipefail
cd "$(dirname "$0")/.."
PREVIOUS=${FERRIO_PREVIOUS:-5c5682891758ac30abf1efe4c16547f83f734518}
dir=$(realpath -m target/previous)
bin=$dir/build/debug/ferrio
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin" ] && [ "$(cat "$dir/commit" 2>/dev/null)" = "$PREVIOUS" ]; then
  echo "$bin"; exit 0
fi
# 77: this clone lacks the commit (a shallow clone): the upgrade test is skipped, loudly.
git cat-file -e "$PREVIOUS^{commit}" 2>/dev/null || {
  echo "build-previous: commit $PREVIOUS is not in this clone (git fetch --unshallow)" >&2; exit 77; }
rm -rf "$dir/src"
mkdir -p "$dir/src"
git archive "$PREVIOUS" | tar -x -C "$dir/src"
# The toolchain file of this tree does not apply to the copy; the same toolchain builds it.
CARGO_TARGET_DIR=$dir/build cargo build --locked --quiet --bin ferrio \
  --manifest-path "$dir/src/Cargo.toml" >&2
echo "$PREVIOUS" > "$dir/commit"
echo "$bin"
