// One overlay node as its own process (run inside a node namespace by the overlay tests):
// the real overlay with a forwarder double that checks every frame's SHA-256 trailer (one
// packet per frame, real frame codec: the tunnel reader cuts the stream at frame headers). Commands arrive as JSON lines on stdin; replies and events leave on stdout.
import { createHash, randomBytes } from 'node:crypto';
import { connect as connectTcp } from 'node:net';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { encodeFrame, FRAME_HEADER_LEN, PACKET_HEADER_LEN } from '../../dataplane/frame-codec.ts';
import type { Packet, PeerLink } from '../../dataplane/types.ts';
import { relayAllocateDatagram, UdpRelay } from '../../dataplane/udp-relay.ts';
import { UdpDataSocket } from '../../dataplane/udp-session.ts';
import { type NodeLike, PeerDirectory } from '../../overlay/directory.ts';
import { PUNCH_PROTOCOL } from '../../overlay/hole-punch.ts';
import { JsonLineReader, sendJsonLine } from '../../overlay/json-lines.ts';
import { createOverlay, type ForwarderLike } from '../../overlay/overlay.ts';
import { loadOrCreatePunchPort } from '../../overlay/punch-port.ts';
import { generateEphemeral } from '../../overlay/session-keys.ts';
import { initiateSession } from '../../overlay/session-protocol.ts';
import { SPLICE_PROTOCOL, SpliceChannel, SpliceGrant, tokenBytes } from '../../overlay/splice-messages.ts';
import { SpliceRelay } from '../../overlay/splice-relay.ts';
import type { UdpSocketHandlers } from '../../overlay/udp-carrier.ts';
import type { PeerProcessConfig } from './overlay-peer-client.ts';

const config = JSON.parse(process.argv[2] ?? '{}') as PeerProcessConfig;
const out = (msg: object) => process.stdout.write(`${JSON.stringify(msg)}\n`);

class CheckingForwarder implements ForwarderLike {
  readonly links = new Map<string, PeerLink>();
  readonly rx = new Map<string, { frames: number; bytes: number; bad: number; packets: number }>();
  /** Packets that came over UDP sessions: each carries its own SHA-256 trailer. */
  receivePackets(node: string, packets: Packet[]): void {
    const stats = this.#stats(node);
    for (const p of packets) {
      const body = p.data.subarray(0, p.data.length - 32);
      const sum = createHash('sha256').update(body).digest();
      if (p.data.length < 33 || !sum.equals(p.data.subarray(p.data.length - 32))) stats.bad++;
      else {
        stats.packets++;
        stats.bytes += p.data.length;
      }
    }
  }
  #stats(node: string) {
    let stats = this.rx.get(node);
    if (!stats) {
      stats = { frames: 0, bytes: 0, bad: 0, packets: 0 };
      this.rx.set(node, stats);
    }
    return stats;
  }
  attachLink(node: string, link: PeerLink): void {
    this.links.set(node, link);
  }
  detachLink(node: string): void {
    this.links.delete(node);
  }
  receive(node: string, chunk: Uint8Array): void {
    const stats = this.#stats(node);
    if (config.verify === false) {
      stats.frames++;
      stats.bytes += chunk.length;
      return;
    }
    // The frame's one packet (no vnet header) carries the body and its SHA-256.
    const body = chunk.subarray(FRAME_HEADER_LEN + PACKET_HEADER_LEN, chunk.length - 32);
    const sum = createHash('sha256').update(body).digest();
    if (chunk.length < FRAME_HEADER_LEN + PACKET_HEADER_LEN + 33 || !sum.equals(chunk.subarray(chunk.length - 32))) {
      stats.bad++;
      throw new Error('FrameError: checksum mismatch');
    }
    stats.frames++;
    stats.bytes += chunk.length;
  }
}

