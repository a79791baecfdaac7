// Host-side interface and route set-up over iproute2. Every operation is idempotent
// (`replace`, deletes that tolerate "already gone") so the agent can re-apply its whole
// state after a restart. `netns` runs the command inside a named namespace (tests, lab).
//
// Batch vs one process per route (1,000 routes, measured with bench/dataplane-tun.ts
// --routes): `ip -batch` is the way to apply many routes; see applyRoutes().
import { CommandError, ipBatch, run } from '../common/exec.ts';

export interface RouteSpec {
  /** Destination CIDR ("10.244.0.0/16", "fd00::/64"); a bare address means a host route. */
  dst: string;
  dev: string;
  /** Preferred source address for locally originated packets (the node's gateway address). */
  src?: string;
  /** Next-hop gateway (host-gw routes). */
  via?: string;
  /** Routing table id or name; default main. */
  table?: string | number;
  metric?: number;
}

export interface NetnsOption {
  netns?: string;
}

function ip(args: readonly string[], opts: NetnsOption): Promise<string> {
  return run('ip', [...(opts.netns ? ['-n', opts.netns] : []), ...args]);
}

const NAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;
function checkDev(dev: string): void {
  if (!NAME_RE.test(dev)) throw new Error(`bad interface name "${dev}" (1-15 characters: letters, digits, _.@-)`);
}

// Routes are given to `ip` as arguments (or batch lines), so reject anything that is not a
// plain token before it can smuggle extra words into a batch line.
const TOKEN_RE = /^[A-Za-z0-9:./_-]+$/;
function routeArgs(r: RouteSpec): string[] {
  checkDev(r.dev);
  const args = [r.dst, 'dev', r.dev];
  if (r.via !== undefined) args.push('via', r.via);
  if (r.src !== undefined) args.push('src', r.src);
  if (r.table !== undefined) args.push('table', String(r.table));
  if (r.metric !== undefined) args.push('metric', String(r.metric));
  for (const a of args) if (!TOKEN_RE.test(a)) throw new Error(`bad route field "${a}" in ${JSON.stringify(r)}`);
  return args;
}

/** Messages iproute2 prints when the thing to delete is already gone. */
function isAlreadyGone(stderr: string): boolean {
  return /No such process|Cannot find device|No such device|does not exist/i.test(stderr);
}

/** Sets address (replace), MTU and up on an interface such as the TUN. */
export async function configureInterface(
  opts: { dev: string; address?: string | string[]; mtu?: number; up?: boolean } & NetnsOption,
): Promise<void> {
  checkDev(opts.dev);
  const addresses = opts.address === undefined ? [] : Array.isArray(opts.address) ? opts.address : [opts.address];
  for (const a of addresses) await ip(['addr', 'replace', a, 'dev', opts.dev], opts);
  if (opts.mtu !== undefined) await ip(['link', 'set', 'dev', opts.dev, 'mtu', String(opts.mtu)], opts);
  if (opts.up ?? true) await ip(['link', 'set', 'dev', opts.dev, 'up'], opts);
}

/** Removes an address from an interface; no error when it is not there. */
export async function removeAddress(opts: { dev: string; address: string } & NetnsOption): Promise<void> {
  checkDev(opts.dev);
  try {
    await ip(['addr', 'del', opts.address, 'dev', opts.dev], opts);
  } catch (err) {
    if (
      !(
        err instanceof CommandError &&
        (isAlreadyGone(err.stderr) || /Cannot assign|address not found/.test(err.stderr))
      )
    )
      throw err;
  }
}

/** Adds or updates one route (`ip route replace`). */
export async function ensureRoute(r: RouteSpec, opts: NetnsOption = {}): Promise<void> {
  await ip(['route', 'replace', ...routeArgs(r)], opts);
}

/** Deletes one route; no error when it is already gone. */
export async function removeRoute(r: RouteSpec, opts: NetnsOption = {}): Promise<void> {
  try {
    await ip(['route', 'del', ...routeArgs(r)], opts);
  } catch (err) {
    if (!(err instanceof CommandError && isAlreadyGone(err.stderr))) throw err;
  }
}

