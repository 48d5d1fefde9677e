#!/usr/bin/env bash
# Builds the test images from Debian's busybox-static, offline and reproducibly (fixed mtimes,
# owners and ordering), as OCI archives (plus one docker-save archive) in $OUT:
#   busybox.tar       one layer: busybox with every applet as a hard link; Cmd ["sh"]
#   busybox-uid.tar   busybox + a layer; config User "1002"
#   busybox-user.tar  busybox + a layer with www-data in /etc/passwd (and group web); config User "www-data"
#   multilayer.tar    busybox + a zstd layer + a plain-tar layer that deletes a file (whiteout)
#                     and makes a directory opaque
#   multiarch.tar     an image index: this host's platform (busybox) and a foreign one
#   busybox-docker.tar  the busybox image as a `docker save` archive
# With BIG=1 (benchmarks) only big.tar: busybox plus five 10 MiB random layers. With PAUSE=1
# (benchmarks) only pause.tar: a pod sandbox image for containerd, /bin/busybox whose entrypoint
# sleeps until SIGTERM or SIGINT and then exits 0.
# Usage: hack/build-test-images.sh [OUT]   (default: .test-images in the repository)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${FERRIO_TEST_IMAGES:-$here/../.test-images}}
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "need $BUSYBOX: apt-get install busybox-static" >&2; exit 1; }
for t in tar gzip zstd sha256sum; do command -v $t >/dev/null || { echo "need $t" >&2; exit 1; }; done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Parallel test processes may all ask for the images: build once.
exec 9>"$OUT/.lock"
flock 9
if [ -n "${BIG:-}" ]; then
  # For benchmarks only: busybox plus five 10 MiB layers of incompressible data (~52 MB).
  [ -f "$OUT/big.tar" ] && exit 0
  big=1
elif [ -n "${PAUSE:-}" ]; then
  [ -f "$OUT/pause.tar" ] && exit 0
  pause=1
elif [ -z "${FORCE:-}" ] && [ "$(cat "$OUT/.done" 2>/dev/null)" = "$(sha256sum < "$0")" ]; then
  exit 0   # built by this very script (a changed script builds them again)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case "$(uname -m)" in
  x86_64) ARCH=amd64; FOREIGN=arm64 ;;
  aarch64) ARCH=arm64; FOREIGN=amd64 ;;
  *) ARCH=$(uname -m); FOREIGN=s390x ;;
esac

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# put LAYOUT FILE -> copies FILE into the layout's blobs, prints "sha256:<hex> <size>"
put() {
  local h; h=$(sha "$2")
  mkdir -p "$1/blobs/sha256"
  cp "$2" "$1/blobs/sha256/$h"
  echo "sha256:$h $(size "$2")"
}

# layer LAYOUT DIR gzip|zstd|none -> prints "<digest> <size> <diffid> <mediatype>"
layer() {
  local layout=$1 dir=$2 comp=$3 t="$work/layer.tar" f mt
  tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
      --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$dir" -cf "$t" .
  local diff; diff="sha256:$(sha "$t")"
  case $comp in
    gzip) gzip -n -6 -c "$t" > "$t.c"; mt=application/vnd.oci.image.layer.v1.tar+gzip ;;
    zstd) zstd -q -3 -c "$t" > "$t.c"; mt=application/vnd.oci.image.layer.v1.tar+zstd ;;
    none) cp "$t" "$t.c"; mt=application/vnd.oci.image.layer.v1.tar ;;
  esac
  echo "$(put "$layout" "$t.c") $diff $mt"
}

# The busybox root filesystem.
base=$work/base
mkdir -p "$base"/{bin,etc,tmp,root,proc,sys,dev,home}
chmod 1777 "$base/tmp"
cp "$BUSYBOX" "$base/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || ln "$base/bin/busybox" "$base/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$base/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$base/etc/group"