/** `size` bytes (at least 33): random bytes followed by their SHA-256. */
function checksummed(size: number): Uint8Array {
  const body = randomBytes(Math.max(1, size - 32));
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** A frame of `size` bytes (at least 51): one checksummed packet without a vnet header. */
function makeFrame(size: number): Uint8Array {
  return encodeFrame([{ vnet: new Uint8Array(0), data: checksummed(size - FRAME_HEADER_LEN - PACKET_HEADER_LEN) }]);
}

const forwarder = new CheckingForwarder();
const directory = new PeerDirectory();
// As the agent does: the node's own port, drawn once and kept, unless the test pins one.
const punch = await loadOrCreatePunchPort(config.punchPortFile ?? `${config.keyPath}.punch-port`, {
  configured: config.punchPort,
});
// As the agent does on relay nodes: a UDP relay on its own port, bindings served by the overlay.
const udpRelay =
  config.relay && config.udpRelayPort !== undefined
    ? UdpRelay.open({ bind: '0.0.0.0', port: config.udpRelayPort })
    : undefined;
// As the agent does on relay nodes: the TCP splice of the relayed stream fallback.
const spliceRelay =
  config.relay && config.splicePort !== undefined
    ? await SpliceRelay.listen({ host: '0.0.0.0', port: config.splicePort })
    : undefined;
const overlay = await createOverlay({
  nodeName: config.name,
  site: config.site,
  keyPath: config.keyPath,
  listen: config.listen,
  ...(config.announce ? { announce: config.announce } : {}),
  punchPort: punch.port,
  relay: config.relay,
  directory,
  forwarder,
  logger: pino({ level: process.env.OVERLAY_PEER_LOG ?? 'info' }, pino.destination(2)),
  ...(config.idleTimeoutMs ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
  ...(config.autoPunch === undefined ? {} : { autoPunch: config.autoPunch }),
  ...(config.transport === undefined ? {} : { transport: config.transport }),
  ...(config.udpRekeyAfterMs === undefined ? {} : { udpRekeyAfterMs: config.udpRekeyAfterMs }),
  ...(udpRelay === undefined ? {} : { udpRelay }),
  ...(spliceRelay === undefined ? {} : { spliceRelay }),
  ...(config.udp
    ? {
        udp: {
          open: (handlers: UdpSocketHandlers) => UdpDataSocket.open({ bind: '0.0.0.0', port: punch.port, ...handlers }),
          ...(config.udpRelayPort === undefined ? {} : { allocateDatagram: relayAllocateDatagram }),
        },
      }
    : {}),
});

const pathEvents: Array<{ node: string; from: string; to: string; at: number }> = [];
overlay.events.on('path', (node, from, to) => {
  pathEvents.push({ node, from, to, at: Date.now() });
  if (pathEvents.length > 200) pathEvents.shift();
});

const flows = new Map<string, { stop: boolean; sent: number; dropped: number }>();

/** Sends through the forwarder's link, connecting on demand like onPeerNeeded does. */
async function linkFor(node: string): Promise<PeerLink> {
  const existing = forwarder.links.get(node);
  if (existing) return existing;
  await overlay.connect(node);
  const link = forwarder.links.get(node);
  if (!link) throw new Error(`no link to ${node} after connect`);
  return link;
}

async function sendFrames(node: string, count: number, size: number): Promise<{ sent: number; retries: number }> {
  let retries = 0;
  for (let i = 0; i < count; i++) {
    const frame = makeFrame(size);
    // A full queue drops (false): back off and retry so the test can count every frame.
    while (!(await linkFor(node)).send(frame)) {
      retries++;
      await new Promise((r) => setTimeout(r, 2));
    }
    if (i % 16 === 15) await new Promise((r) => setImmediate(r));
  }
  return { sent: count, retries };
}

/** Sends one reused frame as fast as the link accepts it for `seconds` (throughput). */
async function blast(
  node: string,
  seconds: number,
  size: number,
): Promise<{ bytes: number; frames: number; ms: number }> {
  const frame = makeFrame(size);
  const link = await linkFor(node);
  const started = Date.now();
  const end = started + seconds * 1000;
  let frames = 0;
  while (Date.now() < end) {
    // Fill until the bounded queue refuses, then yield so the stream can drain.
    while (link.send(frame)) frames++;
    await new Promise((r) => setTimeout(r, 1));
  }
  return { bytes: frames * frame.length, frames, ms: Date.now() - started };
}

function makePacket(size: number): Packet {
  return { vnet: new Uint8Array(10), data: checksummed(size) };
}

/** Sends `count` checksummed packets on the UDP session (the link must carry packets now). */
async function sendPackets(node: string, count: number, size: number): Promise<{ sent: number; refused: number }> {
  const link = await linkFor(node);
  if (!link.sendPackets) throw new Error(`${node}: the link does not carry packets (UDP not up)`);
  let sent = 0;
  let refused = 0;
  while (sent < count) {
    const batch = Array.from({ length: Math.min(32, count - sent) }, () => makePacket(size));
    const n = link.sendPackets(batch);
    sent += n;
    refused += batch.length - n;
    await new Promise((r) => setTimeout(r, 1));
  }
  return { sent, refused };
}

function startFlow(node: string, intervalMs: number, size: number): void {
  const flow = { stop: false, sent: 0, dropped: 0 };
  flows.set(node, flow);
  const tick = async () => {
    if (flow.stop) return;
    try {
      const link = forwarder.links.get(node) ?? (await linkFor(node));
      // Whatever carries the peer now: packets on UDP, frames on the stream tunnel.
      const ok = link.sendPackets ? link.sendPackets([makePacket(size)]) === 1 : link.send(makeFrame(size));
      if (ok) flow.sent++;
      else flow.dropped++;
    } catch {
      flow.dropped++;
    }
    setTimeout(tick, intervalMs);
  };
  void tick();
}

/**
 * Plays a hostile leader: sends a punch offer with an address of the test's choosing over the
 * existing connection to `node` (relayed or direct) and returns the raw answer.
 */
async function rawPunchOffer(node: string, ip: string, port: number): Promise<unknown> {
  const peer = directory.get(node);
  if (peer === undefined) throw new Error(`${node} is not in the directory`);
  const conn = overlay.host
    .getConnections()
    .find((c) => c.remotePeer.toString() === peer.peerId && c.status === 'open');
  if (conn === undefined) throw new Error(`no connection to ${node}`);
  const stream = await conn.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true });
  const reader = new JsonLineReader(stream, 4096, (reason, message) => new Error(`${reason}: ${message}`));
  sendJsonLine(stream, { v: 1, ip, port });
  try {
    return await reader.next(15_000);
  } finally {
    void stream.close().catch(() => {});
  }
}

