#!/usr/bin/env bash
# The runtime benchmark (benches/cri.rs): ROUNDS host-network pods (no CNI), one `sleep 3600`
# container each, started over the CRI and kept running together, then stopped and removed;
# min / median / p90 per RPC and the daemon's RSS idle and with ROUNDS pods running. Run on this
# machine against Debian's containerd 1.6 (its CRI plugin, cgroupfs, runc, restrict_oom_score_adj)
# and then against ferrio (skipped with a note while ferrio answers Unimplemented for pods).
# Usage: hack/bench-runtime.sh [ROUNDS]   (default 20; as root). ONLY=containerd|ferrio runs one
# side. With every pod running, each daemon is restarted once (SIGTERM, then the same command) and
# the bench times until all pods are listed again (RESTART=0 skips it). With both runtimes, a last
# table puts each figure side by side with the ratio (hack/bench-ratio.awk). Prints numbers;
# asserts nothing. Everything lives under one temp dir, removed at the end.
#
# CNI=1: the pods get their own network namespace instead (`cri --cni`; no port mappings),
# attached by both runtimes to the same network: one conflist from hack/cni-conf.sh in a temp
# net.d (a free 10.88.<x>.0/24, its own bridge, host-local IPAM data under the temp dir; plugins
# from /usr/lib/cni). The bench warns about pods without an IP. After each side's run this prints
# what the network kept (IPAM allocations, veths on the bridge, netns pins, CNI result caches,
# iptables rules naming the network) and removes it; the bridge is deleted at the end. portmap's
# own chains (CNI-HOSTPORT-*, shared by every portmap user on the host) are left alone; a note
# says when this run created them.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
hack/setup-bench.sh
ferrio_bin=$(hack/build-release.sh) # the static release binary
bench=$(hack/build-release.sh bench)
[ -x "$bench" ] || { echo "could not find the cri bench executable" >&2; exit 1; }
hack/build-test-images.sh >/dev/null
PAUSE=1 hack/build-test-images.sh >/dev/null

