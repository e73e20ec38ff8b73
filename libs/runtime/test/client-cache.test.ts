import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientCache } from '../src/index';

class FakeClient {
  closed = false;
  constructor(readonly address: string) {}
  close(): void {
    this.closed = true;
  }
}

test('ClientCache: one client per address, closed only after the grace period unreferenced', () => {
  const made: FakeClient[] = [];
  const cache = new ClientCache((a) => {
    const c = new FakeClient(a);
    made.push(c);
    return c;
  }, 1000);
  const a = cache.get('127.0.0.1:1');
  assert.equal(cache.get('127.0.0.1:1'), a, 'cached');
  const b = cache.get('127.0.0.1:2');
  assert.equal(cache.size, 2);
  // b unreferenced from t=0; a stays listed.
  assert.equal(cache.sweep(new Set(['127.0.0.1:1']), 0), 0);
  assert.equal(cache.sweep(new Set(['127.0.0.1:1']), 999), 0, 'within the grace period');
  assert.equal(b.closed, false);
  assert.equal(cache.sweep(new Set(['127.0.0.1:1']), 1000), 1);
  assert.equal(b.closed, true);
  assert.equal(a.closed, false);
  assert.equal(cache.size, 1);
  // A new get after closing builds a fresh client.
  const b2 = cache.get('127.0.0.1:2');
  assert.notEqual(b2, b);
  // A use resets the clock: referenced again, it survives the next sweeps until unlisted long enough.
  cache.sweep(new Set(), 5000);
  cache.get('127.0.0.1:2');
  assert.equal(cache.sweep(new Set(), 5500), 0, 'used again at 5000+: its clock restarted at the sweep after');
  assert.equal(cache.sweep(new Set(), 6500), 2);
  assert.equal(cache.size, 0);
  cache.get('x');
  cache.closeAll();
  assert.equal(made.at(-1)!.closed, true);
  assert.throws(() => new ClientCache((x) => new FakeClient(x), -1), /graceMs/);
});
