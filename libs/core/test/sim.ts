/**
 * Seeded randomized simulation of the decision core: random topologies and event schedules,
 * with every invariant checked after every step, and a model of what each copy and the router
 * know (built only from emitted commands) checked against the state.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { checkBalance, checkInvariants, checkSpread, decide, emptyState, routesOf } from '../src/index';
import type { AppSpec, ClusterState, ControllerCommand, ControllerEvent, Decision, Mode, Topology } from '../src/index';
import { syncedReport } from './helpers';

/** mulberry32: small, fast, seedable PRNG (tests only; the core never draws randomness). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface View {
  incarnation: number;
  roles: Map<string, { role: string; epoch: number; version: number }>;
}

const MODES: Mode[] = ['DISTRIBUTED', 'FAULT_TOLERANT', 'DISTRIBUTED_FAULT_TOLERANT'];
/**
 * How far apart total counts may stay when host spread binds (`spreadEnforced`): balancing then
 * never trades an RS's host spread for a count, and a few entries cannot move without it.
 */
/**
 * Ticks (each after a catch-up report) within which pending balancing must finish. Standby moves
 * are make-before-break, so a swap that needs a moved standby waits one more catch-up round.
 */
const PENDING_TICKS = 6;
const SPREAD_SLACK = Number(process.env.SIM_SPREAD_SLACK ?? 1);

/** Options of one simulated run. */
export interface SimOptions {
  steps: number;
  /** Re-run some steps on a structurally cloned state (cold caches) and require equal results. */
  coldCheckEvery: number;
  /** Check that pending balancing completes within a few ticks (on a side branch). */
  pendingCheck: boolean;
}

