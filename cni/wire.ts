// The thin client's wire format on the unix socket, one request per connection:
//   client → agent:  u32 big-endian length, then that many bytes of JSON {env: {...}, stdin: "..."}
//   agent → client:  u32 big-endian length, then JSON {exitCode, stdout, stderr}
// cni/client/edgemesh.c speaks the same format.

/** Largest request accepted: a network config with a big prevResult is a few KiB. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

export function encodeFrame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** Accumulates bytes until one complete frame is there; rejects frames over the limit early. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private readonly limit: number;
  constructor(limit = MAX_REQUEST_BYTES) {
    this.limit = limit;
  }

  /** Returns the frame's body once complete; throws when the announced size is over the limit. */
  push(chunk: Buffer): Buffer | undefined {
    this.chunks.push(chunk);
    this.length += chunk.length;
    if (this.length < 4) return undefined;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [all];
    const size = all.readUInt32BE(0);
    if (size > this.limit) throw new Error(`request of ${size} bytes is over the ${this.limit}-byte limit`);
    if (all.length < 4 + size) return undefined;
    return all.subarray(4, 4 + size);
  }
}
