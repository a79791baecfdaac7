// The few CRI v1 calls a kubelet makes to start and remove a pod's sandbox, over gRPC on a
// unix socket — enough to drive containerd's CRI plugin as Kubernetes does (no crictl in
// Debian 12, and the project has no gRPC library). gRPC here is HTTP/2 with length-prefixed
// protobuf messages; the messages are encoded by hand with the field numbers of
// k8s.io/cri-api/pkg/apis/runtime/v1/api.proto.
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect } from 'node:net';

// --- protobuf, the wire format subset these messages use -----------------------------------

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

function bytesField(num: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((num << 3) | 2), varint(payload.length), payload]);
}

const str = (num: number, s: string) => bytesField(num, Buffer.from(s, 'utf8'));
const msg = (num: number, ...parts: Buffer[]) => bytesField(num, Buffer.concat(parts));
const bool = (num: number, b: boolean) => Buffer.concat([varint(num << 3), varint(b ? 1 : 0)]);

/** Decodes one message level: field number → raw values (Buffer for length-delimited). */
function decode(buf: Buffer): Map<number, Array<Buffer | number>> {
  const fields = new Map<number, Array<Buffer | number>>();
  let i = 0;
  const readVarint = (): number => {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = buf[i++];
      if (b === undefined) throw new Error('protobuf: truncated varint');
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const num = Math.floor(key / 8);
    const wire = key & 7;
    let value: Buffer | number;
    if (wire === 0) value = readVarint();
    else if (wire === 2) {
      const len = readVarint();
      value = buf.subarray(i, i + len);
      i += len;
    } else if (wire === 1) {
      value = buf.readBigUInt64LE(i) > 0n ? 1 : 0;
      i += 8;
    } else if (wire === 5) {
      value = buf.readUInt32LE(i);
      i += 4;
    } else throw new Error(`protobuf: wire type ${wire} not supported`);
    fields.set(num, [...(fields.get(num) ?? []), value]);
  }
  return fields;
}

const sub = (m: Map<number, Array<Buffer | number>>, num: number) => {
  const v = m.get(num)?.[0];
  return Buffer.isBuffer(v) ? decode(v) : new Map<number, Array<Buffer | number>>();
};
const text = (m: Map<number, Array<Buffer | number>>, num: number) => {
  const v = m.get(num)?.[0];
  return Buffer.isBuffer(v) ? v.toString('utf8') : '';
};

// --- gRPC over HTTP/2 -----------------------------------------------------------------------

async function unary(socketPath: string, method: string, body: Buffer, timeoutMs = 120_000): Promise<Buffer> {
  const session = http2Connect('http://localhost', { createConnection: () => netConnect(socketPath) });
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      session.on('error', reject);
      const req = session.request({
        ':method': 'POST',
        ':path': `/runtime.v1.RuntimeService/${method}`,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      req.setTimeout(timeoutMs, () => req.close());
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let message = '';
      const onHeaders = (h: Record<string, unknown>) => {
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
        if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
      };
      req.on('response', onHeaders);
      req.on('trailers', onHeaders);
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('error', reject);
      req.on('close', () => {
        if (status !== '0') return reject(new Error(`CRI ${method}: grpc-status ${status ?? 'none'}: ${message}`));
        const all = Buffer.concat(chunks);
        resolve(all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : Buffer.alloc(0));
      });
      const frame = Buffer.alloc(5);
      frame.writeUInt32BE(body.length, 1);
      req.end(Buffer.concat([frame, body]));
    });
  } finally {
    session.close();
  }
}

export interface SandboxMeta {
  name: string;
  uid: string;
  namespace: string;
}

/** RunPodSandbox: the runtime creates the pod's network namespace and calls CNI ADD. */
export async function runPodSandbox(socketPath: string, meta: SandboxMeta): Promise<string> {
  const metadata = msg(1, str(1, meta.name), str(2, meta.uid), str(3, meta.namespace));
  const config = msg(1, metadata, str(2, meta.name));
  return text(decode(await unary(socketPath, 'RunPodSandbox', config)), 1);
}

/** PodSandboxStatus: state (0 ready, 1 not ready) and the primary Pod IP. */
export async function podSandboxStatus(socketPath: string, id: string): Promise<{ state: number; ip: string }> {
  const status = sub(
    decode(await unary(socketPath, 'PodSandboxStatus', Buffer.concat([str(1, id), bool(2, false)]))),
    1,
  );
  return { state: Number(status.get(3)?.[0] ?? 0), ip: text(sub(status, 5), 1) };
}

/** StopPodSandbox: the runtime calls CNI DEL; RemovePodSandbox: it forgets the sandbox. */
export async function stopPodSandbox(socketPath: string, id: string): Promise<void> {
  await unary(socketPath, 'StopPodSandbox', str(1, id));
}

export async function removePodSandbox(socketPath: string, id: string): Promise<void> {
  await unary(socketPath, 'RemovePodSandbox', str(1, id));
}