/** Plays a hostile member: a session hello offering endpoints of the test's choosing. */
async function rawSessionHello(node: string, endpoints: Array<{ ip: string; port: number }>): Promise<unknown> {
  const peer = directory.get(node);
  if (peer === undefined) throw new Error(`${node} is not in the directory`);
  const conn = overlay.host
    .getConnections()
    .find((c) => c.remotePeer.toString() === peer.peerId && c.status === 'open');
  if (conn === undefined) throw new Error(`no connection to ${node}`);
  return initiateSession(conn, {
    ephemeral: generateEphemeral().publicKey,
    index: 1 + Math.floor(Math.random() * 0xfffffff0),
    cipher: 'aes-256-gcm',
    endpoints,
  });
}

/** Plays a hostile member: asks the relay for a splice token and keeps it instead of joining. */
async function rawSpliceToken(relayNode: string, node: string): Promise<{ token: string; port: number }> {
  const relay = directory.get(relayNode);
  const peer = directory.get(node);
  const find = () =>
    overlay.host.getConnections().find((c) => c.remotePeer.toString() === relay?.peerId && c.status === 'open');
  if (find() === undefined) await overlay.connect(relayNode);
  const conn = find();
  if (conn === undefined) throw new Error(`no connection to ${relayNode}`);
  const channel = new SpliceChannel(await conn.newStream(SPLICE_PROTOCOL));
  await channel.write({ v: 1, op: 'splice', peer: peer?.peerId ?? node });
  const grant = await channel.read(SpliceGrant);
  void channel.close();
  return grant;
}

