// The forwarder: the loop between the TUN and the peers' tunnel streams.
//
// Outbound: a TUN batch → parse → LPM(dst) → group per peer → one frame, one link.send()
// per peer per batch. Inbound: a peer's stream bytes → frame decoder → policy (src inside
// that peer's pod CIDRs, dst inside ours) → one tun.write() (the TUN segments what it
// cannot offload). A UDP session link (PeerLink.sendPackets) takes the packets of a batch as
// they are instead of a frame, after a path MTU check that answers too-big DF packets with
// ICMP into the TUN; its opened batches come back through receivePackets() to the same
// policy. Nothing waits without bound: a peer whose link is not up yet gets a few
// frames held (maxQueuedFramesPerPeer, maxHeldBytes in all, maxHoldMs), everything else that cannot go is dropped and
// counted by reason, like a NIC queue.

import { parseCidr } from '../common/cidr.ts';
import { type Logger, logger } from '../common/log.ts';
import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FRAME_HEADER_LEN,
  FrameDecoder,
  FrameError,
  PACKET_HEADER_LEN,
} from './frame-codec.ts';
import { parsePacket } from './packet.ts';
import { RouteTable } from './route-table.ts';
import { MAX_SUPER_PACKET_BYTES, toPlainPackets } from './segmentation.ts';
import { type Packet, type PacketIO, type PeerLink, VNET_HDR_LEN } from './types.ts';
import { fragmentIpv4, mustNotFragment, packetTooBig, RateLimit, wireSize } from './udp-mtu.ts';
import { isGso, needsChecksum } from './vnet-header.ts';

/** Where a forwarded packet went: to a peer (tx) or from a peer into the TUN (rx). */
export type CaptureDirection = 'tx' | 'rx';

/** Receives a view of every forwarded packet (pcap capture); must copy what it keeps. */
export interface CaptureSink {
  offer(packet: Packet, meta: { peer: string; direction: CaptureDirection }): void;
}

export interface ForwarderOptions {
  tun: PacketIO;
  /** This node's pod CIDRs: inbound packets must be addressed inside them. */
  localCidrs: string[];
  /** Frames held for a peer whose link is not attached yet (default 16); more are dropped. */
  maxQueuedFramesPerPeer?: number;
  /** Bytes held for all link-less peers together (default 16 MiB): many peers cannot add up to a lot. */
  maxHeldBytes?: number;
  /** Held frames older than this when the link comes are dropped, not sent (default 3 s). */
  maxHoldMs?: number;
  /** Largest frame sent or accepted (default 4 MiB); a batch is split to stay below it. */
  maxFrameBytes?: number;
  /**
   * Asks the overlay to connect to a peer that has traffic but no link (at most once a
   * second per peer). The overlay may also subscribe later with Forwarder.onPeerNeeded().
   */
  onPeerNeeded?: (node: string) => void;
  /** Tunnel MTU of packet links (PeerLink.sendPackets) that do not state their own mtu. */
  tunnelMtu?: number;
  /** ICMP Fragmentation Needed / Packet Too Big messages written into the TUN per second, at most (default 100). */
  icmpPerSecond?: number;
  capture?: CaptureSink;
  logger?: Logger;
}

export interface PeerCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  drops: number;
}

export interface ForwarderStats {
  peers: Record<string, PeerCounters>;
  drops: Record<string, number>;
  /** ICMP Fragmentation Needed / Packet Too Big messages written back into the TUN. */
  icmpTooBig: number;
  /** IPv4 packets (DF clear) fragmented to fit a packet link's MTU. */
  fragmented: number;
  /** Peer → pod CIDRs refused because they overlap another node's. */
  refusedCidrs: Record<string, string[]>;
}

interface PeerState {
  readonly node: string;
  cidrs: string[];
  link: PeerLink | undefined;
  decoder: FrameDecoder;
  /** Frames (and their packet counts) waiting for a link. */
  pending: { frame: Uint8Array; packets: number; bytes: number; at: number }[];
  lastNeededAt: number;
  counters: PeerCounters;
}

const PEER_NEEDED_INTERVAL_MS = 1000;