/** Runs one seed; throws an AssertionError naming the seed and step on the first violation. */
export function runSeed(seed: number, opts: SimOptions): { steps: number; rejections: number } {
  const rnd = prng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const chance = (p: number): boolean => rnd() < p;

  const hosts = Array.from({ length: int(1, 6) }, (_, i) => `h${i}`);
  const specs: AppSpec[] = Array.from({ length: int(1, 3) }, (_, i) => {
    const mode = pick(MODES);
    return { name: `app${i}`, mode, rsCount: int(1, 64), standbys: mode === 'DISTRIBUTED' ? 0 : int(1, 3), minCopies: int(1, 3) };
  });
  const topo: Topology = { apps: specs, edges: specs.length > 1 ? [{ from: specs[0]!.name, to: specs[1]!.name, keyField: 'id' }] : [] };

  let state: ClusterState = emptyState();
  let now = 1000;
  let nextCopy = 0;
  const incarnation = new Map<string, number>(); // highest incarnation ever started per copy
  const views = new Map<string, View>(); // live processes' role views
  const routes = new Map<string, { active: string | null; epoch: number }>();
  const dirty = new Set<string>(); // apps switched over since their last balancing event
  let rejections = 0;

  const step = (i: number, ev: ControllerEvent): void => {
    const where = `seed=${seed} step=${i} event=${JSON.stringify(ev)}`;
    const prev = state;
    let d: Decision;
    try {
      d = decide(prev, ev, now);
    } catch (e) {
      throw new Error(`${where}: decide threw ${(e as Error).stack}`);
    }
    const fail = (msg: string): never => {
      if (process.env.SIM_DEBUG === '1') {
        for (const [n, a] of Object.entries(prev.apps)) console.error(`before ${n}: moves=${JSON.stringify(a.moves)} syncing=${JSON.stringify(a.syncing)}`);
        const m = /(app\d+)\/(\d+)/.exec(msg);
        if (m !== null) {
          console.error(`before ${m[0]}: ${JSON.stringify(prev.apps[m[1]!]?.rs[Number(m[2])])}`);
          console.error(`after  ${m[0]}: ${JSON.stringify(d.state.apps[m[1]!]?.rs[Number(m[2])])} moves=${JSON.stringify(d.state.apps[m[1]!]?.moves)}`);
        }
      }
      return assert.fail(`${where}: violation: ${msg}\nnotes: ${d.notes.join(' | ')}`);
    };
    if (opts.coldCheckEvery > 0 && i % opts.coldCheckEvery === 0) {
      const cold = decide(structuredClone(prev), ev, now);
      try {
        assert.deepEqual(cold.state, d.state);
        assert.deepEqual(cold.commands, d.commands);
      } catch {
        fail('decision differs when derived indexes are rebuilt from a cloned state (non-determinism)');
      }
    }
    if (d.rejection !== undefined) {
      rejections++;
      if (d.state !== prev) fail('rejection changed the state');
      if (d.commands.length > 0) fail('rejection with commands');
    }
    // Debugging aids: SIM_DUMP_AT=<step> writes the state before that step and its event to
    // /tmp/simstate.json; SIM_TRACE=<app>/<rs> prints that RS after every change.
    if (process.env.SIM_DUMP_AT === String(i)) writeFileSync('/tmp/simstate.json', JSON.stringify({ prev, ev, now }));
    const trace = process.env.SIM_TRACE;
    if (trace !== undefined && d.state !== prev) {
      const [ta, tr] = trace.split('/') as [string, string];
      const b = prev.apps[ta]?.rs[Number(tr)];
      const a2 = d.state.apps[ta]?.rs[Number(tr)];
      if (b !== a2 || process.env.SIM_TRACE_ALL) console.error(`${i} ${ev.type} k=${d.state.apps[ta]?.spec.standbys} up=${Object.values(d.state.copies).filter((c) => c.app === ta && c.status === "UP").length}: ${JSON.stringify(a2?.members.map((m) => `${m.copyId}:${m.role}`))} sbm=${JSON.stringify(d.state.apps[ta]?.standbyMoves?.[tr])} notes=${d.notes.join(' | ').slice(0, 300)}`);
    }
    state = d.state;
    if (state === prev) {
      if (d.commands.some((c) => c.type !== 'StopCopy')) fail('no state change but role/route commands');
    } else if (state.version <= prev.version) fail(`version did not increase (${prev.version} -> ${state.version})`);
    if (state.leader.passive && d.commands.length > 0) fail('commands while passive');
    for (const v of checkInvariants(state)) fail(v);
    // Per-RS epochs and versions.
    for (const [name, app] of Object.entries(state.apps)) {
      const before = prev.apps[name];
      if (before === undefined) continue;
      for (let r = 0; r < app.rs.length; r++) {
        const a = app.rs[r]!;
        const b = before.rs[r]!;
        if (a === b) continue;
        if (a.epoch < b.epoch) fail(`${name}/${r}: epoch went back ${b.epoch} -> ${a.epoch}`);
        if (a.version <= b.version) fail(`${name}/${r}: changed without a version bump (${b.version} -> ${a.version})`);
        const na = a.members[0]?.role === 'ACTIVE' ? a.members[0].copyId : null;
        const ba = b.members[0]?.role === 'ACTIVE' ? b.members[0].copyId : null;
        if (na !== null && na !== ba && a.epoch <= b.epoch) fail(`${name}/${r}: active ${ba} -> ${na} without a new epoch`);
        // Promotion never picks a standby still catching up over one that holds the state.
        const wasSyncing = (id: string): boolean => before.syncing?.[String(r)]?.[id] !== undefined;
        // (Not for FAULT_TOLERANT: one list for all RS, the copy behind in the fewest RS wins.)
        // (Nor for a completed move: its report cleared the target's mark in this very decision.)
        const moveDone = ev.type === 'StandbysSynced' && before.moves?.[String(r)]?.toCopyId === na;
        if (na !== null && na !== ba && wasSyncing(na) && app.spec.mode !== 'FAULT_TOLERANT' && !moveDone) {
          const better = a.members.find((m) => m.role === 'STANDBY' && !wasSyncing(m.copyId) && b.members.some((x) => x.copyId === m.copyId && x.role === 'STANDBY'));
          if (better !== undefined) fail(`${name}/${r}: promoted ${na} (catching up) although ${better.copyId} held the state`);
        }
      }
    }
    // Process model: what copies and routers learned from the commands.
    if (ev.type === 'CopyRegistered' && d.rejection === undefined) {
      const v = views.get(ev.copyId);
      if (v === undefined || v.incarnation !== ev.incarnation) views.set(ev.copyId, { incarnation: ev.incarnation, roles: new Map() });
    }
    if (ev.type === 'CopyRemoved' && d.rejection === undefined) views.delete(ev.copyId);
    applyCommands(d.commands, fail);
    if (d.rejection === undefined && state !== prev) {
      if (ev.type === 'SwitchoverRequested' || ev.type === 'MoveRequested') dirty.add(ev.app);
      // A move completing (its target reported caught up) is the operator's move taking effect.
      for (const [name, a] of Object.entries(prev.apps)) if (a.moves !== undefined && state.apps[name]?.moves !== a.moves) dirty.add(name);
      if (prev.leader.passive && !state.leader.passive) dirty.clear();
      const appOf = (id: string): string | undefined => (prev.copies[id] ?? state.copies[id])?.app;
      const balancing: Record<string, boolean> = { CopyRegistered: true, CopyFailed: true, DrainRequested: true, CopyRemoved: true, CopyDisabled: true, CopyEnabled: true };
      if (balancing[ev.type] === true && 'copyId' in ev && !state.leader.passive && !prev.leader.passive) {
        const a = appOf(ev.copyId);
        const refresh = ev.type === 'CopyRegistered' && prev.copies[ev.copyId]?.incarnation === ev.incarnation;
        if (a !== undefined && !refresh) dirty.delete(a);
      }
      if (ev.type === 'TopologyApplied') for (const a of ev.topology.apps) if (prev.apps[a.name]?.spec !== state.apps[a.name]?.spec) dirty.delete(a.name);
    }
    if (!state.leader.passive) {
      // Apps with a pending move hold an extra standby on purpose (make-before-break).
      const bal = Object.keys(state.apps).filter((a) => !dirty.has(a) && state.apps[a]!.balancePending !== true && state.apps[a]!.moves === undefined);
      for (const v of checkBalance(state, bal, SPREAD_SLACK)) fail(`balance: ${v}`);
      // Host spread is a steady-state property: checked once no standby move or catch-up is
      // pending (a move started before the spread could be had completes first, then Phase H
      // re-places the RS).
      const steady = bal.filter((a) => state.apps[a]!.standbyMoves === undefined && state.apps[a]!.syncing === undefined);
      for (const v of checkSpread(state, steady)) fail(`spread: ${v}`);
      checkViews(fail);
      // Liveness: pending balancing completes within a few ticks (checked on a side branch).
      const pending = Object.keys(state.apps).filter((a) => state.apps[a]!.balancePending === true);
      if (pending.length > 0 && opts.pendingCheck) {
        let side = state;
        for (let t = 0; t < PENDING_TICKS && pending.some((a) => side.apps[a]!.balancePending === true); t++) {
          // The actives catch their new standbys up meanwhile.
          const rep = syncedReport(side);
          if (rep !== null) {
            const d1 = decide(side, rep, now + 1 + t);
            if (d1.rejection !== undefined) fail(`catch-up report rejected: ${d1.rejection.message}`);
            side = d1.state;
          }
          const d2 = decide(side, { type: 'Tick' }, now + 1 + t);
          if (process.env.SIM_DEBUG === '1') console.error(`side tick ${t}: ${d2.notes.join(' | ')}`);
          for (const v of checkInvariants(d2.state)) fail(`after pending tick: ${v}`);
          side = d2.state;
        }
        const still = pending.filter((a) => side.apps[a]!.balancePending === true);
        if (still.length > 0) fail(`balancing still pending after ${PENDING_TICKS} ticks: ${still.join(', ')}`);
        for (const v of checkBalance(side, pending.filter((a) => !dirty.has(a)), SPREAD_SLACK)) fail(`balance after pending ticks: ${v}`);
      }
    }
  };

  const applyCommands = (cmds: readonly ControllerCommand[], fail: (m: string) => never): void => {
    for (const c of cmds) {
      if (c.type === 'StopCopy') {
        const v = views.get(c.copyId);
        if (v !== undefined && v.incarnation <= c.incarnation) views.delete(c.copyId);
      } else if (c.type === 'SetRoles') {
        const v = views.get(c.copyId);
        if (v === undefined || v.incarnation !== c.incarnation) continue; // process gone
        if (c.full) v.roles = new Map();
        for (const e of c.entries) {
          const key = `${e.app}/${e.rs}`;
          const old = v.roles.get(key);
          if (old !== undefined && !c.full && e.version <= old.version) fail(`SetRoles to ${c.copyId} for ${key}: version ${e.version} not above ${old.version}`);
          if (e.role === 'OUT_OF_SERVICE') v.roles.delete(key);
          else v.roles.set(key, { role: e.role, epoch: e.epoch, version: e.version });
          const act = e.members.filter((m) => m.role === 'ACTIVE');
          if (act.length > 1) fail(`SetRoles ${key}: ${act.length} actives in members view`);
        }
      } else {
        for (const r of c.routes) routes.set(`${r.app}/${r.rs}`, { active: r.active?.copyId ?? null, epoch: r.epoch });
      }
    }
  };

  const checkViews = (fail: (m: string) => never): void => {
    for (const [id, v] of views) {
      const c = state.copies[id];
      if (c === undefined || c.incarnation !== v.incarnation || c.status === 'OUT_OF_SERVICE' || c.failed === true) continue;
      const want = new Map<string, string>();
      const app = state.apps[c.app];
      if (app !== undefined) {
        for (const a of app.rs) {
          for (const m of a.members) if (m.copyId === id && m.role !== 'OUT_OF_SERVICE') want.set(`${a.app}/${a.rs}`, `${m.role}@${a.epoch}`);
        }
      }
      const got = new Map([...v.roles].map(([k, x]) => [k, `${x.role}@${x.epoch}`]));
      for (const [k, w] of want) if (got.get(k) !== w) fail(`copy ${id} believes ${k} = ${got.get(k) ?? 'nothing'}, state says ${w}`);
      for (const [k, g] of got) if (!want.has(k)) fail(`copy ${id} believes ${k} = ${g}, state says nothing`);
    }
    for (const r of routesOf(state)) {
      const got = routes.get(`${r.app}/${r.rs}`) ?? { active: null, epoch: 0 };
      if (got.active !== (r.active?.copyId ?? null) || (r.active !== null && got.epoch !== r.epoch)) {
        fail(`router believes ${r.app}/${r.rs} = ${got.active}@${got.epoch}, state says ${r.active?.copyId ?? null}@${r.epoch}`);
      }
    }
  };

  step(0, { type: 'TopologyApplied', topology: topo });
  for (let i = 1; i <= opts.steps; i++) {
    now += int(0, 400);
    const copyIds = Object.keys(state.copies);
    const anyCopy = (): string => (copyIds.length > 0 && chance(0.95) ? pick(copyIds) : `ghost${int(0, 3)}`);
    const x = rnd();
    let ev: ControllerEvent;
    if (x < 0.22) {
      if (copyIds.length >= 40) ev = { type: 'Tick' };
      else {
        const id = `c${nextCopy++}`;
        incarnation.set(id, 1);
        const app = chance(0.97) ? pick(specs).name : 'nope';
        ev = { type: 'CopyRegistered', copyId: id, app, host: pick(hosts), address: `10.0.0.1:${7000 + nextCopy}`, incarnation: 1 };
      }
    } else if (x < 0.3 && copyIds.length > 0) {
      const id = pick(copyIds);
      const c = state.copies[id]!;
      const y = rnd();
      let inc: number;
      if (y < 0.6) {
        inc = (incarnation.get(id) ?? c.incarnation) + 1;
        incarnation.set(id, inc);
      } else if (y < 0.85) inc = c.incarnation;
      else inc = Math.max(0, c.incarnation - 1);
      const host = inc > c.incarnation && chance(0.3) ? pick(hosts) : c.host;
      ev = { type: 'CopyRegistered', copyId: id, app: c.app, host, address: chance(0.2) ? `10.0.0.2:${int(1, 9999)}` : c.address, incarnation: inc };
    } else if (x < 0.42) {
      const id = anyCopy();
      const c = state.copies[id];
      const inc = c === undefined ? 1 : chance(0.8) ? c.incarnation : chance(0.5) ? c.incarnation - 1 : c.incarnation + 1;
      ev = { type: 'CopyFailed', copyId: id, incarnation: inc, reason: 'sim' };
    } else if (x < 0.47) ev = { type: 'CopyDisabled', copyId: anyCopy() };
    else if (x < 0.53) ev = { type: 'CopyEnabled', copyId: anyCopy() };
    else if (x < 0.58) ev = { type: 'DrainRequested', copyId: anyCopy() };
    else if (x < 0.61) ev = { type: 'CopyRemoved', copyId: anyCopy() };
    else if (x < 0.7) {
      const app = pick(specs);
      const st = state.apps[app.name]!;
      const rs = int(0, app.rsCount - 1);
      const sbs = st.rs[rs]!.members.filter((m) => m.role === 'STANDBY');
      if (chance(0.4)) ev = { type: 'MoveRequested', app: chance(0.95) ? app.name : 'nope', rs, toCopyId: anyCopy(), reason: 'sim' };
      else if (chance(0.7) && sbs.length > 0) ev = { type: 'SwitchoverRequested', app: app.name, rs, toCopyId: pick(sbs).copyId };
      else ev = { type: 'SwitchoverRequested', app: chance(0.9) ? app.name : 'nope', rs: chance(0.9) ? rs : app.rsCount + int(0, 3), toCopyId: anyCopy() };
    } else if (x < 0.73) ev = { type: 'LeadershipAcquired', passiveTimeoutMs: int(0, 3000) };
    else if (x < 0.79) {
      // Catch-up reports: some entries, some stale (older listing, replaced process), some garbage.
      const full = syncedReport(state);
      const entries = full === null || full.type !== 'StandbysSynced' ? [] : full.entries.filter(() => chance(0.6));
      const noisy = entries.map((e) => (chance(0.1) ? { ...e, version: e.version - 1 } : chance(0.05) ? { ...e, incarnation: e.incarnation + 1 } : e));
      if (chance(0.05)) noisy.push({ app: 'nope', rs: 0, copyId: 'c0', incarnation: 1, version: 1 });
      ev = { type: 'StandbysSynced', entries: noisy };
    }
    else if (x < 0.85) {
      const awaiting = state.leader.awaiting;
      const id = awaiting.length > 0 && chance(0.8) ? pick(awaiting) : anyCopy();
      const c = state.copies[id];
      ev = { type: 'CopyHeard', copyId: id, incarnation: c === undefined ? 1 : chance(0.9) ? c.incarnation : c.incarnation + 1 };
    } else if (x < 0.97) {
      now += int(0, 1500);
      ev = { type: 'Tick' };
    } else {
      const apps = specs.map((s) => {
        const cur = state.apps[s.name]!.spec;
        return chance(0.5) ? cur : { ...cur, standbys: cur.mode === 'DISTRIBUTED' ? 0 : int(1, 3), minCopies: int(1, 3) };
      });
      const bad = chance(0.2);
      ev = { type: 'TopologyApplied', topology: { apps: bad ? [{ ...apps[0]!, rsCount: apps[0]!.rsCount + 1 }] : apps, edges: topo.edges } };
    }
    step(i, ev);
  }
  return { steps: opts.steps, rejections };
}
