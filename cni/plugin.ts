// The CNI operations (ADD, DEL, CHECK, STATUS, GC, VERSION), run inside the agent: the thin
// client forwards each runtime call here. handle() never throws: every failure becomes the
// spec's error JSON on stdout with a non-zero exit code.
import { CommandError } from '../common/exec.ts';
import {
  type HostNet,
  type HostNetCounters,
  type IfAddress,
  iproute2HostNet,
  isAlreadyExists,
  isHostNetRefusal,
  netlinkHostNet,
  type PodSpec,
  type VethSpec,
} from '../common/host-net/index.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import { IpamError } from '../ipam/errors.ts';
import type { Lease, NodeBlock } from '../ipam/types.ts';
import { type CniEnv, type CniRequest, type NetConf, parseEnv, parseNetConf, peekVersion } from './config.ts';
import { assertNetworkNamespace, ownedHostVeths } from './links.ts';
import { ensureMasquerade } from './masquerade.ts';
import { derivedMac, hostVethName, podMac } from './names.ts';
import { type AttachmentView, buildResult, readPrevResult } from './result.ts';
import { CniError, ErrorCode, errorResult, isSupportedVersion, LATEST_VERSION, versionResult } from './spec.ts';

export type { CniRequest };

export interface CniResponse {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** What the plugin needs from IPAM's LeaseStore (ipam/lease-store.ts); the one writer of lease state. */
export interface LeaseSource {
  /** Resolves when the lease is durable; `onChosen` (optional) hears it as soon as it is picked. */
  allocate(containerId: string, ifname: string, opts?: { onChosen?: (lease: Lease) => void }): Promise<Lease>;
  release(containerId: string, ifname: string): Promise<Lease | undefined>;
  get(containerId: string, ifname: string): Lease | undefined | Promise<Lease | undefined>;
  list(): Lease[] | Promise<Lease[]>;
  gc(valid: { containerId: string; ifname: string }[]): Promise<Lease[]>;
}

export interface CniPluginOptions {
  leases: LeaseSource;
  blocks: NodeBlock[];
  clusterCidrs: string[];
  bridgeName?: string;
  mtu?: number;
  /** Extra readiness condition from the agent (e.g. dataplane up); ADD answers 11 and STATUS 50 while false. */
  isReady?: () => boolean;
  /** Install the EDGEMESH-MASQ rules in start() (default true when clusterCidrs is not empty). */
  masquerade?: boolean;
  logger?: Logger;
  /**
   * Path of the `edgemesh` binary (the C client, e.g. /opt/cni/bin/edgemesh): when given, the
   * per-pod plumbing runs in its long-lived `netlink-helper` mode (no process start per pod)
   * instead of through `ip`/`nsenter`; when the helper itself fails, that operation is redone
   * with iproute2 (counted in plumbingCounters()). Call close() to stop it.
   */
  netlinkHelper?: string;
  /** Called after every operation: the agent maps it to a prom-client histogram/counter. */
  onOperation?: (op: string, seconds: number, ok: boolean) => void;
}

export const DEFAULT_BRIDGE = 'edgemesh-br0';
export const DEFAULT_MTU = 1500;

/** Netlink helper starts and failures, and per-pod operations redone with iproute2. */
export type PlumbingCounters = HostNetCounters;

export class CniPlugin {
  readonly bridgeName: string;
  readonly mtu: number;
  private readonly opts: CniPluginOptions;
  private readonly log: Logger;
  private blocks: NodeBlock[];
  /** The host's links: the per-pod work through the netlink helper when configured. */
  private readonly net: HostNet;
  private bridgeReady: Promise<void> | undefined;
  // Operations on one attachment run one after another (e.g. a DEL racing a slow ADD).
  private readonly attachmentLocks = new Map<string, Promise<unknown>>();

  constructor(opts: CniPluginOptions) {
    this.opts = opts;
    this.blocks = [...opts.blocks];
    this.bridgeName = opts.bridgeName ?? DEFAULT_BRIDGE;
    this.mtu = opts.mtu ?? DEFAULT_MTU;
    this.log = opts.logger ?? silentLogger();
    this.net = opts.netlinkHelper
      ? netlinkHostNet({ binary: opts.netlinkHelper, logger: this.log.child({ netlinkHelper: 'main' }) })
      : iproute2HostNet();
    if (this.bridgeName.length > 15) throw new Error(`bridge name "${this.bridgeName}" is longer than 15 characters`);
  }