export class Forwarder {
  private readonly tun: PacketIO;
  private readonly maxQueuedFrames: number;
  private readonly maxHeldBytes: number;
  private readonly maxHoldMs: number;
  /** Frame bytes currently held across all peers. */
  private heldBytes = 0;
  private readonly maxFrameBytes: number;
  private peerNeeded: ((node: string) => void) | undefined;
  private readonly log: Logger;
  private readonly peers = new Map<string, PeerState>();
  /** Pod CIDR → peer: outbound next hop, and inbound source check. */
  private readonly routes = new RouteTable<PeerState>();
  private local = new RouteTable<true>();
  private readonly captures = new Set<CaptureSink>();
  private readonly drops: Record<string, number> = {};
  private readonly tunnelMtu: number | undefined;
  private readonly icmpLimit: RateLimit;
  private icmpTooBig = 0;
  private fragmented = 0;
  /** Per peer, the CIDRs its last setPeer asked for and did not get (overlaps). */
  private readonly refused = new Map<string, string[]>();

  constructor(opts: ForwarderOptions) {
    this.tun = opts.tun;
    this.maxQueuedFrames = opts.maxQueuedFramesPerPeer ?? 16;
    this.maxHeldBytes = opts.maxHeldBytes ?? 16 * 1024 * 1024;
    this.maxHoldMs = opts.maxHoldMs ?? 3000;
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.peerNeeded = opts.onPeerNeeded;
    this.tunnelMtu = opts.tunnelMtu;
    this.icmpLimit = new RateLimit(opts.icmpPerSecond ?? 100);
    this.log = opts.logger ?? logger('forwarder');
    if (opts.capture) this.captures.add(opts.capture);
    this.setLocalCidrs(opts.localCidrs);
    this.tun.onBatch((batch) => this.forwardOutbound(batch));
  }

  /** Replaces this node's pod CIDRs (inbound destinations allowed). Throws CidrError on a bad CIDR. */
  setLocalCidrs(cidrs: string[]): void {
    const table = new RouteTable<true>();
    for (const c of cidrs) table.insert(c, true);
    this.local = table;
  }

  /**
   * Adds a peer or replaces its pod CIDRs. All CIDRs are parsed before anything changes
   * (CidrError on a bad one). A CIDR that shares any address with another peer's CIDR or
   * with this node's own is refused, whoever asked first: neither the last writer nor a
   * longer prefix inside someone else's block may take traffic over. Returns the refused
   * CIDRs (logged, and listed in stats().refusedCidrs until the peer is set again). The
   * agent hands it only CIDRs it has already checked the same way (agent/peer-routes.ts):
   * here the check is the guard that holds whoever the caller is.
   */
  setPeer(node: string, podCidrs: string[]): string[] {
    const canonical = [...new Set(podCidrs.map((c) => parseCidr(c).text))];
    const peer = this.peerState(node);
    this.unrouteCidrs(peer);
    const refused: string[] = [];
    for (const cidr of canonical) {
      const others = this.routes.overlapping(cidr).filter((o) => o !== peer);
      const local = this.local.overlapping(cidr).length > 0;
      if (others.length > 0 || local) {
        refused.push(cidr);
        const holders = [...new Set(others.map((o) => o.node)), ...(local ? ['this node'] : [])];
        this.log.warn({ cidr, node, overlaps: holders }, 'pod CIDR overlaps another node: refused');
        continue;
      }
      this.routes.insert(cidr, peer);
      peer.cidrs.push(cidr);
    }
    if (refused.length > 0) this.refused.set(node, refused);
    else this.refused.delete(node);
    return refused;
  }

  /** Forgets a peer: its routes, its link and anything held for it. */
  removePeer(node: string): void {
    const peer = this.peers.get(node);
    if (!peer) return;
    this.unrouteCidrs(peer);
    this.dropPending(peer, 'peer-removed');
    this.peers.delete(node);
    this.refused.delete(node);
  }

  /** Who hears of a peer that has traffic but no link (replaces the constructor's onPeerNeeded). */
  onPeerNeeded(handler: (node: string) => void): void {
    this.peerNeeded = handler;
  }

