#!/usr/bin/env bash
# Installs what building, the demo and the tests need on a fresh Debian 12 machine (as root).
# The Rust toolchain itself must already be there (rustup); everything else comes from Debian.
set -euo pipefail
pkgs=(
  docker-registry   # the local OCI registry (distribution) for tests and the demo
  skopeo            # pushes the test images into it
  busybox-static    # the content of the test images
  apache2-utils     # htpasswd, for the registry's basic-auth tests
  curl zstd gzip tar ca-certificates
  gcc pkg-config    # C parts of crates (zstd)
  libc6-dev         # libc.a: hack/build-release.sh links glibc statically
  libseccomp-dev    # libcontainer's seccomp support links libseccomp (libseccomp.a for the static release)
  runc crun         # the external OCI runtime handlers, tested beside the built-in one
  iproute2 util-linux procps  # ip, mount/nsenter, ps: the end-to-end tests inspect what pods leave
  containernetworking-plugins # CNI plugins (bridge, host-local, loopback, portmap) in /usr/lib/cni
  iptables iputils-ping       # iptables-save and ping: the CNI tests check what portmap and bridge leave
  openssl                     # the streaming TLS test makes a throwaway certificate
  gnupg gpgv                  # tests/trust.rs: throwaway GPG keys (gpg, skopeo --sign-by); gpgv checks signedBy
  python3-venv                # a venv for grpcio (PyPI), the gRPC C-core client of tests/interop.rs
)
. "$(dirname "$0")/apt.sh"
apt_ensure "${pkgs[@]}"
# The node VM (hack/node-vm.sh): qemu, mmdebstrap and mkfs.ext4 build and boot a Debian node.
# qemu-system-x86 needs the qemu-utils of its own release: a newer one (a backport) is removed,
# ferrio uses raw disk images and needs none.
apt_extra=()
if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then apt_extra+=(qemu-utils-); fi
apt_ensure qemu-system-x86 mmdebstrap e2fsprogs
apt_extra=()
# gRPC C-core as a client (tests/interop.rs): grpcio from PyPI, in a venv of Debian's Python.
# Debian's python3-grpcio (1.51) predates the authority change (1.57) the test is about.
grpcio=1.68.1
py=/var/cache/ferrio/pyenv
if [ "$("$py/bin/python" -c 'import grpc; print(grpc.__version__)' 2>/dev/null)" != "$grpcio" ]; then
  rm -rf "$py"
  /usr/bin/python3 -m venv "$py"
  "$py/bin/pip" install -q --disable-pip-version-check "grpcio==$grpcio"
fi
# CRIU 4 for CheckpointContainer's tests (tests/checkpoint.rs), from Debian's source package.
"$(dirname "$0")/build-criu.sh" >/dev/null
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
for c in clippy fmt; do
  cargo $c --version >/dev/null 2>&1 || { echo "cargo $c not found: add the Rust component (rustup component add ${c/fmt/rustfmt})" >&2; exit 1; }
done
# cargo deny: the licence allowlist (deny.toml) that hack/test.sh checks, from crates.io.
cargo deny --version >/dev/null 2>&1 || cargo install -q --locked cargo-deny --version 0.20.2

# cgroup v1 hybrid hosts (this one): a controller left on the empty cgroup2 tree at
# /sys/fs/cgroup/unified (hugetlb here) makes crun refuse every container ("cgroups in hybrid
# mode not supported, drop all controllers from cgroupv2"). Mount such unused controllers as v1
# hierarchies, which moves them off cgroup2, as a hybrid systemd host does.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    [ -d "/sys/fs/cgroup/$c" ] && continue
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || echo "setup: could not move cgroup controller $c to v1" >&2
  done
fi
