/** Checks of the safety and shape invariants of a state (used by tests and the simulation). */
import type { ClusterState } from './model';
import { own } from './members';
import { moveHolds, standbyMoveHolds } from './tx';
import { spreadBinds } from './placement';

const LIMIT = 50;

/**
 * Every violated invariant of `state`, as readable lines (empty = fine). Checked:
 * - shape: RS ids and counts, known apps and copies, members of the right app, leader phase;
 * - member lists: at most one ACTIVE and first, then STANDBYs, then ≤ 2 OUT_OF_SERVICE, no copy
 *   twice, standbys ≤ spec (0 for DISTRIBUTED), an ACTIVE implies epoch ≥ 1;
 * - roles: DRAINED copies are listed nowhere; when not passive, ACTIVE/STANDBY only on UP copies;
 * - liveness (not passive): every RS of an activated app has an ACTIVE when the app has an UP
 *   copy, and as many standbys as the spec asks and UP copies allow;
 * - FAULT_TOLERANT: all RS of the app have the same member list;
 * - catching-up marks name STANDBYs of existing RS, at versions the RS has reached.
 * Balance is separate ({@link checkBalance}): a switchover may legitimately unbalance an app.
 */
export function checkInvariants(state: ClusterState): string[] {
  const out: string[] = [];
  const add = (s: string): void => {
    if (out.length < LIMIT) out.push(s);
  };
  const passive = state.leader.passive;
  if (!passive && state.leader.awaiting.length > 0) add(`leader: not passive but awaiting ${state.leader.awaiting.length} copies`);
  if (new Set(state.leader.awaiting).size !== state.leader.awaiting.length) add('leader: duplicate awaiting entries');
  for (const [id, c] of Object.entries(state.copies)) {
    if (c.copyId !== id) add(`copy ${id}: keyed under a different id ${c.copyId}`);
    if (own(state.apps, c.app) === undefined) add(`copy ${id}: unknown app ${c.app}`);
    if (!Number.isSafeInteger(c.incarnation) || c.incarnation < 0) add(`copy ${id}: bad incarnation ${c.incarnation}`);
    if (c.failed === true && c.status !== 'DRAINED' && c.status !== 'DISABLED') add(`copy ${id}: failed flag on a ${c.status} copy`);
  }
  for (const e of state.edges) {
    if (own(state.apps, e.from) === undefined || own(state.apps, e.to) === undefined) add(`edge ${e.from} -> ${e.to}: unknown app`);
  }
  for (const [name, app] of Object.entries(state.apps)) {
    const spec = app.spec;
    if (spec.name !== name) add(`app ${name}: spec name ${spec.name}`);
    if (app.rs.length !== spec.rsCount) add(`app ${name}: ${app.rs.length} RS, spec says ${spec.rsCount}`);
    const k = spec.mode === 'DISTRIBUTED' ? 0 : spec.standbys;
    let up = 0;
    for (const c of Object.values(state.copies)) if (c.app === name && c.status === 'UP') up++;
    for (const [r, e] of Object.entries(app.syncing ?? {})) {
      const a = app.rs[Number(r)];
      if (a === undefined) {
        add(`${name}/${r}: catching-up marks for an RS that does not exist`);
        continue;
      }
      for (const [id, since] of Object.entries(e)) {
        if (!a.members.some((m) => m.copyId === id && m.role === 'STANDBY')) add(`${name}/${r}: ${id} marked catching up but is not a STANDBY there`);
        if (!Number.isSafeInteger(since) || since > a.version) add(`${name}/${r}: ${id} catching up since version ${since}, beyond the RS version ${a.version}`);
      }
    }
    for (const [r, mv] of Object.entries(app.moves ?? {})) {
      const a = app.rs[Number(r)];
      if (spec.mode !== 'DISTRIBUTED_FAULT_TOLERANT') add(`${name}/${r}: pending move in a ${spec.mode} app (moves complete at once there)`);
      if (a === undefined || !moveHolds(mv, a.members)) add(`${name}/${r}: pending move ${mv.fromCopyId} -> ${mv.toCopyId} does not hold (source not ACTIVE or target not STANDBY)`);
      else if (!a.members.some((m) => m.copyId === mv.toCopyId && own(app.syncing?.[r] ?? {}, m.copyId) !== undefined)) {
        add(`${name}/${r}: pending move to ${mv.toCopyId}, which is not catching up (the move should have completed)`);
      }
    }
    for (const [r, mv] of Object.entries(app.standbyMoves ?? {})) {
      const a = app.rs[Number(r)];
      if (spec.mode !== 'DISTRIBUTED_FAULT_TOLERANT') add(`${name}/${r}: pending standby move in a ${spec.mode} app`);
      if (app.moves?.[r] !== undefined) add(`${name}/${r}: a standby move and a move of the active at once`);
      if (a === undefined || !standbyMoveHolds(mv, a.members)) add(`${name}/${r}: pending standby move ${mv.fromCopyId} -> ${mv.toCopyId} does not hold`);
      else if (own(app.syncing?.[r] ?? {}, mv.toCopyId) === undefined) {
        add(`${name}/${r}: pending standby move to ${mv.toCopyId}, which is not catching up (the move should have completed)`);
      }
    }
    const ft0 = app.rs[0]?.members;
    for (let r = 0; r < app.rs.length; r++) {
      const a = app.rs[r]!;
      const at = `${name}/${r}`;
      if (a.rs !== r || a.app !== name) add(`${at}: assignment says ${a.app}/${a.rs}`);
      if (!Number.isSafeInteger(a.epoch) || a.epoch < 0 || !Number.isSafeInteger(a.version) || a.version < 0) add(`${at}: bad epoch/version`);
      if (!app.activated) {
        if (a.members.length > 0) add(`${at}: members before activation`);
        continue;
      }
      const seen = new Set<string>();
      let phase = 0; // 0 = expect ACTIVE, 1 = standbys, 2 = oos
      let actives = 0;
      let sbs = 0;
      let oos = 0;
      for (let i = 0; i < a.members.length; i++) {
        const m = a.members[i]!;
        if (seen.has(m.copyId)) add(`${at}: copy ${m.copyId} listed twice`);
        seen.add(m.copyId);
        const c = own(state.copies, m.copyId);
        if (c === undefined) add(`${at}: unknown copy ${m.copyId}`);
        else {
          if (c.app !== name) add(`${at}: copy ${m.copyId} belongs to app ${c.app}`);
          if (c.status === 'DRAINED') add(`${at}: DRAINED copy ${m.copyId} is listed (${m.role})`);
          if (!passive && m.role !== 'OUT_OF_SERVICE' && c.status !== 'UP') add(`${at}: ${m.role} on ${c.status} copy ${m.copyId}`);
        }
        if (m.role === 'ACTIVE') {
          actives++;
          if (i !== 0) add(`${at}: ACTIVE not first`);
        } else if (m.role === 'STANDBY') {
          sbs++;
          if (phase > 1) add(`${at}: STANDBY after OUT_OF_SERVICE`);
          phase = 1;
        } else {
          oos++;
          phase = 2;
        }
      }
      if (actives > 1) add(`${at}: ${actives} ACTIVE members`);
      if (actives === 1 && a.epoch < 1) add(`${at}: ACTIVE with epoch ${a.epoch}`);
      // A pending move's target (make-before-break); while passive, a move just abandoned by a
      // fenced source keeps its target until the repairs resume.
      const extra = app.moves?.[r] !== undefined || app.standbyMoves?.[r] !== undefined || passive ? 1 : 0;
      if (sbs > k + extra) add(`${at}: ${sbs} standbys, spec allows ${k}${extra ? ' (+1 moving in)' : ''}`);
      if (oos > 2) add(`${at}: ${oos} OUT_OF_SERVICE entries (max 2)`);
      if (!passive && up > 0) {
        if (actives === 0) add(`${at}: no ACTIVE although ${up} UP copies exist`);
        const want = Math.min(k, up - 1);
        if (actives === 1 && sbs < want) add(`${at}: ${sbs} standbys, want ${want} (${up} UP copies)`);
      }
      if (spec.mode === 'FAULT_TOLERANT' && ft0 !== undefined && !sameList(ft0, a.members)) add(`${at}: FAULT_TOLERANT RS differs from RS 0`);
    }
  }
  return out;
}

