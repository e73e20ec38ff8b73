/**
 * `decide`: the controller's only transition function. Pure and deterministic: the same state,
 * event and time always give the same decision; time is an argument, never read.
 */
import { compileDetectionPolicy } from './detection';
import type { AppSpec, ClusterState, CopyInfo, Edge, Topology } from './model';
import type { ControllerCommand, ControllerEvent, Decision, Rejection } from './events';
import { Tx, type AppTx } from './tx';
import { abandonStandbyMove, completeStandbyMove, reconcile } from './reconcile';
import { validateTopology } from './validate';
import { listedRs, peekIndex } from './derived';
import { buildMembers, cmpStr, own, parseMembers, roleOf } from './members';

type Stop = Extract<ControllerCommand, { type: 'StopCopy' }>;

/** Upper bound for copy ids, hosts and addresses (they are persisted and sent everywhere). */
const MAX_ID_LENGTH = 256;

function reject(state: ClusterState, code: Rejection['code'], message: string): Decision {
  return { state, commands: [], rejection: { code, message }, notes: [] };
}

function noop(state: ClusterState, note: string): Decision {
  return { state, commands: [], notes: [note] };
}

function passive(state: ClusterState, op: string): Decision {
  const l = state.leader;
  return reject(
    state,
    'UNAVAILABLE',
    `controller is passive (new leader, waiting for ${l.awaiting.length} copies to report, until t=${l.passiveUntilMs} ms); retry ${op} later`,
  );
}

