/** Shared helpers for the core unit tests. */
import assert from 'node:assert/strict';
import { checkInvariants, decide, emptyState } from '../src/index';
import type { AppSpec, ClusterState, ControllerCommand, ControllerEvent, Decision, Mode, Rejection, SyncedStandby } from '../src/index';

export const T0 = 1_000;

/** Applies an event that must succeed, and checks the invariants of the result. */
export function ok(state: ClusterState, ev: ControllerEvent, now = T0): Decision {
  const d = decide(state, ev, now);
  assert.equal(d.rejection, undefined, `unexpected rejection: ${d.rejection?.code} ${d.rejection?.message}`);
  assert.deepEqual(checkInvariants(d.state), []);
  return d;
}

/** Applies an event that must be rejected with `code` and a message matching `re`. */
export function rejected(state: ClusterState, ev: ControllerEvent, code: Rejection['code'], re: RegExp, now = T0): Decision {
  const d = decide(state, ev, now);
  assert.ok(d.rejection, `expected ${code}, got success (${d.notes.join(' | ')})`);
  assert.equal(d.rejection.code, code, d.rejection.message);
  assert.match(d.rejection.message, re);
  assert.equal(d.state, state, 'a rejection must return the input state');
  assert.deepEqual(d.commands, []);
  return d;
}

export function spec(name: string, mode: Mode, rsCount: number, standbys: number, minCopies = 1): AppSpec {
  return { name, mode, rsCount, standbys, minCopies };
}

export function topo(...apps: AppSpec[]): ControllerEvent {
  return { type: 'TopologyApplied', topology: { apps, edges: [] } };
}

export function reg(copyId: string, app: string, host: string, incarnation = 1, address = `${copyId}.addr:7000`): ControllerEvent {
  return { type: 'CopyRegistered', copyId, app, host, address, incarnation };
}

/** A state with one app and the given copies (id@host) registered in order, then settled. */
export function cluster(s: AppSpec, copies: string[]): ClusterState {
  let st = ok(emptyState(), topo(s)).state;
  for (const c of copies) {
    const [id, host] = c.split('@') as [string, string];
    st = ok(st, reg(id, s.name, host ?? 'h0')).state;
  }
  return settle(st);
}

/**
 * What the active copies report once they have caught their new standbys up: every catching-up
 * mark of `st`, at the current incarnation and version (null when there is none).
 */
export function syncedReport(st: ClusterState): ControllerEvent | null {
  const entries: SyncedStandby[] = [];
  for (const [app, a] of Object.entries(st.apps)) {
    for (const [r, e] of Object.entries(a.syncing ?? {})) {
      for (const copyId of Object.keys(e)) {
        entries.push({ app, rs: Number(r), copyId, incarnation: st.copies[copyId]!.incarnation, version: a.rs[Number(r)]!.version });
      }
    }
  }
  return entries.length === 0 ? null : { type: 'StandbysSynced', entries };
}

/**
 * Lets the actives catch every new standby up (`StandbysSynced`), then ticks until no balancing
 * is pending (caught-up standbys have become promotable).
 */
export function settle(st: ClusterState, now = T0 + 1): ClusterState {
  for (let i = 0; i < 5; i++) {
    const rep = syncedReport(st);
    if (rep !== null) st = ok(st, rep, now + i).state;
    if (!Object.values(st.apps).some((a) => a.balancePending === true)) break;
    st = ok(st, { type: 'Tick' }, now + i).state;
  }
  assert.ok(!Object.values(st.apps).some((a) => a.balancePending === true), 'balancing still pending after 5 ticks');
  return st;
}

export function members(state: ClusterState, app: string, rs: number): string[] {
  return state.apps[app]!.rs[rs]!.members.map((m) => `${m.copyId}:${m.role[0]}`);
}

export function activeOf(state: ClusterState, app: string, rs: number): string | null {
  const m = state.apps[app]!.rs[rs]!.members[0];
  return m?.role === 'ACTIVE' ? m.copyId : null;
}

export function setRoles(d: Decision, copyId: string): Extract<ControllerCommand, { type: 'SetRoles' }> | undefined {
  return d.commands.find((c): c is Extract<ControllerCommand, { type: 'SetRoles' }> => c.type === 'SetRoles' && c.copyId === copyId);
}

export function routes(d: Decision): Extract<ControllerCommand, { type: 'PublishRoutes' }>['routes'] {
  const c = d.commands.find((x): x is Extract<ControllerCommand, { type: 'PublishRoutes' }> => x.type === 'PublishRoutes');
  return c?.routes ?? [];
}

/** ACTIVE and total counts per UP copy of an app. */
export function counts(state: ClusterState, app: string): Map<string, { a: number; t: number }> {
  const out = new Map<string, { a: number; t: number }>();
  for (const c of Object.values(state.copies)) if (c.app === app && c.status === 'UP') out.set(c.copyId, { a: 0, t: 0 });
  for (const r of state.apps[app]!.rs) {
    for (const m of r.members) {
      const x = out.get(m.copyId);
      if (x === undefined || m.role === 'OUT_OF_SERVICE') continue;
      x.t++;
      if (m.role === 'ACTIVE') x.a++;
    }
  }
  return out;
}

export function spread(state: ClusterState, app: string): { active: number; total: number } {
  const v = [...counts(state, app).values()];
  return {
    active: Math.max(...v.map((x) => x.a)) - Math.min(...v.map((x) => x.a)),
    total: Math.max(...v.map((x) => x.t)) - Math.min(...v.map((x) => x.t)),
  };
}
