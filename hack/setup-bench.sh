#!/usr/bin/env bash
# What the runtime benchmark (hack/bench-runtime.sh) needs beyond hack/setup.sh: Debian's
# containerd (1.6, with its built-in CRI plugin) as the peer to compare with. As root.
set -euo pipefail
"$(dirname "$0")/setup.sh"
. "$(dirname "$0")/apt.sh"
apt_ensure containerd
# The package enables a systemd unit; the benchmark starts its own instance on a temp root and
# socket and never uses the system one.
