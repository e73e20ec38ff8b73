import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyLoads, decide, emptyState, fullRoleSet, MAX_OOS_ENTRIES, type ControllerEvent } from '../src/index';
import { T0, activeOf, cluster, counts, members, ok, reg, rejected, routes, settle, setRoles, spec, spread, syncedReport, topo } from './helpers';

const DFT = spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 8, 1);

test('CopyRegistered: unknown app is NOT_FOUND, a copy cannot change app', () => {
  const s = ok(emptyState(), topo(spec('a', 'DISTRIBUTED', 2, 0), spec('b', 'DISTRIBUTED', 2, 0))).state;
  rejected(s, reg('c1', 'nope', 'h1'), 'NOT_FOUND', /app "nope" is not declared/);
  const s1 = ok(s, reg('c1', 'a', 'h1')).state;
  rejected(s1, reg('c1', 'b', 'h1'), 'FAILED_PRECONDITION', /copy c1 is registered for app "a", not "b"/);
});

test('CopyRegistered: activation at minCopies distributes every RS and publishes every route', () => {
  let s = ok(emptyState(), topo({ ...DFT, minCopies: 2 })).state;
  const d1 = ok(s, reg('c1', 'dft', 'h1'));
  assert.equal(d1.state.apps.dft!.activated, false);
  assert.deepEqual(d1.commands, [], 'nothing to send before activation');
  s = d1.state;
  const d2 = ok(s, reg('c2', 'dft', 'h2'));
  assert.equal(d2.state.apps.dft!.activated, true);
  assert.match(d2.notes.join('\n'), /app dft activated: 8 RS over 2 UP copies/);
  const rs = routes(d2);
  assert.equal(rs.length, 8);
  for (const r of rs) {
    assert.equal(r.epoch, 1);
    assert.equal(r.previous, null);
    assert.notEqual(r.active, null);
    assert.equal(r.standbys.length, 1);
  }
  const c1 = setRoles(d2, 'c1')!;
  const c2 = setRoles(d2, 'c2')!;
  assert.equal(c1.full, false);
  assert.equal(c1.entries.length + c2.entries.length, 16);
  assert.equal(c1.entries.filter((e) => e.role === 'ACTIVE').length, 4);
  assert.equal(c1.entries[0]!.members.length, 2);
  assert.match(c1.entries[0]!.members[0]!.address, /\.addr:7000$/);
});

test('CopyRegistered: same incarnation is an idempotent refresh; an address change is re-sent', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2']);
  const same = ok(s, reg('c1', 'dft', 'h1'));
  assert.deepEqual(same.commands, []);
  assert.match(same.notes.join('\n'), /registration refreshed/);
  assert.deepEqual(same.state.apps, s.apps);
  const moved = ok(s, reg('c1', 'dft', 'h1', 1, '10.9.9.9:7000'));
  assert.equal(moved.state.copies.c1!.address, '10.9.9.9:7000');
  const toPeer = setRoles(moved, 'c2')!;
  assert.equal(toPeer.entries.length, 8, 'the peer gets every shared RS with the new address');
  assert.ok(toPeer.entries.every((e) => e.members.some((m) => m.copyId === 'c1' && m.address === '10.9.9.9:7000')));
  const rts = routes(moved);
  assert.equal(rts.length, 4, 'routes of the RS c1 is active for');
  assert.ok(rts.every((r) => r.active?.address === '10.9.9.9:7000' && r.previous?.address === 'c1.addr:7000'));
  for (let r = 0; r < 8; r++) assert.ok(moved.state.apps.dft!.rs[r]!.version > s.apps.dft!.rs[r]!.version);
  rejected(s, reg('c1', 'dft', 'h9'), 'FAILED_PRECONDITION', /incarnation 1 is registered on host h1, not h9/);
});

test('CopyRegistered: a lower incarnation is stale', () => {
  const s = ok(cluster(DFT, ['c1@h1']), reg('c1', 'dft', 'h1', 5)).state;
  rejected(s, reg('c1', 'dft', 'h1', 4), 'FAILED_PRECONDITION', /stale incarnation 4 \(incarnation 5 is registered\)/);
});