  /**
   * The peer's link is up: frames held for it go now, in order. A link may come before the
   * peer's pod CIDRs (setPeer) do: it is kept, and carries nothing until they are routed.
   */
  attachLink(node: string, link: PeerLink): void {
    const peer = this.peerState(node);
    peer.link = link;
    const held = peer.pending;
    peer.pending = [];
    const now = performance.now();
    for (const f of held) {
      this.heldBytes -= f.frame.length;
      // Stale frames would only confuse the flows (their senders have retransmitted by now).
      if (now - f.at > this.maxHoldMs) this.countPeer(peer, 'no-link', f.packets);
      else if (link.sendPackets) this.sendHeldToPacketLink(peer, link, f.frame, f.packets);
      else this.sendFrame(peer, f.frame, f.packets, f.bytes);
    }
  }

  /** The peer's stream is gone: later traffic asks for a new one; a half-received frame is discarded. */
  detachLink(node: string): void {
    const peer = this.peers.get(node);
    if (!peer) return;
    peer.link = undefined;
    this.resetReceiver(peer);
  }

  addCapture(capture: CaptureSink): void {
    this.captures.add(capture);
  }

  removeCapture(capture: CaptureSink): void {
    this.captures.delete(capture);
  }

  /**
   * Bytes from `node`'s tunnel stream. Throws FrameError (after counting it) when the stream
   * is not valid frame data: the caller must reset that stream.
   */
  receive(node: string, chunk: Uint8Array): void {
    const peer = this.peers.get(node);
    if (!peer) {
      this.count('unknown-peer', 1);
      return;
    }
    let packets: Packet[];
    try {
      packets = peer.decoder.push(chunk);
    } catch (err) {
      this.count('bad-frame', 1);
      peer.counters.drops++;
      this.resetReceiver(peer);
      if (err instanceof FrameError) this.log.warn({ node, err: err.message }, 'bad frame from peer: stream reset');
      throw err;
    }
    if (packets.length > 0) this.forwardInbound(peer, packets);
  }

  /**
   * Opened packets from `node`'s UDP session: the same policy as receive() (src inside that
   * peer's pod CIDRs, dst inside ours, drops counted), then one TUN write.
   */
  receivePackets(node: string, packets: Packet[]): void {
    const peer = this.peers.get(node);
    if (!peer) {
      this.count('unknown-peer', packets.length);
      return;
    }
    if (packets.length > 0) this.forwardInbound(peer, packets);
  }

  /** One peer's counters as they stand (no copy: read them now, do not keep them); undefined for an unknown peer. */
  countersOf(node: string): Readonly<PeerCounters> | undefined {
    return this.peers.get(node)?.counters;
  }

  stats(): ForwarderStats {
    const peers: Record<string, PeerCounters> = {};
    for (const [node, p] of this.peers) peers[node] = { ...p.counters };
    return {
      peers,
      drops: { ...this.drops },
      icmpTooBig: this.icmpTooBig,
      fragmented: this.fragmented,
      refusedCidrs: Object.fromEntries(this.refused),
    };
  }

  private forwardOutbound(batch: Packet[]): void {
    const groups = new Map<PeerState, Packet[]>();
    for (const p of batch) {
      const h = parsePacket(p.data, { gso: isGso(p.vnet) });
      if (!h.ok) {
        this.count(`malformed-${h.reason}`, 1);
        continue;
      }
      const peer = h.version === 4 ? this.routes.lookupV4(h.dst4) : this.routes.lookupV6(h.dstBytes);
      if (!peer) {
        this.count('no-route', 1);
        continue;
      }
      const group = groups.get(peer);
      if (group) group.push(p);
      else groups.set(peer, [p]);
    }
    for (const [peer, packets] of groups) this.sendPackets(peer, packets);
  }

  /** Frames `packets` (split only if they exceed maxFrameBytes) and sends or holds them. */
  private sendPackets(peer: PeerState, packets: Packet[]): void {
    const link = peer.link;
    if (link?.sendPackets) {
      this.sendToPacketLink(peer, link, packets);
      return;
    }
    let start = 0;
    while (start < packets.length) {
      let end = start;
      let bytes = 0;
      let size = FRAME_HEADER_LEN;
      while (end < packets.length) {
        const p = packets[end]!;
        const add = PACKET_HEADER_LEN + p.vnet.length + p.data.length;
        if (end > start && size + add > this.maxFrameBytes) break;
        size += add;
        bytes += p.data.length;
        end++;
      }
      const slice = packets.slice(start, end);
      if (this.captures.size > 0) for (const p of slice) this.capture(p, peer, 'tx');
      this.sendFrame(peer, encodeFrame(slice), slice.length, bytes);
      start = end;
    }
  }