function str(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

/** True when the copy's current process is known dead (failed, or failed while parked). */
function dead(c: CopyInfo): boolean {
  return c.status === 'OUT_OF_SERVICE' || c.failed === true;
}

function stopOf(c: CopyInfo, reason: string, incarnation = c.incarnation): Stop {
  return { type: 'StopCopy', copyId: c.copyId, address: c.address, incarnation, reason };
}

/** ACTIVE / STANDBY counts of a copy in its app. */
function loadOf(state: ClusterState, c: CopyInfo): { active: number; standby: number } {
  const app = own(state.apps, c.app);
  if (app === undefined || !app.activated) return { active: 0, standby: 0 };
  const idx = peekIndex(app);
  const s = idx.slotOf.get(c.copyId);
  return s === undefined ? { active: 0, standby: 0 } : { active: idx.act[s]!, standby: idx.sb[s]! };
}

/**
 * Applies one event to the state.
 *
 * Level-triggered: handlers record what happened (copy status, specs, leader phase), then one
 * reconcile pass repairs everything (see reconcile.ts). Rejections leave the state untouched.
 * Commands are derived from the state difference (see tx.ts) and are empty while passive.
 *
 * Balancing runs for events that change the set of copies or the specs of an app (registration
 * of a new copy or incarnation, failure, drain, disable, enable, removal, topology, end of the
 * passive phase). A plain `Tick` repairs, and resumes only balancing left pending (new standbys
 * must hold the state before they can be promoted, see `AppState.balancePending`); it never
 * starts a new one, so an operator's switchover is not undone. `SwitchoverRequested` runs
 * neither repairs nor balancing.
 *
 * `CopyHeard` updates `lastHeardAtMs` and therefore bumps the state version: feed it for the
 * passive-phase poll (R-HM-3), not for every heartbeat.
 */
export function decide(state: ClusterState, event: ControllerEvent, nowMs: number): Decision {
  if (event === null || typeof event !== 'object') return reject(state, 'INVALID_ARGUMENT', 'event: must be an object');
  if (!Number.isFinite(nowMs)) return reject(state, 'INVALID_ARGUMENT', `now: must be a finite number of ms (got ${String(nowMs)})`);
  switch (event.type) {
    case 'TopologyApplied':
      return onTopology(state, event.topology, nowMs);
    case 'CopyRegistered':
      return onRegistered(state, event, nowMs);
    case 'CopyHeard':
      return onHeard(state, event, nowMs);
    case 'CopyFailed':
      return onFailed(state, event, nowMs);
    case 'SwitchoverRequested':
      return onSwitchover(state, event, nowMs);
    case 'MoveRequested':
      return onMove(state, event, nowMs);
    case 'DrainRequested':
      return onDrainOrRemove(state, event.copyId, nowMs, false);
    case 'CopyRemoved':
      return onDrainOrRemove(state, event.copyId, nowMs, true);
    case 'CopyDisabled':
      return onDisabled(state, event.copyId, nowMs);
    case 'CopyEnabled':
      return onEnabled(state, event.copyId, nowMs);
    case 'LeadershipAcquired':
      return onLeadership(state, event.passiveTimeoutMs, nowMs);
    case 'StandbysSynced':
      return onSynced(state, event, nowMs);
    case 'Tick':
      return onTick(state, nowMs);
    default:
      return reject(state, 'INVALID_ARGUMENT', `event.type: unknown event type ${JSON.stringify((event as { type?: unknown }).type)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Leader phase (R-HM-3)

function removeAwaiting(tx: Tx, copyId: string): void {
  const l = tx.leader;
  if (l.awaiting.includes(copyId)) tx.leader = { ...l, awaiting: l.awaiting.filter((id) => id !== copyId) };
}

/**
 * Ends the passive phase: copies never heard are treated as failed (R-HM-4), everything is
 * repaired and balanced, then every live copy gets its full role set and every route is
 * published (the previous leader may have died between persisting and sending).
 */
function endPassive(tx: Tx, why: string): void {
  const l = tx.leader;
  const silent = new Set(l.awaiting);
  for (const id of l.awaiting) {
    const c = tx.copy(id);
    if (c === undefined || dead(c)) continue;
    if (c.status === 'UP') {
      tx.setCopy({ ...c, status: 'OUT_OF_SERVICE' });
      tx.notes.push(`copy ${id} not heard during the passive phase: treated as failed (R-HM-4)`);
    } else {
      // Operator statuses survive (the copy holds no roles); the silent process is dead.
      tx.setCopy({ ...c, failed: true });
      tx.notes.push(`copy ${id} (${c.status}) not heard during the passive phase: treated as failed, status kept`);
    }
  }
  tx.leader = { passive: false, awaiting: [], passiveUntilMs: l.passiveUntilMs };
  tx.balance = 'all';
  tx.respread = 'all';
  tx.deferSwaps = new Set(); // a leadership change settles everything at once
  reconcile(tx);
  // Isolation of every failed copy, including ones failed while passive (no commands then).
  for (const id of Object.keys(tx.copies).sort(cmpStr)) {
    const c = tx.copies[id]!;
    if (dead(c)) tx.stops.push(stopOf(c, silent.has(id) ? 'not heard during the passive phase' : 'failed (isolation re-sent at leadership change)'));
  }
  tx.fullResync = true;
  tx.notes.push(`passive phase ended (${why}): full resync`);
}

function maybeEndPassive(tx: Tx): void {
  if (tx.leader.passive && tx.leader.awaiting.length === 0) endPassive(tx, 'all copies heard');
}

function onLeadership(state: ClusterState, timeout: number, now: number): Decision {
  if (!Number.isSafeInteger(timeout) || timeout < 0) {
    return reject(state, 'INVALID_ARGUMENT', `passiveTimeoutMs: must be an integer >= 0 (got ${String(timeout)})`);
  }
  const tx = new Tx(state, now);
  const awaiting = Object.values(state.copies)
    .filter((c) => !dead(c))
    .map((c) => c.copyId)
    .sort(cmpStr);
  tx.leader = { passive: true, awaiting, passiveUntilMs: now + timeout };
  tx.notes.push(`leadership acquired: passive until t=${now + timeout} ms, waiting for ${awaiting.length} copies`);
  if (awaiting.length === 0) endPassive(tx, 'no copies to hear from');
  return tx.commit();
}

/** Upper bound of entries in one `StandbysSynced` report. */
export const MAX_SYNCED_ENTRIES = 10_000;

/**
 * Clears catching-up marks. Reports about a replaced process, an older listing or a standby not
 * catching up are ignored (a late or duplicate report is normal, not an error). No commands:
 * nothing a copy holds changes; balancing picks the standby up on its next pass.
 */
function onSynced(state: ClusterState, e: ControllerEvent & { type: 'StandbysSynced' }, now: number): Decision {
  if (!Array.isArray(e.entries)) return reject(state, 'INVALID_ARGUMENT', 'entries: must be a list');
  if (e.entries.length > MAX_SYNCED_ENTRIES) return reject(state, 'INVALID_ARGUMENT', `entries: at most ${MAX_SYNCED_ENTRIES} per report (got ${e.entries.length})`);
  for (let i = 0; i < e.entries.length; i++) {
    const x = e.entries[i]!;
    const at = `entries[${i}]`;
    if (x === null || typeof x !== 'object') return reject(state, 'INVALID_ARGUMENT', `${at}: must be an object`);
    if (!str(x.app)) return reject(state, 'INVALID_ARGUMENT', `${at}.app: must be a non-empty string`);
    if (!str(x.copyId)) return reject(state, 'INVALID_ARGUMENT', `${at}.copyId: must be a non-empty string`);
    for (const f of ['rs', 'incarnation', 'version'] as const) {
      if (!Number.isSafeInteger(x[f]) || x[f] < 0) return reject(state, 'INVALID_ARGUMENT', `${at}.${f}: must be a non-negative integer (got ${String(x[f])})`);
    }
    const app = own(state.apps, x.app);
    if (app === undefined) return reject(state, 'NOT_FOUND', `${at}.app: application ${x.app} is not declared`);
    if (x.rs >= app.spec.rsCount) return reject(state, 'INVALID_ARGUMENT', `${at}.rs: ${x.rs} is out of range for ${x.app} (rs_count ${app.spec.rsCount})`);
  }
  const tx = new Tx(state, now);
  let cleared = 0;
  for (const x of e.entries) {
    const c = own(state.copies, x.copyId);
    if (c === undefined || c.incarnation !== x.incarnation || c.app !== x.app) continue;
    if (x.reportedBy !== undefined) {
      const head = state.apps[x.app]!.rs[x.rs]!.members[0];
      if (head === undefined || head.role !== 'ACTIVE' || head.copyId !== x.reportedBy) continue;
    }
    const at = tx.app(x.app)!;
    if (!at.markSynced(x.rs, x.copyId, x.version)) continue;
    cleared++;
    const mv = at.moveOf(x.rs);
    if (mv !== undefined && mv.toCopyId === x.copyId) completeMove(tx, at, x.rs);
    const sm = at.standbyMoveOf(x.rs);
    if (sm !== undefined && sm.toCopyId === x.copyId) completeStandbyMove(tx, at, x.rs);
  }
  if (cleared === 0) return noop(state, `no standby newly caught up (${e.entries.length} reported)`);
  tx.notes.push(`${cleared} standby entr${cleared === 1 ? 'y' : 'ies'} caught up`);
  return tx.commit();
}

function onTick(state: ClusterState, now: number): Decision {
  const tx = new Tx(state, now);
  if (state.leader.passive) {
    if (now < state.leader.passiveUntilMs) return { state, commands: [], notes: [] };
    endPassive(tx, 'timeout');
  } else {
    abandonStaleMoves(tx);
    reconcile(tx);
  }
  return tx.commit();
}

/**
 * Moves whose target has not caught up within {@link MOVE_CATCH_UP_TIMEOUT_MS} are abandoned:
 * the target leaves the RS again (the active stays where it is). Cheap: moves are few.
 */
function abandonStaleMoves(tx: Tx): void {
  for (const name of Object.keys(tx.base.apps)) {
    const base = tx.base.apps[name]!;
    if (base.standbyMoves !== undefined) {
      const at = tx.app(name)!;
      for (const key of Object.keys(base.standbyMoves)) {
        const mv = at.standbyMoveOf(Number(key));
        if (mv !== undefined && tx.now - mv.sinceMs >= MOVE_CATCH_UP_TIMEOUT_MS) {
          abandonStandbyMove(tx, at, Number(key), `the new standby did not catch up within ${MOVE_CATCH_UP_TIMEOUT_MS} ms`);
        }
      }
    }
    if (base.moves === undefined) continue;
    const at = tx.app(name)!;
    for (const key of Object.keys(base.moves)) {
      const r = Number(key);
      const mv = at.moveOf(r);
      if (mv === undefined || tx.now - mv.sinceMs < MOVE_CATCH_UP_TIMEOUT_MS) continue;
      const p = parseMembers(at.get(r).members);
      at.put(r, buildMembers(tx.pool, p.active, p.standbys.filter((x) => x !== mv.toCopyId), p.oos), false);
      at.setMove(r, undefined);
      tx.notes.push(`move ${name}/${r} ${mv.fromCopyId} -> ${mv.toCopyId} abandoned: the target did not catch up within ${MOVE_CATCH_UP_TIMEOUT_MS} ms`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Topology

/** True when two specs map keys to RS the same way (absent partitioning is HASH). */
function samePartitioning(x: AppSpec, y: AppSpec): boolean {
  if ((x.partitioning ?? 'HASH') !== (y.partitioning ?? 'HASH')) return false;
  const [a, b] = [x.rangeStarts ?? [], y.rangeStarts ?? []];
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

function partitioningLabel(a: AppSpec): string {
  return a.partitioning === 'RANGE' ? `RANGE (${a.rangeStarts?.length ?? 0} range starts)` : 'HASH';
}

function onTopology(state: ClusterState, t: Topology, now: number): Decision {
  if (state.leader.passive) return passive(state, 'ApplyTopology');
  const err = validateTopology(t, Object.keys(state.apps));
  if (err !== null) return reject(state, err.code, err.message);
  for (const a of t.apps) {
    const ex = own(state.apps, a.name);
    if (ex === undefined) continue;
    if (ex.spec.mode !== a.mode) {
      return reject(state, 'FAILED_PRECONDITION', `app "${a.name}": changing mode ${ex.spec.mode} -> ${a.mode} is not supported on a declared app; declare a new app instead`);
    }
    if (ex.spec.rsCount !== a.rsCount) {
      return reject(state, 'FAILED_PRECONDITION', `app "${a.name}": changing rsCount ${ex.spec.rsCount} -> ${a.rsCount} is not supported on a declared app; declare a new app instead`);
    }
    // A different key → RS mapping would strand every key's state on its old RS.
    if (!samePartitioning(ex.spec, a)) {
      return reject(state, 'FAILED_PRECONDITION', `app "${a.name}": changing partitioning ${partitioningLabel(ex.spec)} -> ${partitioningLabel(a)} is not supported on a declared app; declare a new app instead`);
    }
    // Every copy's view of the shared data is the master RS's state at its epoch and sequence
    // number: another RS (or none) would hand them a different state under the same positions.
    if (ex.spec.sharedMasterRs !== a.sharedMasterRs) {
      return reject(state, 'FAILED_PRECONDITION', `app "${a.name}": changing sharedMasterRs ${ex.spec.sharedMasterRs ?? 'none'} -> ${a.sharedMasterRs ?? 'none'} is not supported on a declared app; declare a new app instead`);
    }
  }
  const tx = new Tx(state, now);
  const balanceSet = new Set<string>();
  for (const a of t.apps) {
    const detection = a.detection === undefined ? undefined : { ...compileDetectionPolicy(a.detection) };
    const base: AppSpec =
      detection === undefined
        ? { name: a.name, mode: a.mode, rsCount: a.rsCount, standbys: a.standbys, minCopies: a.minCopies }
        : { name: a.name, mode: a.mode, rsCount: a.rsCount, standbys: a.standbys, minCopies: a.minCopies, detection };
    const partitioned: AppSpec = a.partitioning === 'RANGE' ? { ...base, partitioning: 'RANGE', rangeStarts: [...(a.rangeStarts ?? [])] } : base;
    const spec: AppSpec = a.sharedMasterRs === undefined ? partitioned : { ...partitioned, sharedMasterRs: a.sharedMasterRs };
    const ex = own(state.apps, a.name);
    if (ex === undefined) {
      tx.createApp(spec);
      tx.notes.push(`app ${a.name} declared: mode=${a.mode} rsCount=${a.rsCount} standbys=${a.standbys} minCopies=${a.minCopies}`);
      continue;
    }
    const changes: string[] = [];
    if (ex.spec.standbys !== a.standbys) changes.push(`app ${a.name}: standbys ${ex.spec.standbys} -> ${a.standbys}`);
    if (ex.spec.minCopies !== a.minCopies) changes.push(`app ${a.name}: minCopies ${ex.spec.minCopies} -> ${a.minCopies}`);
    const policyChanged = JSON.stringify(compileDetectionPolicy(ex.spec.detection)) !== JSON.stringify(compileDetectionPolicy(detection));
    if (changes.length === 0 && !policyChanged) continue;
    tx.app(a.name)!.spec = spec;
    if (policyChanged) tx.notes.push(`app ${a.name}: detection policy ${JSON.stringify(compileDetectionPolicy(detection))}`);
    if (changes.length === 0) continue; // a policy change moves no role
    tx.notes.push(...changes);
    balanceSet.add(a.name);
  }
  const edges: Edge[] = t.edges.map((e) => ({ from: e.from, to: e.to, keyField: e.keyField }));
  const key = (e: Edge): string => `${e.from} -> ${e.to}`;
  const before = new Map(state.edges.map((e) => [key(e), e] as const));
  const after = new Map(edges.map((e) => [key(e), e] as const));
  const edgeNotes: string[] = [];
  for (const [k, e] of after) {
    const b = before.get(k);
    if (b === undefined) edgeNotes.push(`edge ${k} added (key ${e.keyField})`);
    else if (b.keyField !== e.keyField) edgeNotes.push(`edge ${k}: keyField ${b.keyField} -> ${e.keyField}`);
  }
  for (const k of before.keys()) if (!after.has(k)) edgeNotes.push(`edge ${k} removed`);
  if (edgeNotes.length > 0) {
    tx.edges = edges;
    tx.notes.push(...edgeNotes);
  }
  if (tx.notes.length === 0) return noop(state, 'topology unchanged');
  tx.balance = balanceSet;
  tx.respread = balanceSet;
  reconcile(tx);
  return tx.commit();
}

// ---------------------------------------------------------------------------------------------
// Copies

function onRegistered(state: ClusterState, e: ControllerEvent & { type: 'CopyRegistered' }, now: number): Decision {
  for (const f of ['copyId', 'app', 'host', 'address'] as const) {
    if (!str(e[f])) return reject(state, 'INVALID_ARGUMENT', `${f}: must be a non-empty string`);
    if (e[f].length > MAX_ID_LENGTH) return reject(state, 'INVALID_ARGUMENT', `${f}: at most ${MAX_ID_LENGTH} characters (got ${e[f].length})`);
  }
  // Copies are keyed by id in a plain record: "__proto__" would not be stored as a key.
  if (e.copyId === '__proto__') return reject(state, 'INVALID_ARGUMENT', 'copyId: "__proto__" is reserved');
  if (!Number.isSafeInteger(e.incarnation) || e.incarnation < 0) {
    return reject(state, 'INVALID_ARGUMENT', `incarnation: must be an integer >= 0 (got ${String(e.incarnation)})`);
  }
  if (own(state.apps, e.app) === undefined) {
    return reject(state, 'NOT_FOUND', `app "${e.app}" is not declared; apply a topology that declares it first`);
  }
  const ex = own(state.copies, e.copyId);
  if (ex !== undefined && ex.app !== e.app) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId} is registered for app "${ex.app}", not "${e.app}"`);
  }
  const tx = new Tx(state, now);
  const balanceSet = new Set<string>();
  if (ex === undefined) {
    tx.setCopy({ copyId: e.copyId, app: e.app, host: e.host, address: e.address, incarnation: e.incarnation, status: 'UP', registeredAtMs: now, lastHeardAtMs: now });
    tx.notes.push(`copy ${e.copyId} registered: app ${e.app}, host ${e.host}, address ${e.address}, incarnation ${e.incarnation}`);
    balanceSet.add(e.app);
  } else if (e.incarnation < ex.incarnation) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId}: stale incarnation ${e.incarnation} (incarnation ${ex.incarnation} is registered)`);
  } else if (e.incarnation === ex.incarnation) {
    if (dead(ex)) {
      return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId}: incarnation ${e.incarnation} was declared failed; restart it with a new incarnation`);
    }
    if (ex.host !== e.host) {
      return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId}: incarnation ${e.incarnation} is registered on host ${ex.host}, not ${e.host}; a restarted process needs a new incarnation`);
    }
    // Idempotent refresh of the same process: only the address may change.
    tx.setCopy({ ...ex, address: e.address, lastHeardAtMs: now });
    if (ex.address !== e.address) {
      tx.notes.push(`copy ${e.copyId}: address ${ex.address} -> ${e.address}`);
      const at = tx.app(e.app)!;
      if (at.activated) {
        // Peers hold the old address in their member views: re-send every RS it is live in.
        const idx = at.idx();
        const slot = idx.slotOf.get(e.copyId);
        if (slot !== undefined) {
          for (const r of listedRs(idx, slot, at.current)) {
            const role = roleOf(at.get(r).members, e.copyId);
            if (role === 'ACTIVE' || role === 'STANDBY') at.touch(r);
          }
        }
      }
    } else tx.notes.push(`copy ${e.copyId}: registration refreshed (same incarnation ${e.incarnation})`);
  } else {
    // A new process: the old one is gone. Fence it exactly like a failure; the new process has
    // no state, so it only gets STANDBY work (after catching up) from reconcile.
    const status = ex.status === 'DRAINED' || ex.status === 'DISABLED' ? ex.status : 'UP';
    tx.setCopy({
      copyId: ex.copyId,
      app: ex.app,
      host: e.host,
      address: e.address,
      incarnation: e.incarnation,
      status,
      registeredAtMs: now,
      lastHeardAtMs: now,
    });
    tx.fenced.add(e.copyId);
    const load = loadOf(state, ex);
    tx.notes.push(
      `copy ${e.copyId} restarted: incarnation ${ex.incarnation} -> ${e.incarnation} (status ${ex.status} -> ${status}); ` +
        `old process fenced (was ACTIVE for ${load.active} RS, STANDBY for ${load.standby})`,
    );
    balanceSet.add(e.app);
  }
  removeAwaiting(tx, e.copyId);
  tx.balance = balanceSet;
  tx.respread = balanceSet;
  reconcile(tx);
  maybeEndPassive(tx);
  return tx.commit();
}

function onHeard(state: ClusterState, e: ControllerEvent & { type: 'CopyHeard' }, now: number): Decision {
  if (!str(e.copyId)) return reject(state, 'INVALID_ARGUMENT', 'copyId: must be a non-empty string');
  if (!Number.isSafeInteger(e.incarnation)) return reject(state, 'INVALID_ARGUMENT', `incarnation: must be an integer (got ${String(e.incarnation)})`);
  const c = own(state.copies, e.copyId);
  if (c === undefined) return reject(state, 'NOT_FOUND', `copy ${e.copyId} is not registered; it must register`);
  if (e.incarnation !== c.incarnation) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId}: heard incarnation ${e.incarnation} but incarnation ${c.incarnation} is registered; it must re-register`);
  }
  if (dead(c)) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${e.copyId}: incarnation ${e.incarnation} was declared failed; restart it with a new incarnation`);
  }
  const tx = new Tx(state, now);
  tx.setCopy({ ...c, lastHeardAtMs: now });
  removeAwaiting(tx, e.copyId);
  maybeEndPassive(tx);
  return tx.commit();
}

function onFailed(state: ClusterState, e: ControllerEvent & { type: 'CopyFailed' }, now: number): Decision {
  if (!str(e.copyId)) return reject(state, 'INVALID_ARGUMENT', 'copyId: must be a non-empty string');
  if (!Number.isSafeInteger(e.incarnation)) return reject(state, 'INVALID_ARGUMENT', `incarnation: must be an integer (got ${String(e.incarnation)})`);
  const reason = typeof e.reason === 'string' && e.reason !== '' ? e.reason : 'failed';
  const c = own(state.copies, e.copyId);
  if (c === undefined) return reject(state, 'NOT_FOUND', `copy ${e.copyId} is not registered`);
  if (e.incarnation < c.incarnation) {
    return noop(state, `stale report: copy ${e.copyId} incarnation ${e.incarnation} failed, but incarnation ${c.incarnation} is registered; nothing to do`);
  }
  if (dead(c) && e.incarnation === c.incarnation) {
    return noop(state, `copy ${e.copyId} incarnation ${e.incarnation} is already declared failed; nothing to do`);
  }
  const tx = new Tx(state, now);
  // Remember the highest failed incarnation, so that process can never register again.
  const incarnation = Math.max(e.incarnation, c.incarnation);
  if (c.status === 'OUT_OF_SERVICE') {
    tx.setCopy({ ...c, incarnation });
    tx.notes.push(`copy ${e.copyId} incarnation ${e.incarnation} failed before registering; recorded`);
  } else if (c.status === 'DRAINED' || c.status === 'DISABLED') {
    // The operator status survives (a restart stays parked); the process is marked dead.
    tx.setCopy({ ...c, incarnation, failed: true });
    tx.moved = { active: 0, standby: 0 };
    tx.stops.push(stopOf(c, reason, e.incarnation));
    tx.notes.push(`copy ${e.copyId} (${c.status}) failed: ${reason}; it holds no roles, status kept`);
  } else {
    const load = loadOf(state, c);
    tx.setCopy({ ...c, status: 'OUT_OF_SERVICE', incarnation });
    tx.moved = { active: load.active, standby: load.standby };
    tx.stops.push(stopOf(c, reason, e.incarnation));
    tx.notes.push(`copy ${e.copyId} incarnation ${e.incarnation} failed: ${reason}; failing over ${load.active} active and ${load.standby} standby RS`);
  }
  tx.balance = new Set([c.app]);
  tx.deferSwaps = new Set([c.app]);
  removeAwaiting(tx, e.copyId);
  reconcile(tx);
  maybeEndPassive(tx);
  return tx.commit();
}

// ---------------------------------------------------------------------------------------------
// Operations

/**
 * Switchover: the target STANDBY becomes ACTIVE (front of the list), the old active takes the
 * target's place in the promotion order, epoch+1. In FAULT_TOLERANT mode an app has a single
 * active copy, so the switchover moves the active role of *all* RS of the app to the target
 * (every RS gets its own epoch+1). No balancing follows: it would undo the operator.
 */
function onSwitchover(state: ClusterState, e: ControllerEvent & { type: 'SwitchoverRequested' }, now: number): Decision {
  if (state.leader.passive) return passive(state, 'Switchover');
  if (!str(e.app)) return reject(state, 'INVALID_ARGUMENT', 'app: must be a non-empty string');
  if (!str(e.toCopyId)) return reject(state, 'INVALID_ARGUMENT', 'toCopyId: must be a non-empty string');
  if (!Number.isSafeInteger(e.rs)) return reject(state, 'INVALID_ARGUMENT', `rs: must be an integer (got ${String(e.rs)})`);
  const app = own(state.apps, e.app);
  if (app === undefined) return reject(state, 'NOT_FOUND', `app "${e.app}" not found`);
  const c = own(state.copies, e.toCopyId);
  if (c === undefined || c.app !== e.app) return reject(state, 'NOT_FOUND', `copy ${e.toCopyId} not found in app "${e.app}"`);
  if (e.rs < 0 || e.rs >= app.spec.rsCount) {
    return reject(state, 'NOT_FOUND', `app "${e.app}" has no RS ${e.rs}: rsCount is ${app.spec.rsCount} (RS 0..${app.spec.rsCount - 1})`);
  }
  if (!app.activated) {
    return reject(state, 'FAILED_PRECONDITION', `app "${e.app}" is not activated yet (it needs ${app.spec.minCopies} UP copies)`);
  }
  const where = `${e.app}/${e.rs}`;
  const role = roleOf(app.rs[e.rs]!.members, e.toCopyId);
  if (role === 'ACTIVE') return reject(state, 'FAILED_PRECONDITION', `copy ${e.toCopyId} is already ACTIVE for ${where}`);
  if (c.status !== 'UP') return reject(state, 'FAILED_PRECONDITION', `copy ${e.toCopyId} is ${c.status}, not UP; it cannot become ACTIVE`);
  if (role !== 'STANDBY') {
    return reject(
      state,
      'FAILED_PRECONDITION',
      `copy ${e.toCopyId} is not a STANDBY of ${where} (${role === null ? 'not a member' : 'it is OUT_OF_SERVICE there'}); only a standby that holds the state can take over`,
    );
  }
  const moving = Object.entries(app.moves ?? {}).find(([r]) => app.spec.mode === 'FAULT_TOLERANT' || Number(r) === e.rs);
  if (moving !== undefined) {
    return reject(state, 'FAILED_PRECONDITION', `${e.app}/${moving[0]} is moving ${moving[1].fromCopyId} -> ${moving[1].toCopyId}; retry once that move completes`);
  }
  const catchingUp = Object.entries(app.syncing ?? {}).filter(([r, m]) => (app.spec.mode === 'FAULT_TOLERANT' || Number(r) === e.rs) && own(m, e.toCopyId) !== undefined);
  if (catchingUp.length > 0) {
    return reject(
      state,
      'FAILED_PRECONDITION',
      `copy ${e.toCopyId} is a STANDBY of ${where} but still catching up (RS ${catchingUp.map(([r]) => r).slice(0, 5).join(', ')}); retry once the active has sent it the state`,
    );
  }
  const tx = new Tx(state, now);
  const at = tx.app(e.app)!;
  const targets = app.spec.mode === 'FAULT_TOLERANT' ? [...Array(at.rsCount).keys()] : [e.rs];
  let from: string | null = null;
  for (const r of targets) {
    // One change of the RS at a time: a pending standby move gives way (the old standby stays).
    if (at.standbyMoveOf(r) !== undefined) abandonStandbyMove(tx, at, r, `switchover to ${e.toCopyId}`);
    const p = parseMembers(at.get(r).members);
    if (!p.standbys.includes(e.toCopyId)) continue;
    from = p.active;
    const sbs = p.standbys.flatMap((s) => (s === e.toCopyId ? (p.active === null ? [] : [p.active]) : [s]));
    at.put(r, buildMembers(tx.pool, e.toCopyId, sbs, p.oos), true);
  }
  const scope = app.spec.mode === 'FAULT_TOLERANT' ? `${e.app} (all ${at.rsCount} RS, FAULT_TOLERANT)` : where;
  tx.notes.push(`switchover ${scope}: ${from ?? 'none'} -> ${e.toCopyId}, epoch ${at.get(e.rs).epoch}`);
  return tx.commit();
}

/** How long a pending move waits for its target to catch up before it is abandoned (on a Tick). */
export const MOVE_CATCH_UP_TIMEOUT_MS = 60_000;

/**
 * Live move of one RS's ACTIVE role (issue 5; see the `MoveRequested` event). No repairs or
 * balancing run with it (balancing would count the move's extra standby as a surplus and undo
 * the operator); a pending move is finished by `StandbysSynced` (see {@link completeMove}).
 * Asking again for the same pending move changes nothing; a different move of the same RS is
 * refused until the pending one completes or is abandoned.
 */
function onMove(state: ClusterState, e: ControllerEvent & { type: 'MoveRequested' }, now: number): Decision {
  if (state.leader.passive) return passive(state, 'MoveRs');
  if (!str(e.app)) return reject(state, 'INVALID_ARGUMENT', 'app: must be a non-empty string');
  if (!str(e.toCopyId)) return reject(state, 'INVALID_ARGUMENT', 'toCopyId: must be a non-empty string');
  if (!Number.isSafeInteger(e.rs) || e.rs < 0) return reject(state, 'INVALID_ARGUMENT', `rs: must be a non-negative integer (got ${String(e.rs)})`);
  if (e.reason !== undefined && (typeof e.reason !== 'string' || e.reason.length > MAX_ID_LENGTH)) {
    return reject(state, 'INVALID_ARGUMENT', `reason: must be a string of at most ${MAX_ID_LENGTH} characters`);
  }
  const app = own(state.apps, e.app);
  if (app === undefined) return reject(state, 'NOT_FOUND', `app "${e.app}" not found`);
  if (e.rs >= app.spec.rsCount) {
    return reject(state, 'NOT_FOUND', `app "${e.app}" has no RS ${e.rs}: rsCount is ${app.spec.rsCount} (RS 0..${app.spec.rsCount - 1})`);
  }
  const c = own(state.copies, e.toCopyId);
  if (c === undefined || c.app !== e.app) return reject(state, 'NOT_FOUND', `copy ${e.toCopyId} not found in app "${e.app}"`);
  if (!app.activated) {
    return reject(state, 'FAILED_PRECONDITION', `app "${e.app}" is not activated yet (it needs ${app.spec.minCopies} UP copies)`);
  }
  if (app.spec.mode === 'FAULT_TOLERANT') {
    return reject(state, 'FAILED_PRECONDITION', `app "${e.app}" is FAULT_TOLERANT: all its RS share one active copy and cannot move one by one; use switchover`);
  }
  const where = `${e.app}/${e.rs}`;
  if (c.status !== 'UP' || c.failed === true) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${e.toCopyId} is ${c.status}${c.failed === true ? ' (failed)' : ''}, not UP; an RS can only move to a healthy, enabled copy`);
  }
  const members = app.rs[e.rs]!.members;
  let p = parseMembers(members);
  if (p.active === e.toCopyId) return reject(state, 'FAILED_PRECONDITION', `copy ${e.toCopyId} is already ACTIVE for ${where}`);
  if (p.active === null) return reject(state, 'FAILED_PRECONDITION', `${where} has no ACTIVE copy right now (failover in progress); retry once it has one`);
  const pending = own(app.moves ?? {}, e.rs);
  if (pending !== undefined) {
    if (pending.toCopyId === e.toCopyId) return noop(state, `move ${where} -> ${e.toCopyId} is already in progress (target catching up)`);
    return reject(state, 'FAILED_PRECONDITION', `${where} is already moving ${pending.fromCopyId} -> ${pending.toCopyId}; retry once that move completes`);
  }
  const tx = new Tx(state, now);
  const at = tx.app(e.app)!;
  if (at.standbyMoveOf(e.rs) !== undefined) {
    // One change of the RS at a time: balancing's standby move gives way to the operator's.
    abandonStandbyMove(tx, at, e.rs, `RS moves to ${e.toCopyId}`);
    p = parseMembers(at.get(e.rs).members);
  }
  const from = p.active!; // checked above; abandoning a standby move keeps the active
  const why = e.reason !== undefined && e.reason.length > 0 ? ` (${e.reason})` : '';
  if (app.spec.mode === 'DISTRIBUTED' || at.spec.standbys === 0) {
    // No standby holds the state: the target restores from the RS's checkpoint (the shell asks
    // the old active to write a final one first).
    at.put(e.rs, buildMembers(tx.pool, e.toCopyId, p.standbys.filter((x) => x !== e.toCopyId), p.oos), true);
    tx.notes.push(`move ${where}${why}: ${from} -> ${e.toCopyId}, epoch ${at.get(e.rs).epoch} (restores from checkpoint)`);
    return tx.commit();
  }
  if (p.standbys.includes(e.toCopyId) && !at.isSyncing(e.rs, e.toCopyId)) {
    // A caught-up standby: a switchover of this RS.
    at.put(e.rs, buildMembers(tx.pool, e.toCopyId, p.standbys.map((x) => (x === e.toCopyId ? from : x)), p.oos), true);
    tx.notes.push(`move ${where}${why}: ${from} -> ${e.toCopyId}, epoch ${at.get(e.rs).epoch} (promoted a caught-up standby)`);
    return tx.commit();
  }
  if (!p.standbys.includes(e.toCopyId)) at.put(e.rs, buildMembers(tx.pool, from, [...p.standbys, e.toCopyId], p.oos), false);
  at.setMove(e.rs, { toCopyId: e.toCopyId, fromCopyId: from, sinceMs: now, ...(e.reason ? { reason: e.reason } : {}) });
  // At epoch 0 nothing was ever acknowledged: the new standby holds the whole state already.
  if (!at.isSyncing(e.rs, e.toCopyId)) completeMove(tx, at, e.rs);
  else tx.notes.push(`move ${where}${why}: ${from} -> ${e.toCopyId} started: ${e.toCopyId} joins as standby and takes over once caught up`);
  return tx.commit();
}

