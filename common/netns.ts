// Network namespace helpers shared by the lab, the benchmarks and the privileged tests. The
// namespace operations themselves live with the rest of host networking (common/host-net/);
// this module adds the per-run names, so two runs (or two labs) never collide.
import { randomBytes } from 'node:crypto';

export {
  createNetns,
  deleteNetns,
  deleteNetnsWithPrefix,
  inNetns,
  listNetns,
  runIn,
} from './host-net/namespaces.ts';

/** A short random prefix like "em3f9a-": interface names must stay within 15 characters. */
export function runPrefix(tag = 'em'): string {
  return `${tag}${randomBytes(2).toString('hex')}-`;
}