  private sendFrame(peer: PeerState, frame: Uint8Array, packets: number, bytes: number): void {
    if (peer.link) {
      if (peer.link.send(frame)) {
        peer.counters.txPackets += packets;
        peer.counters.txBytes += bytes;
      } else {
        this.countPeer(peer, 'link-full', packets);
      }
      return;
    }
    const now = performance.now();
    if (this.peerNeeded && now - peer.lastNeededAt >= PEER_NEEDED_INTERVAL_MS) {
      peer.lastNeededAt = now;
      try {
        this.peerNeeded(peer.node);
      } catch (err) {
        this.log.error({ node: peer.node, err: String(err) }, 'onPeerNeeded failed');
      }
    }
    if (peer.pending.length < this.maxQueuedFrames && this.heldBytes + frame.length <= this.maxHeldBytes) {
      peer.pending.push({ frame, packets, bytes, at: now });
      this.heldBytes += frame.length;
    } else {
      this.countPeer(peer, 'no-link', packets);
    }
  }

  /** A UDP session link: path MTU check, capture, one sendPackets() call for the batch. */
  private sendToPacketLink(peer: PeerState, link: PeerLink, packets: Packet[]): void {
    const mtu = link.mtu ?? this.tunnelMtu;
    let batch = packets;
    if (mtu !== undefined) {
      let fits: Packet[] | undefined;
      for (let i = 0; i < packets.length; i++) {
        const p = packets[i]!;
        if (wireSize(p) <= mtu) {
          fits?.push(p);
          continue;
        }
        fits ??= packets.slice(0, i);
        const fragments = this.tooBig(peer, p, mtu);
        if (fragments) for (const f of fragments) fits.push(f);
      }
      if (fits) batch = fits;
    }
    if (batch.length === 0) return;
    if (this.captures.size > 0) for (const p of batch) this.capture(p, peer, 'tx');
    let accepted = 0;
    try {
      accepted = link.sendPackets!(batch);
    } catch (err) {
      this.log.error({ node: peer.node, err: String(err) }, 'packet link send failed');
    }
    for (let i = 0; i < accepted && i < batch.length; i++) peer.counters.txBytes += batch[i]!.data.length;
    peer.counters.txPackets += accepted;
    if (accepted < batch.length) this.countPeer(peer, 'link-full', batch.length - accepted);
  }

  /**
   * A packet too big for the tunnel: IPv4 without DF is fragmented (its fragments are
   * returned); anything else is dropped and its sender told with ICMP.
   */
  private tooBig(peer: PeerState, p: Packet, mtu: number): Packet[] | undefined {
    if (!mustNotFragment(p.data)) {
      const plain =
        isGso(p.vnet) || needsChecksum(p.vnet) ? toPlainPackets({ vnet: p.vnet, data: p.data.slice() }) : undefined;
      if (plain && !plain.ok) {
        this.countPeer(peer, plain.reason, 1);
        return undefined;
      }
      const fragments: Packet[] = [];
      for (const whole of plain ? plain.packets : [p]) {
        const pieces = whole.data.length <= mtu ? [whole.data] : fragmentIpv4(whole.data, mtu);
        if (!pieces) {
          this.countPeer(peer, 'too-big-unfragmentable', 1);
          return undefined;
        }
        for (const data of pieces) fragments.push({ vnet: new Uint8Array(VNET_HDR_LEN), data });
      }
      this.fragmented++;
      return fragments;
    }
    this.countPeer(peer, 'too-big', 1);
    if (!this.icmpLimit.take()) {
      this.count('icmp-rate-limited', 1);
      return undefined;
    }
    const icmp = packetTooBig(p.data, mtu);
    if (!icmp) return undefined;
    try {
      if (this.tun.write([{ vnet: new Uint8Array(VNET_HDR_LEN), data: icmp }]) === 1) this.icmpTooBig++;
    } catch (err) {
      this.log.error({ err: String(err) }, 'TUN write of an ICMP error failed');
    }
    return undefined;
  }