/**
 * Finishes the pending move of RS r (its target is caught up): the target becomes ACTIVE
 * (epoch+1), the source takes the target's place among the standbys and then, when that is one
 * standby too many, leaves the RS.
 */
function completeMove(tx: Tx, at: AppTx, r: number): void {
  const mv = at.moveOf(r)!;
  const p = parseMembers(at.get(r).members);
  at.setMove(r, undefined);
  if (p.active !== mv.fromCopyId || !p.standbys.includes(mv.toCopyId)) return; // no longer holds
  let sbs = p.standbys.map((x) => (x === mv.toCopyId ? mv.fromCopyId : x));
  if (sbs.length > at.spec.standbys) sbs = sbs.filter((x) => x !== mv.fromCopyId);
  at.put(r, buildMembers(tx.pool, mv.toCopyId, sbs, p.oos), true);
  tx.notes.push(`move ${at.name}/${r}: ${mv.fromCopyId} -> ${mv.toCopyId}, epoch ${at.get(r).epoch} (target caught up)`);
}

/**
 * Drain (and graceful removal): every RS the copy is ACTIVE for moves to its first UP standby
 * (epoch+1) or, with none, to the least-loaded other UP copy; standby roles are re-homed on
 * eligible copies (or dropped when there is none). All or nothing: when an active RS has nowhere
 * to go, nothing changes. A drained copy is listed in no RS (it is healthy, just parked);
 * removal then forgets the copy and asks it to stop.
 */
