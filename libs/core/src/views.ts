/** Read-side helpers over a state: routes, full role sets, loads, the empty state. */
import type { ClusterState } from './model';
import type { ControllerCommand, RouteChange } from './events';
import { peekIndex } from './derived';
import { cmpStr, own } from './members';
import { fullRoleSetFor, memberViews, routeOf } from './tx';

/**
 * The state a fresh controller starts from: no apps, no copies, leader not passive (the shell
 * sends `LeadershipAcquired` when it wins an election).
 */
export function emptyState(): ClusterState {
  return { version: 0, apps: {}, copies: {}, edges: [], leader: { passive: false, awaiting: [], passiveUntilMs: 0 } };
}

/**
 * Current route of every RS (of `app`, or of all apps sorted by name), with `previous` = null:
 * what a router watching from scratch needs. RS of apps not activated yet have `active: null`.
 */
export function routesOf(state: ClusterState, app?: string): RouteChange[] {
  const names = app === undefined ? Object.keys(state.apps).sort(cmpStr) : Object.prototype.hasOwnProperty.call(state.apps, app) ? [app] : [];
  const out: RouteChange[] = [];
  for (const name of names) {
    for (const a of state.apps[name]!.rs) out.push(routeOf(a, memberViews(state, a.members), null));
  }
  return out;
}

/**
 * The complete role list of a copy (every RS where it is ACTIVE or STANDBY, ascending RS id) as
 * a `SetRoles` with `full: true`: the copy drops every role not listed. Used for resyncs.
 *
 * @throws RangeError when the copy is unknown.
 */
export function fullRoleSet(state: ClusterState, copyId: string): Extract<ControllerCommand, { type: 'SetRoles' }> {
  return fullRoleSetFor(state, copyId);
}

/**
 * ACTIVE and STANDBY counts of every copy of `app` (all statuses; copies without roles count 0).
 * Empty map for an unknown app.
 */
export function copyLoads(state: ClusterState, app: string): Map<string, { active: number; standby: number }> {
  const out = new Map<string, { active: number; standby: number }>();
  const a = own(state.apps, app);
  if (a === undefined) return out;
  const idx = a.activated ? peekIndex(a) : null;
  for (const id of Object.keys(state.copies).sort(cmpStr)) {
    const c = state.copies[id]!;
    if (c.app !== app) continue;
    const s = idx?.slotOf.get(id);
    out.set(id, s === undefined ? { active: 0, standby: 0 } : { active: idx!.act[s]!, standby: idx!.sb[s]! });
  }
  return out;
}
