// Time limits for libp2p operations. Not AbortSignal.timeout(): libp2p keeps some option
// signals attached to what the operation created (a relayed connection died exactly when
// its dial's timeout signal fired, long after the dial had succeeded). This signal fires
// only if the operation is still running when time is up.
export async function withDeadline<T>(ms: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`${what} timed out after ${ms} ms`)), ms);
  try {
    return await fn(controller.signal);
  } finally {
    clearTimeout(timer);
  }
}
