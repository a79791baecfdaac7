// /edgemesh/splice/1.0.0: the signalling of the stream fallback's TCP splice
// (docs/stream-relay.md), over members' authenticated libp2p connections to a relay node.
//
//   member A → relay   {v:1, op:'splice', peer:B}           "splice me to B"
//   relay → member B   {v:1, op:'offer', peer:A, token, port} "A wants a splice; your token"
//   B → relay          {v:1, ok:true} | {v:1, error}
//   relay → A          {v:1, token, port} | {v:1, error}
//
// One length-prefixed JSON message each way, at most MAX_MESSAGE bytes; every message is
// checked against its schema and anything else (too long, not JSON, wrong shape, late) ends
// the stream with a counted reason.
import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { z } from 'zod';
import { withDeadline } from './deadline.ts';
import { SPLICE_TOKEN_BYTES, SpliceError } from './splice-relay.ts';

export const SPLICE_PROTOCOL = '/edgemesh/splice/1.0.0';
export const MAX_MESSAGE = 512;
export const MESSAGE_TIMEOUT_MS = 5000;

const peerId = z.string().min(1).max(128);
const port = z.number().int().min(1).max(65535);
const token = z
  .string()
  .max(64)
  .refine((t) => Buffer.from(t, 'base64').length === SPLICE_TOKEN_BYTES, 'token of the wrong length');

export const SpliceRequest = z.strictObject({ v: z.literal(1), op: z.literal('splice'), peer: peerId });
export const SpliceOffer = z.strictObject({ v: z.literal(1), op: z.literal('offer'), peer: peerId, token, port });
export const FirstMessage = z.discriminatedUnion('op', [SpliceRequest, SpliceOffer]);
export const SpliceGrant = z.strictObject({ v: z.literal(1), token, port });
export const OfferAnswer = z.strictObject({ v: z.literal(1), ok: z.literal(true) });
const Refusal = z.strictObject({ v: z.literal(1), error: z.string().max(64) });

/** The reasons a relay or a member sends in a refusal (SpliceError reasons of this protocol). */
const KNOWN_REFUSALS = new Set([
  'bad-message',
  'busy',
  'closed',
  'member-full',
  'not-direct',
  'not-member',
  'offer-failed',
  'offer-not-from-relay',
  'peer-unreachable',
  'pending-full',
  'relay-full',
  'stream-error',
  'timeout',
  'unknown-peer',
]);

export type SpliceRequest = z.infer<typeof SpliceRequest>;
export type SpliceOffer = z.infer<typeof SpliceOffer>;
export type SpliceGrant = z.infer<typeof SpliceGrant>;

/** A message stream: length-prefixed JSON, bounded, with a deadline per read. */
export class SpliceChannel {
  readonly #lp;
  readonly #stream: Stream;

  constructor(stream: Stream) {
    this.#stream = stream;
    this.#lp = lpStream(stream, { maxDataLength: MAX_MESSAGE });
  }

  async write(msg: unknown): Promise<void> {
    await this.#lp.write(new TextEncoder().encode(JSON.stringify(msg)));
  }

  /** Reads one message of `schema`; a refusal from the other side becomes SpliceError(its reason). */
  async read<T>(schema: z.ZodType<T>): Promise<T> {
    const raw = await withDeadline(MESSAGE_TIMEOUT_MS, 'splice message', (signal) => this.#lp.read({ signal })).catch(
      (err: Error) => {
        throw new SpliceError(
          /DataLength/.test(err.name)
            ? 'bad-message'
            : /timed out|abort/i.test(`${err.name} ${err.message}`)
              ? 'timeout'
              : 'stream-error',
          err.message,
        );
      },
    );
    let msg: unknown;
    try {
      msg = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw.subarray()));
    } catch {
      throw new SpliceError('bad-message', 'splice message is not JSON');
    }
    const refusal = Refusal.safeParse(msg);
    if (refusal.success) {
      // The reason becomes a counter (and metric) label: only our own vocabulary passes, so
      // a peer cannot mint a new label per message.
      const known = KNOWN_REFUSALS.has(refusal.data.error) ? refusal.data.error : 'other';
      throw new SpliceError(`refused:${known}`, `the other side refused: ${refusal.data.error}`);
    }
    const parsed = schema.safeParse(msg);
    if (!parsed.success) throw new SpliceError('bad-message', 'splice message has the wrong shape');
    return parsed.data;
  }

  /** Tells the other side why, then closes; never throws. */
  async refuse(reason: string): Promise<void> {
    try {
      await this.write({ v: 1, error: reason.slice(0, 64) });
      await this.#stream.close();
    } catch {
      this.#stream.abort(new Error(reason));
    }
  }

  async close(): Promise<void> {
    await this.#stream.close().catch(() => this.#stream.abort(new Error('close failed')));
  }
}

export const tokenText = (t: Uint8Array): string => Buffer.from(t).toString('base64');
export const tokenBytes = (t: string): Uint8Array => new Uint8Array(Buffer.from(t, 'base64'));
