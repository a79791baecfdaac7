// Routes over iproute2. Every change is idempotent (`replace`, deletes that tolerate
// "already gone") so the agent can re-apply its whole state after a restart.
//
// Batch vs one process per route (1,000 routes, measured with bench/dataplane-tun.ts
// --routes): `ip -batch` is the way to apply many routes; see applyRoutes().
import { CommandError } from '../exec.ts';
import { checkDev, forcedBatch, ip, isAlreadyGone, type NetnsOption, parseJson } from './iproute2.ts';

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

/** A route as the kernel lists it: `dev` is absent on routes of type unreachable, blackhole... */
export interface KernelRoute {
  dst: string;
  family: 4 | 6;
  dev?: string;
  via?: string;
  src?: string;
  /** Who installed it: "kernel" for an interface's own prefix routes, "boot" for `ip route`. */
  protocol?: string;
  /** unicast routes carry no type; "unreachable", "blackhole", ... otherwise. */
  type?: string;
  metric?: number;
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

function familyFlag(cidr: string): '-4' | '-6' {
  return cidr.includes(':') ? '-6' : '-4';
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

interface IpJsonRoute {
  dst: string;
  type?: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  protocol?: string;
  metric?: number;
}

/** The routes of one table (IPv4 and IPv6; main unless `table` is given), as the kernel lists them. */
export async function listTableRoutes(
  opts: NetnsOption & { table?: string | number; dev?: string } = {},
): Promise<KernelRoute[]> {
  if (opts.dev !== undefined) checkDev(opts.dev);
  const filter = [...(opts.dev === undefined ? [] : ['dev', opts.dev]), 'table', String(opts.table ?? 'main')];
  const routes: KernelRoute[] = [];
  for (const family of [4, 6] as const) {
    let out: string;
    try {
      out = await ip(['-j', `-${family}`, 'route', 'show', ...filter], opts);
    } catch (err) {
      // A table nobody has put a route in yet does not exist for the kernel: it is empty.
      if (err instanceof CommandError && /table does not exist/i.test(err.stderr)) continue;
      throw err;
    }
    for (const r of parseJson<IpJsonRoute>(out)) {
      routes.push({
        dst: r.dst,
        family,
        // Filtered by device, iproute2 leaves the device out of each route.
        ...(r.dev ? { dev: r.dev } : opts.dev !== undefined ? { dev: opts.dev } : {}),
        ...(r.gateway ? { via: r.gateway } : {}),
        ...(r.prefsrc ? { src: r.prefsrc } : {}),
        ...(r.protocol ? { protocol: r.protocol } : {}),
        ...(r.type && r.type !== 'unicast' ? { type: r.type } : {}),
        ...(r.metric !== undefined ? { metric: r.metric } : {}),
      });
    }
  }
  return routes;
}

/** Lists the routes through `dev` (IPv4 and IPv6; main table unless `table` is given). */
export async function listRoutes(
  dev: string,
  opts: NetnsOption & { table?: string | number } = {},
): Promise<RouteSpec[]> {
  const routes: RouteSpec[] = [];
  for (const r of await listTableRoutes({ ...opts, dev })) {
    // Kernel-made routes (IPv6 link-local, multicast) are not ours to manage.
    if (r.family === 6 && /^(fe80|ff00)::/.test(r.dst)) continue;
    routes.push({
      dst: r.dst,
      dev,
      ...(r.via ? { via: r.via } : {}),
      ...(r.src ? { src: r.src } : {}),
      ...(opts.table !== undefined ? { table: opts.table } : {}),
      ...(r.metric !== undefined && r.family === 4 ? { metric: r.metric } : {}),
    });
  }
  return routes;
}

/**
 * The kernel's route towards `address` (`ip route get`): the device, and the gateway when the
 * address is not a direct neighbour. undefined when there is no route.
 */
export async function routeTowards(
  address: string,
  opts: NetnsOption = {},
): Promise<{ dev?: string; via?: string } | undefined> {
  try {
    const [route] = parseJson<{ dev?: string; gateway?: string }>(await ip(['-j', 'route', 'get', address], opts));
    if (!route) return undefined;
    return { ...(route.dev ? { dev: route.dev } : {}), ...(route.gateway ? { via: route.gateway } : {}) };
  } catch {
    return undefined;
  }
}

/** An `unreachable` route (traffic to `cidr` fails at once with "no route to host"). */
export async function ensureUnreachableRoute(cidr: string, metric: number, opts: NetnsOption = {}): Promise<void> {
  await ip([familyFlag(cidr), 'route', 'replace', 'unreachable', cidr, 'metric', String(metric)], opts);
}

/** Deletes an `unreachable` route; false when there was none. */
export async function removeUnreachableRoute(cidr: string, metric: number, opts: NetnsOption = {}): Promise<boolean> {
  return ip([familyFlag(cidr), 'route', 'del', 'unreachable', cidr, 'metric', String(metric)], opts).then(
    () => true,
    () => false,
  );
}
