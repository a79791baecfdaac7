// Structured JSON logs (pino) for every long-running component. One root logger; each
// component takes a child with its own `component` field so logs can be filtered by part.
import { type Logger, pino } from 'pino';

export type { Logger };

let root: Logger | undefined;

export function rootLogger(): Logger {
  root ??= pino({
    level: process.env.EDGEMESH_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
  return root;
}

export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}

/** A logger that discards everything: for tests and library callers that bring none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
