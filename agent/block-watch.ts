// Watches every IPAMBlock (an informer, like the Node watch) and keeps the PodCidrAuthority
// current: which pod CIDRs the cluster assigns to which node. Every handler is guarded: a
// malformed block is the authority's to refuse, an exception here is logged and counted.
import type { Informer, ObjectCache } from '@kubernetes/client-node';
import type { Logger } from '../common/log.ts';
import type { IpamBlockObject } from '../ipam/node-blocks.ts';
import { InformerKeeper } from './informer-keeper.ts';
import type { PodCidrAuthority } from './pod-cidr-authority.ts';

export interface BlockWatchOptions {
  api: { blockInformer(): Informer<IpamBlockObject> & ObjectCache<IpamBlockObject> };
  authority: PodCidrAuthority;
  logger: Logger;
}

export class BlockWatch {
  private readonly opts: BlockWatchOptions;
  private informer: (Informer<IpamBlockObject> & ObjectCache<IpamBlockObject>) | undefined;
  private keeper: InformerKeeper | undefined;
  /** Informer errors seen (each is followed by a restart). */
  get errors(): number {
    return this.keeper?.errors ?? 0;
  }
  /** Exceptions caught in event handlers. */
  handlerErrors = 0;

  constructor(opts: BlockWatchOptions) {
    this.opts = opts;
  }

  private guarded(event: string, obj: IpamBlockObject, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.handlerErrors++;
      this.opts.logger.error(
        { event, block: obj?.metadata?.name, err: err instanceof Error ? err.message : String(err) },
        'IPAMBlock event handler failed',
      );
    }
  }

  /** Resolves after the initial list has been applied. */
  async start(): Promise<void> {
    const { authority, logger } = this.opts;
    const informer = this.opts.api.blockInformer();
    this.informer = informer;
    informer.on('add', (b) => this.guarded('add', b, () => authority.setBlock(b)));
    informer.on('update', (b) => this.guarded('update', b, () => authority.setBlock(b)));
    informer.on('delete', (b) => this.guarded('delete', b, () => authority.removeBlock(b.metadata?.name ?? '')));
    this.keeper = new InformerKeeper(informer, { log: logger, what: 'IPAMBlock' });
    await informer.start();
    for (const [name, why] of authority.badBlocks) logger.warn({ block: name, why }, 'IPAMBlock ignored');
  }

  async stop(): Promise<void> {
    this.keeper?.stop();
    await this.informer?.stop();
  }
}
