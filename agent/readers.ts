// Where the agent reads its TUN device and its UDP data socket (dataplane/tun-device.ts
// TunReader, the UDP socket's receiver). A reader thread overlaps reading with the
// JavaScript forwarder but costs a thread hop (a wake-up, a context switch) per batch; that
// pays only where the thread has a CPU of its own. On two CPUs, shared by the agent, the
// pods and the kernel's packet work, the hops cost more than the overlap gives:
// `bench/udp-session.ts --pods --paths udp-auto,udp-loop`, 3 rounds, both fds on the event
// loop moved 7.9–9.2 Gbit/s at 1.3 CPU s/GB against 6.2–7.2 at 1.7 for the adaptive readers,
// with a lower RTT too (docs/decisions.md, "Readers on two CPUs").
import { availableParallelism } from 'node:os';
import type { TunReader } from '../dataplane/tun-device.ts';

/**
 * The configured choice: `loop` (both on the event loop), `adaptive` (on the loop while
 * idle, on reader threads under load), `thread` (always threads), or `auto`: `loop` where
 * the agent has at most two CPUs, `adaptive` elsewhere.
 */
export type ReadersSetting = 'auto' | 'loop' | 'adaptive' | 'thread';

/** The reader mode for the TUN and the UDP socket (the native 'auto' is the adaptive one). */
export function resolveReaders(setting: ReadersSetting, cpus: number = availableParallelism()): TunReader {
  switch (setting) {
    case 'loop':
      return 'loop';
    case 'thread':
      return 'thread';
    case 'adaptive':
      return 'auto';
    case 'auto':
      return cpus <= 2 ? 'loop' : 'auto';
  }
}