function onDrainOrRemove(state: ClusterState, copyId: string, now: number, remove: boolean): Decision {
  const op = remove ? 'RemoveCopy' : 'Drain';
  if (state.leader.passive) return passive(state, op);
  if (!str(copyId)) return reject(state, 'INVALID_ARGUMENT', 'copyId: must be a non-empty string');
  const c = own(state.copies, copyId);
  if (c === undefined) return reject(state, 'NOT_FOUND', `copy ${copyId} is not registered`);
  if (!remove && c.status !== 'UP') return reject(state, 'FAILED_PRECONDITION', `copy ${copyId} is ${c.status}; only UP copies can be drained`);
  const load = loadOf(state, c);
  if (load.active > 0) {
    const others = Object.values(state.copies).filter((o) => o.app === c.app && o.status === 'UP' && o.copyId !== copyId).length;
    if (others === 0) {
      return reject(state, 'FAILED_PRECONDITION', `cannot ${remove ? 'remove' : 'drain'} copy ${copyId}: it is ACTIVE for ${load.active} RS of app "${c.app}" and no other UP copy can take them`);
    }
  }
  const tx = new Tx(state, now);
  tx.moved = { active: load.active, standby: load.standby };
  if (remove) {
    tx.deleteCopy(copyId);
    removeAwaiting(tx, copyId);
    if (!dead(c)) tx.stops.push(stopOf(c, 'removed by operator'));
    tx.notes.push(`copy ${copyId} removed (was ${c.status}): moved_active=${load.active} moved_standby=${load.standby}`);
  } else {
    tx.setCopy({ ...c, status: 'DRAINED' });
    tx.notes.push(`copy ${copyId} drained: moved_active=${load.active} moved_standby=${load.standby}`);
  }
  tx.balance = new Set([c.app]);
  reconcile(tx);
  return tx.commit();
}

