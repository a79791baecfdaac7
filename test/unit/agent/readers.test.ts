// Where the agent reads its TUN and UDP socket: on the event loop on two CPUs or fewer,
// adaptive (threads under load) on more, or as configured.
import { describe, expect, it } from 'vitest';
import { resolveReaders } from '../../../agent/readers.ts';

describe('resolveReaders', () => {
  it('reads on the loop with two CPUs or fewer, adaptively with more', () => {
    expect(resolveReaders('auto', 1)).toBe('loop');
    expect(resolveReaders('auto', 2)).toBe('loop');
    expect(resolveReaders('auto', 3)).toBe('auto');
    expect(resolveReaders('auto', 16)).toBe('auto');
  });

  it('takes an explicit setting as it is, whatever the CPUs', () => {
    for (const cpus of [1, 2, 8]) {
      expect(resolveReaders('loop', cpus)).toBe('loop');
      expect(resolveReaders('thread', cpus)).toBe('thread');
      expect(resolveReaders('adaptive', cpus)).toBe('auto');
    }
  });
});
