// BirthdayPunch on a simulated clock against a model of the two NATs it is for: the hard
// side's NAT gives every (socket, destination) a random public port and lets in only what
// comes from that destination to that port; the easy side's keeps its node's port and lets
// in only what comes from an address and port it sent to. Shown: the hard side's socket
// hears the easy side in (nearly) every attempt, sockets that heard nothing are closed, the
// winner stays while the path uses it, probes stay within the budget and the rate bound,
// and a pair without a role sends nothing.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { BIRTHDAY_TUNING } from '../../../overlay/birthday-plan.ts';
import { BirthdayPunch, type BirthdaySockets } from '../../../overlay/birthday-punch.ts';
import type { UdpEndpoint } from '../../../overlay/udp-types.ts';

const log = pino({ level: 'silent' });
const H_PUB = '203.0.113.101';
const E_PUB = { ip: '203.0.113.102', port: 24_000 };

class Sockets implements BirthdaySockets {
  readonly open = new Set<number>();
  next = 1;
  addSocket() {
    const id = this.next++;
    this.open.add(id);
    return { id, port: 40_000 + id };
  }
  closeSocket(id: number) {
    return this.open.delete(id);
  }
}

/** The pair of NATs and the two sides' BirthdayPunch instances. */
function bed() {
  const hardSockets = new Sockets();
  const easySockets = new Sockets();
  /** Hard NAT: socket → public port (towards E_PUB only, the one destination here). */
  const mapping = new Map<number, number>();
  const byPort = new Map<number, number>();
  /** Easy NAT: hard-side ports it sent to (answers from them get in). */
  const opened = new Set<number>();
  const sent: number[] = [];
  let now = 0;
  let heardAt: number | undefined;
  const hard: BirthdayPunch = new BirthdayPunch(
    {
      sockets: hardSockets,
      log,
      probe: (_node, to, _nonce) => {
        sent.push(now);
        const id = to.socket!;
        if (!hardSockets.open.has(id)) return false;
        let port = mapping.get(id);
        if (port === undefined) {
          do port = 1024 + Math.floor(Math.random() * 64_512);
          while (byPort.has(port));
          mapping.set(id, port);
          byPort.set(port, id);
        }
        // Reaches the easy side only through an opening; its answer then comes back in.
        if (opened.has(port)) deliver(id);
        return true;
      },
    },
    0,
  );
  const easy = new BirthdayPunch(
    {
      sockets: easySockets,
      log,
      probe: (_node, to: UdpEndpoint) => {
        sent.push(now);
        expect(to.ip).toBe(H_PUB);
        expect(to.socket).toBeUndefined();
        opened.add(to.port);
        const id = byPort.get(to.port);
        if (id !== undefined && hardSockets.open.has(id)) deliver(id);
        return true;
      },
    },
    0,
  );
  function deliver(id: number) {
    heardAt ??= now;
    hard.heard('e', id, now);
    easy.answered('h');
  }
  return {
    hard,
    easy,
    hardSockets,
    sent,
    opened,
    heardAt: () => heardAt,
    run(untilMs: number) {
      for (; now <= untilMs; now += 100) {
        hard.tick(now);
        easy.tick(now);
      }
    },
    get now() {
      return now;
    },
  };
}

const hardCandidates = [{ ip: '192.168.20.2', port: 24_000 }, E_PUB];
const easyCandidates = [
  { ip: '192.168.10.2', port: 21_000 },
  { ip: H_PUB, port: 21_000 },
];