/**
 * Disable: fenced like a failure (its actives fail over with new epochs, its entries go to the
 * end as OUT_OF_SERVICE), but the process keeps running: it gets an empty full role set instead
 * of a StopCopy. DISABLED survives re-registration until CopyEnabled.
 */
function onDisabled(state: ClusterState, copyId: string, now: number): Decision {
  if (state.leader.passive) return passive(state, 'Disable');
  if (!str(copyId)) return reject(state, 'INVALID_ARGUMENT', 'copyId: must be a non-empty string');
  const c = own(state.copies, copyId);
  if (c === undefined) return reject(state, 'NOT_FOUND', `copy ${copyId} is not registered`);
  if (c.status === 'DISABLED') return noop(state, `copy ${copyId} is already DISABLED`);
  const tx = new Tx(state, now);
  const load = loadOf(state, c);
  // A failed copy stays dead when disabled: only a new incarnation brings a process back.
  tx.setCopy(dead(c) ? { ...c, status: 'DISABLED', failed: true } : { ...c, status: 'DISABLED' });
  if (!dead(c)) tx.fullFor.add(copyId);
  tx.notes.push(`copy ${copyId} disabled (was ${c.status}): fenced ${load.active} active and ${load.standby} standby RS`);
  tx.balance = new Set([c.app]);
  reconcile(tx);
  return tx.commit();
}

