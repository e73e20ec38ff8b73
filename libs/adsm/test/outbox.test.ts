/**
 * The pure parts of the data flow: checking a handler's sends against the edges (dataflow.ts),
 * the outbox bookkeeping (outbox.ts) and the outbox in checkpoints (checkpoint.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailedPreconditionError, InvalidArgumentError } from '@understudy/runtime';
import { decodeCheckpoint, decodeJson, encodeCheckpoint, Outbox, outboxMessageId, resolveSends, type OutgoingMessage } from '../src/index';

const EDGES = [
  { from: 'collector', to: 'aggregator', keyField: 'subscriber' },
  { from: 'collector', to: 'audit', keyField: 'id' },
];
const LIMITS = { maxPayloadBytes: 200, maxSends: 3 };

function resolve(sends: unknown, edges = EDGES, limits = LIMITS): ReturnType<typeof resolveSends> {
  let n = 0;
  return resolveSends('collector', edges, sends as OutgoingMessage[], limits, () => outboxMessageId('collector', 2, 7, ++n));
}

test('resolveSends: the key comes from OutgoingMessage.key or the edge key field; ids count per message', () => {
  const out = resolve([
    { app: 'aggregator', payload: { subscriber: 's-1', bytes: 10 } },
    { app: 'aggregator', key: 'explicit', payload: { subscriber: 's-2' } },
    { app: 'audit', payload: { id: 42 } },
  ]);
  assert.deepEqual(
    out.map((e) => [e.messageId, e.toApp, e.key]),
    [
      ['collector:2:7:1', 'aggregator', 's-1'],
      ['collector:2:7:2', 'aggregator', 'explicit'],
      ['collector:2:7:3', 'audit', '42'],
    ],
  );
  assert.deepEqual(decodeJson(out[0]!.payload), { subscriber: 's-1', bytes: 10 });
  assert.deepEqual(resolve([]), []);
});

test('resolveSends: a destination without an edge is an unknown edge (FAILED_PRECONDITION naming the edges)', () => {
  assert.throws(
    () => resolve([{ app: 'aggregator', payload: { subscriber: 'a' } }, { app: 'billing', payload: {} }]),
    (e: Error) => e instanceof FailedPreconditionError && /unknown edge/.test(e.message) && /collector -> billing/.test(e.message) && /aggregator, audit/.test(e.message),
  );
  assert.throws(() => resolve([{ app: 'aggregator', payload: { subscriber: 'a' } }], []), (e: Error) => e instanceof FailedPreconditionError && /edges from collector: none/.test(e.message));
});

test('resolveSends: bad sends are INVALID_ARGUMENT with the reason', () => {
  const bad: [unknown, RegExp][] = [
    [[{ app: 'aggregator', payload: { other: 1 } }], /missing key .*"subscriber"/],
    [[{ app: 'aggregator', payload: { subscriber: '' } }], /missing key/],
    [[{ app: 'aggregator', payload: { subscriber: { nested: 1 } } }], /missing key/],
    [[{ app: 'aggregator', payload: 'just a string' }], /missing key/],
    [[{ app: 'aggregator', key: 5, payload: {} }], /key must be a string/],
    [[{ app: 'aggregator', payload: { subscriber: 'x', pad: 'y'.repeat(300) } }], /payload of \d+ bytes exceeds the limit of 200/],
    [[{ app: 'aggregator', key: 'k'.repeat(1025), payload: {} }], /key of 1025 characters/],
    [[{ app: 'aggregator', payload: { subscriber: 'x', n: 10n } }], /not JSON-serialisable/],
    [[null], /send\[0\] .* is not an object/],
    [[{ payload: {} }], /no destination app/],
    [{ app: 'aggregator' }, /not a list/],
    [Array.from({ length: 4 }, () => ({ app: 'audit', payload: { id: 1 } })), /sent 4 messages for one message; at most 3/],
  ];
  for (const [sends, re] of bad) {
    assert.throws(() => resolve(sends), (e: Error) => e instanceof InvalidArgumentError && re.test(e.message), `${JSON.stringify(sends, (_k, v) => (typeof v === 'bigint' ? 'bigint' : v))?.slice(0, 80)} → ${re}`);
  }
});

function entry(id: string, bytes = 10): { messageId: string; toApp: string; key: string; payload: Buffer } {
  return { messageId: id, toApp: 'b', key: 'k', payload: Buffer.alloc(bytes) };
}

test('Outbox: ids count from 1 per epoch and never repeat across epochs', () => {
  const ob = new Outbox();
  assert.equal(ob.nextId('a', 3, 5), 'a:3:5:1');
  assert.equal(ob.nextId('a', 3, 5), 'a:3:5:2');
  assert.equal(ob.nextId('a', 3, 6), 'a:3:6:1');
});

test('Outbox: entries and tombstones as replicated; acks remove at once and leave a tombstone', () => {
  const active = new Outbox();
  const standby = new Outbox();
  const added = [entry('x:0:1:1'), entry('x:0:1:2'), entry('x:0:1:3')];
  active.applyEntry(1, added, []);
  standby.applyEntry(1, added, []);
  assert.equal(active.size, 3);
  assert.equal(active.bytes, standby.bytes);
  assert.ok(active.bytes > 30);
  assert.equal(active.acked('x:0:1:2'), true);
  assert.equal(active.acked('x:0:1:2'), false, 'a second ack of the same entry is ignored');
  assert.equal(active.size, 2);
  assert.ok(active.hasDone());
  const done = active.takeDone();
  assert.deepEqual(done, ['x:0:1:2']);
  assert.equal(active.hasDone(), false);
  // The tombstone rides on the next update; the active already removed the entry.
  active.applyEntry(2, [], done);
  standby.applyEntry(2, [], done);
  assert.deepEqual(active.list().map((e) => e.messageId), ['x:0:1:1', 'x:0:1:3']);
  assert.deepEqual(standby.list(), active.list());
  // A replayed add (same id) is not held twice.
  standby.applyEntry(3, [entry('x:0:1:1')], []);
  assert.equal(standby.size, 2);
});

test('Outbox: bounds by entries and by bytes', () => {
  const ob = new Outbox();
  const bounds = { maxEntries: 3, maxBytes: 1000 };
  ob.applyEntry(1, [entry('e1'), entry('e2')], []);
  assert.equal(ob.full(bounds), false);
  ob.applyEntry(2, [entry('e3')], []);
  assert.equal(ob.full(bounds), true);
  ob.acked('e1');
  assert.equal(ob.full(bounds), false);
  ob.applyEntry(3, [entry('big', 2000)], []);
  assert.equal(ob.full({ maxEntries: 100, maxBytes: 1000 }), true);
});

test('Outbox: restore replaces everything; sending state belongs to one epoch and generation', () => {
  const ob = new Outbox();
  ob.applyEntry(4, [entry('e1'), entry('e2')], []);
  ob.beginSending(7);
  const gen = ob.gen;
  const first = ob.get('e1')!;
  ob.markSent(first);
  assert.equal(ob.inflight, 1);
  ob.beginSending(7); // same epoch: keeps the state
  assert.equal(ob.inflight, 1);
  assert.equal(ob.settle(first, gen), true);
  assert.equal(ob.settle(first, gen), false, 'settled once');
  ob.markSent(first);
  ob.beginSending(8); // a new activation sends everything again
  assert.equal(ob.inflight, 0);
  assert.equal(ob.settle(first, gen), false, 'an answer to an older generation is ignored');
  first.attempts = 2;
  first.retryAt = 123;
  assert.equal(ob.nextRetryAt(), 123);
  ob.acked('e2');
  ob.restore([entry('r1')], 9);
  assert.deepEqual(ob.list().map((e) => e.messageId), ['r1']);
  assert.equal(ob.hasDone(), false, 'tombstones are dropped with the old state');
  assert.equal(ob.get('r1')!.seq, 9);
  ob.clear();
  assert.equal(ob.size, 0);
  assert.equal(ob.bytes, 0);
});

test('checkpoints carry the outbox (version 2) and still read version 1', () => {
  const base = { epoch: 3, seq: 9, state: Buffer.from('{"a":1}'), dedupe: [['m1', Buffer.from('r')] as const] };
  const v1 = encodeCheckpoint(base);
  assert.equal(v1[4], 1, 'no outbox: still written as version 1');
  assert.equal(decodeCheckpoint(v1).outbox, undefined);
  const outbox = [entry('a:0:3:1', 5), { messageId: 'a:0:3:2', toApp: 'c', key: 'kk', payload: Buffer.from('{"x":2}') }];
  const v2 = encodeCheckpoint({ ...base, outbox });
  assert.equal(v2[4], 2);
  const back = decodeCheckpoint(v2);
  assert.equal(back.seq, 9);
  assert.deepEqual(back.dedupe.map(([id]) => id), ['m1']);
  assert.deepEqual(back.outbox!.map((e) => [e.messageId, e.toApp, e.key, Buffer.from(e.payload).toString('hex')]), outbox.map((e) => [e.messageId, e.toApp, e.key, e.payload.toString('hex')]));
  assert.throws(() => decodeCheckpoint(v2.subarray(0, v2.length - 3)), InvalidArgumentError);
});
