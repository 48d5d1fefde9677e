#!/usr/bin/env bash
# The main job, end to end on this machine: build ferrio, start a local registry with the test
# images, start the daemon on a scratch root, pull an image over the CRI, import one from an
# archive, list them, then run a pod from the local image with libcontainer inside ferrio and with
# runc, and print what the container wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
ferrio_bin=$(hack/build-release.sh) # one static executable
hack/build-test-images.sh >/dev/null

work=$(mktemp -d /tmp/ferrio-demo.XXXXXX)
port=$(hack/free-port.sh)
hack/registry.sh start "$work/registry" "$port" --watch $$
hack/registry.sh push "$port"
# A CNI network of the demo's own: bridge + host-local + loopback + portmap on a private subnet.
conf=$(hack/cni-conf.sh "$work/net.d" 10.88.213.0/24 ferrio-demo "$work/ipam")
bridge=$(sed -n 's/.*"bridge": "\(fr[0-9a-f]*\)".*/\1/p' "$conf")
cat > "$work/ferrio.toml" <<TOML
[network]
network_dir = "$work/net.d"
cache_dir = "$work/cni-cache"
[image]
insecure_registries = ["127.0.0.1:$port"]
TOML
ferrio=("$ferrio_bin" --config "$work/ferrio.toml" --root "$work/root" --run-root "$work/run")
"${ferrio[@]}" serve 2> "$work/ferrio.log" &
daemon=$!
cleanup() { kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; hack/registry.sh stop "$work/registry"; ip link del "$bridge" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$work/run/ferrio.sock" ] && break; sleep 0.05; done

echo "== ferrio version"; "${ferrio[@]}" version
echo "== pull 127.0.0.1:$port/ferrio-test/busybox:1.35 over the CRI"
"${ferrio[@]}" image pull "127.0.0.1:$port/ferrio-test/busybox:1.35"
echo "== import a docker-save archive"
"${ferrio[@]}" image import .test-images/busybox-docker.tar
echo "== images"
"${ferrio[@]}" image ls
echo "== a pod from the local image, run by libcontainer inside ferrio"
"${ferrio[@]}" run "127.0.0.1:$port/ferrio-test/busybox:1.35" sh -c 'echo "hello from $(hostname), pid $$, as $(id -un)"; ip -o -4 addr show eth0; uname -a'
echo "== the same with runc as the runtime handler"
"${ferrio[@]}" run --runtime runc "127.0.0.1:$port/ferrio-test/busybox:1.35" sh -c 'echo "hello via runc from $(hostname)"'
echo "== daemon log"
sed 's/^/    /' "$work/ferrio.log"
