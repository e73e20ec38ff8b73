/**
 * Placement / failover benchmark of the decision core (libs/core), measured, not a test.
 *
 * Layout A: one DISTRIBUTED_FAULT_TOLERANT app, 100,000 RS × (1 active + 2 standbys) over
 * 1,000 copies on 50 hosts (≈100 actives and ≈200 standbys per copy).
 *   place_ms      the decide() whose registration brings the app to minCopies: initial
 *                 distribution of all 300,000 roles, plus all SetRoles and PublishRoutes commands.
 *   fail_copy_100_ms  decide() of one CopyFailed for a copy holding ≈100 actives in the healthy,
 *                 balanced cluster: failover of its actives (epoch+1, R-DFM-4), re-homing of
 *                 ≈300 roles, commands. Active swaps that rebalance RS the failure did not touch
 *                 are deferred to the next Tick (see libs/core/src/reconcile.ts), so they are
 *                 not part of the failover decision. Between runs (untimed) the copy restarts
 *                 and rejoins and Ticks settle the balancing, so every run fails a copy of a
 *                 full, balanced cluster.
 *   fail_copy_seq_ms  the same, but failures accumulate (each run fails the most loaded copy of
 *                 the previous run's state, after untimed Ticks have done the deferred balancing,
 *                 as the controller's tick would): the degraded-cluster case.
 * Layout B: the same app over 100 copies on 50 hosts, so one copy really holds ≈1,000 actives
 *   (≈3,000 roles) — in layout A no copy can hold 1,000 actives while staying balanced.
 *   place_100_ms, fail_copy_ms (the target: a copy holding 1,000 actives), fail_copy_1000_seq_ms
 *   the same measurements.
 * Extras: tick_ms (no-op Tick on the placed 1,000-copy state), add_copy_ms (a new copy
 * registers and gets its share of standbys; its actives follow on the next Tick, once those
 * standbys hold the state), drain_ms (drain of a ≈100-active copy).
 *
 * Every figure is the median of ≥ 5 measured runs (7 by default, BENCH_RUNS) after warm-up runs
 * (8 by default, BENCH_WARMUP), with one full GC after each untimed setup phase.
 * Progress lines go to stdout; the last line is one JSON object.
 */
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { checkInvariants, copyLoads, decide, emptyState, type ClusterState, type ControllerEvent, type Decision, type SyncedStandby } from '../libs/core/src/index';

const RS = 100_000;
const HOSTS = 50;
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 8);

// One full GC after each setup phase, before a series is timed: setup leaves hundreds of MB of
// garbage (whole placements) whose collection would otherwise land in the first measured
// decisions. Not between runs: forced GCs age code and make V8 flush and recompile it, which
// a controller in steady state does not pay. The decisions' own garbage is collected (and
// paid for) inside the timings.
setFlagsFromString('--expose-gc');
const fullGc = runInNewContext('gc') as () => void;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const round = (x: number): number => Math.round(x * 100) / 100;

function must(d: Decision, what: string): ClusterState {
  if (d.rejection) throw new Error(`${what}: ${d.rejection.code} ${d.rejection.message}`);
  return d.state;
}

function reg(i: number, app = 'bench'): ControllerEvent {
  const id = `c${String(i).padStart(4, '0')}`;
  return { type: 'CopyRegistered', copyId: id, app, host: `h${String(i % HOSTS).padStart(2, '0')}`, address: `10.0.${i >> 8}.${i & 255}:7000`, incarnation: 1 };
}

/**
 * What the active copies do after a change (untimed): report every standby they have caught up
 * (`StandbysSynced`), which makes it promotable and lets balancing go on.
 */
function catchUp(s: ClusterState, now: number): ClusterState {
  const entries: SyncedStandby[] = [];
  for (const [app, a] of Object.entries(s.apps)) {
    for (const [r, e] of Object.entries(a.syncing ?? {})) {
      for (const copyId of Object.keys(e)) entries.push({ app, rs: Number(r), copyId, incarnation: s.copies[copyId]!.incarnation, version: a.rs[Number(r)]!.version });
    }
  }
  return entries.length === 0 ? s : must(decide(s, { type: 'StandbysSynced', entries }, now), 'catch-up report');
}

function timed(f: () => Decision): { ms: number; d: Decision } {
  const t0 = performance.now();
  const d = f();
  return { ms: performance.now() - t0, d };
}

function countCommands(d: Decision): { setRoles: number; entries: number; routes: number } {
  let setRoles = 0;
  let entries = 0;
  let routes = 0;
  for (const c of d.commands) {
    if (c.type === 'SetRoles') {
      setRoles++;
      entries += c.entries.length;
    } else if (c.type === 'PublishRoutes') routes += c.routes.length;
  }
  return { setRoles, entries, routes };
}

