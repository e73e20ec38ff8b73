import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareKeys, decide, emptyState, keyToRs, rsOfKey, validatePartitioning, validateTopology, MAX_RANGE_START_LENGTH } from '../src/index';
import type { AppSpec, Topology } from '../src/index';
import { ok, rejected, spec, topo } from './helpers';

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');

test('rsOfKey: HASH (and absent partitioning) is keyToRs', () => {
  for (const key of ['', 'a', 'subscriber:42', '日本', '😀x']) {
    assert.equal(rsOfKey({ rsCount: 7 }, key), keyToRs(key, 7));
    assert.equal(rsOfKey({ partitioning: 'HASH', rsCount: 7 }, key), keyToRs(key, 7));
  }
});

test('rsOfKey: RANGE puts each key in the range it falls in (starts are inclusive)', () => {
  const p = { partitioning: 'RANGE', rsCount: 4, rangeStarts: ['g', 'p', 'pz'] } as const;
  const cases: [string, number][] = [
    ['', 0], ['a', 0], ['fzzz', 0], ['g', 1], ['g0', 1], ['oz', 1], ['p', 2], ['pa', 2], ['py~', 2], ['pz', 3], ['pza', 3], ['z', 3], ['\u{10000}', 3],
  ];
  for (const [key, rs] of cases) assert.equal(rsOfKey(p, key), rs, JSON.stringify(key));
  assert.equal(rsOfKey({ partitioning: 'RANGE', rsCount: 1, rangeStarts: [] }, 'anything'), 0);
});

test('rsOfKey: RANGE binary search agrees with a linear scan on many keys', () => {
  const starts = Array.from({ length: 99 }, (_, i) => `k${String(i + 1).padStart(3, '0')}`);
  const p = { partitioning: 'RANGE', rsCount: 100, rangeStarts: starts } as const;
  const linear = (key: string): number => starts.filter((s) => compareKeys(s, key) <= 0).length;
  for (let i = 0; i < 2000; i++) {
    const key = `k${String(i % 1000).padStart(3, '0')}${i % 3 === 0 ? '' : 'x'}`;
    assert.equal(rsOfKey(p, key), linear(key), key);
  }
});

test('rsOfKey: a malformed RANGE partition is a programming error', () => {
  assert.throws(() => rsOfKey({ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['m'] }, 'a'), RangeError);
  assert.throws(() => rsOfKey({ partitioning: 'RANGE', rsCount: 0, rangeStarts: [] }, 'a'), RangeError);
});

test('compareKeys orders by code point = UTF-8 byte order (not UTF-16 code units)', () => {
  const keys = ['', 'a', 'ab', 'b', 'é', '\uffff', '\u{10000}', '😀', '\ue000', 'z', 'a\u{10000}', 'a\uffff'];
  const byBytes = [...keys].sort((x, y) => Buffer.compare(utf8(x), utf8(y)));
  const byCompare = [...keys].sort(compareKeys);
  assert.deepEqual(byCompare, byBytes);
  // JavaScript's < would put U+10000 (a surrogate pair, 0xD800…) before U+FFFF.
  assert.ok('\u{10000}' < '\uffff');
  assert.ok(compareKeys('\u{10000}', '\uffff') > 0);
  assert.equal(compareKeys('abc', 'abc'), 0);
  assert.ok(compareKeys('ab', 'abc') < 0 && compareKeys('abc', 'ab') > 0);
  // A lone surrogate counts as U+FFFD (what UTF-8 encoding makes of it).
  assert.equal(compareKeys('\ud800', '\ufffd'), 0);
  assert.ok(compareKeys('a\udc00', 'a\ufffe') < 0);
});

test('validatePartitioning accepts HASH without starts and RANGE with rsCount-1 increasing starts', () => {
  assert.equal(validatePartitioning({ rsCount: 4 }, 'app'), null);
  assert.equal(validatePartitioning({ partitioning: 'HASH', rsCount: 4, rangeStarts: [] }, 'app'), null);
  assert.equal(validatePartitioning({ partitioning: 'RANGE', rsCount: 1, rangeStarts: [] }, 'app'), null);
  assert.equal(validatePartitioning({ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['\uffff', '\u{10000}'] }, 'app'), null);
});

