import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DedupeTable } from '../src/dedupe';

const noEntries: { messageId: string; reply: Uint8Array }[] = [];

function filled(window: number, ids: string[]): DedupeTable {
  const t = new DedupeTable(window);
  for (const id of ids) t.set(id, Buffer.from(`r:${id}`));
  return t;
}

test('dedupe table: keeps the newest `window` entries, oldest first, first reply wins', () => {
  const t = filled(3, ['a', 'b', 'c', 'd']);
  assert.equal(t.size, 3);
  assert.equal(t.get('a'), undefined, 'the oldest was dropped');
  assert.equal(t.get('d')!.toString(), 'r:d');
  t.set('c', Buffer.from('other'));
  assert.equal(t.get('c')!.toString(), 'r:c', 'a duplicate keeps its first reply');
  assert.deepEqual(t.entries().map(([id]) => id), ['b', 'c', 'd']);
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(t.get('d'), undefined);
});

test('dedupe table: pack → load round trip keeps ids, replies and order; the index is built on first read', () => {
  const src = new DedupeTable(10);
  src.set('', Buffer.alloc(0));
  src.set('load-1:1', Buffer.from('{"value":1}'));
  src.set('ünïcødé:2', Buffer.from([0, 1, 2, 255]));
  src.set('x'.repeat(1000), Buffer.alloc(70_000, 7));
  const dst = new DedupeTable(10);
  dst.load(noEntries, src.pack());
  assert.equal(dst.indexed, false, 'loading does not build the index');
  assert.equal(dst.size, 4);
  assert.deepEqual(dst.entries(), src.entries());
  assert.ok(dst.get('ünïcødé:2')!.equals(Buffer.from([0, 1, 2, 255])));
  assert.equal(dst.indexed, true);
  assert.equal(dst.get('x'.repeat(1000))!.length, 70_000);
  // Packing what was loaded gives the same bytes.
  assert.ok(dst.pack().equals(src.pack()));
  // An empty blob (a sender with no table) and an empty table round trip.
  const empty = new DedupeTable(5);
  empty.load(noEntries, new Uint8Array(0));
  assert.equal(empty.size, 0);
  empty.load(noEntries, new DedupeTable(5).pack());
  assert.equal(empty.size, 0);
});

test('dedupe table: appends and drops on an unindexed (just loaded) table stay consistent once indexed', () => {
  const src = filled(100, Array.from({ length: 50 }, (_, i) => `m${i}`));
  const dst = new DedupeTable(60);
  dst.load(noEntries, src.pack());
  for (let i = 50; i < 80; i++) dst.set(`m${i}`, Buffer.from(`r:m${i}`)); // a standby applying entries
  assert.equal(dst.size, 60);
  assert.equal(dst.get('m19'), undefined);
  for (let i = 20; i < 80; i++) assert.equal(dst.get(`m${i}`)?.toString(), `r:m${i}`, `m${i}`);
  // Indexed from now on: further drops remove index entries too.
  for (let i = 80; i < 200; i++) dst.set(`m${i}`, Buffer.from(`r:m${i}`));
  assert.equal(dst.size, 60);
  assert.equal(dst.get('m139'), undefined);
  assert.equal(dst.get('m140')!.toString(), 'r:m140');
});

test('dedupe table: a snapshot larger than the window keeps its newest entries; old-format entries come first', () => {
  const src = filled(100, Array.from({ length: 10 }, (_, i) => `m${i}`));
  const dst = new DedupeTable(4);
  dst.load([{ messageId: 'old', reply: Buffer.from('o') }], src.pack());
  assert.deepEqual(dst.entries().map(([id]) => id), ['m6', 'm7', 'm8', 'm9']);
  const both = new DedupeTable(100);
  both.load([{ messageId: 'old', reply: Buffer.from('o') }], src.pack());
  assert.equal(both.size, 11);
  assert.equal(both.get('old')!.toString(), 'o');
});

