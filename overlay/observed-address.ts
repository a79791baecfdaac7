// "From which address do you see peer X?" — asked of a relay. A punch responder uses it to
// check that the address a leader offers is the leader's own public address (the one the
// relay sees its reservation connection come from), so a member cannot aim our punch at a
// third party. Only members get answers (the gater admits no one else), only about members,
// and only about peers the answering node holds a direct connection to.
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ipOf, isCircuit } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import { JsonLineReader, sendJsonLine } from './json-lines.ts';

export const OBSERVED_PROTOCOL = '/edgemesh/observed/1.0.0';
const MAX_MESSAGE = 512;

export class ObservedAddressError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'ObservedAddressError';
    this.reason = reason;
  }
}

const fail = (reason: string, message: string) => new ObservedAddressError(reason, message);

/** Serves the question on this node (relays; harmless anywhere). Returns a counter of refusals. */
export function serveObservedAddress(host: Host, directory: PeerDirectory): { refused: number; answered: number } {
  const counters = { refused: 0, answered: 0 };
  void host.handle(
    OBSERVED_PROTOCOL,
    async (stream: Stream) => {
      const reader = new JsonLineReader(stream, MAX_MESSAGE, fail);
      try {
        const msg = (await reader.next(5000)) as { v?: unknown; peer?: unknown } | null;
        if (msg === null || typeof msg !== 'object' || msg.v !== 1 || typeof msg.peer !== 'string') {
          throw fail('bad-message', 'malformed observed-address query');
        }
        if (!directory.has(msg.peer)) throw fail('unknown-peer', 'not a cluster member');
        const conn = host
          .getConnections(peerIdFromString(msg.peer))
          .find((c) => c.status === 'open' && !isCircuit(c.remoteAddr));
        const ip = conn === undefined ? undefined : ipOf(conn.remoteAddr);
        if (ip === undefined) throw fail('not-connected', 'no direct connection to that peer');
        sendJsonLine(stream, { v: 1, ip });
        counters.answered++;
        await stream.close();
      } catch (err) {
        counters.refused++;
        try {
          if (stream.status === 'open') {
            sendJsonLine(stream, { v: 1, error: (err as Error).message.slice(0, 200) });
            await stream.close();
          }
        } catch {
          stream.abort(err as Error);
        }
      }
    },
    { maxInboundStreams: 16 },
  );
  return counters;
}

/** Asks the node at the other end of `conn` from which IP it sees `peer`. */
export async function queryObservedAddress(conn: Connection, peer: string, timeoutMs = 5000): Promise<string> {
  const stream = await withDeadline(timeoutMs, 'observed-address stream', (signal) =>
    conn.newStream(OBSERVED_PROTOCOL, { signal }),
  );
  try {
    const reader = new JsonLineReader(stream, MAX_MESSAGE, fail);
    sendJsonLine(stream, { v: 1, peer });
    const answer = (await reader.next(timeoutMs)) as { v?: unknown; ip?: unknown; error?: unknown } | null;
    if (answer === null || typeof answer !== 'object' || answer.v !== 1) {
      throw fail('bad-message', 'malformed observed-address answer');
    }
    if (typeof answer.error === 'string') throw fail('refused', `observed-address refused: ${answer.error}`);
    if (typeof answer.ip !== 'string') throw fail('bad-message', 'observed-address answer has no ip');
    return answer.ip;
  } finally {
    void stream.close().catch(() => stream.abort(new Error('closing')));
  }
}

/** The relay's peer ID inside a circuit multiaddr (…/p2p/<relay>/p2p-circuit/p2p/<target>). */
export function relayOfCircuit(ma: { getComponents(): Array<{ name: string; value?: string }> }): string | undefined {
  const parts = ma.getComponents();
  const circuit = parts.findIndex((c) => c.name === 'p2p-circuit');
  if (circuit <= 0) return undefined;
  const before = parts[circuit - 1];
  return before?.name === 'p2p' ? before.value : undefined;
}
