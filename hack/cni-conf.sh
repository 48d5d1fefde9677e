#!/usr/bin/env bash
# Writes a CNI network config for tests and the demo:
#   hack/cni-conf.sh DIR SUBNET [NAME] [IPAM_DATA_DIR]
# DIR/10-NAME.conflist: bridge (+ host-local IPAM) → loopback → portmap → bandwidth, cniVersion 1.0.0.
# The bridge's name is derived from SUBNET (fr + 8 hex digits), so configs with different subnets
# never share a bridge and tests can run in parallel. ipMasq is off and no default route is
# given: pod traffic stays on this machine (pod subnets exist only on bridges made here).
# NAME defaults to ferrio-<the same hash>; IPAM_DATA_DIR to host-local's own default
# (/var/lib/cni/networks). Prints the file written.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR SUBNET [NAME] [IPAM_DATA_DIR]" >&2; exit 2; }
dir=$1 subnet=$2
[[ $subnet =~ ^[0-9a-fA-F.:]+/[0-9]+$ ]] || { echo "$0: SUBNET must be a CIDR such as 10.88.7.0/24" >&2; exit 2; }
hash=$(printf '%08x' "$(printf '%s' "$subnet" | cksum | cut -d' ' -f1)")
bridge="fr$hash"
name=${3:-ferrio-$hash}
data=${4:-}
ipam="\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"$subnet\"}]]"
[ -n "$data" ] && ipam="$ipam, \"dataDir\": \"$data\""
mkdir -p "$dir"
file="$dir/10-$name.conflist"
cat >"$file" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": { $ipam }
    },
    { "type": "loopback" },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
    { "type": "bandwidth", "capabilities": { "bandwidth": true } }
  ]
}
JSON
echo "$file"
