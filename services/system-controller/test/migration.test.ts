/**
 * `plannedHandoffs` (which RS a decision hands over from a live active, so the controller pauses
 * them first) over real decisions of the pure core: moves, their completion, drain — and not
 * failovers or disables, whose old active is dead or fenced at once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ClusterState, ControllerEvent } from '@understudy/core';
import { cluster, ok, settle, spec } from '../../../libs/core/test/helpers';
import { handedOver, plannedHandoffs } from '../src/migration';

const DFT = spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1);
const head = (s: ClusterState, rs: number): string => s.apps.dft!.rs[rs]!.members[0]!.copyId;
const standby = (s: ClusterState, rs: number): string => s.apps.dft!.rs[rs]!.members.find((m) => m.role === 'STANDBY')!.copyId;

function after(s: ClusterState, ev: ControllerEvent): ClusterState {
  return ok(s, ev).state;
}

test('a move to a caught-up standby hands its RS over from the old active, at the old epoch', () => {
  const s = settle(cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']));
  const from = head(s, 2);
  const t = after(s, { type: 'MoveRequested', app: 'dft', rs: 2, toCopyId: standby(s, 2) });
  const hs = plannedHandoffs(s, t);
  assert.deepEqual(hs, [{ app: 'dft', rs: 2, fromCopyId: from, epoch: s.apps.dft!.rs[2]!.epoch }]);
  assert.equal(handedOver(t, hs[0]!), true);
  assert.equal(handedOver(s, hs[0]!), false);
});

test('a move that must catch up first hands nothing over until the report completes it', () => {
  const s = settle(cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']));
  const listed = new Set(s.apps.dft!.rs[1]!.members.map((m) => m.copyId));
  const to = ['c1', 'c2', 'c3'].find((c) => !listed.has(c))!;
  const t1 = after(s, { type: 'MoveRequested', app: 'dft', rs: 1, toCopyId: to });
  assert.deepEqual(plannedHandoffs(s, t1), [], 'the target only joined as a standby');
  const a = t1.apps.dft!.rs[1]!;
  const from = head(t1, 1);
  const t2 = after(t1, { type: 'StandbysSynced', entries: [{ app: 'dft', rs: 1, copyId: to, incarnation: 1, version: a.version, reportedBy: from }] });
  assert.deepEqual(plannedHandoffs(t1, t2), [{ app: 'dft', rs: 1, fromCopyId: from, epoch: a.epoch }]);
});

test('drain hands every RS of the drained copy (and any rebalancing swap) over; failed or disabled copy is never paused', () => {
  const s = settle(cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']));
  const mine = [0, 1, 2, 3, 4, 5].filter((r) => head(s, r) === 'c3');
  assert.ok(mine.length > 0);
  const drained = plannedHandoffs(s, after(s, { type: 'DrainRequested', copyId: 'c3' }));
  // Every RS of c3, plus any swap the rebalancing after the drain makes between live copies.
  for (const r of mine) assert.ok(drained.some((h) => h.rs === r && h.fromCopyId === 'c3'), `rs ${r} of c3 is handed over`);
  for (const h of drained) assert.equal(h.fromCopyId, head(s, h.rs));
  // The failed / disabled copy is not paused (dead, or fenced at once); a rebalancing swap between
  // live copies in the same decision would be a handoff.
  assert.ok(!plannedHandoffs(s, after(s, { type: 'CopyFailed', copyId: 'c3', incarnation: 1, reason: 'crash' })).some((h) => h.fromCopyId === 'c3'));
  assert.ok(!plannedHandoffs(s, after(s, { type: 'CopyDisabled', copyId: 'c3' })).some((h) => h.fromCopyId === 'c3'));
  assert.deepEqual(plannedHandoffs(s, s), [], 'no change, no handoff');
});