work=$(mktemp -d /tmp/ferrio-bench-runtime.XXXXXX)
# Everything printed is also kept, for the side-by-side summary at the end.
exec > >(tee "$work/output.txt")
# containerd puts pod cgroups (cgroupfs, empty cgroup_parent) under /k8s.io in every hierarchy;
# runc removes each pod's, we remove the parents if this run made them.
k8s_cgroups_before=$(ls -d /sys/fs/cgroup/k8s.io /sys/fs/cgroup/*/k8s.io 2>/dev/null || true)
ctrd="" fpid="" status=0
cni=0 netd="" ipam="" netname="" bridge="" netns_before="" hostport_before=""
case ${CNI:-0} in 0|"") ;; *) cni=1 ;; esac

# Kill what a run may leave behind under $1: containers (through runc's root $2 when given),
# helper processes whose command line names $1, mounts below $1.
sweep() {
  local dir=$1 runc_root=${2:-} id pids
  if [ -n "$runc_root" ] && [ -d "$runc_root" ]; then
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
      echo "leftover container $id: deleting" >&2
      runc --root "$runc_root" delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  pids=$(pgrep -f -- "$dir/" || true)
  if [ -n "$pids" ]; then
    echo "leftover processes: $(ps -o pid=,args= -p ${pids//$'\n'/,} | tr '\n' ';')" >&2
    kill -9 $pids 2>/dev/null || true
  fi
  findmnt -rn -o TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r m; do
    echo "leftover mount $m: unmounting" >&2
    umount -l "$m" || true
  done
}

# CNI=1: print what the pod network still holds after a run ($1 names it) and remove it.
net_leftovers() {
  local who=$1 f n=0 l
  [ $cni = 1 ] || return 0
  for f in "$ipam/$netname"/*; do
    [ -f "$f" ] || continue
    case ${f##*/} in last_reserved_ip.*|lock) continue ;; esac
    echo "$who: leftover IPAM allocation ${f##*/} (owner: $(tr '\n' ' ' < "$f"))"; rm -f "$f"; n=$((n + 1))
  done
  for l in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    echo "$who: leftover veth $l on $bridge"; ip link del "$l" 2>/dev/null || true; n=$((n + 1))
  done
  for l in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    grep -qxF "$l" <<< "$netns_before" && continue
    echo "$who: leftover netns $l"; ip netns delete "$l" 2>/dev/null || true; n=$((n + 1))
  done
  for f in /var/lib/cni/results/"$netname"-* "$work"/ferrio/cni-cache/results/*; do
    [ -e "$f" ] || continue
    echo "$who: leftover CNI result cache $f"; rm -f "$f"; n=$((n + 1))
  done
  local t rule
  for t in nat filter; do
    while read -r rule; do
      [ -n "$rule" ] || continue
      echo "$who: leftover iptables -t $t $rule"; n=$((n + 1))
      eval "iptables -t $t ${rule/#-A/-D}" 2>/dev/null || true
    done < <(iptables-save -t "$t" 2>/dev/null | grep -F -- "$netname" | grep '^-A' || true)
  done
  [ $n -eq 0 ] && echo "$who: no network leftovers (IPAM, veths, netns, CNI caches, iptables)"
  return 0
}

# Stop a daemon: our child, or the one the bench restarted (not our child: polled until gone).
stop_daemon() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  wait "$pid" 2>/dev/null && return 0
  for i in $(seq 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
  set +e # runs to the end whatever fails (a daemon that never started, say)
  if [ -n "$ctrd" ]; then stop_daemon "$ctrd"; fi
  if [ -n "$fpid" ]; then stop_daemon "$fpid"; fi
  sweep "$work/containerd" "$work/containerd/runc/k8s.io"
  sweep "$work/ferrio"
  if [ $cni = 1 ] && [ -n "$bridge" ]; then
    net_leftovers cleanup | grep -v 'no network leftovers' >&2
    ip link del "$bridge" 2>/dev/null || true
  fi
  hack/registry.sh stop "$work/registry"
  rm -rf "$work"
}
trap cleanup EXIT

port=$(hack/free-port.sh)
hack/registry.sh start "$work/registry" "$port" --watch $$
hack/registry.sh push "$port"
skopeo --insecure-policy copy -q --dest-tls-verify=false oci-archive:.test-images/pause.tar \
  "docker://127.0.0.1:$port/ferrio-test/pause:1" >/dev/null
image=127.0.0.1:$port/ferrio-test/busybox:1.35

wait_socket() { # wait_socket PATH PID
  for _ in $(seq 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

bench_args=()
if [ $cni = 1 ]; then
  for _ in $(seq 50); do
    subnet="10.88.$(( 100 + RANDOM % 100 )).0/24"
    [ -z "$(ip route show to match "${subnet%/*}" | grep -v '^default' || true)" ] && break
    subnet=""
  done
  [ -n "$subnet" ] || { echo "no free 10.88.x.0/24 subnet" >&2; exit 1; }
  netd=$work/net.d ipam=$work/ipam
  conf=$(hack/cni-conf.sh "$netd" "$subnet" "ferrio-bench-$$" "$ipam")
  netname=$(jq -r .name "$conf") bridge=$(jq -r '.plugins[0].bridge' "$conf")
  netns_before=$(ip netns list 2>/dev/null | awk '{print $1}')
  hostport_before=$(iptables-save -t nat 2>/dev/null | grep -c '^:CNI-HOSTPORT-' || true)
  bench_args=(--cni)
fi
# Each side's daemon is restarted once with every pod running (RESTART=0: not), so the bench
# times a restore of ROUNDS pods; the restarted daemon's pid comes back in a file.
case ${RESTART:-1} in 0|"") restart=0 ;; *) restart=1 ;; esac
# Memory is read SETTLE seconds after the work before it (default 11), for both runtimes: ferrio
# returns freed heap to the kernel every 10 s, Go's scavenger works in the background too.
bench_args+=(--settle "${SETTLE:-11}")

echo "host: $(nproc) CPUs, kernel $(uname -r), $(runc --version | head -1), bench: $N rounds"
# Dying memory cgroups (kept by page cache charges after earlier runs) slow cgroup v1 creation for
# both runtimes; `echo 3 > /proc/sys/vm/drop_caches` releases them. Printed per side.
memcgs() { awk '$1 == "memory" {print "memory cgroups on the host (live and dying): " $3}' /proc/cgroups; }
[ $cni = 1 ] && echo "network: CNI $netname, $subnet on bridge $bridge ($conf)"

run_containerd() {
  local d=$work/containerd rc=0
  local conf_dir=$d/cni
  [ $cni = 1 ] && conf_dir=$netd
  hack/containerd-conf.sh "$d" "$port" "$conf_dir" >/dev/null
  containerd --config "$d/config.toml" > "$d/containerd.log" 2>&1 &
  ctrd=$!
  if ! wait_socket "$d/containerd.sock" "$ctrd"; then
    echo "containerd did not start:" >&2; tail -20 "$d/containerd.log" >&2
    kill "$ctrd" 2>/dev/null; wait "$ctrd" 2>/dev/null; ctrd=""; return 1
  fi
  echo
  echo "## containerd $(containerd --version | awk '{print $3}') (CRI plugin, runc, cgroupfs)"
  memcgs
  # Helpers: containerd-shim-runc-v2, one per pod, re-parented to init; each names its pod.
  local more=()
  [ $restart = 1 ] && more=(--restart-pid-file "$d/restarted.pid" --restart-log "$d/containerd.log")
  "$bench" --socket "$d/containerd.sock" --image "$image" --rounds "$N" --pid "$ctrd" \
    --helper containerd-shim-runc-v2 --helper "$d/containerd.sock" "${bench_args[@]}" "${more[@]}" || rc=$?
  [ -s "$d/restarted.pid" ] && ctrd=$(cat "$d/restarted.pid")
  if [ $rc -ne 0 ]; then echo "containerd: bench failed ($rc); log:" >&2; tail -30 "$d/containerd.log" >&2; fi
  stop_daemon "$ctrd"; ctrd=""
  net_leftovers containerd
  sweep "$d" "$d/runc/k8s.io"
  local c
  for c in /sys/fs/cgroup/k8s.io /sys/fs/cgroup/*/k8s.io; do
    [ -d "$c" ] && ! grep -qxF "$c" <<< "$k8s_cgroups_before" && rmdir "$c" 2>/dev/null || true
  done
  return $rc
}

