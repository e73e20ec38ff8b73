/** `MoveRequested`: live RS moves (issue 5), including make-before-break for non-member targets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyState, MOVE_CATCH_UP_TIMEOUT_MS, type ClusterState, type ControllerEvent } from '../src/index';
import { T0, activeOf, cluster, members, ok, reg, rejected, routes, setRoles, spec, syncedReport, topo } from './helpers';

const DFT = spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1);

function move(app: string, rs: number, toCopyId: string, reason?: string): ControllerEvent {
  return { type: 'MoveRequested', app, rs, toCopyId, ...(reason !== undefined ? { reason } : {}) };
}

/** The copy of `all` that holds no role in app/rs. */
function outsider(s: ClusterState, app: string, rs: number, all: string[]): string {
  const listed = new Set(s.apps[app]!.rs[rs]!.members.filter((m) => m.role !== 'OUT_OF_SERVICE').map((m) => m.copyId));
  return all.find((c) => !listed.has(c))!;
}

test('MoveRequested: every rejection names what is wrong, and leaves the state alone', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const a0 = activeOf(s, 'dft', 0)!;
  const other = outsider(s, 'dft', 0, ['c1', 'c2', 'c3']);
  rejected(s, move('nope', 0, a0), 'NOT_FOUND', /app "nope" not found/);
  rejected(s, move('dft', 0, 'zz'), 'NOT_FOUND', /copy zz not found in app "dft"/);
  rejected(s, move('dft', 6, other), 'NOT_FOUND', /has no RS 6: rsCount is 6/);
  rejected(s, move('dft', -1, other), 'INVALID_ARGUMENT', /rs: must be a non-negative integer/);
  rejected(s, move('', 0, other), 'INVALID_ARGUMENT', /app: must be a non-empty string/);
  rejected(s, move('dft', 0, a0), 'FAILED_PRECONDITION', /is already ACTIVE for dft\/0/);
  rejected(s, move('dft', 0, other, 'x'.repeat(300)), 'INVALID_ARGUMENT', /reason: must be a string of at most 256/);
  const p = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 1000 }).state;
  rejected(p, move('dft', 0, other), 'UNAVAILABLE', /controller is passive/);
  s = ok(s, { type: 'CopyDisabled', copyId: other }).state;
  rejected(s, move('dft', 0, other), 'FAILED_PRECONDITION', /is DISABLED, not UP/);
  const ft = cluster(spec('ft', 'FAULT_TOLERANT', 3, 1), ['c1@h1', 'c2@h2']);
  rejected(ft, move('ft', 0, 'c2'), 'FAILED_PRECONDITION', /FAULT_TOLERANT.*use switchover/);
  const na = ok(ok(emptyState(), topo({ ...DFT, minCopies: 3 })).state, reg('c1', 'dft', 'h1')).state;
  rejected(na, move('dft', 0, 'c1'), 'FAILED_PRECONDITION', /not activated yet/);
});

test('MoveRequested: a caught-up standby target is promoted at once (one RS, epoch+1, no balancing)', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const before = s.apps.dft!.rs[2]!;
  const [a, sb] = before.members.map((m) => m.copyId) as [string, string];
  const d = ok(s, move('dft', 2, sb, 'load'));
  assert.deepEqual(members(d.state, 'dft', 2), [`${sb}:A`, `${a}:S`]);
  assert.equal(d.state.apps.dft!.rs[2]!.epoch, before.epoch + 1);
  assert.equal(d.state.apps.dft!.moves, undefined);
  for (const r of [0, 1, 3, 4, 5]) assert.equal(d.state.apps.dft!.rs[r], s.apps.dft!.rs[r], 'only the moved RS changes');
  assert.deepEqual(routes(d).map((x) => [x.rs, x.active?.copyId, x.previous?.copyId]), [[2, sb, a]]);
  assert.match(d.notes.join('\n'), /move dft\/2 \(load\): .*\(promoted a caught-up standby\)/);
  // A Tick does not undo it.
  assert.equal(ok(d.state, { type: 'Tick' }).state, d.state);
});

