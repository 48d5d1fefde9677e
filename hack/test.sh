#!/usr/bin/env bash
# The test command: installs what the tests need, then formatting, lints, unit and end-to-end
# tests (as root: the end-to-end tests run a real daemon against a real local registry).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
hack/build-test-images.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Every dependency's licence must be compatible with Apache-2.0 (deny.toml), offline.
cargo deny --offline check licenses bans sources
# The earlier release tests/upgrade.rs restores this daemon over, built before the tests run
# (in parallel with them it would slow every other test).
st=0
hack/build-previous.sh >/dev/null || st=$?
if [ "$st" = 77 ]; then
  echo "=================================================================="
  echo "SKIPPED: tests/upgrade.rs (the earlier release is not in this clone's history)"
  echo "=================================================================="
elif [ "$st" != 0 ]; then
  exit "$st"
fi
cargo test --locked
# The node suite (tests/node.rs) in a Debian VM with systemd, cgroup v2 and AppArmor; 77 means
# the VM cannot boot on this machine at all, which is reported loudly, not hidden.
st=0
hack/node-vm.sh test || st=$?
if [ "$st" = 77 ]; then
  echo "=================================================================="
  echo "SKIPPED: the node VM suite (the VM did not boot on this machine)"
  echo "=================================================================="
elif [ "$st" != 0 ]; then
  echo "the node VM suite failed (status $st)" >&2
  exit "$st"
fi