run_ferrio() {
  local d=$work/ferrio rc=0
  mkdir -p "$d"
  printf '[image]\ninsecure_registries = ["127.0.0.1:%s"]\n' "$port" > "$d/ferrio.toml"
  if [ $cni = 1 ]; then
    printf '[network]\nnetwork_dir = "%s"\nplugin_dirs = ["/usr/lib/cni"]\ncache_dir = "%s"\n' \
      "$netd" "$d/cni-cache" >> "$d/ferrio.toml"
  fi
  # ferrio::phases: the daemon logs where each operation's time went (see telemetry::Phases);
  # the bench prints the medians from the log.
  "$ferrio_bin" --config "$d/ferrio.toml" --root "$d/root" --run-root "$d/run" \
    --log-level warn,ferrio::phases=debug serve 2> "$d/ferrio.log" &
  fpid=$!
  if ! wait_socket "$d/run/ferrio.sock" "$fpid"; then
    echo "ferrio did not start:" >&2; cat "$d/ferrio.log" >&2
    kill "$fpid" 2>/dev/null; wait "$fpid" 2>/dev/null; fpid=""; return 1
  fi
  echo
  local v; v=$("$ferrio_bin" version)
  echo "## ${v%%$'\n'*}"
  memcgs
  # Helpers: `ferrio __monitor <container-id>` (and any other ferrio process naming a pod or
  # container of the run).
  local more=()
  [ $restart = 1 ] && more=(--restart-pid-file "$d/restarted.pid" --restart-log "$d/ferrio.log")
  "$bench" --socket "$d/run/ferrio.sock" --image "$image" --rounds "$N" --pid "$fpid" \
    --helper ferrio --phases-log "$d/ferrio.log" "${bench_args[@]}" "${more[@]}" || rc=$?
  [ -s "$d/restarted.pid" ] && fpid=$(cat "$d/restarted.pid")
  case $rc in
    0) ;;
    3) echo "ferrio answers Unimplemented for pods (the runtime core has not landed): skipped"; rc=0 ;;
    *) echo "ferrio: bench failed ($rc); log ($d/ferrio.log):" >&2; grep -v ' phases op=' "$d/ferrio.log" >&2 ;;
  esac
  stop_daemon "$fpid"; fpid=""
  net_leftovers ferrio
  sweep "$d"
  return $rc
}

case ${ONLY:-} in containerd|"") run_containerd || status=1 ;; esac
case ${ONLY:-} in ferrio|"") run_ferrio || status=1 ;; esac
if [ -z "${ONLY:-}" ]; then
  echo
  echo "### side by side (medians; p50 for the calls with 20/110 pods running)"
  echo
  awk -f hack/bench-ratio.awk "$work/output.txt"
fi
if [ $cni = 1 ] && [ "$hostport_before" = 0 ] &&
  iptables-save -t nat 2>/dev/null | grep -q '^:CNI-HOSTPORT-'; then
  echo "note: portmap created its shared nat chains CNI-HOSTPORT-* (left in place)"
fi
exit $status