function sameList(a: readonly { copyId: string; role: string }[], b: readonly { copyId: string; role: string }[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.copyId !== b[i]!.copyId || a[i]!.role !== b[i]!.role) return false;
  return true;
}

/**
 * Balance check for activated DISTRIBUTED / DISTRIBUTED_FAULT_TOLERANT apps (all, or `apps`):
 * over UP copies, active counts and total (ACTIVE+STANDBY) counts each within 1. Apps with
 * fewer UP copies than 1 + standbys are skipped (every RS then spans all copies anyway).
 */
export function checkBalance(state: ClusterState, apps?: Iterable<string>, spreadSlack = 0): string[] {
  const out: string[] = [];
  const names = apps === undefined ? Object.keys(state.apps) : [...apps];
  for (const name of names) {
    const app = own(state.apps, name);
    if (app === undefined || !app.activated || app.spec.mode === 'FAULT_TOLERANT') continue;
    const act = new Map<string, number>();
    const tot = new Map<string, number>();
    for (const c of Object.values(state.copies)) {
      if (c.app === name && c.status === 'UP') {
        act.set(c.copyId, 0);
        tot.set(c.copyId, 0);
      }
    }
    if (act.size < 1 + app.spec.standbys) continue;
    for (const a of app.rs) {
      // A pending standby move counts as done (its leaving standby is already gone for balancing).
      // (only if the RS keeps its factor without it, see `completeStandbyMove`).
      let leaving = app.standbyMoves?.[a.rs]?.fromCopyId;
      if (leaving !== undefined && a.members.filter((m) => m.role === 'STANDBY').length <= app.spec.standbys) leaving = undefined;
      for (const m of a.members) {
        if (m.role === 'OUT_OF_SERVICE' || !act.has(m.copyId) || m.copyId === leaving) continue;
        tot.set(m.copyId, tot.get(m.copyId)! + 1);
        if (m.role === 'ACTIVE') act.set(m.copyId, act.get(m.copyId)! + 1);
      }
    }
    const spread = (m: Map<string, number>): [number, number] => [Math.min(...m.values()), Math.max(...m.values())];
    const [amin, amax] = spread(act);
    const [tmin, tmax] = spread(tot);
    // Host spread binds (see `spreadEnforced`): totals may stay a little apart.
    const tslack = spreadEnforced(state, name) ? spreadSlack : 0;
    if (amax - amin > 1) add(`${name}: active counts ${amin}..${amax} over ${act.size} UP copies`);
    if (tmax - tmin > 1 + tslack) add(`${name}: total counts ${tmin}..${tmax} over ${tot.size} UP copies`);
  }
  return out;

  function add(s: string): void {
    out.push(s);
  }
}