test('CopyRegistered: a new incarnation fences the old process and returns it as STANDBY only', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const activeOnC1 = [...Array(8).keys()].filter((r) => activeOf(s, 'dft', r) === 'c1');
  assert.ok(activeOnC1.length > 0);
  const d = ok(s, reg('c1', 'dft', 'h1', 2));
  assert.match(d.notes.join('\n'), /copy c1 restarted: incarnation 1 -> 2/);
  for (const r of activeOnC1) {
    const a = d.state.apps.dft!.rs[r]!;
    assert.notEqual(activeOf(d.state, 'dft', r), 'c1', 'never promoted straight back');
    assert.equal(a.epoch, s.apps.dft!.rs[r]!.epoch + 1);
  }
  // It gets standby work again (the new process catches up by snapshot).
  const roles = fullRoleSet(d.state, 'c1');
  assert.equal(roles.incarnation, 2);
  assert.ok(roles.entries.length > 0);
  assert.ok(roles.entries.some((e) => e.role === 'STANDBY'));
  // Its old entries in RS where it is not a member again stay as OUT_OF_SERVICE history.
  assert.equal(d.commands.filter((c) => c.type === 'StopCopy').length, 0, 'the new process is not stopped');
  const toC1 = setRoles(d, 'c1')!;
  assert.equal(toC1.incarnation, 2);
});

test('CopyRegistered: OUT_OF_SERVICE copies come back UP, DRAINED/DISABLED stay parked', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  s = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 1, reason: 'crash' }).state;
  rejected(s, reg('c1', 'dft', 'h1', 1), 'FAILED_PRECONDITION', /incarnation 1 was declared failed; restart it with a new incarnation/);
  s = ok(s, reg('c1', 'dft', 'h1', 2)).state;
  assert.equal(s.copies.c1!.status, 'UP');
  s = ok(s, { type: 'DrainRequested', copyId: 'c2' }).state;
  s = ok(s, reg('c2', 'dft', 'h2', 2)).state;
  assert.equal(s.copies.c2!.status, 'DRAINED');
  assert.equal(copyLoads(s, 'dft').get('c2')!.active + copyLoads(s, 'dft').get('c2')!.standby, 0);
});

test('CopyFailed: first UP standby takes over with a new epoch, the old active goes last as OUT_OF_SERVICE', () => {
  const s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 6, 2), ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h4']);
  const r0 = s.apps.dft!.rs.find((a) => a.members[0]!.copyId === 'c1')!;
  const [, first, second] = r0.members.map((m) => m.copyId);
  const d = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 1, reason: 'crash' });
  const after = d.state.apps.dft!.rs[r0.rs]!;
  assert.equal(after.members[0]!.copyId, first);
  assert.equal(after.members[0]!.role, 'ACTIVE');
  assert.equal(after.epoch, r0.epoch + 1);
  assert.ok(after.version > r0.version);
  assert.deepEqual(after.members.at(-1), { copyId: 'c1', role: 'OUT_OF_SERVICE' });
  assert.ok(after.members.some((m) => m.copyId === second && m.role === 'STANDBY'));
  assert.equal(after.members.filter((m) => m.role === 'STANDBY').length, 2, 'replacement standby added');
  assert.equal(d.state.copies.c1!.status, 'OUT_OF_SERVICE');
  const stop = d.commands.find((c) => c.type === 'StopCopy');
  assert.deepEqual(stop, { type: 'StopCopy', copyId: 'c1', address: 'c1.addr:7000', incarnation: 1, reason: 'crash' });
  assert.equal(setRoles(d, 'c1'), undefined, 'no roles are sent to a failed copy');
  const route = routes(d).find((r) => r.rs === r0.rs)!;
  assert.deepEqual(route.previous, { copyId: 'c1', address: 'c1.addr:7000' });
  assert.equal(route.active?.copyId, first);
  assert.equal(route.epoch, r0.epoch + 1);
  // Standbys are re-homed at once (totals within 1); active swaps of RS the failure did not touch
  // wait for the next Tick, so the failover decision stays small.
  assert.ok(spread(d.state, 'dft').total <= 1, JSON.stringify([...counts(d.state, 'dft')]));
  assert.equal(d.state.apps.dft!.balancePending, true);
  assert.match(d.notes.join('\n'), /active swaps deferred to the next tick/);
  const t = ok(d.state, { type: 'Tick' }, T0 + 1);
  const spreadAfter = spread(t.state, 'dft');
  assert.ok(spreadAfter.active <= 1 && spreadAfter.total <= 1, JSON.stringify([...counts(t.state, 'dft')]));
  assert.equal(t.state.apps.dft!.balancePending, undefined);
});

