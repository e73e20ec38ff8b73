import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteGate } from '../src/byte-gate';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('ByteGate: large transfers go one at a time, in arrival order; small ones go together', async () => {
  const gate = new ByteGate(1000);
  const order: string[] = [];
  const releases = new Map<string, () => void>();
  const start = (name: string, bytes: number): void => {
    void gate.acquire(bytes).then((release) => {
      order.push(name);
      releases.set(name, release);
    });
  };
  start('a', 700);
  start('b', 700);
  start('c', 700);
  await turn();
  assert.deepEqual(order, ['a'], 'b would take the gate past its budget while a is in flight');
  assert.equal(gate.queued, 2);
  releases.get('a')!();
  await turn();
  assert.deepEqual(order, ['a', 'b']);
  releases.get('a')!(); // a second release changes nothing
  await turn();
  assert.deepEqual(order, ['a', 'b'], 'a repeated release must not let c through');
  assert.equal(gate.bytesInFlight, 700);
  start('small', 10); // fits next to b, but c came first: no overtaking
  await turn();
  assert.deepEqual(order, ['a', 'b']);
  releases.get('b')!();
  await turn();
  assert.deepEqual(order, ['a', 'b', 'c', 'small'], 'c, then small next to it (710 <= 1000)');
  releases.get('c')!();
  releases.get('small')!();
  assert.equal(gate.bytesInFlight, 0);
  assert.equal(gate.queued, 0);

  const together = await Promise.all([gate.acquire(300), gate.acquire(300), gate.acquire(300)]);
  assert.equal(gate.bytesInFlight, 900, 'three that fit the budget are all in flight');
  for (const r of together) r();
  const huge = await gate.acquire(5000);
  assert.equal(gate.bytesInFlight, 5000, 'one transfer over the budget goes alone');
  huge();
});

test('ByteGate: a non-positive budget is refused', () => {
  assert.throws(() => new ByteGate(0), /budget must be positive/);
  assert.throws(() => new ByteGate(Number.NaN), /budget must be positive/);
});
