#!/bin/bash
# Where the agents read their TUN and UDP socket (tun.readers), compared through the agents
# as deployed: one default lab (`npm start`'s), then one with EDGEMESH_TUN_READERS=adaptive,
# each measured edge-a-1's pod → cloud-2's pod across the NAT three times: iperf3 TCP one
# stream, iperf3 UDP at 500 Mbit/s (loss), 100 pings. Root; about 3 minutes.
#   bash bench/lab-readers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lab() { node_modules/.bin/node bin/edgemesh-cni.js lab "$@"; }
measure() {
  echo "== lab with readers: $1"
  lab up > /dev/null
  trap 'lab down > /dev/null 2>&1' EXIT
  local ip
  ip=$(lab status | awk '$1=="cloud-2-p1"{print $4}')
  for i in 1 2 3; do
    lab exec cloud-2-p1 -- iperf3 -s -1 -D > /dev/null; sleep 0.5
    echo "$1 test $i: TCP $(lab exec edge-a-1-p1 -- iperf3 -c "$ip" -t 5 | awk '/receiver/{print $7, $8}')"
    lab exec cloud-2-p1 -- iperf3 -s -1 -D > /dev/null; sleep 0.5
    echo "$1 test $i: UDP lost $(lab exec edge-a-1-p1 -- iperf3 -c "$ip" -u -b 500M -l 1200 -t 5 | awk '/receiver/{print $(NF-1)}')"
    echo "$1 test $i: $(lab exec edge-a-1-p1 -- ping -c 100 -i 0.01 -q "$ip" | grep rtt)"
  done
  lab down > /dev/null
  trap - EXIT
}
EDGEMESH_TUN_READERS= measure "default (auto)"
EDGEMESH_TUN_READERS=adaptive measure adaptive
