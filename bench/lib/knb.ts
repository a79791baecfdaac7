// Our local results in the JSON shape of k8s-bench-suite's `knb -o json` (knb 1.4.x), so a
// lab run and a real-cluster run compare field by field. knb reports bandwidth in Mbit/s
// and host CPU/RAM averages from its monitor pods; the lab has no monitor pods, so the
// cpu/ram blocks carry the forwarding processes' CPU seconds per GB instead, named as such.
import type { Summary } from '../network.ts';

export interface KnbResult {
  metadata: Record<string, string>;
  data: Record<string, unknown>;
}

export function toKnbJson(s: Summary, opts: { serverNode: string; clientNode: string; mtu: number }): KnbResult {
  const side = { cpu: { 'forwarder-cpu-seconds-per-gb': s.cpuSecondsPerGB }, ram: null };
  return {
    metadata: {
      name: `edgemesh-lab-${s.scenario.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`,
      generator: 'edgemesh-cni bench',
      version: '1.4.1-compatible',
      date: new Date().toISOString().replace('T', ' ').slice(0, 19),
      'server-node': opts.serverNode,
      'client-node': opts.clientNode,
      'socket-buffer-size': 'auto',
    },
    data: {
      mtu: String(opts.mtu),
      pod2pod: {
        tcp: { bandwidth: Math.round(s.tcp1Gbps * 1000), client: side, server: side },
        udp: { bandwidth: Math.round(s.udpGbps * 1000), client: side, server: side },
      },
    },
  };
}