test('dedupe table: replies handed out stay valid while the buffer grows and compacts (many entries, big replies)', () => {
  const t = new DedupeTable(500);
  const held: [string, Buffer][] = [];
  for (let i = 0; i < 20_000; i++) {
    const id = `id-${i}`;
    t.set(id, Buffer.alloc(1 + (i % 300), i % 251));
    if (i % 997 === 0) held.push([id, t.get(id)!]);
  }
  assert.equal(t.size, 500);
  for (const [id, reply] of held) {
    const i = Number(id.slice(3));
    assert.ok(reply.equals(Buffer.alloc(1 + (i % 300), i % 251)), id);
  }
  for (let i = 19_500; i < 20_000; i++) assert.equal(t.get(`id-${i}`)!.length, 1 + (i % 300));
  assert.equal(t.get('id-19499'), undefined);
});

test('dedupe table: a malformed blob is refused whole (the table is unchanged)', () => {
  const good = filled(10, ['a', 'b']).pack();
  const bad: [string, Uint8Array][] = [
    ['short header', good.subarray(0, 3)],
    ['truncated', good.subarray(0, good.length - 1)],
    ['trailing bytes', Buffer.concat([good, Buffer.from([0])])],
    ['count too high', Buffer.concat([Buffer.from([9, 0, 0, 0]), good.subarray(4)])],
    ['reply length past the end', Buffer.from([1, 0, 0, 0, 1, 0, 0x61, 0xff, 0xff, 0xff, 0x7f])],
  ];
  for (const [what, blob] of bad) {
    const t = filled(10, ['keep']);
    assert.throws(() => t.load(noEntries, blob), RangeError, what);
    assert.deepEqual(t.entries().map(([id]) => id), ['keep'], `${what}: unchanged`);
    assert.equal(t.get('keep')!.toString(), 'r:keep');
  }
  assert.throws(() => new DedupeTable(0), RangeError);
  assert.throws(() => new DedupeTable(5).set('x'.repeat(70_000), Buffer.alloc(0)), RangeError);
});

test('dedupe table: matches a simple model over seeded random sets, lookups, drops and snapshot loads', () => {
  // The model: entries oldest first, at most `window`; an id already held keeps its first
  // reply. (A just-loaded table appends without looking, as a standby applying its active's
  // already-deduped entries does; the test above covers that, so here a load is read at once.)
  for (let seed = 1; seed <= 20; seed++) {
    let x = seed * 0x9e3779b1;
    const rand = (n: number): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    const window = 1 + rand(300);
    const idSpace = window * (1 + rand(4));
    const idOf = (k: number): string => (k % 7 === 0 ? `ü-${k}` : `m-${k}`);
    let t = new DedupeTable(window);
    const model: [string, string][] = [];
    for (let step = 0; step < 5000; step++) {
      const op = rand(100);
      const id = idOf(rand(idSpace));
      if (op < 60) {
        const reply = `r${step}`;
        t.set(id, Buffer.from(reply));
        if (!model.some(([m]) => m === id)) {
          model.push([id, reply]);
          if (model.length > window) model.shift();
        }
      } else if (op < 99) {
        const want = model.find(([m]) => m === id)?.[1];
        assert.equal(t.get(id)?.toString(), want, `seed ${seed} step ${step}: get ${id}`);
      } else {
        // A standby installing a snapshot of the table.
        const copy = new DedupeTable(window);
        copy.load(noEntries, t.pack());
        copy.warm();
        t = copy;
      }
      assert.equal(t.size, model.length, `seed ${seed} step ${step}: size`);
    }
    assert.deepEqual(t.entries().map(([id, r]) => [id, r.toString()]), model, `seed ${seed}: entries`);
  }
});

