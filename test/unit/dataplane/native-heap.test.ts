// trimNativeHeap() hands the free memory inside glibc's heaps back to the kernel: what a
// burst of C allocations left behind after it was freed (here ArrayBuffer backing stores,
// which Node takes from malloc) leaves the process's RSS.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { trimNativeHeap } from '../../../dataplane/native-addon.ts';

const rssKiB = () => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);

function collect(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (o?: { type: 'major'; execution: 'sync' }) => void;
  setFlagsFromString('--no-expose-gc');
  gc({ type: 'major', execution: 'sync' });
  gc({ type: 'major', execution: 'sync' });
}

describe('trimNativeHeap', () => {
  it('gives freed C heap memory back to the kernel', async () => {
    // 64 MiB in 16 KiB blocks (under glibc's mmap threshold: they come from the heap), every
    // fourth kept, so the free space sits between live blocks, not only at the heap's top.
    let blocks: Uint8Array[] = Array.from({ length: 4096 }, () => new Uint8Array(new ArrayBuffer(16 * 1024)).fill(1));
    blocks = blocks.filter((_, i) => i % 4 === 0);
    collect();
    await new Promise((r) => setTimeout(r, 100)); // the sweeper frees backing stores
    collect();
    const before = rssKiB();
    trimNativeHeap();
    const after = rssKiB();
    console.log(`RSS before the trim ${before} KiB, after ${after} KiB (${blocks.length} blocks still live)`);
    expect(before - after).toBeGreaterThan(16 * 1024);
  });
});
