#!/usr/bin/env bash
# One-time set-up of a fresh Linux machine (Debian/Ubuntu, root): the system tools the
# dataplane, the lab and the tests use, then the npm dependencies (which bring Node 24
# and build the native addon and the CNI client). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root (apt-get, and later network namespaces): run it with sudo" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(iproute2 iptables iperf3 tcpdump util-linux procps kmod psmisc iputils-ping
  containernetworking-plugins nebula wireguard-go build-essential libssl-dev)
# kubectl: Debian's kubernetes-client, unless another package already provides it.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

npm ci --no-audit --no-fund
