/**
 * Host spread and make-before-break standby moves (issue 3: a host fault must not take every
 * member of an RS; a failure while balancing moves a standby must not lose acknowledged state).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkInvariants, checkSpread, decide, MOVE_CATCH_UP_TIMEOUT_MS, type ClusterState, type ControllerEvent } from '../src/index';
import { T0, cluster, ok, reg, settle, spec, syncedReport } from './helpers';

const hostOf = (id: string): string => (id === 'c1' || id === 'c2' ? 'host-a' : `host-${id}`);

/** RS whose live members all sit on host-a (a host fault there takes the RS's whole state). */
function onHostA(st: ClusterState): number[] {
  const out: number[] = [];
  for (const a of st.apps.dft!.rs) {
    const live = a.members.filter((m) => m.role !== 'OUT_OF_SERVICE');
    if (live.length > 0 && live.every((m) => hostOf(m.copyId) === 'host-a')) out.push(a.rs);
  }
  return out;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('host faults: no RS ever has every member on the failed host, whatever the event order (200 seeds x 20 rounds)', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const rnd = lcg(seed);
    let st = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 8, 1), ['c1@host-a', 'c2@host-a', 'c3@host-c3', 'c4@host-c4']);
    let now = T0 + 100;
    const inc: Record<string, number> = { c1: 1, c2: 1 };
    const step = (ev: ControllerEvent, what: string): void => {
      const d = decide(st, ev, now++);
      if (d.rejection !== undefined) return;
      st = d.state;
      const where = `seed ${seed} ${what}`;
      assert.deepEqual(checkInvariants(st), [], where);
      assert.deepEqual(checkSpread(st), [], where);
    };
    // Between events: some catch-up reports and ticks, in a seeded order.
    const noise = (): void => {
      for (let k = Math.floor(rnd() * 3); k > 0; k--) {
        const rep = rnd() < 0.5 ? syncedReport(st) : null;
        if (rep !== null) step(rep, 'catch-up');
        else step({ type: 'Tick' }, 'tick');
      }
    };
    for (let round = 0; round < 20; round++) {
      // Right before the fault: nothing of any RS may live only on host-a.
      assert.deepEqual(onHostA(st), [], `seed ${seed} round ${round}: RS on host-a only before the host fault`);
      for (const id of rnd() < 0.5 ? ['c1', 'c2'] : ['c2', 'c1']) {
        step({ type: 'CopyFailed', copyId: id, incarnation: inc[id]!, reason: 'host fault' }, `round ${round} fail ${id}`);
        noise();
      }
      st = settle(st, now);
      now += 10;
      for (const id of rnd() < 0.5 ? ['c1', 'c2'] : ['c2', 'c1']) {
        inc[id]!++;
        step(reg(id, 'dft', hostOf(id), inc[id]), `round ${round} rejoin ${id}`);
        noise();
      }
      st = settle(st, now);
      now += 10;
    }
  }
});

test('an RS left on one host (no other host was up) is re-spread once other hosts join', () => {
  // Only host-a is up: every RS has both members there (the best the repair can do).
  let st = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 8, 1), ['c1@host-a', 'c2@host-a']);
  assert.equal(onHostA(st).length, 8);
  st = ok(st, reg('c3', 'dft', 'host-c3')).state;
  st = ok(st, reg('c4', 'dft', 'host-c4')).state;
  st = settle(st, T0 + 10);
  assert.deepEqual(onHostA(st), [], 'every RS has a member off host-a');
  assert.deepEqual(checkSpread(st), []);
});

test('balancing moves standbys make-before-break: the old standby stays until the new one caught up', () => {
  let st = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 12, 1), ['c1@h1', 'c2@h2', 'c3@h3']);
  // The RS have served (epoch ≥ 1), so a new standby has to catch up first.
  const d = ok(st, reg('c4', 'dft', 'h4'), T0 + 10);
  st = d.state;
  const moves = st.apps.dft!.standbyMoves ?? {};
  assert.ok(Object.keys(moves).length > 0, `balancing moved standbys to c4: ${d.notes.join(' | ')}`);
  const [key, mv] = Object.entries(moves)[0]!;
  const r = Number(key);
  const roles = (s: ClusterState): string[] => s.apps.dft!.rs[r]!.members.map((m) => `${m.copyId}:${m.role}`);
  assert.equal(mv.toCopyId, 'c4');
  assert.ok(roles(st).includes(`${mv.fromCopyId}:STANDBY`), `the old standby is still listed: ${roles(st).join(',')}`);
  assert.ok(roles(st).includes('c4:STANDBY'));

  // The active fails inside the window: the old standby (it holds every acknowledged update)
  // takes over, not the new one that is still catching up.
  const active = st.apps.dft!.rs[r]!.members[0]!.copyId;
  const f = ok(st, { type: 'CopyFailed', copyId: active, incarnation: 1, reason: 'crash' }, T0 + 20);
  assert.equal(f.state.apps.dft!.rs[r]!.members[0]!.copyId, mv.fromCopyId, `promoted the caught-up standby: ${roles(f.state).join(',')}`);
  assert.equal(f.notes.some((n) => /still catching up/.test(n) && /promoted/.test(n)), false, 'no RS had to promote a standby still catching up');

  // Without a failure the catch-up report completes the move: the old standby leaves.
  const done = ok(st, syncedReport(st)!, T0 + 30).state;
  assert.equal(done.apps.dft!.standbyMoves, undefined);
  assert.ok(!roles(done).some((x) => x.startsWith(`${mv.fromCopyId}:`) && !x.endsWith('OUT_OF_SERVICE')), `the old standby left: ${roles(done).join(',')}`);
  assert.ok(roles(done).includes('c4:STANDBY'));
});

test('a standby move whose new standby never catches up is abandoned after the timeout (the old one stays)', () => {
  let st = cluster(spec('dft', 'DISTRIBUTED_FAULT_TOLERANT', 12, 1), ['c1@h1', 'c2@h2', 'c3@h3']);
  st = ok(st, reg('c4', 'dft', 'h4'), T0 + 10).state;
  const [key, mv] = Object.entries(st.apps.dft!.standbyMoves ?? {})[0]!;
  const r = Number(key);
  const early = ok(st, { type: 'Tick' }, T0 + 10 + MOVE_CATCH_UP_TIMEOUT_MS - 1).state;
  assert.ok(early.apps.dft!.standbyMoves?.[key] !== undefined, 'still waiting before the timeout');
  const late = decide(early, { type: 'Tick' }, T0 + 10 + MOVE_CATCH_UP_TIMEOUT_MS);
  assert.deepEqual(checkInvariants(late.state), []);
  const m = late.state.apps.dft!.rs[r]!.members;
  assert.ok(late.notes.some((n) => n.includes(`standby move dft/${r}`) && n.includes('abandoned')), late.notes.join(' | '));
  assert.equal(m.find((x) => x.copyId === mv.fromCopyId)?.role, 'STANDBY', 'the old standby stays');
});