/** Enable: a DRAINED or DISABLED copy is UP again and gets its share through reconcile. */
function onEnabled(state: ClusterState, copyId: string, now: number): Decision {
  if (state.leader.passive) return passive(state, 'Enable');
  if (!str(copyId)) return reject(state, 'INVALID_ARGUMENT', 'copyId: must be a non-empty string');
  const c = own(state.copies, copyId);
  if (c === undefined) return reject(state, 'NOT_FOUND', `copy ${copyId} is not registered`);
  if (c.status === 'UP') return noop(state, `copy ${copyId} is already UP`);
  if (c.status === 'OUT_OF_SERVICE') {
    return reject(state, 'FAILED_PRECONDITION', `copy ${copyId} is OUT_OF_SERVICE: failed copies return by registering a new incarnation`);
  }
  if (c.failed === true) {
    return reject(state, 'FAILED_PRECONDITION', `copy ${copyId}: its process (incarnation ${c.incarnation}) was declared failed; failed copies return by registering a new incarnation`);
  }
  const tx = new Tx(state, now);
  tx.setCopy({ ...c, status: 'UP' });
  tx.notes.push(`copy ${copyId} enabled (was ${c.status})`);
  tx.balance = new Set([c.app]);
  tx.respread = tx.balance;
  reconcile(tx);
  return tx.commit();
}
