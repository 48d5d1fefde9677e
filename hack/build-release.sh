#!/usr/bin/env bash
# Builds the release ferrio as one static executable: glibc and libseccomp linked in
# (libseccomp.a from libseccomp-dev), non-PIE, so there is nothing to load or relocate at exec —
# which every per-container helper (`__monitor`, `__exec`, `__pin-ns`) pays — and nothing to
# install beside it. Prints the binary's path on stdout. `hack/build-release.sh bench` builds
# the CRI bench (benches/cri.rs) the same way, sharing the build, and prints its path instead.
# CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
triple=$(rustc -vV | sed -n 's/^host: //p')
# libseccomp-sys links statically from a directory that holds only the archive.
libdir=$target/libseccomp-static
mkdir -p "$libdir"
cp -u "/usr/lib/$(gcc -print-multiarch)/libseccomp.a" "$libdir/"
# --target: RUSTFLAGS then apply to ferrio's code only, not to build scripts and proc macros
# (which cannot be static).
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$libdir
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
if [ "${1:-}" = bench ]; then
  cargo bench --no-run --locked --target "$triple" --bench cri 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1
  exit 0
fi
cargo build --release --locked --target "$triple" >&2
echo "$target/$triple/release/ferrio"
