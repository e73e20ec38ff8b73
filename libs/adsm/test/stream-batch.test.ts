import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { STREAM_BATCH_HEADER, TickBatcher, streamBatchMetadata, takesBatches } from '../src/stream-batch';

test('TickBatcher: what one turn pushes (promise chains included) is handed over once, after that turn', async () => {
  const batches: number[][] = [];
  const b = new TickBatcher<number>((items) => batches.push(items));
  b.push(1);
  void Promise.resolve().then(() => b.push(2)).then(() => b.push(3));
  b.push(4);
  assert.deepEqual(batches, [], 'nothing before the turn ends');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches, [[1, 4, 2, 3]]);
  b.push(5);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches, [[1, 4, 2, 3], [5]], 'the next turn is the next batch');
});

test('TickBatcher: bounded by items and bytes; clear drops what waits', async () => {
  const batches: string[][] = [];
  const b = new TickBatcher<string>((items) => batches.push(items), (s) => s.length, { maxItems: 3, maxBytes: 10 });
  for (const s of ['a', 'b', 'c', 'd']) b.push(s);
  assert.deepEqual(batches, [['a', 'b', 'c']], 'a full batch goes at once');
  b.push('0123456789');
  assert.deepEqual(batches, [['a', 'b', 'c'], ['d'], ['0123456789']], 'an item past the byte bound starts its own batch (and fills it)');
  b.push('01234');
  b.push('56789');
  assert.deepEqual(batches.slice(3), [['01234', '56789']], 'reaching the byte bound hands the batch over');
  batches.length = 2;
  b.push('x');
  b.clear();
  assert.equal(b.size, 0);
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 2, 'a cleared item is not handed over');
  assert.throws(() => new TickBatcher(() => undefined, undefined, { maxItems: 0 }), RangeError);
  assert.throws(() => new TickBatcher(() => undefined, undefined, { maxBytes: 0 }), RangeError);
});

test('STREAM_BATCH header: read from grpc-js metadata and from plain HTTP/2 headers', () => {
  assert.equal(takesBatches(streamBatchMetadata()), true);
  assert.equal(takesBatches(new grpc.Metadata()), false);
  assert.equal(takesBatches({ [STREAM_BATCH_HEADER]: '1' }), true);
  assert.equal(takesBatches({ [STREAM_BATCH_HEADER]: '0' }), false);
  assert.equal(takesBatches({}), false);
});