test('CopyFailed: stale and duplicate reports are no-ops; unknown copies NOT_FOUND', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2']);
  s = ok(s, reg('c1', 'dft', 'h1', 3)).state;
  const stale = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 2, reason: 'late' });
  assert.equal(stale.state, s);
  assert.match(stale.notes[0]!, /stale report/);
  const once = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 3, reason: 'crash' });
  const twice = ok(once.state, { type: 'CopyFailed', copyId: 'c1', incarnation: 3, reason: 'crash' });
  assert.equal(twice.state, once.state, 'duplicate report: one recovery');
  assert.deepEqual(twice.commands, []);
  rejected(s, { type: 'CopyFailed', copyId: 'zz', incarnation: 1, reason: 'x' }, 'NOT_FOUND', /copy zz is not registered/);
});

test('CopyFailed: DISTRIBUTED RS move to the least-loaded copy with a new epoch', () => {
  const s = cluster(spec('agg', 'DISTRIBUTED', 6, 0), ['c1@h1', 'c2@h2', 'c3@h3']);
  const mine = [...Array(6).keys()].filter((r) => activeOf(s, 'agg', r) === 'c1');
  const d = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 1, reason: 'crash' });
  for (const r of mine) {
    assert.notEqual(activeOf(d.state, 'agg', r), 'c1');
    assert.equal(d.state.apps.agg!.rs[r]!.epoch, s.apps.agg!.rs[r]!.epoch + 1);
  }
  assert.deepEqual([...counts(d.state, 'agg').values()].map((x) => x.a), [3, 3]);
});

test('CopyFailed: FAULT_TOLERANT fails over all RS together; lists keep at most 2 OUT_OF_SERVICE', () => {
  let s = cluster(spec('ft', 'FAULT_TOLERANT', 5, 1), ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h4', 'c5@h5']);
  assert.deepEqual(members(s, 'ft', 0), ['c1:A', 'c2:S']);
  for (let r = 0; r < 5; r++) assert.deepEqual(members(s, 'ft', r), members(s, 'ft', 0));
  s = ok(s, { type: 'CopyFailed', copyId: 'c1', incarnation: 1, reason: 'x' }).state;
  assert.deepEqual(members(s, 'ft', 3), ['c2:A', 'c3:S', 'c1:O']);
  s = ok(s, { type: 'CopyFailed', copyId: 'c2', incarnation: 1, reason: 'x' }).state;
  s = ok(s, { type: 'CopyFailed', copyId: 'c3', incarnation: 1, reason: 'x' }).state;
  assert.deepEqual(members(s, 'ft', 4), ['c4:A', 'c5:S', 'c2:O', 'c3:O']);
  assert.equal(MAX_OOS_ENTRIES, 2);
  for (let r = 0; r < 5; r++) assert.equal(s.apps.ft!.rs[r]!.epoch, 4, 'three failovers after the activation');
});

test('SwitchoverRequested: every rejection names what is wrong', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const a0 = activeOf(s, 'dft', 0)!;
  const sb0 = s.apps.dft!.rs[0]!.members[1]!.copyId;
  const other = ['c1', 'c2', 'c3'].find((c) => c !== a0 && c !== sb0)!;
  rejected(s, { type: 'SwitchoverRequested', app: 'nope', rs: 0, toCopyId: sb0 }, 'NOT_FOUND', /app "nope" not found/);
  rejected(s, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: 'zz' }, 'NOT_FOUND', /copy zz not found in app "dft"/);
  rejected(s, { type: 'SwitchoverRequested', app: 'dft', rs: 8, toCopyId: sb0 }, 'NOT_FOUND', /has no RS 8: rsCount is 8 \(RS 0\.\.7\)/);
  rejected(s, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: a0 }, 'FAILED_PRECONDITION', /is already ACTIVE for dft\/0/);
  rejected(s, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: other }, 'FAILED_PRECONDITION', /is not a STANDBY of dft\/0 \(not a member\)/);
  s = ok(s, { type: 'CopyDisabled', copyId: other }).state;
  rejected(s, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: other }, 'FAILED_PRECONDITION', /is DISABLED, not UP/);
  const na = ok(emptyState(), topo({ ...DFT, minCopies: 3 })).state;
  const na1 = ok(na, reg('c1', 'dft', 'h1')).state;
  rejected(na1, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: 'c1' }, 'FAILED_PRECONDITION', /not activated yet \(it needs 3 UP copies\)/);
  const p = ok(s, { type: 'LeadershipAcquired', passiveTimeoutMs: 1000 }).state;
  rejected(p, { type: 'SwitchoverRequested', app: 'dft', rs: 0, toCopyId: sb0 }, 'UNAVAILABLE', /controller is passive/);
});