  /** Creates the bridge (and masquerade rules) up front, so STATUS is ready before the first pod. */
  async start(): Promise<void> {
    if (this.blocks.length > 0) await this.ensureBridge();
    const masquerade = this.opts.masquerade ?? this.opts.clusterCidrs.length > 0;
    if (masquerade && this.opts.clusterCidrs.length > 0) await ensureMasquerade(this.opts.clusterCidrs);
  }

  /** Stops the netlink helper, if any. Interfaces and leases stay as they are. */
  close(): void {
    this.net.close();
  }

  plumbingCounters(): PlumbingCounters {
    return this.net.counters();
  }

  /** The agent calls this when it gains (or changes) its node blocks. */
  async setBlocks(blocks: NodeBlock[]): Promise<void> {
    this.blocks = [...blocks];
    this.bridgeReady = undefined;
    if (blocks.length > 0) await this.ensureBridge();
  }

  async handle(req: CniRequest): Promise<CniResponse> {
    const started = performance.now();
    let op = String(req.env?.CNI_COMMAND ?? 'unknown');
    try {
      const env = parseEnv(req.env ?? {});
      op = env.command;
      const conf = parseNetConf(typeof req.stdin === 'string' ? req.stdin : '', env.command);
      const stdout = await this.dispatch(env, conf);
      this.opts.onOperation?.(op, (performance.now() - started) / 1000, true);
      return { exitCode: 0, stdout: stdout ? `${stdout}\n` : '', stderr: '' };
    } catch (err) {
      const cniErr = toCniError(err);
      this.opts.onOperation?.(op, (performance.now() - started) / 1000, false);
      const level = cniErr.code === ErrorCode.Internal || cniErr.code === ErrorCode.IoFailure ? 'error' : 'warn';
      this.log[level](
        { op, containerId: req.env?.CNI_CONTAINERID, code: cniErr.code, err: cniErr.message },
        'CNI error',
      );
      const requested = peekVersion(typeof req.stdin === 'string' ? req.stdin : '');
      const version = isSupportedVersion(requested) ? requested : LATEST_VERSION;
      return { exitCode: 1, stdout: `${JSON.stringify(errorResult(cniErr, version))}\n`, stderr: '' };
    }
  }

  private async dispatch(env: CniEnv, conf: NetConf): Promise<string> {
    switch (env.command) {
      case 'VERSION':
        return JSON.stringify(versionResult(conf.cniVersion));
      case 'ADD':
        return this.withAttachment(env, () => this.add(env, conf));
      case 'DEL':
        return this.withAttachment(env, () => this.del(env));
      case 'CHECK':
        return this.withAttachment(env, () => this.check(env, conf));
      case 'STATUS':
        return this.status();
      case 'GC':
        return this.gc(conf);
    }
  }

  private async withAttachment<T>(env: CniEnv, fn: () => Promise<T>): Promise<T> {
    const key = `${env.containerId}\0${env.ifname}`;
    const previous = this.attachmentLocks.get(key) ?? Promise.resolve();
    const current = previous.catch(() => undefined).then(fn);
    this.attachmentLocks.set(key, current);
    try {
      return await current;
    } finally {
      if (this.attachmentLocks.get(key) === current) this.attachmentLocks.delete(key);
    }
  }

  private bridgeAddresses(): IfAddress[] {
    return this.blocks.map((b) => ({
      address: b.gateway,
      prefixLength: Number(b.cidr.split('/')[1]),
      family: b.family,
    }));
  }

  private ensureBridge(): Promise<void> {
    this.bridgeReady ??= this.net
      .ensureBridge({
        name: this.bridgeName,
        mac: derivedMac('bridge', this.bridgeName, ...this.blocks.map((b) => b.cidr)),
        mtu: this.mtu,
        addresses: this.bridgeAddresses(),
      })
      .catch((err) => {
        this.bridgeReady = undefined;
        throw err;
      });
    return this.bridgeReady;
  }

  private notReadyReason(): string | undefined {
    if (this.blocks.length === 0) return 'the agent holds no pod CIDR block yet';
    if (this.opts.isReady && !this.opts.isReady()) return 'the agent is not ready';
    return undefined;
  }

  private view(env: CniEnv, lease: Lease, conf?: NetConf): AttachmentView {
    const v4 = lease.ips.find((ip) => ip.family === 4)?.address;
    const host = hostVethName(env.containerId, env.ifname);
    return {
      lease,
      bridge: { name: this.bridgeName, mac: derivedMac('bridge', this.bridgeName, ...this.blocks.map((b) => b.cidr)) },
      host: { name: host, mac: derivedMac('host', env.containerId, env.ifname) },
      pod: { name: env.ifname, mac: podMac(v4, env.containerId, env.ifname), netns: env.netns },
      mtu: this.mtu,
      ...(conf?.dns ? { dns: conf.dns } : {}),
    };
  }