/** Registers copies 0..n-2 (app not activated yet) and returns the state before the n-th. */
function preActivation(copies: number): ClusterState {
  let s = must(
    decide(emptyState(), { type: 'TopologyApplied', topology: { apps: [{ name: 'bench', mode: 'DISTRIBUTED_FAULT_TOLERANT', rsCount: RS, standbys: 2, minCopies: copies }], edges: [] } }, 0),
    'topology',
  );
  for (let i = 0; i < copies - 1; i++) s = must(decide(s, reg(i), 1 + i), 'register');
  return s;
}

/** Median of the activating decide() (same pre-state each run). */
function benchPlace(copies: number): { ms: number; placed: ClusterState; cmds: ReturnType<typeof countCommands> } {
  const pre = preActivation(copies);
  const last = reg(copies - 1);
  fullGc();
  const times: number[] = [];
  let d: Decision | undefined;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const r = timed(() => decide(pre, last, 10_000));
    if (i >= WARMUP) times.push(r.ms);
    d = r.d;
  }
  const placed = must(d!, 'place');
  return { ms: median(times), placed, cmds: countCommands(d!) };
}

/**
 * One failure per run on a healthy, balanced cluster: after each timed CopyFailed (untimed) the
 * copy restarts with a new incarnation and Ticks settle the balancing, so every measured failure
 * hits a full cluster again: crash, restart, rejoin, next crash.
 */
function benchFailHealthy(start: ClusterState, copies: number, label: string): { ms: number; actives: number; state: ClusterState } {
  let s = start;
  const times: number[] = [];
  const actives: number[] = [];
  let now = 40_000;
  fullGc();
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const victim = `c${String((i * 37) % copies).padStart(4, '0')}`;
    const c = s.copies[victim]!;
    const load = copyLoads(s, 'bench').get(victim)!;
    const r = timed(() => decide(s, { type: 'CopyFailed', copyId: victim, incarnation: c.incarnation, reason: 'bench' }, now++));
    s = must(r.d, 'fail');
    if (i >= WARMUP) {
      times.push(r.ms);
      actives.push(load.active);
    }
    console.log(`  ${label} run ${i + 1}/${WARMUP + RUNS}${i < WARMUP ? ' (warm-up)' : ''}: ${victim} with ${load.active} actives failed in ${r.ms.toFixed(2)} ms`);
    s = must(decide(s, { type: 'CopyRegistered', copyId: victim, app: 'bench', host: c.host, address: c.address, incarnation: c.incarnation + 1 }, now++), 'restart');
    s = catchUp(s, now++);
    for (let t = 0; t < 5 && s.apps.bench!.balancePending === true; t++) s = catchUp(must(decide(s, { type: 'Tick' }, now++), 'tick'), now++);
  }
  return { ms: median(times), actives: median(actives), state: s };
}

/** Sequential failures of copies with the most actives; returns the median decide() time. */
function benchFail(start: ClusterState, label: string): { ms: number; state: ClusterState; activesFailed: number[]; cmds: ReturnType<typeof countCommands> } {
  let s = start;
  const times: number[] = [];
  const activesFailed: number[] = [];
  fullGc();
  let cmds = countCommands({ state: s, commands: [], notes: [] });
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const loads = copyLoads(s, 'bench');
    let victim = '';
    let best = -1;
    for (const [id, l] of loads) {
      if (s.copies[id]!.status === 'UP' && l.active > best) {
        best = l.active;
        victim = id;
      }
    }
    const r = timed(() => decide(s, { type: 'CopyFailed', copyId: victim, incarnation: s.copies[victim]!.incarnation, reason: 'bench' }, 20_000 + 10 * i));
    s = must(r.d, 'fail');
    s = catchUp(s, 20_000 + 10 * i);
    for (let t = 1; t <= 5 && s.apps.bench!.balancePending === true; t++) s = catchUp(must(decide(s, { type: 'Tick' }, 20_000 + 10 * i + t), 'tick'), 20_000 + 10 * i + t);
    if (i >= WARMUP) {
      times.push(r.ms);
      activesFailed.push(best);
      cmds = countCommands(r.d);
    }
    console.log(`  ${label} run ${i + 1}/${WARMUP + RUNS}${i < WARMUP ? ' (warm-up)' : ''}: ${victim} with ${best} actives failed in ${r.ms.toFixed(2)} ms`);
  }
  return { ms: median(times), state: s, activesFailed, cmds };
}