test('SwitchoverRequested: the standby becomes ACTIVE with a new epoch, the old active takes its place', () => {
  const s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 4, 2), ['c1@h1', 'c2@h2', 'c3@h3']);
  const before = s.apps.dft!.rs[1]!;
  const [a, s1, s2] = before.members.map((m) => m.copyId);
  const d = ok(s, { type: 'SwitchoverRequested', app: 'dft', rs: 1, toCopyId: s2! });
  assert.deepEqual(members(d.state, 'dft', 1), [`${s2}:A`, `${s1}:S`, `${a}:S`]);
  assert.equal(d.state.apps.dft!.rs[1]!.epoch, before.epoch + 1);
  for (const r of [0, 2, 3]) assert.equal(d.state.apps.dft!.rs[r], s.apps.dft!.rs[r], 'no balancing after a switchover');
  const rt = routes(d);
  assert.equal(rt.length, 1);
  assert.deepEqual(rt[0]!.previous, { copyId: a, address: `${a}.addr:7000` });
  assert.equal(setRoles(d, s2!)!.entries[0]!.role, 'ACTIVE');
  assert.equal(setRoles(d, a!)!.entries[0]!.role, 'STANDBY');
  // A Tick does not undo it (balancing runs on membership changes only).
  assert.equal(ok(d.state, { type: 'Tick' }).state, d.state);
});

test('SwitchoverRequested: FAULT_TOLERANT moves the active role of every RS', () => {
  const s = cluster(spec('ft', 'FAULT_TOLERANT', 3, 2), ['c1@h1', 'c2@h2', 'c3@h3']);
  const d = ok(s, { type: 'SwitchoverRequested', app: 'ft', rs: 2, toCopyId: 'c3' });
  for (let r = 0; r < 3; r++) {
    assert.deepEqual(members(d.state, 'ft', r), ['c3:A', 'c2:S', 'c1:S']);
    assert.equal(d.state.apps.ft!.rs[r]!.epoch, 2);
  }
  assert.match(d.notes[0]!, /all 3 RS, FAULT_TOLERANT/);
});

test('DrainRequested: moves everything off atomically and reports counts', () => {
  const s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 9, 1), ['c1@h1', 'c2@h2', 'c3@h3']);
  const load = copyLoads(s, 'dft').get('c1')!;
  const d = ok(s, { type: 'DrainRequested', copyId: 'c1' });
  assert.deepEqual(d.moved, { active: load.active, standby: load.standby });
  assert.match(d.notes[0]!, new RegExp(`moved_active=${load.active} moved_standby=${load.standby}`));
  assert.equal(d.state.copies.c1!.status, 'DRAINED');
  for (const a of d.state.apps.dft!.rs) assert.ok(!a.members.some((m) => m.copyId === 'c1'), 'drained copy listed nowhere');
  for (const e of setRoles(d, 'c1')!.entries) assert.equal(e.role, 'OUT_OF_SERVICE');
  assert.equal(d.commands.filter((c) => c.type === 'StopCopy').length, 0);
  rejected(d.state, { type: 'DrainRequested', copyId: 'c1' }, 'FAILED_PRECONDITION', /copy c1 is DRAINED; only UP copies can be drained/);
  rejected(s, { type: 'DrainRequested', copyId: 'zz' }, 'NOT_FOUND', /copy zz is not registered/);
  const alone = cluster(spec('agg', 'DISTRIBUTED', 3, 0), ['c1@h1']);
  rejected(alone, { type: 'DrainRequested', copyId: 'c1' }, 'FAILED_PRECONDITION', /ACTIVE for 3 RS of app "agg" and no other UP copy can take them/);
});