describe('BirthdayPunch between an endpoint-dependent and a port-preserving NAT', () => {
  it('gets through in at least 19 of 20 first attempts, within the spray time', () => {
    let hits = 0;
    const times: number[] = [];
    for (let trial = 0; trial < 20; trial++) {
      const b = bed();
      b.hard.start('e', 'hard', hardCandidates, 0);
      b.easy.start('h', 'easy', easyCandidates, 0);
      b.run(BIRTHDAY_TUNING.attemptMs - 100);
      if (b.heardAt() !== undefined) {
        hits++;
        times.push(b.heardAt()!);
      }
      expect(b.hard.counters.attemptsHard).toBe(1);
      expect(b.easy.counters.attemptsEasy).toBe(1);
    }
    console.log(`simulated first attempts: ${hits}/20 hit, at ${times.sort((a, b) => a - b).join(' ')} ms`);
    expect(hits).toBeGreaterThanOrEqual(19);
    expect(Math.max(...times)).toBeLessThanOrEqual(BIRTHDAY_TUNING.sprayDelayMs + 2100);
  });

  it('keeps the socket that won while the path uses it and closes every other one', () => {
    const b = bed();
    b.hard.start('e', 'hard', hardCandidates, 0);
    b.easy.start('h', 'easy', easyCandidates, 0);
    b.run(200);
    expect(b.hardSockets.open.size).toBe(256);
    // Run until the easy side gets through.
    while (b.heardAt() === undefined && b.now < 4000) b.run(b.now);
    expect(b.heardAt()).toBeDefined();
    expect(b.hard.counters.hits).toBe(1);
    b.run(BIRTHDAY_TUNING.attemptMs + 200);
    // The attempt ended: only sockets that heard the peer are still open.
    expect(b.hardSockets.open.size).toBeGreaterThanOrEqual(1);
    expect(b.hardSockets.open.size).toBeLessThanOrEqual(2);
    const kept = [...b.hardSockets.open][0]!;
    b.hard.adopted('e', { ...E_PUB, socket: kept });
    expect([...b.hardSockets.open]).toEqual([kept]);
    // No further attempts once the path is up.
    b.run(120_000);
    expect(b.hard.counters.attemptsHard).toBe(1);
    expect([...b.hardSockets.open]).toEqual([kept]);
    // A new session while the path is down starts a new series (the easy NAT's openings
    // have expired meanwhile); another one right after it lets the series go on; one that
    // takes the role away cuts the running attempt short: superseded, not unanswered.
    b.opened.clear();
    b.hard.start('e', 'hard', hardCandidates, b.now);
    b.run(b.now + 100);
    expect(b.hard.counters.attemptsHard).toBe(2);
    b.hard.start('e', 'hard', hardCandidates, b.now);
    b.run(b.now + 100);
    expect(b.hard.counters.attemptsHard).toBe(2);
    expect(b.hard.counters.superseded).toBe(0);
    b.hard.start('e', undefined, hardCandidates, b.now);
    expect(b.hard.counters.superseded).toBe(1);
    expect(b.hard.counters.unanswered).toBe(0);
    // The peer's sessions are gone: the winner too.
    b.hard.lost('e');
    expect(b.hardSockets.open.size).toBe(0);
  });

  it('without a hit: retries with backoff a bounded number of times, within the budget and the rate bound', () => {
    const b = bed();
    // The easy side never sprays (no role): the hard side's attempts all fail.
    b.hard.start('e', 'hard', hardCandidates, 0);
    b.run(300_000);
    const t = BIRTHDAY_TUNING;
    expect(b.hard.counters.attemptsHard).toBe(t.maxAttempts);
    expect(b.hard.counters.unanswered).toBe(t.maxAttempts);
    expect(b.hard.counters.hits).toBe(0);
    expect(b.hardSockets.open.size).toBe(0);
    expect(b.hard.counters.probesSent).toBe(t.maxAttempts * t.hardSockets * t.hardRounds);
    expect(b.sent.length).toBe(b.hard.counters.probesSent);
    // No second holds more than the rate bound (plus the burst the bucket starts with).
    const perSecond = new Map<number, number>();
    for (const at of b.sent) perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(t.ratePerSecond + t.burst);
  });

  it('the easy side sprays at most its budget per attempt, at most ratePerSecond', () => {
    const b = bed();
    b.easy.start('h', 'easy', easyCandidates, 0);
    b.run(BIRTHDAY_TUNING.attemptMs + 100);
    expect(b.easy.counters.probesSent).toBe(BIRTHDAY_TUNING.sprayBudget);
    expect(b.opened.size).toBe(BIRTHDAY_TUNING.sprayBudget);
    const perSecond = new Map<number, number>();
    for (const at of b.sent) perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(BIRTHDAY_TUNING.ratePerSecond + 100);
  });

  it('no role (both sides endpoint-dependent, or nothing known): no sockets, no probes', () => {
    const b = bed();
    b.hard.start('e', undefined, hardCandidates, 0);
    b.easy.start('h', undefined, easyCandidates, 0);
    b.hard.noteBothHard();
    b.run(60_000);
    expect(b.sent).toEqual([]);
    expect(b.hardSockets.open.size).toBe(0);
    expect(b.hard.counters.bothHard).toBe(1);
    expect(b.hard.counters.attemptsHard + b.easy.counters.attemptsEasy).toBe(0);
  });

  it('a peer without a public candidate gets no attempt', () => {
    const b = bed();
    b.hard.start('e', 'hard', [{ ip: '192.168.20.2', port: 24_000 }], 0);
    b.easy.start('h', 'easy', [{ ip: '192.168.10.2', port: 21_000 }], 0);
    b.run(60_000);
    expect(b.sent).toEqual([]);
    expect(b.hardSockets.open.size).toBe(0);
  });
});

describe('BirthdayPunch with many hard-role peers', () => {
  it('runs at most maxConcurrentHard attempts (and their sockets) at once; the others wait their turn', () => {
    const sockets = new Sockets();
    let maxOpen = 0;
    const punch = new BirthdayPunch(
      {
        sockets,
        log,
        probe: () => {
          maxOpen = Math.max(maxOpen, sockets.open.size);
          return true;
        },
      },
      0,
    );
    for (let i = 0; i < 6; i++) punch.start(`e${i}`, 'hard', hardCandidates, 0);
    for (let now = 0; now <= 120_000; now += 100) {
      punch.tick(now);
      maxOpen = Math.max(maxOpen, sockets.open.size);
    }
    expect(maxOpen).toBe(BIRTHDAY_TUNING.maxConcurrentHard * BIRTHDAY_TUNING.hardSockets);
    // Three rounds of 256 at once exceed the bucket's burst: some waited, each counted once.
    expect(punch.counters.rateLimited).toBeGreaterThan(0);
    expect(punch.counters.rateLimited).toBeLessThanOrEqual(punch.counters.probesSent);
    // Every peer still got its first attempt.
    expect(punch.counters.attemptsHard).toBeGreaterThanOrEqual(6);
    expect(sockets.open.size).toBe(0);
  });
});
