// The lab's armed ping (lab/armed-ping.ts), in a namespace this file creates: nothing is
// sent before fire(), replies come after it, stop() ends the process, and a ping that
// cannot start says why.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';
import { ArmedPing } from '../../../lab/armed-ping.ts';

const ns = `${runPrefix('emap')}n`;

/** Echo requests the namespace's loopback has received so far. */
async function echoRequests(): Promise<number> {
  const out = await run('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp']);
  const lines = out.split('\n').filter((l) => l.startsWith('Icmp:'));
  const [head, values] = [lines[0]!.split(/\s+/), lines[1]!.split(/\s+/)];
  return Number(values[head.indexOf('InEchos')]);
}

beforeAll(async () => {
  await createNetns(ns);
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
});

afterAll(async () => {
  await deleteNetns(ns);
});

describe('ArmedPing', () => {
  it('sends nothing until fired, then pings until stopped', async () => {
    const ping = await ArmedPing.arm(ns, '127.0.0.1', 0.2);
    try {
      await sleep(500);
      expect(await echoRequests()).toBe(0);
      expect(ping.firstReplyAt).toBeUndefined();
      const firedAt = Date.now();
      ping.fire();
      for (let i = 0; i < 50 && ping.firstReplyAt === undefined; i++) await sleep(20);
      expect(ping.firstReplyAt).toBeGreaterThanOrEqual(firedAt);
      await sleep(700);
      expect(await echoRequests()).toBeGreaterThanOrEqual(3);
    } finally {
      await ping.stop();
    }
    const after = await echoRequests();
    await sleep(500);
    expect(await echoRequests()).toBe(after);
  });

  it('rejects with the reason when the ping cannot start', async () => {
    await expect(ArmedPing.arm(`${ns}-absent`, '127.0.0.1')).rejects.toThrow(/exited .* before it was fired/);
  });
});
