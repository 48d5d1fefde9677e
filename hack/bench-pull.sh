#!/usr/bin/env bash
# Pull + unpack time from a local registry (median of N, each pull from an empty store) for the
# busybox test image and a ~52 MB six-layer image, and the daemon's RSS idle before and after:
# Debian's containerd 1.6 (its CRI plugin, overlayfs snapshotter) and then ferrio, in one run,
# both driven over the CRI by the same client (`ferrio image pull|rm --listen SOCKET`, which
# times PullImage), then the ratio of the medians. RemoveImage between pulls empties the store
# (containerd's CRI deletes with a synchronous garbage collection).
# Usage: hack/bench-pull.sh [N]   (default 5; as root). ONLY=containerd|ferrio runs one side.
# Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
hack/setup-bench.sh # setup.sh, and Debian's containerd for the other side
ferrio_bin=$(hack/build-release.sh)
hack/build-test-images.sh >/dev/null
BIG=1 hack/build-test-images.sh >/dev/null
work=$(mktemp -d /tmp/ferrio-bench.XXXXXX)
port=$(hack/free-port.sh)
daemon=""
cleanup() {
  set +e
  [ -n "$daemon" ] && { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }
  findmnt -rn -o TARGET | grep -F "$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  hack/registry.sh stop "$work/registry"
  rm -rf "$work"
}
trap cleanup EXIT
hack/registry.sh start "$work/registry" "$port" --watch $$
hack/registry.sh push "$port"
skopeo --insecure-policy copy -q --dest-tls-verify=false oci-archive:.test-images/big.tar "docker://127.0.0.1:$port/ferrio-test/big:latest" >/dev/null
printf '[image]\ninsecure_registries = ["127.0.0.1"]\n' > "$work/ferrio.toml"

wait_socket() { # wait_socket PATH PID
  for _ in $(seq 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$daemon/status; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# The median (ms) of each phase of the last $2 successful $1 operations in ferrio's log
# (PullImage, or PullLayer: each layer's own, as layers are fetched in parallel).
pull_phases() {
  grep "op=\"$1\" outcome=ok" "$work/ferrio.log" | tail -n "$2" | sed 's/.* phases=//' |
    tr ' ' '\n' | awk -F= '
      { if (!($1 in n)) order[++k] = $1; v[$1, ++n[$1]] = $2 / 1000 }
      END {
        for (i = 1; i <= k; i++) {
          p = order[i]; m = n[p]
          for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++)
            if (v[p, b] < v[p, a]) { t = v[p, a]; v[p, a] = v[p, b]; v[p, b] = t }
          med = (m % 2) ? v[p, (m + 1) / 2] : (v[p, m / 2] + v[p, m / 2 + 1]) / 2
          printf "%s%s %.2f", (i > 1 ? " + " : ""), p, med
        }
        print ""
      }'
}

declare -A med # med[side/image]: median ms
# bench_side SIDE SOCKET: N pulls of each image through the CRI on SOCKET, each removed after.
bench_side() {
  local side=$1 sock=$2 img ref t size times sorted layers seen_layers=0 phase_lines=()
  local cli=("$ferrio_bin" --config "$work/ferrio.toml" --listen "$sock")
  echo "daemon RSS idle at start: $(rss)"
  printf '\n%-10s %8s %10s %10s %10s\n' image size min_ms median_ms max_ms
  for img in busybox big; do
    ref="127.0.0.1:$port/ferrio-test/$img:latest"
    times=()
    for _ in $(seq "$N"); do
      t=$("${cli[@]}" image pull "$ref" | awk -F'\t' '{print $3}' | awk '{print $1}')
      times+=("$t")
      size=$("${cli[@]}" image ls | awk -v r="127.0.0.1:$port/ferrio-test/$img" '$1==r {print $4}')
      "${cli[@]}" image rm "$ref" >/dev/null
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    med[$side/$img]=$(printf '%s\n' "${times[@]}" | median)
    printf '%-10s %8s %10s %10s %10s\n' "$img" "$size" "$(echo "$sorted" | head -1)" "${med[$side/$img]}" "$(echo "$sorted" | tail -1)"
    if [ "$side" = ferrio ]; then
      layers=$(grep -c "op=\"PullLayer\" outcome=ok" "$work/ferrio.log" || true)
      phase_lines+=("$img: $(pull_phases PullImage "$N")")
      phase_lines+=("$img, per layer: $(pull_phases PullLayer "$((layers - seen_layers))")")
      seen_layers=$layers
    fi
  done
  if [ "$side" = ferrio ]; then
    echo
    echo "where the time goes (the daemon's phases; median ms, back to back):"
    printf '  %s\n' "${phase_lines[@]}"
  fi
  sleep 1
  echo
  echo "daemon RSS idle after the pulls: $(rss)"
}

run_containerd() {
  local d=$work/containerd
  mkdir -p "$d"
  hack/containerd-conf.sh "$d" "$port" "$d/cni" >/dev/null
  containerd --config "$d/config.toml" > "$d/containerd.log" 2>&1 &
  daemon=$!
  if ! wait_socket "$d/containerd.sock" "$daemon"; then
    echo "containerd did not start:" >&2; tail -20 "$d/containerd.log" >&2; return 1
  fi
  sleep 1
  echo
  echo "## containerd $(containerd --version | awk '{print $3}') (CRI plugin, overlayfs)"
  bench_side containerd "$d/containerd.sock"
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
}

run_ferrio() {
  # ferrio::phases: each pull's phases (telemetry::Phases) go to the log; medians printed below.
  "$ferrio_bin" --config "$work/ferrio.toml" --root "$work/root" --run-root "$work/run" \
    --log-level warn,ferrio::phases=debug serve 2> "$work/ferrio.log" &
  daemon=$!
  if ! wait_socket "$work/run/ferrio.sock" "$daemon"; then
    echo "ferrio did not start:" >&2; cat "$work/ferrio.log" >&2; return 1
  fi
  sleep 1
  echo
  echo "## $("$ferrio_bin" version | head -1)"
  bench_side ferrio "$work/run/ferrio.sock"
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
}

case ${ONLY:-} in containerd|"") run_containerd ;; esac
case ${ONLY:-} in ferrio|"") run_ferrio ;; esac
if [ -z "${ONLY:-}" ]; then
  echo
  echo "| PullImage, median ms | containerd | ferrio | containerd / ferrio |"
  echo "|---|---:|---:|---:|"
  for img in busybox big; do
    awk -v i="$img" -v c="${med[containerd/$img]}" -v f="${med[ferrio/$img]}" \
      'BEGIN { printf "| %s | %.1f | %.1f | %.2f× |\n", i, c, f, (f > 0 ? c / f : 0) }'
  done
fi
