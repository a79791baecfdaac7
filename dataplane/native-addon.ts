// The dataplane's native addon (build/edgemesh_tun.node: the TUN device, the UDP session
// engine, the UDP relay and a few process-level helpers), loaded once, on first use, so a
// process that never forwards (the CLI, the lab's tools) never maps it.
import { createRequire } from 'node:module';

let addon: unknown;

/** The addon's exports, typed by the caller's view of them. */
export function nativeAddon<T>(): T {
  if (addon === undefined) {
    const require = createRequire(import.meta.url);
    try {
      addon = require('../build/edgemesh_tun.node');
    } catch (err) {
      throw new Error(`the dataplane addon is not built (run \`npm run build:native\`): ${(err as Error).message}`);
    }
  }
  return addon as T;
}

/**
 * Returns the free memory at the top of glibc's heaps and inside them to the kernel
 * (malloc_trim(0)): what start-up allocated and freed in C (OpenSSL, libuv, the addon, V8's
 * own mallocs) otherwise stays resident in an agent that then idles. False where the C
 * library has no malloc_trim (not glibc) or nothing was given back.
 */
export function trimNativeHeap(): boolean {
  return nativeAddon<{ trimHeap(): boolean }>().trimHeap();
}
