// Wraps a connected net.Socket (from our hole punch) into a libp2p MultiaddrConnection,
// exactly as @libp2p/tcp does for the sockets it dials and accepts (its wrapper is not
// exported). `direction` is what yamux uses to pick client/server stream IDs, so it must
// follow our punch roles, not the socket's (simultaneous open has no natural direction).
import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { AbortOptions, Logger, MessageStreamDirection } from '@libp2p/interface';
import { AbstractMultiaddrConnection } from '@libp2p/utils';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { Uint8ArrayList } from 'uint8arraylist';

class PunchedSocketConnection extends AbstractMultiaddrConnection {
  readonly socket: Socket;

  constructor(init: { socket: Socket; remoteAddr: Multiaddr; direction: MessageStreamDirection; log: Logger }) {
    super({ remoteAddr: init.remoteAddr, direction: init.direction, log: init.log, inactivityTimeout: 0 });
    this.socket = init.socket;
    this.socket.on('data', (buf) => this.onData(buf));
    this.socket.on('error', (err) => this.abort(err));
    this.socket.once('end', () => this.onTransportClosed());
    this.socket.once('close', (hadError) => {
      if (hadError) this.abort(new Error('TCP transmission error'));
      else this.onTransportClosed();
    });
    this.socket.on('drain', () => this.safeDispatchEvent('drain'));
  }

  sendData(data: Uint8ArrayList): { sentBytes: number; canSendMore: boolean } {
    let sentBytes = 0;
    let canSendMore = true;
    // Corked, the buffers of one list (yamux header, noise message...) leave in one writev
    // instead of one syscall each.
    this.socket.cork();
    try {
      for (const buf of data) {
        sentBytes += buf.byteLength;
        canSendMore = this.socket.write(buf);
        if (!canSendMore) break;
      }
    } finally {
      this.socket.uncork();
    }
    return { sentBytes, canSendMore };
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    if (this.socket.destroyed) return;
    this.socket.destroySoon();
    await once(this.socket, 'close', options?.signal ? { signal: options.signal } : {});
  }

  sendReset(): void {
    if (this.socket.writableEnded) this.socket.destroy();
    else this.socket.resetAndDestroy();
  }

  sendPause(): void {
    this.socket.pause();
  }

  sendResume(): void {
    this.socket.resume();
  }
}

export function socketToMultiaddrConnection(init: {
  socket: Socket;
  remoteAddr: Multiaddr;
  direction: MessageStreamDirection;
  log: Logger;
}): AbstractMultiaddrConnection {
  return new PunchedSocketConnection(init);
}