test('CopyDisabled fences like a failure but keeps the process: empty full role set, no StopCopy', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const d = ok(s, { type: 'CopyDisabled', copyId: 'c2' });
  assert.equal(d.state.copies.c2!.status, 'DISABLED');
  const sr = setRoles(d, 'c2')!;
  assert.equal(sr.full, true);
  assert.deepEqual(sr.entries, []);
  assert.equal(d.commands.filter((c) => c.type === 'StopCopy').length, 0);
  for (let r = 0; r < 8; r++) {
    if (activeOf(s, 'dft', r) === 'c2') {
      assert.notEqual(activeOf(d.state, 'dft', r), 'c2');
      assert.equal(d.state.apps.dft!.rs[r]!.epoch, s.apps.dft!.rs[r]!.epoch + 1);
      assert.deepEqual(d.state.apps.dft!.rs[r]!.members.at(-1), { copyId: 'c2', role: 'OUT_OF_SERVICE' });
    }
  }
  assert.deepEqual(ok(d.state, { type: 'CopyDisabled', copyId: 'c2' }).notes, ['copy c2 is already DISABLED']);
  rejected(s, { type: 'CopyDisabled', copyId: 'zz' }, 'NOT_FOUND', /zz/);
  // Survives re-registration.
  const r2 = ok(d.state, reg('c2', 'dft', 'h2', 2));
  assert.equal(r2.state.copies.c2!.status, 'DISABLED');
  assert.deepEqual(fullRoleSet(r2.state, 'c2').entries, []);
});

test('CopyEnabled: parked copies get their share back; failed ones must re-register', () => {
  let s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  assert.deepEqual(ok(s, { type: 'CopyEnabled', copyId: 'c1' }).notes, ['copy c1 is already UP']);
  s = ok(s, { type: 'CopyDisabled', copyId: 'c3' }).state;
  const d = ok(s, { type: 'CopyEnabled', copyId: 'c3' });
  assert.equal(d.state.copies.c3!.status, 'UP');
  // Standbys at once; actives from the next tick, once its new standbys hold the state.
  assert.equal(counts(d.state, 'dft').get('c3')!.t, 5);
  assert.equal(d.state.apps.dft!.balancePending, true);
  assert.match(d.notes.join('\n'), /resumed on the next tick/);
  const settled = settle(d.state);
  const c3 = counts(settled, 'dft').get('c3')!;
  assert.ok(c3.a >= 2 && c3.t >= 5, JSON.stringify(c3));
  assert.ok(spread(settled, 'dft').active <= 1 && spread(settled, 'dft').total <= 1);
  const f = ok(settled, { type: 'CopyFailed', copyId: 'c3', incarnation: 1, reason: 'x' }).state;
  rejected(f, { type: 'CopyEnabled', copyId: 'c3' }, 'FAILED_PRECONDITION', /failed copies return by registering a new incarnation/);
  rejected(f, { type: 'CopyEnabled', copyId: 'zz' }, 'NOT_FOUND', /zz/);
});

test('CopyRemoved: drains, forgets the copy and stops it; failed copies can be removed', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2', 'c3@h3']);
  const d = ok(s, { type: 'CopyRemoved', copyId: 'c1' });
  assert.equal(d.state.copies.c1, undefined);
  assert.ok(d.moved !== undefined && d.moved.active > 0);
  assert.deepEqual(
    d.commands.filter((c) => c.type === 'StopCopy'),
    [{ type: 'StopCopy', copyId: 'c1', address: 'c1.addr:7000', incarnation: 1, reason: 'removed by operator' }],
  );
  for (const a of d.state.apps.dft!.rs) assert.ok(!a.members.some((m) => m.copyId === 'c1'));
  const f = ok(s, { type: 'CopyFailed', copyId: 'c2', incarnation: 1, reason: 'x' }).state;
  const rm = ok(f, { type: 'CopyRemoved', copyId: 'c2' });
  assert.equal(rm.state.copies.c2, undefined);
  assert.equal(rm.commands.filter((c) => c.type === 'StopCopy').length, 0);
  for (const a of rm.state.apps.dft!.rs) assert.ok(!a.members.some((m) => m.copyId === 'c2'), 'OUT_OF_SERVICE history dropped too');
  rejected(s, { type: 'CopyRemoved', copyId: 'zz' }, 'NOT_FOUND', /zz/);
});

