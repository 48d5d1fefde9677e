#!/usr/bin/env bash
# A local OCI registry for tests and the demo: Debian's docker-registry (distribution) on
# 127.0.0.1, optionally with htpasswd basic auth, and the test images pushed with skopeo.
#
#   hack/registry.sh start DIR PORT [--htpasswd USER:PASS] [--watch PID] [--tls CERTS]
#       serve DIR/storage on 127.0.0.1:PORT; with --watch the registry stops and DIR is removed
#       when PID exits; with --tls over HTTPS only, with CERTS/server.{crt,key}, and clients
#       must present a certificate signed by CERTS/ca.crt
#   hack/registry.sh push PORT [--creds USER:PASS] [--images DIR] [--tls CERTS]
#       (--tls: to localhost:PORT over HTTPS, with CERTS/ca.crt, client.cert and client.key)
#       push the test images (hack/build-test-images.sh builds them) as
#       ferrio-test/{busybox:{latest,1.35,1},busybox-uid,busybox-user,multilayer,multiarch}:latest
#       and library/busybox:{latest,1.35} (what docker.io/library/busybox maps to through a mirror)
#   hack/registry.sh stop DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}; shift || true

case $cmd in
start)
  dir=$1 port=$2; shift 2
  htpasswd="" watch="" tls=""
  while [ $# -gt 0 ]; do
    case $1 in
      --htpasswd) htpasswd=$2; shift 2 ;;
      --watch) watch=$2; shift 2 ;;
      --tls) tls=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  mkdir -p "$dir/storage"
  auth=""
  if [ -n "$htpasswd" ]; then
    htpasswd -Bbn "${htpasswd%%:*}" "${htpasswd#*:}" > "$dir/htpasswd"
    auth="auth:
  htpasswd:
    realm: ferrio-test
    path: $dir/htpasswd"
  fi
  cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$( [ -n "$tls" ] && printf '  tls:\n    certificate: %s\n    key: %s\n    clientcas:\n      - %s\n' "$tls/server.crt" "$tls/server.key" "$tls/ca.crt" )
$auth
YML
  docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
  rpid=$!
  echo $rpid > "$dir/registry.pid"
  if [ -n "$watch" ]; then
    # When the watched process (a test binary) is gone, stop the registry and remove DIR: a
    # registry shared by a whole test binary is never dropped, so nothing else would.
    ( while kill -0 "$watch" 2>/dev/null && kill -0 $rpid 2>/dev/null; do sleep 0.5; done
      kill $rpid 2>/dev/null || true
      if ! kill -0 "$watch" 2>/dev/null; then
        for _ in $(seq 20); do kill -0 $rpid 2>/dev/null || break; sleep 0.1; done
        rm -rf "$dir"
      fi ) >/dev/null 2>&1 &
  fi
  probe=(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")
  [ -n "$tls" ] && probe=(curl -s -o /dev/null -w '%{http_code}' --cacert "$tls/ca.crt" \
    --cert "$tls/client.cert" --key "$tls/client.key" "https://localhost:$port/v2/")
  for _ in $(seq 100); do
    code=$("${probe[@]}" || true)
    case $code in 200|401) exit 0 ;; esac
    kill -0 $rpid 2>/dev/null || { cat "$dir/registry.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "registry on 127.0.0.1:$port did not come up" >&2; cat "$dir/registry.log" >&2; exit 1
  ;;
push)
  port=$1; shift
  creds="" images=${FERRIO_TEST_IMAGES:-$here/../.test-images} tls=""
  while [ $# -gt 0 ]; do
    case $1 in
      --creds) creds=$2; shift 2 ;;
      --images) images=$2; shift 2 ;;
      --tls) tls=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  "$here/build-test-images.sh" "$images" >/dev/null
  if [ -n "$tls" ]; then
    # skopeo reads every *.key of its cert dir as a client key: give it only the client's.
    clientcerts=$(mktemp -d)
    trap 'rm -rf "$clientcerts"' EXIT
    command cp "$tls/ca.crt" "$tls/client.cert" "$tls/client.key" "$clientcerts/"
  fi
  cp() { # cp ARCHIVE NAME [--all]
    local extra=(--dest-tls-verify=false) host=127.0.0.1:$port
    [ -n "$creds" ] && extra+=(--dest-creds "$creds")
    [ -n "$tls" ] && extra=(--dest-cert-dir "$clientcerts") host=localhost:$port
    skopeo --insecure-policy copy -q "${extra[@]}" ${3:-} \
      "oci-archive:$images/$1" "docker://$host/$2" >/dev/null
  }
  for t in latest 1.35 1; do cp busybox.tar ferrio-test/busybox:$t; done
  for t in latest 1.35; do cp busybox.tar library/busybox:$t; done
  cp busybox-uid.tar ferrio-test/busybox-uid:latest
  cp busybox-user.tar ferrio-test/busybox-user:latest
  cp multilayer.tar ferrio-test/multilayer:latest
  cp multiarch.tar ferrio-test/multiarch:latest --all
  ;;
stop)
  dir=$1
  [ -f "$dir/registry.pid" ] && kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
  ;;
*)
  sed -n '2,14p' "$0"; exit 2 ;;
esac
