#!/usr/bin/env bash
# Pull + unpack time from a local registry (median of N, each pull from an empty store) for the
# busybox test image and a ~52 MB six-layer image, and the daemon's RSS idle before and after.
# Usage: hack/bench-pull.sh [N]   (default 5). Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
hack/setup.sh
ferrio_bin=$(hack/build-release.sh)
hack/build-test-images.sh >/dev/null
BIG=1 hack/build-test-images.sh >/dev/null
work=$(mktemp -d /tmp/ferrio-bench.XXXXXX)
port=$(hack/free-port.sh)
hack/registry.sh start "$work/registry" "$port" --watch $$
hack/registry.sh push "$port"
skopeo --insecure-policy copy -q --dest-tls-verify=false oci-archive:.test-images/big.tar "docker://127.0.0.1:$port/ferrio-test/big:latest" >/dev/null
printf '[image]\ninsecure_registries = ["127.0.0.1"]\n' > "$work/ferrio.toml"
ferrio=("$ferrio_bin" --config "$work/ferrio.toml" --root "$work/root" --run-root "$work/run")
# ferrio::phases: each pull's phases (telemetry::Phases) go to the log; medians printed below.
"${ferrio[@]}" --log-level warn,ferrio::phases=debug serve 2> "$work/ferrio.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; hack/registry.sh stop "$work/registry"; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$work/run/ferrio.sock" ] && break; sleep 0.05; done
sleep 1
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$daemon/status; }
echo "daemon RSS idle at start: $(rss)"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# The median (ms) of each phase of the last $2 successful $1 operations in the daemon's log
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
phase_lines=()
printf '\n%-10s %8s %10s %10s %10s\n' image size min_ms median_ms max_ms
for img in busybox big; do
  ref="127.0.0.1:$port/ferrio-test/$img:latest"
  times=()
  for _ in $(seq "$N"); do
    t=$("${ferrio[@]}" image pull "$ref" | awk -F'\t' '{print $3}' | awk '{print $1}')
    times+=("$t")
    size=$("${ferrio[@]}" image ls | awk -v r="127.0.0.1:$port/ferrio-test/$img" '$1==r {print $4}')
    "${ferrio[@]}" image rm "$ref" >/dev/null
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  printf '%-10s %8s %10s %10s %10s\n' "$img" "$size" "$(echo "$sorted" | head -1)" "$(printf '%s\n' "${times[@]}" | median)" "$(echo "$sorted" | tail -1)"
  layers=$(grep -c "op=\"PullLayer\" outcome=ok" "$work/ferrio.log" || true)
  phase_lines+=("$img: $(pull_phases PullImage "$N")")
  phase_lines+=("$img, per layer: $(pull_phases PullLayer "$((layers - ${seen_layers:-0}))")")
  seen_layers=$layers
done
echo
echo "where the time goes (the daemon's phases; median ms, back to back):"
printf '  %s\n' "${phase_lines[@]}"
sleep 1
echo
echo "daemon RSS idle after the pulls: $(rss)"