function benchRepeat(label: string, s0: ClusterState, mk: (i: number, s: ClusterState) => ControllerEvent, chain: boolean): { ms: number; state: ClusterState } {
  let s = s0;
  const times: number[] = [];
  fullGc();
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const ev = mk(i, s);
    const r = timed(() => decide(s, ev, 30_000 + i));
    if (chain) s = must(r.d, label);
    else must(r.d, label);
    if (i >= WARMUP) times.push(r.ms);
  }
  console.log(`  ${label}: median ${median(times).toFixed(2)} ms`);
  return { ms: median(times), state: s };
}

/** Layout A (1,000 copies). Scoped so its states can be collected before layout B. */
function layoutA(): Record<string, number> {
  console.log('layout A: 1,000 copies');
  const a = benchPlace(1000);
  console.log(`  place: median ${a.ms.toFixed(2)} ms (${a.cmds.setRoles} SetRoles, ${a.cmds.entries} role entries, ${a.cmds.routes} routes)`);
  const inv = checkInvariants(a.placed);
  if (inv.length > 0) throw new Error(`placed state violates invariants: ${inv[0]}`);
  const tick = benchRepeat('tick (no-op)', a.placed, () => ({ type: 'Tick' }), false);
  const healthy = benchFailHealthy(a.placed, 1000, 'fail on a healthy cluster (≈100 actives)');
  console.log(`  fail_copy: median ${healthy.ms.toFixed(2)} ms`);
  const seq = benchFail(healthy.state, 'fail, accumulating (≈100 actives)');
  console.log(`  fail_copy_seq: median ${seq.ms.toFixed(2)} ms (last: ${seq.cmds.setRoles} SetRoles, ${seq.cmds.entries} entries, ${seq.cmds.routes} routes)`);
  const add = benchRepeat('add copy (join: its share of standbys; actives follow on the next tick)', seq.state, (i) => reg(1000 + i), true);
  const drain = benchRepeat(
    'drain (≈100 actives)',
    add.state,
    (_i, s) => {
      const loads = copyLoads(s, 'bench');
      const id = [...loads].find(([cid, l]) => s.copies[cid]!.status === 'UP' && l.active > 0)![0];
      return { type: 'DrainRequested', copyId: id };
    },
    true,
  );
  const invA = checkInvariants(drain.state);
  if (invA.length > 0) throw new Error(`state after layout A runs violates invariants: ${invA[0]}`);
  return {
    place_ms: round(a.ms),
    fail_copy_100_ms: round(healthy.ms),
    fail_copy_100_actives: healthy.actives,
    fail_copy_seq_ms: round(seq.ms),
    tick_ms: round(tick.ms),
    add_copy_ms: round(add.ms),
    drain_ms: round(drain.ms),
  };
}

/** Layout B (100 copies, ≈1,000 actives each). */
function layoutB(): Record<string, number> {
  console.log('layout B: 100 copies (≈1,000 actives per copy)');
  const b = benchPlace(100);
  console.log(`  place: median ${b.ms.toFixed(2)} ms`);
  const healthy = benchFailHealthy(b.placed, 100, 'fail on a healthy cluster (≈1,000 actives)');
  console.log(`  fail_copy: median ${healthy.ms.toFixed(2)} ms`);
  const seq = benchFail(healthy.state, 'fail, accumulating (≈1,000 actives)');
  console.log(`  fail_copy_seq: median ${seq.ms.toFixed(2)} ms (last: ${seq.cmds.setRoles} SetRoles, ${seq.cmds.entries} entries, ${seq.cmds.routes} routes)`);
  const invB = checkInvariants(seq.state);
  if (invB.length > 0) throw new Error(`state after layout B runs violates invariants: ${invB[0]}`);
  return {
    place_100_ms: round(b.ms),
    fail_copy_ms: round(healthy.ms),
    fail_copy_actives: healthy.actives,
    fail_copy_copies: 100,
    fail_copy_1000_seq_ms: round(seq.ms),
  };
}

function main(): void {
  console.log(`placement bench: ${RS} RS x (1 active + 2 standbys), ${HOSTS} hosts, ${RUNS} runs (+${WARMUP} warm-up), node ${process.version}`);
  const a = layoutA();
  fullGc();
  const b = layoutB();
  // The two targets first: place_ms (100,000 RS over 1,000 copies) and fail_copy_ms
  // (the failure of a copy holding 1,000 actives, layout B).
  console.log(
    JSON.stringify({
      bench: 'placement',
      place_ms: a.place_ms,
      fail_copy_ms: b.fail_copy_ms,
      ...a,
      ...b,
      rs: RS,
      copies: 1000,
      hosts: HOSTS,
      standbys: 2,
      runs: RUNS,
      warmup: WARMUP,
      node: process.version,
    }),
  );
}

main();