test('MoveRequested: make-before-break for a non-member target — extra standby, promoted once caught up', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const before = s.apps.dft!.rs[1]!;
  const [a, sb] = before.members.map((m) => m.copyId) as [string, string];
  const to = outsider(s, 'dft', 1, ['c1', 'c2', 'c3']);
  const d1 = ok(s, move('dft', 1, to));
  // Phase 1: the target joins as an extra standby (catching up); the active and epoch stay.
  assert.deepEqual(members(d1.state, 'dft', 1), [`${a}:A`, `${sb}:S`, `${to}:S`]);
  assert.equal(d1.state.apps.dft!.rs[1]!.epoch, before.epoch);
  assert.deepEqual(d1.state.apps.dft!.moves?.[1], { toCopyId: to, fromCopyId: a, sinceMs: T0 });
  assert.ok(d1.state.apps.dft!.syncing?.[1]?.[to] !== undefined, 'target catching up');
  assert.equal(setRoles(d1, to)!.entries[0]!.role, 'STANDBY');
  assert.deepEqual(routes(d1), [], 'no route change before the switch');
  // Asking again changes nothing; another target is refused while the move is pending.
  assert.equal(ok(d1.state, move('dft', 1, to)).state, d1.state);
  rejected(d1.state, move('dft', 1, sb), 'FAILED_PRECONDITION', /already moving .* retry once that move completes/);
  // Ticks and repairs keep the extra standby; balancing leaves the RS alone.
  const t = ok(d1.state, { type: 'Tick' }, T0 + 100).state;
  assert.deepEqual(members(t, 'dft', 1), [`${a}:A`, `${sb}:S`, `${to}:S`]);
  // A report from a copy that is not the active changes nothing.
  const rep = syncedReport(t) as Extract<ControllerEvent, { type: 'StandbysSynced' }>;
  const wrong: ControllerEvent = { ...rep, entries: rep.entries.map((e) => ({ ...e, reportedBy: sb })) };
  assert.equal(ok(t, wrong, T0 + 150).state, t);
  // Phase 2: the active reports the target caught up → target ACTIVE (epoch+1), source leaves.
  const d2 = ok(t, { ...rep, entries: rep.entries.map((e) => ({ ...e, reportedBy: a })) }, T0 + 200);
  assert.deepEqual(members(d2.state, 'dft', 1), [`${to}:A`, `${sb}:S`]);
  assert.equal(d2.state.apps.dft!.rs[1]!.epoch, before.epoch + 1);
  assert.equal(d2.state.apps.dft!.moves, undefined);
  assert.deepEqual(routes(d2).map((x) => [x.rs, x.active?.copyId, x.previous?.copyId]), [[1, to, a]]);
  assert.equal(setRoles(d2, a)!.entries[0]!.role, 'OUT_OF_SERVICE');
});

test('MoveRequested: the source failing mid-move abandons the move; a caught-up standby takes over', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const [a, sb] = s.apps.dft!.rs[0]!.members.map((m) => m.copyId) as [string, string];
  const to = outsider(s, 'dft', 0, ['c1', 'c2', 'c3']);
  const d1 = ok(s, move('dft', 0, to)).state;
  const d2 = ok(d1, { type: 'CopyFailed', copyId: a, incarnation: 1, reason: 'crash' }).state;
  assert.equal(activeOf(d2, 'dft', 0), sb, 'the caught-up standby, not the catching-up target');
  assert.equal(d2.apps.dft!.moves, undefined);
});

test('MoveRequested: the target failing mid-move abandons it; the RS is back to its factor', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const [a] = s.apps.dft!.rs[3]!.members.map((m) => m.copyId) as [string];
  const to = outsider(s, 'dft', 3, ['c1', 'c2', 'c3']);
  const d1 = ok(s, move('dft', 3, to)).state;
  const d2 = ok(d1, { type: 'CopyFailed', copyId: to, incarnation: 1, reason: 'crash' }).state;
  assert.equal(activeOf(d2, 'dft', 3), a);
  assert.equal(d2.apps.dft!.moves, undefined);
  assert.equal(d2.apps.dft!.rs[3]!.members.filter((m) => m.role === 'STANDBY').length, 1);
});

test('MoveRequested: a move whose target never catches up is abandoned after the timeout', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const [a, sb] = s.apps.dft!.rs[4]!.members.map((m) => m.copyId) as [string, string];
  const to = outsider(s, 'dft', 4, ['c1', 'c2', 'c3']);
  const d1 = ok(s, move('dft', 4, to)).state;
  assert.deepEqual(members(ok(d1, { type: 'Tick' }, T0 + MOVE_CATCH_UP_TIMEOUT_MS - 1).state, 'dft', 4), [`${a}:A`, `${sb}:S`, `${to}:S`]);
  const d2 = ok(d1, { type: 'Tick' }, T0 + MOVE_CATCH_UP_TIMEOUT_MS);
  assert.deepEqual(members(d2.state, 'dft', 4), [`${a}:A`, `${sb}:S`]);
  assert.equal(d2.state.apps.dft!.moves, undefined);
  assert.match(d2.notes.join('\n'), /abandoned: the target did not catch up/);
});

test('MoveRequested: DISTRIBUTED moves at once (epoch+1; the target restores from the checkpoint)', () => {
  const s = cluster(spec('d', 'DISTRIBUTED', 4, 0), ['c1@h1', 'c2@h2']);
  const a = activeOf(s, 'd', 0)!;
  const to = a === 'c1' ? 'c2' : 'c1';
  const d = ok(s, move('d', 0, to));
  assert.deepEqual(members(d.state, 'd', 0), [`${to}:A`]);
  assert.equal(d.state.apps.d!.rs[0]!.epoch, s.apps.d!.rs[0]!.epoch + 1);
  assert.match(d.notes.join('\n'), /restores from checkpoint/);
});