test('dedupe table: packSplit then load(newest) + prependPacked(older) rebuilds the same table (SNAPSHOT_SPLIT)', () => {
  const ids = Array.from({ length: 500 }, (_, i) => `split-${i}`);
  const a = filled(1000, ids);
  const whole = a.pack();
  const { newest, older } = a.packSplit(1000);
  assert.ok(older !== undefined, 'a table over the bound is split');
  assert.ok(newest.length - 4 <= 1000, `newest part holds ${newest.length - 4} bytes of entries`);
  assert.equal(newest.readUInt32LE(0) + older.readUInt32LE(0), 500);
  assert.equal(older.length + newest.length - 4, whole.length, 'the parts hold exactly what pack() holds');

  const b = new DedupeTable(1000);
  b.load(noEntries, newest);
  assert.equal(b.get('split-0'), undefined, 'before the older part, only the newest ids are known');
  assert.equal(b.get('split-499')!.toString(), 'r:split-499');
  b.set('after-0', Buffer.from('r:after-0')); // committed while the older part travels
  b.prependPacked(older);
  assert.deepEqual(b.entries().map(([id]) => id), [...ids, 'after-0'], 'older entries in front, in order');
  assert.equal(b.get('split-0')!.toString(), 'r:split-0');
  assert.equal(b.get('after-0')!.toString(), 'r:after-0');

  // Window: the prepended oldest are the first to go.
  const c = new DedupeTable(100);
  c.load(noEntries, newest);
  c.prependPacked(older);
  assert.equal(c.size, 100);
  assert.deepEqual(c.entries().map(([id]) => id), ids.slice(-100));

  // Under the bound: one part.
  const small = a.packSplit(1 << 20);
  assert.equal(small.older, undefined);
  assert.deepEqual(small.newest, whole);

  // A malformed older part is refused whole and changes nothing.
  const d = new DedupeTable(1000);
  d.load(noEntries, newest);
  const before = d.entries();
  assert.throws(() => d.prependPacked(Buffer.from([3, 0, 0, 0, 1])), /dedupe blob truncated/);
  assert.deepEqual(d.entries(), before);
  d.prependPacked(Buffer.alloc(0));
  assert.deepEqual(d.entries(), before, 'an empty part is nothing to add');
});

test('dedupe table: prependMissingFrom fills a newest-only table from a complete one of an earlier point of the same history', () => {
  const ids = Array.from({ length: 400 }, (_, i) => `h-${i}`);
  const { newest } = filled(1000, ids).packSplit(800);
  const partialOf = (window: number): DedupeTable => {
    const t = new DedupeTable(window);
    t.load(noEntries, newest);
    return t;
  };
  const newestIds = partialOf(1000).entries().map(([id]) => id);
  assert.ok(newestIds.length < 50 && newestIds[0] !== 'h-0', `the partial table holds only the newest ids (${newestIds.length})`);

  // The complete table ends inside the newest part (a standby one batch behind): joined.
  const complete = filled(1000, ids.slice(0, 390));
  const partial = partialOf(1000);
  assert.deepEqual(partial.prependMissingFrom(complete), { added: 400 - newestIds.length, joined: true }, 'every id it lacked, none it had');
  assert.deepEqual(partial.entries().map(([id]) => id), ids, 'the whole history, oldest first');
  assert.equal(partial.get('h-0')!.toString(), 'r:h-0');
  assert.equal(partial.get('h-399')!.toString(), 'r:h-399');
  assert.deepEqual(partial.prependMissingFrom(complete), { added: 0, joined: true }, 'nothing missing any more');

  // The complete table ends before the newest part: the ids in between are known to neither.
  const behind = partialOf(1000);
  const gap = behind.prependMissingFrom(filled(1000, ids.slice(0, 300)));
  assert.deepEqual(gap, { added: 300, joined: false });
  assert.equal(behind.get('h-300'), undefined, 'h-300 is in neither table');

  // The window still bounds the result: the prepended oldest go first.
  const small = partialOf(100);
  small.prependMissingFrom(complete);
  assert.deepEqual(small.entries().map(([id]) => id), ids.slice(-100));
});
