#!/usr/bin/env bash
# CRIU for CheckpointContainer's tests: Debian 12's criu 3.17.1 fails `criu check` on kernels
# whose vDSO layout it predates (6.18 here: "vdso: Unexpected rt vDSO area bounds"), so this
# builds CRIU 4.1.1 from Debian's own source package (trixie's, checked by its sha256) with
# bookworm's build dependencies, into /var/cache/ferrio/criu/criu. Reused when built; prints
# the binary's path. As root; hack/setup.sh runs it.
set -euo pipefail
version=4.1.1
sha=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
dest=${FERRIO_CRIU_DIR:-/var/cache/ferrio/criu}
if [ -x "$dest/criu" ] && [ "$(cat "$dest/version" 2>/dev/null)" = "$version" ]; then
  echo "$dest/criu"
  exit 0
fi
deps=(libbsd-dev libcap-dev libnet1-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev
  protobuf-c-compiler protobuf-compiler uuid-dev libgnutls28-dev libnftables-dev python3-protobuf
  pkg-config gcc make xz-utils curl)
. "$(dirname "$0")/apt.sh"
apt_ensure "${deps[@]}"
work=$(mktemp -d /tmp/ferrio-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
curl -sSfL -o "$work/criu.tar.xz" "http://deb.debian.org/debian/pool/main/c/criu/criu_${version}.orig.tar.xz"
echo "$sha  $work/criu.tar.xz" | sha256sum -c --quiet -
tar -C "$work" -xf "$work/criu.tar.xz"
make -C "$work/criu-$version" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$dest"
install -m 0755 "$work/criu-$version/criu/criu" "$dest/criu"
echo "$version" > "$dest/version"
echo "$dest/criu"
