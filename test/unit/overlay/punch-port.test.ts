import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  loadOrCreatePunchPort,
  PunchPortError,
  portIsFree,
  RANDOM_PORT_MAX,
  RANDOM_PORT_MIN,
} from '../../../overlay/punch-port.ts';

describe('punch port', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'em-punchport-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('draws a random port below the ephemeral range at first start and keeps it (0600)', async () => {
    const path = join(dir, 'state', 'punch-port');
    const first = await loadOrCreatePunchPort(path);
    expect(first.source).toBe('random');
    expect(first.port).toBeGreaterThanOrEqual(RANDOM_PORT_MIN);
    expect(first.port).toBeLessThanOrEqual(RANDOM_PORT_MAX);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await readFile(path, 'utf8')).trim()).toBe(String(first.port));
    const again = await loadOrCreatePunchPort(path);
    expect(again).toEqual({ port: first.port, source: 'file' });
  });

  it('gives different nodes different ports (not one cluster-wide port)', async () => {
    const ports = new Set<number>();
    for (let i = 0; i < 8; i++) ports.add((await loadOrCreatePunchPort(join(dir, `node-${i}`))).port);
    // 8 draws from 12,768 ports: a repeat is possible but all eight equal is not.
    expect(ports.size).toBeGreaterThan(1);
  });

  it('uses a configured port as is and persists nothing', async () => {
    const path = join(dir, 'punch-port');
    expect(await loadOrCreatePunchPort(path, { configured: 4002 })).toEqual({ port: 4002, source: 'configured' });
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
    await expect(loadOrCreatePunchPort(path, { configured: 70_000 })).rejects.toThrow(PunchPortError);
  });

  it('skips drawn ports that are taken', async () => {
    const drawn = [21_000, 21_001, 21_002];
    const choice = await loadOrCreatePunchPort(join(dir, 'p'), {
      random: () => drawn.shift()!,
      isFree: async (port) => port === 21_002,
    });
    expect(choice.port).toBe(21_002);
  });

  it('fails with a clear error when no drawn port is free', async () => {
    await expect(loadOrCreatePunchPort(join(dir, 'p'), { isFree: async () => false })).rejects.toThrow(
      /no free port.*overlay\.punchPort/,
    );
  });

  it('refuses a corrupt file instead of silently drawing a new port', async () => {
    const path = join(dir, 'punch-port');
    await writeFile(path, 'not a port\n');
    await expect(loadOrCreatePunchPort(path)).rejects.toThrow(/does not hold a port number/);
    await writeFile(path, '99999\n');
    await expect(loadOrCreatePunchPort(path)).rejects.toThrow(PunchPortError);
  });

  it('sees a port that is listening as not free', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      expect(await portIsFree(port)).toBe(false);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