# image NAME USER LAYERSPEC... (LAYERSPEC = "dir:compression"); writes an OCI layout to $work/NAME
# and prints the manifest descriptor fields "<digest> <size>"
image() {
  local name=$1 user=$2; shift 2
  local layout=$work/$name arch=${IMAGE_ARCH:-$ARCH}
  mkdir -p "$layout"
  local layers="" diffs="" first=1
  for spec in "$@"; do
    read -r d s diff mt < <(layer "$layout" "${spec%%:*}" "${spec##*:}")
    [ $first = 1 ] || { layers+=","; diffs+=","; }
    first=0
    layers+="{\"mediaType\":\"$mt\",\"digest\":\"$d\",\"size\":$s}"
    diffs+="\"$diff\""
  done
  printf '{"architecture":"%s","os":"linux","created":"2023-11-14T22:13:20Z","config":{"User":"%s","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$arch" "$user" "$diffs" > "$work/config.json"
  read -r cd cs < <(put "$layout" "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
    "$cd" "$cs" "$layers" > "$work/manifest.json"
  put "$layout" "$work/manifest.json"
}

# finish NAME MEDIATYPE DIGEST SIZE [PLATFORM-JSON]: index.json + oci-layout, then the archive
finish() {
  local name=$1 layout=$work/$1
  printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest","io.containerd.image.name":"localhost/ferrio-test/%s:latest"}}]}' \
    "$2" "$3" "$4" "$name" > "$layout/index.json"
  tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$OUT/$name.tar" .
  echo "built $OUT/$name.tar"
}

MT=application/vnd.oci.image.manifest.v1+json

if [ -n "${pause:-}" ]; then
  p=$work/pause-root; mkdir -p "$p/bin"
  cp "$BUSYBOX" "$p/bin/busybox"
  layout=$work/pause; mkdir -p "$layout"
  read -r d s diff mt < <(layer "$layout" "$p" gzip)
  printf '{"architecture":"%s","os":"linux","created":"2023-11-14T22:13:20Z","config":{"Entrypoint":["/bin/busybox","sh","-c","trap '"'"'exit 0'"'"' TERM INT; while :; do /bin/busybox sleep 3600 & wait; done"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$ARCH" "$diff" > "$work/config.json"
  read -r cd cs < <(put "$layout" "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s}]}' \
    "$MT" "$cd" "$cs" "$mt" "$d" "$s" > "$work/manifest.json"
  read -r md ms < <(put "$layout" "$work/manifest.json")
  finish pause $MT "$md" "$ms"
  exit 0
fi

if [ -n "${big:-}" ]; then
  specs=("$base:gzip")
  for i in 1 2 3 4 5; do
    mkdir -p "$work/big$i/data"
    head -c $((10 << 20)) /dev/urandom > "$work/big$i/data/blob$i"
    specs+=("$work/big$i:gzip")
  done
  read -r d s < <(image big "" "${specs[@]}")
  finish big $MT "$d" "$s"
  exit 0
fi

read -r d s < <(image busybox "" "$base:gzip")
finish busybox $MT "$d" "$s"

u=$work/uid; mkdir -p "$u/home/u1002"
read -r d s < <(image busybox-uid "1002" "$base:gzip" "$u:gzip")
finish busybox-uid $MT "$d" "$s"

w=$work/www; mkdir -p "$w/etc" "$w/var/www"
cp "$base/etc/passwd" "$base/etc/group" "$w/etc/"
echo 'www-data:x:33:33:www-data:/var/www:/bin/sh' >> "$w/etc/passwd"
echo 'www-data:x:33:' >> "$w/etc/group"
echo 'web:x:500:www-data' >> "$w/etc/group"   # a membership: SupplementalGroupsPolicy Merge adds it
read -r d s < <(image busybox-user "www-data" "$base:gzip" "$w:gzip")
finish busybox-user $MT "$d" "$s"

l2=$work/l2; mkdir -p "$l2/data/dir"
echo a > "$l2/data/a"; echo b > "$l2/data/b"; echo x > "$l2/data/dir/x"; echo y > "$l2/data/dir/y"
l3=$work/l3; mkdir -p "$l3/data/dir"
: > "$l3/data/.wh.a"; : > "$l3/data/dir/.wh..wh..opq"; echo z > "$l3/data/dir/z"
read -r d s < <(image multilayer "" "$base:gzip" "$l2:zstd" "$l3:none")
finish multilayer $MT "$d" "$s"

# multiarch: an index over this host's busybox manifest and a foreign-arch one.
read -r hd hs < <(image multiarch "" "$base:gzip")
read -r fd fs < <(IMAGE_ARCH=$FOREIGN image multiarch "" "$u:gzip")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"%s","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"}},{"mediaType":"%s","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"}}]}' \
  $MT "$fd" "$fs" "$FOREIGN" $MT "$hd" "$hs" "$ARCH" > "$work/index-blob.json"
read -r id is < <(put "$work/multiarch" "$work/index-blob.json")
finish multiarch application/vnd.oci.image.index.v1+json "$id" "$is"

# busybox as `docker save` writes it (legacy layout): manifest.json, <config>.json, <id>/layer.tar.
ds=$work/docker; mkdir -p "$ds/l0"
bm=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$work/busybox/index.json")
cfg=$(sed -n 's/.*"config":{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$work/busybox/blobs/sha256/$bm")
lay=$(sed -n 's/.*"layers":\[{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$work/busybox/blobs/sha256/$bm")
cp "$work/busybox/blobs/sha256/$cfg" "$ds/$cfg.json"
gzip -dc "$work/busybox/blobs/sha256/$lay" > "$ds/l0/layer.tar"
printf '[{"Config":"%s.json","RepoTags":["ferrio-test/busybox-docker:1"],"Layers":["l0/layer.tar"]}]' "$cfg" > "$ds/manifest.json"
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$ds" -cf "$OUT/busybox-docker.tar" .
echo "built $OUT/busybox-docker.tar"
sha256sum < "$0" > "$OUT/.done"
