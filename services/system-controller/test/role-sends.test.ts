import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoleSendQueue } from '../src/role-sends';

/** A send that completes only when the test says so; records what was sent, in order. */
function slowCopy(): { sent: string[]; started: string[]; finishNext(): void; send(c: string): Promise<void> } {
  const sent: string[] = [];
  const started: string[] = [];
  const waiting: (() => void)[] = [];
  return {
    sent,
    started,
    finishNext: () => waiting.shift()?.(),
    send: (c) =>
      new Promise<void>((resolve) => {
        started.push(c);
        waiting.push(() => {
          sent.push(c);
          resolve();
        });
      }),
  };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('RoleSendQueue: in order; past the limit, later sends fold into ONE full set computed when its turn comes', async () => {
  const copy = slowCopy();
  let version = 0;
  const folded: number[] = [];
  const q = new RoleSendQueue<string>((c) => copy.send(c), () => `full@v${version}`, 3);
  const done: string[] = [];
  for (const c of ['a', 'b', 'c', 'd', 'e']) {
    version++;
    void q.push(c, (n) => folded.push(n)).then(() => done.push(c));
  }
  assert.equal(q.depth, 4, 'a, b, c and one full set');
  assert.equal(q.folding, true);
  assert.deepEqual(folded, [3], 'one log line for the fold');
  await turn();
  assert.deepEqual(copy.started, ['a'], 'one at a time');
  version = 9; // the state moves on while the queue drains
  for (let i = 0; i < 3; i++) {
    copy.finishNext();
    await turn();
  }
  assert.deepEqual(copy.started, ['a', 'b', 'c', 'full@v9'], 'the full set is computed at its turn, from the newest state');
  assert.equal(q.folding, false, 'started: later sends queue normally again');
  copy.finishNext();
  await turn();
  assert.deepEqual(copy.sent, ['a', 'b', 'c', 'full@v9']);
  assert.deepEqual(done.sort(), ['a', 'b', 'c', 'd', 'e'], 'd and e resolve with the full set that carried them');
  assert.equal(q.depth, 0);
});

test('RoleSendQueue: no full set to send (not leader, copy gone) sends nothing; a bad limit is refused', async () => {
  const copy = slowCopy();
  const q = new RoleSendQueue<string>((c) => copy.send(c), () => undefined, 1);
  const first = q.push('a');
  const second = q.push('b');
  await turn();
  copy.finishNext();
  await first;
  await second;
  assert.deepEqual(copy.sent, ['a']);
  assert.throws(() => new RoleSendQueue<string>(async () => undefined, () => undefined, 0), /maxQueued must be a positive integer/);
});
