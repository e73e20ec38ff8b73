/** RsPauses: pause leases of a copy's RS (live migration). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError } from '@understudy/runtime';
import { RsPauses } from '../src/pause';

// Lease timers are unref'd (a pause must not keep a stopping copy alive): keep this test's event
// loop alive while it waits for one.
const keepAlive = setInterval(() => {}, 1000);
test.after(() => clearInterval(keepAlive));

function recorder(): { pauses: RsPauses; ended: [number, number, string][]; next: () => Promise<[number, number, string]> } {
  const ended: [number, number, string][] = [];
  let wake: ((e: [number, number, string]) => void) | undefined;
  const pauses = new RsPauses((rs, epoch, why) => {
    ended.push([rs, epoch, why]);
    wake?.([rs, epoch, why]);
  });
  return { pauses, ended, next: () => new Promise((r) => (wake = r)) };
}

test('a pause holds at its epoch only, and ends by itself when its lease runs out', async () => {
  const { pauses, next } = recorder();
  const t0 = Date.now();
  pauses.pause(3, 7, 50, 'test');
  assert.equal(pauses.isPaused(3, 7), true);
  assert.equal(pauses.isPaused(3, 8), false, 'another epoch is not paused');
  assert.equal(pauses.isPaused(4, 7), false);
  assert.deepEqual(await next(), [3, 7, 'expired']);
  assert.ok(Date.now() - t0 >= 45, 'not before the lease');
  assert.equal(pauses.isPaused(3, 7), false);
  assert.equal(pauses.size, 0);
});

test('resume and role changes end a pause at once; a repeated pause extends the lease', async () => {
  const { pauses, ended } = recorder();
  pauses.pause(1, 2, 10_000, 'test');
  pauses.pause(1, 2, 20_000, 'retry');
  assert.ok(pauses.until(1)! - Date.now() > 15_000, 'extended');
  assert.equal(pauses.resume(1), true);
  assert.equal(pauses.resume(1), false, 'idempotent');
  pauses.pause(2, 2, 10_000, 'test');
  pauses.roleChanged(2);
  pauses.roleChanged(2);
  assert.deepEqual(ended, [[1, 2, 'resumed'], [2, 2, 'role changed']]);
  pauses.pause(5, 1, 10_000, 'test');
  pauses.clear();
  assert.equal(pauses.size, 0, 'clear drops every lease (no callbacks: the copy is stopping)');
  assert.equal(ended.length, 2);
});

test('bad leases are refused', () => {
  const { pauses } = recorder();
  for (const ms of [0, -1, 1.5, 60_001, Number.NaN]) assert.throws(() => pauses.pause(0, 1, ms, 'x'), InvalidArgumentError, `lease ${ms}`);
  assert.equal(pauses.size, 0);
});

test('waitIdle resolves when the copy reports the RS idle, or fails after its timeout', async () => {
  const { pauses } = recorder();
  let busy = true;
  const w = pauses.waitIdle(4, () => busy, 5000, () => new Error('timeout'));
  pauses.idle(4); // still busy: keeps waiting
  busy = false;
  pauses.idle(4);
  await w;
  await pauses.waitIdle(4, () => false, 1, () => new Error('not used'));
  await assert.rejects(pauses.waitIdle(4, () => true, 20, () => new Error('batch still running')), /batch still running/);
});
