// Waits for every lab node's agent to report the NAT kind its site should give it (from its
// reflection: overlay/nat-kind.ts), and reads a node's birthday punching counters. Used by
// the NAT e2e tests and bench/nat-trials.ts before they time first packets: the punching
// roles come from the kinds both sides offer in the session handshake.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Lab } from './lab.ts';

/** Resolves once each node's kind matches `expected[site]`; throws with what they said after `timeoutMs`. */
export async function waitForNatKinds(lab: Lab, expected: Record<string, string>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const kinds = Object.fromEntries(
      await Promise.all(
        lab.nodes.map(async (n) => [n.name, (await lab.agentStatus(n.name).catch(() => undefined))?.natKind] as const),
      ),
    );
    if (lab.nodes.every((n) => expected[n.site] === undefined || kinds[n.name] === expected[n.site])) return;
    if (Date.now() > deadline)
      throw new Error(`NAT kinds not as expected after ${timeoutMs} ms: ${JSON.stringify(kinds)}`);
    await sleep(500);
  }
}

/** A node's edgemesh_udp_birthday_total by event. */
export async function birthdayMetrics(lab: Lab, node: string): Promise<Record<string, number>> {
  const text = await lab.exec(node, ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^edgemesh_udp_birthday_total\{event="([^"]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}
