import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PeerId } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { beforeAll, describe, expect, it } from 'vitest';
import { PeerDirectory, peerAnnotations } from '../../../overlay/directory.ts';
import { createMembershipGater } from '../../../overlay/gater.ts';

describe('membership gater', () => {
  let member: PeerId;
  let other: PeerId;
  let stranger: PeerId;
  beforeAll(async () => {
    [member, other, stranger] = (await Promise.all(
      [1, 2, 3].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
    )) as [PeerId, PeerId, PeerId];
  });

  it('admits directory peers and refuses strangers on every hook, counting refusals', () => {
    const dir = new PeerDirectory();
    for (const [i, p] of [member, other].entries()) {
      dir.upsertFromNode({
        name: `n${i}`,
        annotations: peerAnnotations({
          peerId: p.toString(),
          multiaddrs: [],
          podCidrs: [],
          site: 's',
          nodeIp: '10.0.0.1',
        }),
      });
    }
    const counters = { denied: {} as Record<string, number> };
    const g = createMembershipGater(dir, counters);
    const conn = {} as never;
    expect(g.denyDialPeer!(member)).toBe(false);
    expect(g.denyDialPeer!(stranger)).toBe(true);
    expect(g.denyInboundEncryptedConnection!(member, conn)).toBe(false);
    expect(g.denyInboundEncryptedConnection!(stranger, conn)).toBe(true);
    expect(g.denyOutboundEncryptedConnection!(stranger, conn)).toBe(true);
    expect(g.denyInboundRelayReservation!(member)).toBe(false);
    expect(g.denyInboundRelayReservation!(stranger)).toBe(true);
    expect(g.denyOutboundRelayedConnection!(member, other)).toBe(false);
    expect(g.denyOutboundRelayedConnection!(member, stranger)).toBe(true);
    expect(g.denyOutboundRelayedConnection!(stranger, member)).toBe(true);
    expect(g.denyInboundRelayedConnection!(member, stranger)).toBe(true);
    expect(g.denyInboundRelayedConnection!(member, other)).toBe(false);
    expect(counters.denied).toEqual({
      dial: 1,
      inbound: 1,
      outbound: 1,
      reservation: 1,
      'relay-hop': 2,
      'relayed-inbound': 1,
    });
    // Membership is live: a node leaving the directory loses access at once.
    dir.remove('n0');
    expect(g.denyDialPeer!(member)).toBe(true);
  });

  it('refuses a member a connection beyond the per-peer cap, counted, and admits it again below it', () => {
    const dir = new PeerDirectory();
    dir.upsertFromNode({
      name: 'n0',
      annotations: peerAnnotations({
        peerId: member.toString(),
        multiaddrs: [],
        podCidrs: [],
        site: 's',
        nodeIp: '10.0.0.1',
      }),
    });
    const counters = { denied: {} as Record<string, number> };
    let open = 7;
    const g = createMembershipGater(dir, counters, { connectionsTo: () => open, maxConnectionsPerPeer: 8 });
    const conn = {} as never;
    expect(g.denyInboundUpgradedConnection!(member, conn)).toBe(false);
    open = 8;
    expect(g.denyInboundUpgradedConnection!(member, conn)).toBe(true);
    expect(counters.denied['per-peer-connections']).toBe(1);
    open = 2;
    expect(g.denyInboundUpgradedConnection!(member, conn)).toBe(false);
  });
});