/**
 * Applies many route changes with `ip -batch`: replaces first, then deletes. Every line is
 * tried; deletes of routes that are already gone are not errors; any other refusal throws,
 * naming the refused lines, after the rest of the batch was applied.
 */
export async function applyRoutes(
  changes: { replace?: readonly RouteSpec[]; remove?: readonly RouteSpec[] },
  opts: NetnsOption = {},
): Promise<void> {
  const replace = (changes.replace ?? []).map((r) => `route replace ${routeArgs(r).join(' ')}`);
  const remove = (changes.remove ?? []).map((r) => `route del ${routeArgs(r).join(' ')}`);
  const failed = [...(await forcedBatch(replace, opts)), ...(await forcedBatch(remove, opts))].filter(
    (f) => !(f.line.startsWith('route del') && isAlreadyGone(f.message)),
  );
  if (failed.length > 0) {
    throw new Error(
      `${failed.length} route change(s) refused (the others were applied): ${failed.map((f) => `"${f.line}": ${f.message}`).join('; ')}`,
    );
  }
}

/**
 * Runs `ip -force -batch`, so one line the kernel refuses does not keep the lines after it
 * from being applied, and returns the refused lines with iproute2's message for each.
 */
async function forcedBatch(lines: string[], opts: NetnsOption): Promise<{ line: string; message: string }[]> {
  if (lines.length === 0) return [];
  try {
    await ipBatch(lines, { ...(opts.netns ? { netns: opts.netns } : {}), force: true });
    return [];
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    // iproute2 prints the error, then "Command failed -:<line number>" for each refused line.
    const failed: { line: string; message: string }[] = [];
    let message: string[] = [];
    for (const text of err.stderr.split('\n')) {
      const at = /^Command failed -:(\d+)/.exec(text);
      if (!at) {
        if (text.trim()) message.push(text.trim());
        continue;
      }
      failed.push({ line: lines[Number(at[1]) - 1] ?? `line ${at[1]}`, message: message.join(' ') });
      message = [];
    }
    if (failed.length === 0) throw err;
    return failed;
  }
}

interface IpJsonRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  table?: string;
  metric?: number;
}

/** Lists the routes through `dev` (IPv4 and IPv6; main table unless `table` is given). */
export async function listRoutes(
  dev: string,
  opts: NetnsOption & { table?: string | number } = {},
): Promise<RouteSpec[]> {
  checkDev(dev);
  const table = opts.table === undefined ? [] : ['table', String(opts.table)];
  const routes: RouteSpec[] = [];
  for (const family of ['-4', '-6']) {
    let out: string;
    try {
      out = await ip(['-j', family, 'route', 'show', 'dev', dev, ...table], opts);
    } catch (err) {
      // A table nobody has put a route in yet does not exist for the kernel: it is empty.
      if (err instanceof CommandError && /table does not exist/i.test(err.stderr)) continue;
      throw err;
    }
    const parsed = (out.trim() ? JSON.parse(out) : []) as IpJsonRoute[];
    for (const r of parsed) {
      // Kernel-made routes (IPv6 link-local, multicast) are not ours to manage.
      if (family === '-6' && /^(fe80|ff00)::/.test(r.dst)) continue;
      routes.push({
        dst: r.dst,
        dev,
        ...(r.gateway ? { via: r.gateway } : {}),
        ...(r.prefsrc ? { src: r.prefsrc } : {}),
        ...(opts.table !== undefined ? { table: opts.table } : {}),
        ...(r.metric !== undefined && family === '-4' ? { metric: r.metric } : {}),
      });
    }
  }
  return routes;
}

/**
 * The MTU of the interface that has `address` (the node's own IP): the underlay MTU the
 * tunnel's datagrams leave with. undefined when no interface has that address.
 */
export async function mtuOfInterfaceWith(address: string, opts: NetnsOption = {}): Promise<number | undefined> {
  const links = JSON.parse(await ip(['-j', 'addr', 'show'], opts)) as Array<{
    mtu?: number;
    addr_info?: Array<{ local?: string }>;
  }>;
  return links.find((l) => l.addr_info?.some((a) => a.local === address))?.mtu;
}
