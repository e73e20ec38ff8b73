/** ChangeSignal: waits end on a change or a timeout, and leave no listener behind either way. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChangeSignal } from '../src/signal';

describe('ChangeSignal', () => {
  test('a wait ends at the next change and removes its listener', async () => {
    const s = new ChangeSignal();
    let ended = false;
    const w = s.wait(60_000).then(() => (ended = true));
    assert.equal(s.listenerCount, 1);
    await Promise.resolve();
    assert.equal(ended, false);
    s.notify();
    await w;
    assert.equal(ended, true);
    assert.equal(s.listenerCount, 0);
    assert.equal(s.generation, 1);
  });

  test('a wait ends at its timeout without a change and removes its listener', async () => {
    const s = new ChangeSignal();
    await s.wait(5);
    assert.equal(s.listenerCount, 0);
    assert.equal(s.generation, 0);
  });

  test('a change after the generation the caller saw ends the wait at once', async () => {
    const s = new ChangeSignal();
    const seen = s.generation;
    s.notify();
    const t0 = Date.now();
    await s.wait(60_000, seen);
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(s.listenerCount, 0);
  });

  test('10,000 waits that time out and 10,000 subscriptions that end leave nothing behind', async () => {
    const s = new ChangeSignal();
    await Promise.all(Array.from({ length: 10_000 }, () => s.wait(0)));
    for (let i = 0; i < 10_000; i++) s.subscribe(() => undefined)();
    assert.equal(s.listenerCount, 0);
  });

  test('a subscription sees every change until it ends', () => {
    const s = new ChangeSignal();
    let n = 0;
    const off = s.subscribe(() => n++);
    s.notify();
    s.notify();
    off();
    off();
    s.notify();
    assert.equal(n, 2);
    assert.equal(s.listenerCount, 0);
  });

  test('a non-finite timeout is refused', () => {
    assert.throws(() => new ChangeSignal().wait(Infinity), RangeError);
  });
});
