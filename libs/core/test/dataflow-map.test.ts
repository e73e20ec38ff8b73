/**
 * The data-flow map in the decision core (R-DFM-1): edges must name declared apps, not repeat,
 * not point at their own app, and form no cycle; a bad map is refused with INVALID_ARGUMENT and
 * a message naming the edge, and the state is left as it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyState, validateTopology, type Edge } from '../src/index';
import { ok, rejected, spec } from './helpers';

const apps = ['collector', 'aggregator', 'enhancer', 'output'].map((n) => spec(n, 'DISTRIBUTED', 2, 0));
const e = (from: string, to: string, keyField = 'k'): Edge => ({ from, to, keyField });

test('a chain and a diamond are valid maps', () => {
  assert.equal(validateTopology({ apps, edges: [e('collector', 'aggregator'), e('aggregator', 'enhancer'), e('enhancer', 'output')] }), null);
  assert.equal(validateTopology({ apps, edges: [e('collector', 'aggregator'), e('collector', 'enhancer'), e('aggregator', 'output'), e('enhancer', 'output')] }), null);
});

test('self-edges, cycles, duplicates, unknown apps and over-long key fields are INVALID_ARGUMENT', () => {
  const cases: [Edge[], RegExp][] = [
    [[e('aggregator', 'aggregator')], /edges\[0\]: edge aggregator -> aggregator points at its own app/],
    [[e('collector', 'aggregator'), e('aggregator', 'collector')], /cycle (collector -> aggregator -> collector|aggregator -> collector -> aggregator)/],
    [[e('collector', 'aggregator'), e('aggregator', 'enhancer'), e('enhancer', 'output'), e('output', 'aggregator')], /cycle aggregator -> enhancer -> output -> aggregator/],
    [[e('collector', 'aggregator'), e('collector', 'aggregator', 'other')], /edges\[1\]: duplicate edge collector -> aggregator/],
    [[e('collector', 'billing')], /edges\[0\]\.to: app "billing" is not declared/],
    [[e('collector', 'aggregator', 'x'.repeat(257))], /keyField: edge collector -> aggregator has a keyField of 257 characters; at most 256/],
  ];
  for (const [edges, re] of cases) {
    const r = validateTopology({ apps, edges });
    assert.ok(r, `expected a rejection for ${re}`);
    assert.equal(r.code, 'INVALID_ARGUMENT');
    assert.match(r.message, re);
  }
});

test('ApplyTopology with a bad map is refused and changes nothing; a good one replaces the edges', () => {
  const s = ok(emptyState(), { type: 'TopologyApplied', topology: { apps, edges: [e('collector', 'aggregator', 'subscriber')] } }).state;
  rejected(s, { type: 'TopologyApplied', topology: { apps: [], edges: [e('collector', 'aggregator'), e('aggregator', 'collector')] } }, 'INVALID_ARGUMENT', /cycle/);
  rejected(s, { type: 'TopologyApplied', topology: { apps: [], edges: [e('enhancer', 'enhancer')] } }, 'INVALID_ARGUMENT', /own app/);
  const d = ok(s, { type: 'TopologyApplied', topology: { apps: [], edges: [e('collector', 'aggregator', 'account'), e('aggregator', 'enhancer')] } });
  assert.deepEqual(d.state.edges, [e('collector', 'aggregator', 'account'), e('aggregator', 'enhancer')]);
  assert.match(d.notes.join('\n'), /edge collector -> aggregator: keyField subscriber -> account/);
  assert.match(d.notes.join('\n'), /edge aggregator -> enhancer added/);
});
