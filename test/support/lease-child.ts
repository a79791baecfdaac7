// The process the crash test SIGKILLs: allocates leases `<round>-pod-<i>` a few at a time and
// prints one line per *acknowledged* mutation (the promise resolved, so the record is
// fdatasync'ed). Every 4th lease is released again after its allocation was acknowledged,
// so acknowledged releases are checked too. A small compaction threshold makes kills land
// during snapshot writes as well.
//   node test/support/lease-child.ts <dir> <round> <count> <blocks-json>
import { LeaseStore } from '../../ipam/lease-store.ts';
import type { NodeBlock } from '../../ipam/types.ts';

const [dir, round, countText, blocksJson] = process.argv.slice(2);
if (!dir || !round || !countText || !blocksJson) {
  process.stderr.write('usage: lease-child.ts <dir> <round> <count> <blocks-json>\n');
  process.exit(2);
}
const count = Number(countText);
const blocks = JSON.parse(blocksJson) as NodeBlock[];
const store = await LeaseStore.open({ dir, blocks, compactAfter: 64 });
process.stdout.write('READY\n');

const CONCURRENCY = 8;
let next = 0;
async function worker(): Promise<void> {
  while (next < count) {
    const i = next++;
    const id = `${round}-pod-${i}`;
    const lease = await store.allocate(id, 'eth0');
    process.stdout.write(`ALLOC ${JSON.stringify(lease)}\n`);
    if (i % 4 === 3) {
      await store.release(id, 'eth0');
      process.stdout.write(`RELEASE ${id} eth0\n`);
    }
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker));
await store.close();
process.stdout.write('DONE\n');
