#!/usr/bin/env bash
# Runs k8s-bench-suite's knb pod-to-pod between an edge node and a cloud node.
# Usage: bench/knb/run-knb.sh <client-node> <server-node> [duration-seconds]
# knb must be on PATH or in $KNB (fetch it yourself: see bench/knb/README.md).
set -euo pipefail
client=${1:?client (edge) node name}
server=${2:?server (cloud) node name}
duration=${3:-30}
knb=${KNB:-$(command -v knb || true)}
[ -x "$knb" ] || { echo "knb not found: put it on PATH or set KNB=/path/to/knb (see bench/knb/README.md)" >&2; exit 1; }
out="$(dirname "$0")/results/$(date -u +%Y-%m-%d)-${client}-${server}.json"
mkdir -p "$(dirname "$out")"
"$knb" -v -cn "$client" -sn "$server" -ot idle,p2p -d "$duration" -o json -f "$out"
echo "knb result: $out"
