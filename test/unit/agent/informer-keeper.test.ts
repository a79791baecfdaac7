import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { InformerKeeper } from '../../../agent/informer-keeper.ts';
import { silentLogger } from '../../../common/log.ts';

/** An informer double whose start() does what the test says: succeed, reject, or report an error while starting. */
function fakeInformer(plan: Array<'ok' | 'reject' | 'error-during-start'>) {
  const events = new EventEmitter();
  let starts = 0;
  let running = 0;
  let maxRunning = 0;
  const informer = {
    on: (verb: 'error', cb: (err: unknown) => void) => events.on(verb, cb),
    start: async () => {
      starts++;
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      const step = plan.shift() ?? 'ok';
      if (step === 'reject') throw new Error('ECONNREFUSED');
      if (step === 'error-during-start') events.emit('error', new Error('list failed'));
    },
  };
  return {
    informer,
    fail: (err: Error) => events.emit('error', err),
    starts: () => starts,
    maxRunning: () => maxRunning,
  };
}

const until = async (check: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('InformerKeeper', () => {
  it('restarts after an error, and again when the restart itself fails (rejected, or an error while starting)', async () => {
    const f = fakeInformer(['reject', 'error-during-start', 'ok']);
    const keeper = new InformerKeeper(f.informer, { log: silentLogger(), what: 'Node', firstDelayMs: 10 });
    f.fail(new Error('watch ended: connection reset'));
    await until(() => f.starts() === 3);
    await new Promise((r) => setTimeout(r, 100));
    expect(f.starts()).toBe(3); // the third start went through: no more restarts
    expect(keeper.errors).toBe(3);
    keeper.stop();
  });

  it('runs one restart at a time however many errors arrive, and none after stop()', async () => {
    const f = fakeInformer([]);
    const keeper = new InformerKeeper(f.informer, { log: silentLogger(), what: 'Node', firstDelayMs: 10 });
    for (let i = 0; i < 20; i++) f.fail(new Error('burst'));
    await until(() => f.starts() === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(f.starts()).toBe(1);
    expect(f.maxRunning()).toBe(1);
    keeper.stop();
    f.fail(new Error('after stop'));
    await new Promise((r) => setTimeout(r, 50));
    expect(f.starts()).toBe(1);
  });
});
