#!/usr/bin/env bash
# The test command: installs what the tests need, then formatting, lints, unit and end-to-end
# tests (as root: the end-to-end tests run a real daemon against a real local registry).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
hack/build-test-images.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
