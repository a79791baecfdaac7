// The relay's TCP splice on loopback: pairing by one-time token, refusal of everything else
// (counted), the limits, and the bound on what the relay buffers while receivers stall.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { SPLICE_HIGH_WATER_MARK, SpliceError, SpliceRelay } from '../../../overlay/splice-relay.ts';

const relays: SpliceRelay[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(relays.splice(0).map((r) => r.close()));
});

async function relay(limits: Parameters<typeof SpliceRelay.listen>[0]['limits'] = {}): Promise<SpliceRelay> {
  const r = await SpliceRelay.listen({ host: '127.0.0.1', port: 0, limits });
  relays.push(r);
  return r;
}

async function join(r: SpliceRelay, token: Uint8Array | Buffer): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port: r.port });
  sockets.push(s);
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(token);
  return s;
}

const closed = (s: net.Socket) => (s.destroyed ? Promise.resolve() : once(s, 'close').then(() => {}));
const until = async (what: string, ok: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('SpliceRelay', () => {
  it('pairs the two sockets of an issued pair and pipes bytes both ways, 1:1', async () => {
    const r = await relay();
    const [ta, tb] = r.issue({ peer: 'A', ip: '127.0.0.1' }, { peer: 'B', ip: '127.0.0.1' });
    const a = await join(r, ta);
    // Bytes right behind the token are the peer's (the noise handshake): they are kept.
    a.write('hello from a');
    const b = await join(r, tb);
    const [fromA] = await once(b, 'data');
    expect(String(fromA)).toBe('hello from a');
    b.write('and from b');
    const [fromB] = await once(a, 'data');
    expect(String(fromB)).toBe('and from b');
    expect(r.active).toBe(1);
    expect(r.pending).toBe(0);
    expect(r.counters.spliced).toBe(1);
    a.destroy();
    await closed(b);
    await until('splice ended', () => r.active === 0);
    expect(r.splicesOf('A')).toBe(0);
    expect(r.bytes).toBeGreaterThanOrEqual(22);
  });

  it('closes and counts an unknown token, a reused one, a socket from the wrong address and a silent one', async () => {
    const r = await relay({ helloMs: 200 });
    const forged = await join(r, Buffer.alloc(32, 1));
    await closed(forged);
    const [ta] = r.issue({ peer: 'A', ip: '127.0.0.1' }, { peer: 'B', ip: '127.0.0.1' });
    await join(r, ta);
    const reuse = await join(r, ta);
    await closed(reuse);
    expect(r.counters.refused['bad-token']).toBe(2);
    // A pair bound to another address: the token is refused from here, and the pair ends.
    const [tc, td] = r.issue({ peer: 'C', ip: '192.0.2.7' }, { peer: 'D', ip: '127.0.0.1' });
    const wrong = await join(r, tc);
    await closed(wrong);
    expect(r.counters.refused['address-mismatch']).toBe(1);
    expect(r.splicesOf('C')).toBe(0);
    const late = await join(r, td);
    await closed(late);
    expect(r.counters.refused['bad-token']).toBe(3);
    // Nothing, or half a token, within helloMs.
    const silent = net.connect({ host: '127.0.0.1', port: r.port });
    sockets.push(silent);
    silent.on('error', () => {});
    await once(silent, 'connect');
    silent.write(Buffer.alloc(10));
    await closed(silent);
    expect(r.counters.refused['hello-timeout']).toBe(1);
  });

  it('never pairs tokens of two different pairs; unjoined pairs expire', async () => {
    const r = await relay({ pendingMs: 300 });
    const [t1a] = r.issue({ peer: 'A', ip: '127.0.0.1' }, { peer: 'B', ip: '127.0.0.1' });
    const [, t2b] = r.issue({ peer: 'C', ip: '127.0.0.1' }, { peer: 'D', ip: '127.0.0.1' });
    const a = await join(r, t1a);
    const d = await join(r, t2b);
    a.write('for B only');
    let leaked = false;
    d.on('data', () => {
      leaked = true;
    });
    await Promise.all([closed(a), closed(d)]);
    expect(leaked).toBe(false);
    expect(r.counters.spliced).toBe(0);
    expect(r.counters.expired).toBe(2);
    expect(r.pending).toBe(0);
  });

  it('refuses new pairs at the per-member, pending and total limits (counted)', async () => {
    const r = await relay({ perMember: 2, pending: 3, total: 4 });
    r.issue({ peer: 'A' }, { peer: 'B' });
    r.issue({ peer: 'A' }, { peer: 'C' });
    const reason = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return (err as SpliceError).reason;
      }
      return 'issued';
    };
    expect(reason(() => r.issue({ peer: 'A' }, { peer: 'D' }))).toBe('member-full');
    expect(reason(() => r.issue({ peer: 'D' }, { peer: 'A' }))).toBe('member-full');
    r.issue({ peer: 'E' }, { peer: 'F' });
    expect(reason(() => r.issue({ peer: 'G' }, { peer: 'H' }))).toBe('pending-full');
    expect(r.counters.limited).toEqual({ 'member-full': 2, 'pending-full': 1 });
    expect(r.dropMember('A')).toBe(2);
    expect(r.pending).toBe(1);
    const [revoked] = r.issue({ peer: 'G' }, { peer: 'H' });
    expect(r.revoke(revoked)).toBe(true);
    expect(r.revoke(revoked)).toBe(false);
    expect(r.splicesOf('G')).toBe(0);
    expect(r.pending).toBe(1);
    const small = await relay({ total: 1 });
    small.issue({ peer: 'A' }, { peer: 'B' });
    expect(reason(() => small.issue({ peer: 'C' }, { peer: 'D' }))).toBe('relay-full');
    expect(SpliceError).toBeDefined();
  });

  it('buffers at most a few high water marks per splice while the receivers stall', async () => {
    const r = await relay();
    const n = Number(process.env.SPLICE_TEST_PAIRS ?? 16);
    const senders: net.Socket[] = [];
    const receivers: net.Socket[] = [];
    for (let i = 0; i < n; i++) {
      const [ta, tb] = r.issue({ peer: `s${i}` }, { peer: `r${i}` });
      senders.push(await join(r, ta));
      const rx = await join(r, tb);
      rx.pause(); // a receiver that reads nothing
      receivers.push(rx);
    }
    await until('all spliced', () => r.active === n);
    // Each sender writes as long as its own socket takes data (its kernel buffer included).
    const chunk = Buffer.alloc(64 * 1024, 0xab);
    let stalled = 0;
    await Promise.all(
      senders.map(
        (s) =>
          new Promise<void>((resolve) => {
            const pump = () => {
              for (let k = 0; k < 64; k++) if (!s.write(chunk)) return void setTimeout(check, 300);
              setImmediate(pump);
            };
            // No drain within 300 ms: the whole path to the stalled receiver is full.
            const check = () => {
              if (s.writableLength > 0) {
                stalled++;
                resolve();
              } else pump();
            };
            pump();
          }),
      ),
    );
    expect(stalled).toBe(n);
    const buffered = r.bufferedBytes();
    const perSplice = buffered / n;
    console.log(
      `splice relay: ${n} stalled splices, ${(r.bytes / 1e6).toFixed(1)} MB piped, ` +
        `${(buffered / 1024).toFixed(0)} KiB buffered in user space (${(perSplice / 1024).toFixed(0)} KiB per splice)`,
    );
    // Per splice: the stalled direction's write buffer (about one high water mark plus a
    // chunk) and the paused read side's buffer (one high water mark).
    expect(perSplice).toBeLessThanOrEqual(4 * SPLICE_HIGH_WATER_MARK);
  });
});
