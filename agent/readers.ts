// Where the agent reads its TUN device and its UDP data socket (dataplane/tun-device.ts
// TunReader, the UDP socket's receiver). A reader thread overlaps reading with the
// JavaScript forwarder but costs a thread hop (a wake-up, a context switch) per batch; that
// pays only where the thread has a CPU of its own. On two CPUs, shared by the agent, the
// pods and the kernel's packet work, the hops cost more than the overlap gives: in the lab,
// through the agents as deployed (`bash bench/lab-readers.sh`, two runs), TCP one stream
// 4.8–7.3 against 2.8–5.1 Gbit/s with the adaptive readers (UDP loss and ping mixed); the
// data-plane engine alone agrees (docs/decisions.md, "Readers on two CPUs").
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