test('validatePartitioning names the bad field', () => {
  const cases: [Parameters<typeof validatePartitioning>[0], RegExp][] = [
    [{ partitioning: 'ZONES', rsCount: 2 }, /^app\.partitioning \(x\): "ZONES" is not one of HASH, RANGE$/],
    [{ partitioning: 'HASH', rsCount: 2, rangeStarts: ['m'] }, /^app\.rangeStarts \(x\): HASH partitioning takes no range starts/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['m'] }, /app\.rangeStarts \(x\): RANGE partitioning with rsCount 3 needs exactly 2 range starts .*got 1/],
    [{ partitioning: 'RANGE', rsCount: 3 }, /needs exactly 2 range starts.*got 0/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: 'm,n' }, /rangeStarts \(x\): must be a list/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['m', 5] }, /rangeStarts\[1\] \(x\): must be a string/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['', 'm'] }, /rangeStarts\[0\] \(x\): must not be empty/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['m', 'm'] }, /rangeStarts\[1\] \(x\): "m" must sort strictly after "m"/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['n', 'm'] }, /rangeStarts\[1\] \(x\): "m" must sort strictly after "n"/],
    [{ partitioning: 'RANGE', rsCount: 3, rangeStarts: ['\u{10000}', '\uffff'] }, /rangeStarts\[1\] \(x\): .* must sort strictly after/],
    [{ partitioning: 'RANGE', rsCount: 2, rangeStarts: ['a\ud800'] }, /rangeStarts\[0\] \(x\): contains a lone UTF-16 surrogate/],
    [{ partitioning: 'RANGE', rsCount: 2, rangeStarts: ['x'.repeat(MAX_RANGE_START_LENGTH + 1)] }, /rangeStarts\[0\] \(x\): longer than/],
  ];
  for (const [p, re] of cases) {
    const r = validatePartitioning(p, 'app', 'x');
    assert.ok(r !== null, `expected a problem for ${re}`);
    assert.match(r, re);
  }
});

const range = (name: string, rsCount: number, rangeStarts: string[]): AppSpec => ({ ...spec(name, 'DISTRIBUTED', rsCount, 0), partitioning: 'RANGE', rangeStarts });
const good = (apps: AppSpec[]): Topology => ({ apps, edges: [] });

test('validateTopology checks the partitioning of every app', () => {
  assert.equal(validateTopology(good([range('ledger', 3, ['g', 'p'])])), null);
  const r = validateTopology(good([spec('a', 'DISTRIBUTED', 2, 0), range('ledger', 3, ['p', 'g'])]));
  assert.equal(r?.code, 'INVALID_ARGUMENT');
  assert.match(r!.message, /^apps\[1\]\.rangeStarts\[1\] \(app "ledger"\): "g" must sort strictly after "p"/);
  const h = validateTopology(good([{ ...spec('h', 'DISTRIBUTED', 2, 0), rangeStarts: ['m'] }]));
  assert.match(h!.message, /^apps\[0\]\.rangeStarts \(app "h"\): HASH partitioning takes no range starts/);
});

test('a declared app keeps its partitioning; changing it is refused', () => {
  const s1 = ok(emptyState(), topo(range('ledger', 3, ['g', 'p']), spec('counts', 'DISTRIBUTED', 2, 0))).state;
  assert.deepEqual(s1.apps['ledger']!.spec.rangeStarts, ['g', 'p']);
  assert.equal(s1.apps['ledger']!.spec.partitioning, 'RANGE');
  assert.equal(s1.apps['counts']!.spec.partitioning, undefined);
  // Re-applying the same declaration is fine (and keeps it).
  const s2 = ok(s1, topo({ ...range('ledger', 3, ['g', 'p']), minCopies: 2 })).state;
  assert.deepEqual(s2.apps['ledger']!.spec.rangeStarts, ['g', 'p']);
  assert.equal(s2.apps['ledger']!.spec.minCopies, 2);
  rejected(s2, topo(range('ledger', 3, ['g', 'q'])), 'FAILED_PRECONDITION', /app "ledger": changing partitioning RANGE \(2 range starts\) -> RANGE \(2 range starts\) is not supported/);
  rejected(s2, topo(spec('ledger', 'DISTRIBUTED', 3, 0)), 'FAILED_PRECONDITION', /changing partitioning RANGE \(2 range starts\) -> HASH/);
  rejected(s2, topo(range('counts', 2, ['m'])), 'FAILED_PRECONDITION', /app "counts": changing partitioning HASH -> RANGE/);
  // Explicit HASH equals the absent default.
  ok(s2, topo({ ...spec('counts', 'DISTRIBUTED', 2, 0), partitioning: 'HASH' }));
  assert.equal(decide(s2, topo(range('ledger', 3, ['g'])), 0).rejection?.code, 'INVALID_ARGUMENT');
});
