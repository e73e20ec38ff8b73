import { test } from 'node:test';
import assert from 'node:assert/strict';
import { routesOf } from '../src/index';
import type { ControllerCommand } from '../src/index';
import { T0, activeOf, cluster, ok, reg, rejected, routes, spec } from './helpers';

const DFT = spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 1);
type SetRoles = Extract<ControllerCommand, { type: 'SetRoles' }>;

test('LeadershipAcquired: passive, awaiting every live copy, no commands', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const d = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 5000 }, 10_000);
  assert.deepEqual(d.state.leader, { passive: true, awaiting: ['c1', 'c2', 'c3'], passiveUntilMs: 15_000 });
  assert.deepEqual(d.commands, []);
  assert.match(d.notes[0]!, /leadership acquired: passive until t=15000 ms, waiting for 3 copies/);
});

test('while passive every operation is UNAVAILABLE', () => {
  const s = ok(cluster(DFT, ['c1@h1', 'c2@h2']), { type: 'LeadershipAcquired', passiveTimeoutMs: 5000 }).state;
  const sb = s.apps.dft!.rs[0]!.members[1]!.copyId;
  for (const ev of [
    { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: sb },
    { type: 'DrainRequested', copyId: 'c1' },
    { type: 'CopyDisabled', copyId: 'c1' },
    { type: 'CopyEnabled', copyId: 'c1' },
    { type: 'CopyRemoved', copyId: 'c1' },
    { type: 'TopologyApplied', topology: { apps: [DFT], edges: [] } },
  ] as const) {
    rejected(s, ev, 'UNAVAILABLE', /controller is passive .*retry/);
  }
});

test('CopyHeard: unknown copies NOT_FOUND, wrong incarnations FAILED_PRECONDITION', () => {
  const s = ok(cluster(DFT, ['c1@h1', 'c2@h2']), { type: 'LeadershipAcquired', passiveTimeoutMs: 5000 }).state;
  rejected(s, { type: 'CopyHeard', copyId: 'zz', incarnation: 1 }, 'NOT_FOUND', /copy zz is not registered; it must register/);
  rejected(s, { type: 'CopyHeard', copyId: 'c1', incarnation: 2 }, 'FAILED_PRECONDITION', /heard incarnation 2 but incarnation 1 is registered; it must re-register/);
});

test('the passive phase ends when every copy is heard: full resync of roles and routes', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  s = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 5000 }).state;
  const h1 = ok(s, { type: 'CopyHeard', copyId: 'c1', incarnation: 1 }, T0 + 10);
  assert.deepEqual(h1.state.leader.awaiting, ['c2', 'c3']);
  assert.equal(h1.state.copies.c1!.lastHeardAtMs, T0 + 10);
  assert.deepEqual(h1.commands, []);
  s = ok(h1.state, { type: 'CopyHeard', copyId: 'c2', incarnation: 1 }).state;
  const end = ok(s, { type: 'CopyHeard', copyId: 'c3', incarnation: 1 });
  assert.equal(end.state.leader.passive, false);
  assert.match(end.notes.join('\n'), /passive phase ended \(all copies heard\): full resync/);
  const sets = end.commands.filter((c): c is SetRoles => c.type === 'SetRoles');
  assert.deepEqual(sets.map((c) => c.copyId), ['c1', 'c2', 'c3']);
  assert.ok(sets.every((c) => c.full));
  assert.equal(sets.reduce((n, c) => n + c.entries.length, 0), 12);
  assert.equal(routes(end).length, 6);
  assert.deepEqual(routes(end), routesOf(end.state));
});

test('silent copies are treated as failed at the timeout (R-HM-4); failures while passive recover at the end', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h4']);
  const before = s;
  s = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 1000 }, T0).state;
  s = ok(s, { type: 'CopyHeard', copyId: 'c1', incarnation: 1 }, T0 + 1).state;
  s = ok(s, { type: 'CopyHeard', copyId: 'c2', incarnation: 1 }, T0 + 2).state;
  const f = ok(s, { type: 'CopyFailed', copyId: 'c2', incarnation: 1, reason: 'crash' }, T0 + 3);
  assert.equal(f.state.copies.c2!.status, 'OUT_OF_SERVICE', 'recorded');
  assert.deepEqual(f.commands, [], 'but no commands while passive');
  for (let r = 0; r < 6; r++) assert.deepEqual(f.state.apps.dft!.rs[r], before.apps.dft!.rs[r], 'and no recovery yet');
  s = f.state;
  const early = ok(s, { type: 'Tick' }, T0 + 999);
  assert.equal(early.state, s, 'before the timeout a Tick does nothing');
  const end = ok(s, { type: 'Tick' }, T0 + 1000);
  assert.equal(end.state.leader.passive, false);
  assert.equal(end.state.copies.c3!.status, 'OUT_OF_SERVICE');
  assert.equal(end.state.copies.c4!.status, 'OUT_OF_SERVICE');
  assert.match(end.notes.join('\n'), /copy c3 not heard during the passive phase: treated as failed \(R-HM-4\)/);
  for (let r = 0; r < 6; r++) assert.equal(activeOf(end.state, 'dft', r), 'c1', 'the only UP copy holds every RS');
  const stops = end.commands.filter((c) => c.type === 'StopCopy').map((c) => c.copyId);
  assert.deepEqual(stops, ['c2', 'c3', 'c4']);
  const sets = end.commands.filter((c): c is SetRoles => c.type === 'SetRoles');
  assert.deepEqual(sets.map((c) => [c.copyId, c.full, c.entries.length]), [['c1', true, 6]]);
});

test('registrations while passive are recorded; a restarted process is fenced at once, promoted only at the end', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2']);
  const mine = [...Array(6).keys()].filter((r) => activeOf(s, 'dft', r) === 'c1');
  s = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 1000 }).state;
  const newcomer = ok(s, reg('c3', 'dft', 'h3'));
  assert.deepEqual(newcomer.commands, []);
  assert.equal(newcomer.state.copies.c3!.status, 'UP');
  s = newcomer.state;
  const restart = ok(s, reg('c1', 'dft', 'h1', 2));
  assert.deepEqual(restart.commands, []);
  assert.deepEqual(restart.state.leader.awaiting, ['c2'], 'registration counts as heard');
  for (const r of mine) {
    assert.equal(activeOf(restart.state, 'dft', r), null, 'the old process lost its roles at once');
    assert.deepEqual(restart.state.apps.dft!.rs[r]!.members.at(-1), { copyId: 'c1', role: 'OUT_OF_SERVICE' });
  }
  const end = ok(restart.state, { type: 'CopyHeard', copyId: 'c2', incarnation: 1 });
  assert.equal(end.state.leader.passive, false);
  for (const r of mine) {
    assert.equal(activeOf(end.state, 'dft', r), 'c2');
    assert.equal(end.state.apps.dft!.rs[r]!.epoch, 2);
  }
});

test('LeadershipAcquired with nothing to wait for ends the passive phase at once', () => {
  const s = cluster(DFT, ['c1@h1']);
  const failed = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 1, reason: 'x' }).state;
  const d = ok(failed, { type: 'LeadershipAcquired', passiveTimeoutMs: 5000 });
  assert.equal(d.state.leader.passive, false);
  assert.match(d.notes.join('\n'), /passive phase ended \(no copies to hear from\)/);
  assert.deepEqual(
    d.commands.filter((c) => c.type === 'StopCopy').map((c) => c.copyId),
    ['c1'],
    'isolation of failed copies is re-sent by the new leader',
  );
});