  /** A frame held while the peer had no link, now going to a packet link. */
  private sendHeldToPacketLink(peer: PeerState, link: PeerLink, frame: Uint8Array, packets: number): void {
    let decoded: Packet[];
    try {
      decoded = new FrameDecoder({ maxFrameBytes: this.maxFrameBytes }).push(frame);
    } catch {
      this.countPeer(peer, 'no-link', packets); // cannot happen: we encoded it
      return;
    }
    this.sendToPacketLink(peer, link, decoded);
  }

  private forwardInbound(peer: PeerState, packets: Packet[]): void {
    const out: Packet[] = [];
    for (const received of packets) {
      let p = received;
      if (p.vnet.length !== VNET_HDR_LEN) {
        if (p.vnet.length !== 0) {
          this.countPeer(peer, 'bad-vnet-header', 1);
          continue;
        }
        p = { vnet: new Uint8Array(VNET_HDR_LEN), data: p.data }; // a peer without offloads
      }
      // No IP datagram is larger, super-packets included: neither our TUN nor segmentation takes one.
      if (p.data.length > MAX_SUPER_PACKET_BYTES) {
        this.countPeer(peer, 'too-large', 1);
        continue;
      }
      const h = parsePacket(p.data, { gso: isGso(p.vnet) });
      if (!h.ok) {
        this.countPeer(peer, `malformed-${h.reason}`, 1);
        continue;
      }
      const owner = h.version === 4 ? this.routes.lookupV4(h.src4) : this.routes.lookupV6(h.srcBytes);
      if (owner !== peer) {
        this.countPeer(peer, 'spoofed-source', 1);
        continue;
      }
      const local = h.version === 4 ? this.local.lookupV4(h.dst4) : this.local.lookupV6(h.dstBytes);
      if (!local) {
        this.countPeer(peer, 'not-local-destination', 1);
        continue;
      }
      peer.counters.rxPackets++;
      peer.counters.rxBytes += p.data.length;
      if (this.captures.size > 0) this.capture(p, peer, 'rx');
      out.push(p);
    }
    if (out.length === 0) return;
    let written = 0;
    try {
      written = this.tun.write(out);
    } catch (err) {
      this.log.error({ err: String(err) }, 'TUN write failed');
    }
    if (written < out.length) this.countPeer(peer, 'tun-write', out.length - written);
  }

  private capture(packet: Packet, peer: PeerState, direction: CaptureDirection): void {
    for (const c of this.captures) {
      try {
        c.offer(packet, { peer: peer.node, direction });
      } catch (err) {
        // A broken capture must not stop forwarding: detach it.
        this.captures.delete(c);
        this.log.error({ err: String(err) }, 'capture failed and was removed');
      }
    }
  }

  private peerState(node: string): PeerState {
    let peer = this.peers.get(node);
    if (!peer) {
      peer = {
        node,
        cidrs: [],
        link: undefined,
        decoder: new FrameDecoder({ maxFrameBytes: this.maxFrameBytes }),
        pending: [],
        lastNeededAt: Number.NEGATIVE_INFINITY,
        counters: { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, drops: 0 },
      };
      this.peers.set(node, peer);
    }
    return peer;
  }

  private resetReceiver(peer: PeerState): void {
    peer.decoder = new FrameDecoder({ maxFrameBytes: this.maxFrameBytes });
  }

  private unrouteCidrs(peer: PeerState): void {
    for (const cidr of peer.cidrs) if (this.routes.get(cidr) === peer) this.routes.remove(cidr);
    peer.cidrs = [];
  }

  private dropPending(peer: PeerState, reason: string): void {
    const n = peer.pending.reduce((sum, f) => sum + f.packets, 0);
    for (const f of peer.pending) this.heldBytes -= f.frame.length;
    peer.pending = [];
    if (n > 0) this.countPeer(peer, reason, n);
  }

  private countPeer(peer: PeerState, reason: string, n: number): void {
    peer.counters.drops += n;
    this.count(reason, n);
  }

  private count(reason: string, n: number): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + n;
  }
}
