#!/usr/bin/env bash
# The containerd the benchmarks compare with (Debian's 1.6: its CRI plugin, overlayfs, runc,
# cgroupfs, restrict_oom_score_adj): writes DIR/config.toml with everything under DIR (socket
# DIR/containerd.sock), the local registry 127.0.0.1:PORT as a plain-HTTP mirror and
# ferrio-test/pause:1 from it as the sandbox image, CNI configs from CNI_CONF_DIR; prints the
# file's path.
#   hack/containerd-conf.sh DIR PORT CNI_CONF_DIR
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 DIR PORT CNI_CONF_DIR" >&2; exit 2; }
d=$1 port=$2 conf_dir=$3
cri='plugins."io.containerd.grpc.v1.cri"'
mkdir -p "$d" "$conf_dir"
cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[$cri]
  sandbox_image = "127.0.0.1:$port/ferrio-test/pause:1"
  restrict_oom_score_adj = true
  [$cri.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [$cri.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [$cri.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$d/runc"
        SystemdCgroup = false
  [$cri.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$conf_dir"
  [$cri.registry.mirrors."127.0.0.1:$port"]
    endpoint = ["http://127.0.0.1:$port"]
TOML
echo "$d/config.toml"
