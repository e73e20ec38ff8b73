import { test } from 'node:test';
import assert from 'node:assert/strict';
import { packDedupe, unpackDedupe } from '../src/codec';

test('packed dedupe table: round trip keeps ids, replies and order (oldest first)', () => {
  const table = new Map<string, Buffer>();
  table.set('', Buffer.alloc(0));
  table.set('load-1:1', Buffer.from('{"value":1}'));
  table.set('ünïcødé:2', Buffer.from([0, 1, 2, 255]));
  table.set('x'.repeat(1000), Buffer.alloc(70_000, 7));
  const back = new Map<string, Buffer>();
  unpackDedupe(packDedupe(table), back);
  assert.deepEqual([...back.keys()], [...table.keys()]);
  for (const [id, reply] of table) assert.ok(back.get(id)!.equals(reply), id.slice(0, 20));
  const empty = new Map<string, Buffer>();
  unpackDedupe(packDedupe(new Map()), empty);
  unpackDedupe(new Uint8Array(0), empty);
  assert.equal(empty.size, 0);
});

test('packed dedupe table: a malformed blob is refused whole (nothing added)', () => {
  const good = packDedupe(new Map([['a', Buffer.from('1')], ['b', Buffer.from('2')]]));
  const bad: [string, Uint8Array][] = [
    ['short header', good.subarray(0, 3)],
    ['truncated', good.subarray(0, good.length - 1)],
    ['trailing bytes', Buffer.concat([good, Buffer.from([0])])],
    ['count too high', Buffer.concat([Buffer.from([9, 0, 0, 0]), good.subarray(4)])],
    ['reply length past the end', Buffer.from([1, 0, 0, 0, 1, 0, 0x61, 0xff, 0xff, 0xff, 0x7f])],
  ];
  for (const [what, blob] of bad) {
    const into = new Map<string, Buffer>([['keep', Buffer.from('k')]]);
    assert.throws(() => unpackDedupe(blob, into), RangeError, what);
    assert.deepEqual([...into.keys()], ['keep'], `${what}: nothing added`);
  }
});