test('adding a copy to a running app gives it its share (balanced within 1)', () => {
  let s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 40, 2), ['c1@h1', 'c2@h2', 'c3@h3', 'c4@h1']);
  const d = ok(s, reg('c5', 'dft', 'h2'));
  assert.match(d.notes.join('\n'), /balanced dft: moved_standby=24 moved_active=0 swapped_active=0 \(more swaps wait/);
  assert.equal(counts(d.state, 'dft').get('c5')!.t, 24, 'its share of standbys at once');
  assert.equal(Object.values(d.state.apps.dft!.syncing ?? {}).reduce((n, e) => n + Object.keys(e).length, 0), 24, 'every moved standby is catching up');
  // Until the actives report them caught up, no active is swapped onto them, however often it ticks.
  const early = ok(d.state, { type: 'Tick' }, T0 + 1);
  assert.equal(counts(early.state, 'dft').get('c5')!.a, 0, 'no active on standbys still catching up');
  assert.equal(early.state.apps.dft!.balancePending, true);
  const rep = syncedReport(early.state)! as Extract<ControllerEvent, { type: 'StandbysSynced' }>;
  // A copy that is not the RS's active cannot vouch for its standbys.
  const wrong = decide(early.state, { type: 'StandbysSynced', entries: rep.entries.map((e) => ({ ...e, reportedBy: e.copyId })) }, T0 + 2);
  assert.equal(wrong.state, early.state, 'reports from a non-active copy change nothing');
  const synced = ok(early.state, { type: 'StandbysSynced', entries: rep.entries.map((e) => ({ ...e, reportedBy: activeOf(early.state, 'dft', e.rs)! })) }, T0 + 2);
  assert.equal(synced.state.apps.dft!.syncing, undefined, 'all caught up');
  // Standby moves are make-before-break: the replaced standbys stayed listed until now, and
  // the report completes the 24 moves (they leave); no active changes.
  assert.equal(early.state.apps.dft!.standbyMoves !== undefined && Object.keys(early.state.apps.dft!.standbyMoves).length, 24, 'each moved standby waits for its replacement');
  assert.equal(synced.state.apps.dft!.standbyMoves, undefined, 'every standby move completed');
  for (const a of synced.state.apps.dft!.rs) {
    assert.equal(a.members.filter((m) => m.role === 'STANDBY').length, 2, `RS ${a.rs} back to the factor`);
    assert.equal(a.epoch, early.state.apps.dft!.rs[a.rs]!.epoch, 'no active moved');
  }
  const t = ok(synced.state, { type: 'Tick' }, T0 + 3);
  assert.match(t.notes.join('\n'), /balanced dft: moved_standby=0 moved_active=0 swapped_active=\d+/);
  s = t.state;
  const c5 = counts(s, 'dft').get('c5')!;
  assert.equal(c5.a, 8, 'and its share of actives once its standbys hold the state');
  assert.equal(c5.t, 24);
  assert.deepEqual(spread(s, 'dft'), { active: 0, total: 0 });
  assert.equal(s.apps.dft!.balancePending, undefined);
});

test('Tick: nothing to do is a no-op (same state, no version bump, no commands)', () => {
  const s = cluster(DFT, ['c1@h1', 'c2@h2']);
  const d = decide(s, { type: 'Tick' }, 99_999);
  assert.equal(d.state, s);
  assert.deepEqual(d.commands, []);
});

test('epochs strictly increase across repeated failovers of the same RS', () => {
  let s = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 1, 1), ['c1@h1', 'c2@h2']);
  const seen: number[] = [s.apps.dft!.rs[0]!.epoch];
  for (let i = 0; i < 6; i++) {
    const a = activeOf(s, 'dft', 0)!;
    const inc = s.copies[a]!.incarnation;
    s = ok(s, { type: 'CopyFailed', copyId: a, incarnation: inc, reason: 'x' }).state;
    s = ok(s, reg(a, 'dft', s.copies[a]!.host, inc + 1)).state;
    seen.push(s.apps.dft!.rs[0]!.epoch);
  }
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, JSON.stringify(seen));
});