/**
 * Whether balancing enforces host spread for an app: a DISTRIBUTED_FAULT_TOLERANT app whose
 * UP copies meet `spreadBinds`.
 */
export function spreadEnforced(state: ClusterState, name: string): boolean {
  const app = own(state.apps, name);
  if (app === undefined || app.spec.mode !== 'DISTRIBUTED_FAULT_TOLERANT') return false;
  const per = new Map<string, number>();
  for (const c of Object.values(state.copies)) if (c.app === name && c.status === 'UP') per.set(c.host, (per.get(c.host) ?? 0) + 1);
  return spreadBinds(per.values(), app.spec.standbys);
}

/**
 * Host-spread check for activated DISTRIBUTED_FAULT_TOLERANT apps (all, or `apps`) where
 * balancing enforces it (`spreadEnforced`): no RS keeps two live members on one host (a host
 * fault would take both). Pending standby moves count as done.
 */
export function checkSpread(state: ClusterState, apps?: Iterable<string>): string[] {
  const out: string[] = [];
  const names = apps === undefined ? Object.keys(state.apps) : [...apps];
  for (const name of names) {
    const app = own(state.apps, name);
    if (app === undefined || !app.activated || app.spec.mode !== 'DISTRIBUTED_FAULT_TOLERANT') continue;
    if (!spreadEnforced(state, name)) continue;
    const hostOf = new Map<string, string>();
    for (const c of Object.values(state.copies)) if (c.app === name && c.status === 'UP') hostOf.set(c.copyId, c.host);
    for (const a of app.rs) {
      const leaving = app.standbyMoves?.[a.rs]?.fromCopyId;
      const hosts: string[] = [];
      for (const m of a.members) {
        const h = hostOf.get(m.copyId);
        if (m.role === 'OUT_OF_SERVICE' || m.copyId === leaving || h === undefined) continue;
        if (hosts.includes(h)) out.push(`${name}/${a.rs}: two live members on host ${h} (${a.members.map((x) => `${x.copyId}:${x.role}`).join(',')})`);
        hosts.push(h);
      }
    }
  }
  return out;
}