  private async add(env: CniEnv, conf: NetConf): Promise<string> {
    const notReady = this.notReadyReason();
    if (notReady) throw new CniError(ErrorCode.TryAgainLater, `cannot add ${env.containerId}: ${notReady}`);
    await assertNetworkNamespace(env.netns);
    await this.ensureBridge();
    // The pod is plumbed with its address as soon as IPAM has picked it, while the lease's
    // record is being fdatasync'ed; ADD answers only when both are done. A crash in between
    // leaves an unanswered ADD (the runtime retries or deletes it), never an answered one
    // without a durable lease.
    const chosen = Promise.withResolvers<Lease>();
    const durable = this.opts.leases.allocate(env.containerId, env.ifname, { onChosen: chosen.resolve });
    const lease = await Promise.race([chosen.promise, durable]);
    const view = this.view(env, lease, conf);
    const [stored, plumbed] = await Promise.allSettled([durable, this.plumb(view)]);
    if (stored.status === 'rejected' || plumbed.status === 'rejected') {
      // A half-built attachment is useless: give back the address and the interfaces.
      await this.net.deleteLink(view.host.name).catch(() => false);
      await this.opts.leases.release(env.containerId, env.ifname).catch(() => undefined);
      throw stored.status === 'rejected' ? stored.reason : (plumbed as PromiseRejectedResult).reason;
    }
    this.log.info(
      {
        containerId: env.containerId,
        ifname: env.ifname,
        ips: lease.ips.map((ip) => ip.address),
        host: view.host.name,
      },
      'pod attached',
    );
    return JSON.stringify(buildResult(view, conf.cniVersion));
  }

  private async plumb(view: AttachmentView): Promise<void> {
    const veth: VethSpec = {
      host: view.host.name,
      hostMac: view.host.mac,
      bridge: view.bridge.name,
      podIfname: view.pod.name,
      podMac: view.pod.mac,
      netns: view.pod.netns,
      mtu: view.mtu,
    };
    const pod: PodSpec = {
      netns: view.pod.netns,
      ifname: view.pod.name,
      addresses: view.lease.ips.map((ip) => ({
        address: ip.address,
        prefixLength: ip.prefixLength,
        family: ip.family,
      })),
      gateways: view.lease.ips.map((ip) => ip.gateway),
    };
    try {
      await this.net.attachPod(veth, pod);
    } catch (err) {
      if (!isHostNetRefusal(err)) throw err;
      // A repeated ADD finds its own veth (remove it: its peer in the pod goes with it), or the
      // bridge was deleted behind our back (recreate it). Anything else is a real failure.
      const hostExisted = await this.net.deleteLink(view.host.name);
      const bridgeExists = await this.net.linkExists(view.bridge.name);
      if (!hostExisted && bridgeExists) {
        if (isAlreadyExists(err)) {
          throw new CniError(
            ErrorCode.Internal,
            `interface ${view.pod.name} already exists in ${view.pod.netns}`,
            'another plugin or runtime created it; edgemesh will not take it over',
          );
        }
        throw err;
      }
      if (!bridgeExists) {
        this.bridgeReady = undefined;
        await this.ensureBridge();
      }
      await this.net.attachPod(veth, pod);
    }
  }

  private async del(env: CniEnv): Promise<string> {
    // Deleting the host end removes the pod end too, so DEL never needs the (maybe gone) netns.
    await this.net.deleteLink(hostVethName(env.containerId, env.ifname));
    const released = await this.opts.leases.release(env.containerId, env.ifname);
    if (released) {
      this.log.info(
        { containerId: env.containerId, ifname: env.ifname, ips: released.ips.map((ip) => ip.address) },
        'pod detached',
      );
    }
    return '';
  }

