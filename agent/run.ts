// `edgemesh-cni agent`: the process the DaemonSet runs. Serves /healthz and the control
// socket from the first second (so probes and `status` explain a slow start), starts the
// agent, and on SIGTERM/SIGINT drains and exits 0.

import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { getHeapStatistics } from 'node:v8';
import { logger } from '../common/log.ts';
import { Agent } from './agent.ts';
import { type AgentFlags, agentFiles, loadAgentConfig } from './config.ts';
import { startControlServer } from './control-api.ts';
import { startHttpServer } from './http.ts';
import { IdleMemoryTrimmer } from './idle-memory.ts';
import { AgentMetrics } from './metrics.ts';
import { releaseIdleMemory, releaseStartupMemory, STARTUP_RELEASE_DELAY_MS } from './startup-memory.ts';

export async function runAgent(flags: AgentFlags): Promise<void> {
  const config = loadAgentConfig(flags);
  const log = logger('agent', { node: config.nodeName });
  // Which code runs: the bundle as deployed (build/agent.js), or the sources when the bundle
  // was not current (bin/agent-bundle.js).
  log.info({ code: fileURLToPath(import.meta.url) }, 'agent starting');
  const metrics = new AgentMetrics();
  const agent = new Agent(config, { logger: log, metrics });
  // A rejection nobody handled is a bug, but not one that should take every pod's network
  // on this node down with it: log it, count it, keep serving.
  process.on('unhandledRejection', (reason) => {
    metrics.unhandledRejections.inc();
    log.error(
      { err: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) },
      'unhandled rejection',
    );
  });
  let startError: string | null = null;

  const http = await startHttpServer(config.http.listen, {
    registry: metrics.registry,
    unhealthy: () => startError,
    notReady: () => (agent.isReady() ? null : (startError ?? 'starting')),
  });
  await mkdir(config.paths.runDir, { recursive: true, mode: 0o700 });
  const control = await startControlServer(agentFiles(config).controlSocket, {
    status: () => agent.status(),
    capture: async (req, out, signal) => {
      out.end(await agent.capture(req, signal));
    },
  });

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    // A second signal during the drain forces the exit.
    process.once(signal as NodeJS.Signals, () => process.exit(1));
    await agent.stop();
    await control.close();
    await http.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  try {
    await agent.start();
    // Give back what start-up used once the first Node events have settled (see the module).
    // Once traffic flows the series of collections would stall forwarding: one will do.
    setTimeout(async () => {
      if (shuttingDown) return;
      const started = performance.now();
      let longest = 0;
      const deps = { onCollection: (ms: number) => (longest = Math.max(longest, ms)) };
      try {
        const released = agent.packetsMoved() === 0 ? await releaseStartupMemory(deps) : releaseIdleMemory(deps);
        // Once a start: how long forwarding waited at most (bench/agent-memory.ts prints it).
        if (released)
          log.info(
            { ms: Math.round(performance.now() - started), longestCollectionMs: Math.round(longest) },
            'released start-up memory',
          );
      } catch (err) {
        // Memory not given back is no reason to stop forwarding.
        log.warn({ err: (err as Error).message }, 'start-up memory release failed');
      }
    }, STARTUP_RELEASE_DELAY_MS).unref();
    // And what traffic grew, once it stops, and what idle chores pile up (see the module).
    new IdleMemoryTrimmer({
      activity: () => agent.packetsMoved(),
      release: () => {
        if (!shuttingDown && releaseIdleMemory()) log.debug('released idle memory');
      },
      heapUsed: () => getHeapStatistics().used_heap_size,
    }).start();
  } catch (err) {
    startError = (err as Error).message;
    log.error({ err: startError }, 'agent failed to start');
    await control.close();
    await http.close();
    throw err;
  }
}