/** Opens TCP to a splice port and presents a token; resolves how the relay treated it. */
function presentSpliceToken(ip: string, port: number, token: string): Promise<{ closedMs: number | undefined }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connectTcp({ host: ip, port }, () => socket.write(tokenBytes(token)));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closedMs: undefined });
    }, 3000);
    socket.on('error', () => {});
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ closedMs: Date.now() - started });
    });
  });
}

async function handle(msg: Record<string, unknown>): Promise<unknown> {
  switch (msg.cmd) {
    case 'directory':
      return (msg.nodes as NodeLike[]).map((n) => directory.upsertFromNode(n)).map((r) => (r.ok ? r.change : r.reason));
    case 'remove':
      return directory.remove(msg.node as string);
    case 'connect':
      await overlay.connect(msg.node as string);
      return overlay.pathOf(msg.node as string);
    case 'send':
      return sendFrames(msg.node as string, msg.count as number, msg.size as number);
    case 'send-packets':
      return sendPackets(msg.node as string, msg.count as number, (msg.size as number) ?? 1200);
    case 'blast':
      return blast(msg.node as string, msg.seconds as number, (msg.size as number) ?? 65_536);
    case 'punch':
      return overlay.punchNow(msg.node as string);
    case 'session-hello':
      return rawSessionHello(msg.node as string, msg.endpoints as Array<{ ip: string; port: number }>);
    case 'splice-token':
      return rawSpliceToken(msg.relay as string, msg.node as string);
    case 'splice-present':
      return presentSpliceToken(msg.ip as string, msg.port as number, msg.token as string);
    case 'punch-offer':
      return rawPunchOffer(msg.node as string, msg.ip as string, msg.port as number);
    case 'flow-start':
      startFlow(msg.node as string, (msg.intervalMs as number) ?? 10, (msg.size as number) ?? 1200);
      return true;
    case 'flow-stop': {
      const flow = flows.get(msg.node as string);
      if (flow) flow.stop = true;
      return flow;
    }
    case 'stats':
      return {
        rx: Object.fromEntries(forwarder.rx),
        status: overlay.status(),
        natKind: overlay.natKind(),
        reservations: overlay.reservations(),
        counters: overlay.counters(),
        ...(udpRelay === undefined || udpRelay.closed ? {} : { udpRelay: udpRelay.stats() }),
        connections: overlay.host.getConnections().map((c) => ({
          peer: c.remotePeer.toString(),
          remoteAddr: c.remoteAddr.toString(),
          status: c.status,
        })),
      };
    case 'path':
      return overlay.pathOf(msg.node as string);
    case 'path-events':
      return pathEvents;
    case 'caps':
      return overlay.capsOf(msg.node as string) ?? null;
    case 'stop':
      await overlay.stop();
      udpRelay?.close();
      await spliceRelay?.close();
      setTimeout(() => process.exit(0), 50);
      return true;
    default:
      throw new Error(`unknown command ${String(msg.cmd)}`);
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let msg: Record<string, unknown>;
  try {
    msg = JSON.parse(line);
  } catch {
    out({ error: 'bad json' });
    return;
  }
  handle(msg).then(
    (result) => out({ id: msg.id, ok: true, result }),
    (err: Error) => out({ id: msg.id, ok: false, error: err.message }),
  );
});
process.stdin.on('end', () => {
  void overlay.stop().finally(() => process.exit(0));
});
out({ event: 'ready', peerId: overlay.peerId, multiaddrs: overlay.multiaddrs(), punchPort: punch.port });
