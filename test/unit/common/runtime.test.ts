import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, parseConfig } from '../../../common/config.ts';

describe('runtime', () => {
  it('runs on the Node 24 the project brings, not the system Node 20', () => {
    const major = Number(process.versions.node.split('.')[0]);
    expect(major).toBe(24);
  });
});

describe('parseConfig', () => {
  const schema = z.object({ overlay: z.object({ listen: z.array(z.string()) }), mtu: z.number().int().min(1280) });

  it('returns the parsed value for valid input', () => {
    expect(parseConfig(schema, { overlay: { listen: ['/ip4/0.0.0.0/tcp/1'] }, mtu: 1400 }, 'test')).toEqual({
      overlay: { listen: ['/ip4/0.0.0.0/tcp/1'] },
      mtu: 1400,
    });
  });

  it('names every bad field with its path', () => {
    try {
      parseConfig(schema, { overlay: { listen: ['ok', 7] }, mtu: 100 }, 'agent config');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const issues = (err as ConfigError).issues;
      expect(issues.some((i) => i.startsWith('overlay.listen[1]:'))).toBe(true);
      expect(issues.some((i) => i.startsWith('mtu:'))).toBe(true);
      expect((err as Error).message).toContain('invalid agent config');
    }
  });
});
