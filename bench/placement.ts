/**
 * Placement / failover benchmark of the decision core (libs/core), measured, not a test.
 *
 * Layout A: one DISTRIBUTED_FAULT_TOLERANT app, 100,000 RS × (1 active + 2 standbys) over
 * 1,000 copies on 50 hosts (≈100 actives and ≈200 standbys per copy).
 *   place_ms      the decide() whose registration brings the app to minCopies: initial
 *                 distribution of all 300,000 roles, plus all SetRoles and PublishRoutes commands.
 *   fail_copy_ms  decide() of one CopyFailed for a copy holding ≈100 actives: failover of its
 *                 actives (epoch+1), re-homing of ≈300 roles, balance check, commands.
 * Layout B: the same app over 100 copies on 50 hosts, so one copy really holds ≈1,000 actives
 *   (≈3,000 roles) — in layout A no copy can hold 1,000 actives while staying balanced.
 *   place_100_ms, fail_copy_1000_ms  the same measurements.
 * Extras: tick_ms (no-op Tick on the placed 1,000-copy state), add_copy_ms (a 1,001st copy
 * registers and is given its share by balancing), drain_ms (drain of a ≈100-active copy).
 *
 * Every figure is the median of ≥ 5 measured runs after warm-up. Failures are sequential (each
 * run fails the next copy of the latest state), which is what a controller does in production.
 * Progress lines go to stdout; the last line is one JSON object.
 */
import { performance } from 'node:perf_hooks';
import { checkInvariants, copyLoads, decide, emptyState, type ClusterState, type ControllerEvent, type Decision } from '../libs/core/src/index';

const RS = 100_000;
const HOSTS = 50;
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const WARMUP = 2;

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

/** Sequential failures of copies with the most actives; returns the median decide() time. */
function benchFail(start: ClusterState, label: string): { ms: number; state: ClusterState; activesFailed: number[]; cmds: ReturnType<typeof countCommands> } {
  let s = start;
  const times: number[] = [];
  const activesFailed: number[] = [];
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
    const r = timed(() => decide(s, { type: 'CopyFailed', copyId: victim, incarnation: 1, reason: 'bench' }, 20_000 + i));
    s = must(r.d, 'fail');
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

function main(): void {
  console.log(`placement bench: ${RS} RS x (1 active + 2 standbys), ${HOSTS} hosts, ${RUNS} runs (+${WARMUP} warm-up), node ${process.version}`);

  console.log('layout A: 1,000 copies');
  const a = benchPlace(1000);
  console.log(`  place: median ${a.ms.toFixed(2)} ms (${a.cmds.setRoles} SetRoles, ${a.cmds.entries} role entries, ${a.cmds.routes} routes)`);
  const inv = checkInvariants(a.placed);
  if (inv.length > 0) throw new Error(`placed state violates invariants: ${inv[0]}`);
  const tick = benchRepeat('tick (no-op)', a.placed, () => ({ type: 'Tick' }), false);
  const failA = benchFail(a.placed, 'fail (≈100 actives)');
  console.log(`  fail_copy: median ${failA.ms.toFixed(2)} ms (last: ${failA.cmds.setRoles} SetRoles, ${failA.cmds.entries} entries, ${failA.cmds.routes} routes)`);
  const add = benchRepeat('add copy (join + balance)', failA.state, (i) => reg(1000 + i), true);
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

  console.log('layout B: 100 copies (≈1,000 actives per copy)');
  const b = benchPlace(100);
  console.log(`  place: median ${b.ms.toFixed(2)} ms`);
  const failB = benchFail(b.placed, 'fail (≈1,000 actives)');
  console.log(`  fail_copy: median ${failB.ms.toFixed(2)} ms (last: ${failB.cmds.setRoles} SetRoles, ${failB.cmds.entries} entries, ${failB.cmds.routes} routes)`);
  const invB = checkInvariants(failB.state);
  if (invB.length > 0) throw new Error(`state after layout B runs violates invariants: ${invB[0]}`);

  console.log(
    JSON.stringify({
      bench: 'placement',
      place_ms: round(a.ms),
      fail_copy_ms: round(failA.ms),
      fail_copy_actives: median(failA.activesFailed),
      place_100_ms: round(b.ms),
      fail_copy_1000_ms: round(failB.ms),
      fail_copy_1000_actives: median(failB.activesFailed),
      tick_ms: round(tick.ms),
      add_copy_ms: round(add.ms),
      drain_ms: round(drain.ms),
      rs: RS,
      copies: 1000,
      hosts: HOSTS,
      standbys: 2,
      runs: RUNS,
      node: process.version,
    }),
  );
}

main();