  private async check(env: CniEnv, conf: NetConf): Promise<string> {
    const lease = await this.opts.leases.get(env.containerId, env.ifname);
    if (!lease) {
      throw new CniError(ErrorCode.UnknownContainer, `unknown container ${env.containerId} (interface ${env.ifname})`);
    }
    if (!conf.prevResult) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, 'CHECK needs prevResult in the network configuration');
    }
    const prev = readPrevResult(conf.prevResult);
    const mismatch = (msg: string, details = '') => new CniError(ErrorCode.CheckMismatch, msg, details);
    const ifIndex = prev.interfaces?.findIndex((i) => i.name === env.ifname && i.sandbox) ?? -1;
    if (ifIndex < 0) throw mismatch(`prevResult has no interface ${env.ifname} in a sandbox`);
    const prevIface = prev.interfaces![ifIndex]!;
    const expectedIps = (prev.ips ?? []).filter((ip) => ip.interface === undefined || ip.interface === ifIndex);
    const leased = lease.ips.map((ip) => `${ip.address}/${ip.prefixLength}`).sort();
    const inPrev = expectedIps.map((ip) => ip.address).sort();
    if (leased.join() !== inPrev.join()) {
      throw mismatch(
        'prevResult addresses differ from the lease',
        `lease: ${leased.join(', ')}; prevResult: ${inPrev.join(', ')}`,
      );
    }
    if (!(await this.net.linkExists(hostVethName(env.containerId, env.ifname)))) {
      throw mismatch(`host interface ${hostVethName(env.containerId, env.ifname)} is missing`);
    }
    await assertNetworkNamespace(env.netns);
    let state: Awaited<ReturnType<HostNet['readPodLink']>>;
    try {
      state = await this.net.readPodLink(env.netns, env.ifname);
    } catch (err) {
      throw new CniError(ErrorCode.IoFailure, `cannot inspect network namespace ${env.netns}`, errorText(err));
    }
    if (!state) throw mismatch(`interface ${env.ifname} does not exist in ${env.netns}`);
    if (prevIface.mac && prevIface.mac.toLowerCase() !== state.mac.toLowerCase()) {
      throw mismatch(`interface ${env.ifname} has MAC ${state.mac}, prevResult says ${prevIface.mac}`);
    }
    if (!state.up) throw mismatch(`interface ${env.ifname} is down`);
    for (const ip of expectedIps) {
      if (!state.addresses.includes(ip.address)) {
        throw mismatch(`address ${ip.address} is missing on ${env.ifname}`, `present: ${state.addresses.join(', ')}`);
      }
    }
    for (const route of prev.routes ?? []) {
      const isDefault = route.dst === '0.0.0.0/0' || route.dst === '::/0';
      const found = state.routes.some(
        (r) => (r.dst === route.dst || (isDefault && r.dst === 'default')) && (!route.gw || r.gateway === route.gw),
      );
      if (!found) {
        throw mismatch(`route ${route.dst}${route.gw ? ` via ${route.gw}` : ''} is missing in ${env.netns}`);
      }
    }
    return '';
  }

  private async status(): Promise<string> {
    const notReady = this.notReadyReason();
    if (notReady) throw new CniError(ErrorCode.PluginNotAvailable, `edgemesh is not ready: ${notReady}`);
    if (!(await this.net.linkIsUp(this.bridgeName))) {
      throw new CniError(ErrorCode.PluginNotAvailable, `edgemesh is not ready: bridge ${this.bridgeName} is not up`);
    }
    return '';
  }

  private async gc(conf: NetConf): Promise<string> {
    if (!conf.validAttachments) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        'GC needs "cni.dev/valid-attachments" in the network configuration',
      );
    }
    const valid = conf.validAttachments;
    const released = await this.opts.leases.gc(valid);
    // Host veths of attachments that are not valid: those of released leases, and strays whose
    // lease is long gone (e.g. an ADD that crashed half-way) — only veths this plugin made on
    // its bridge. Valid ones, and anything someone else made, are left untouched.
    const keep = new Set(valid.map((a) => hostVethName(a.containerId, a.ifname)));
    const present = new Set(await this.net.listLinks());
    const candidates = new Set([
      ...(await ownedHostVeths(this.net, this.bridgeName)),
      ...released.map((l) => hostVethName(l.containerId, l.ifname)).filter((n) => present.has(n)),
    ]);
    const doomed = [...candidates].filter((n) => !keep.has(n));
    await Promise.all(doomed.map((name) => this.net.deleteLink(name).catch(() => false)));
    this.log.info({ released: released.length, interfaces: doomed.length }, 'CNI GC');
    return '';
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps any failure to the spec's error codes; unexpected ones become 999 with their message. */
export function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof IpamError)
    return new CniError(ErrorCode.TryAgainLater, `IP address management: ${err.message}`, err.reason);
  if (err instanceof CommandError)
    return new CniError(ErrorCode.Internal, 'interface configuration failed', err.message);
  const code = (err as NodeJS.ErrnoException)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    return new CniError(ErrorCode.IoFailure, `I/O failure: ${errorText(err)}`);
  }
  return new CniError(ErrorCode.Internal, errorText(err));
}
