// Ad-hoc: runs the NAT cluster, connects A→B, prints the peers' logs (debugging aid).
import { createOverlayCluster } from './overlay-cluster.ts';

const c = await createOverlayCluster({ randomFullyB: process.argv[2] === 'random' });
try {
  console.log('connect', await c.a.request('connect', { node: 'b' }).catch((e) => e.message));
  console.log('send', await c.a.request('send', { node: 'b', count: 50, size: 16000 }).catch((e) => e.message));
  await new Promise((r) => setTimeout(r, Number(process.env.WAIT_MS ?? 12000)));
  console.log('send2', await c.a.request('send', { node: 'b', count: 50, size: 16000 }).catch((e) => e.message));
  await new Promise((r) => setTimeout(r, 2000));
  console.log('A', JSON.stringify(await c.a.request('stats'), null, 1));
  console.log('B', JSON.stringify(await c.b.request('stats'), null, 1));
} finally {
  await c.destroy();
  for (const [n, p] of [
    ['relay', c.relay],
    ['a', c.a],
    ['b', c.b],
  ] as const) {
    console.log(`---- ${n}`);
    console.log(
      p.stderr
        .split('\n')
        .map((l) => {
          try {
            const j = JSON.parse(l);
            return `${j.time} ${j.msg} ${JSON.stringify({ ...j, level: undefined, time: undefined, pid: undefined, hostname: undefined, msg: undefined })}`;
          } catch {
            return l;
          }
        })
        .join('\n'),
    );
  }
}
