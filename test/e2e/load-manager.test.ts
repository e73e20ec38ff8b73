/**
 * The Load Manager end to end (R-LM, seed 003): a controller, a fault manager, a load manager and
 * counter copies (examples/counter) as real processes on 127.0.0.1, with rate-controlled load
 * clients in this process.
 *
 * What the tests show:
 * 1. Skew: the RS of one copy get most of the traffic. The load manager moves RS (through the
 *    controller's MoveRs) until every copy is inside the target band; then, under the same steady
 *    load, nothing moves for a full minute (no RS changes hands: every RS keeps its epoch). The
 *    counters are exact afterwards: every acknowledged increment counted once, none lost or
 *    doubled across the moves.
 * 2. Anticipation: the traffic of one copy's RS rises steadily (a controlled ramp) towards its
 *    saturation level; the load manager moves an RS away, with reason ANTICIPATION, before the
 *    copy's load reaches saturation.
 * 3. Bad input to the load manager's RPCs gets a specific status; the CLI's `load` and `plan`
 *    show what the load manager sees.
 *
 * The load manager is configured to judge load by message rate only (CPU and event-loop lag
 * pressure off): this machine is shared, and the test must not depend on its CPU noise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { runCli, type CliIo } from '@understudy/cli';
import type { RoutingClient } from '@understudy/adsm';
import {
  LoadManagerServiceClient,
  LoadVerdict,
  MoveReason,
  Role,
  type GetLoadResponse,
  type GetPlanResponse,
  type GetStatusResponse,
  type ReportLoadRequest,
  type ReportLoadResponse,
} from '@understudy/proto';
import { insecureCredentials, unaryCall } from '@understudy/runtime';
import { startCounterCluster, type CounterCluster } from '../harness/cluster';
import { freePort, startLoadManagerProc, type Proc } from '../harness/processes';
import { waitFor } from '../harness/wait';

const RS_COUNT = 6;

/** Flags shared by both load manager configurations: rate-only load, quick rounds. */
const COMMON_FLAGS = [
  '--cpu-saturation-percent', '0',
  '--lag-saturation-ms', '0',
  '--plan-interval-ms', '1000',
  '--placement-refresh-ms', '500',
  '--report-interval-ms', '500',
  '--trend-window-ms', '8000',
  '--max-concurrent-moves', '2',
  '--failover-quiet-ms', '3000',
];

// ------------------------------------------------------------------------------- load clients

/**
 * Sends increments to chosen RS at controlled rates (msg/s as a function of seconds since
 * start), and records every acknowledged increment per key. Each increment keeps its message id
 * across the routing client's retries, so an acknowledged one is applied exactly once.
 */
class RateLoad {
  readonly acked = new Map<string, number>();
  readonly failures: string[] = [];
  private readonly due = new Map<number, number>();
  private readonly cursor = new Map<number, number>();
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<Promise<void>>();
  private startedAt = 0;
  private last = 0;
  sent = 0;

  constructor(
    private readonly routing: RoutingClient,
    private readonly keysByRs: ReadonlyMap<number, readonly string[]>,
    public rates: Map<number, (tS: number) => number>,
    private readonly maxInflight = 400,
  ) {}

  /** Seconds since start. */
  get elapsedS(): number {
    return (Date.now() - this.startedAt) / 1000;
  }

  start(): void {
    this.startedAt = Date.now();
    this.last = this.startedAt;
    this.timer = setInterval(() => this.tick(), 20);
  }

  private tick(): void {
    const now = Date.now();
    const dt = (now - this.last) / 1000;
    this.last = now;
    const t = (now - this.startedAt) / 1000;
    for (const [rs, rate] of this.rates) {
      const r = Math.max(0, rate(t));
      // At most half a second of backlog: a stalled event loop must not turn into a burst.
      let due = Math.min((this.due.get(rs) ?? 0) + r * dt, Math.max(1, r * 0.5));
      while (due >= 1 && this.inflight < this.maxInflight) {
        due -= 1;
        this.send(rs);
      }
      this.due.set(rs, due);
    }
  }

  private send(rs: number): void {
    const keys = this.keysByRs.get(rs)!;
    const i = this.cursor.get(rs) ?? 0;
    this.cursor.set(rs, i + 1);
    const key = keys[i % keys.length]!;
    this.inflight++;
    this.sent++;
    const p = this.routing
      .deliver('counter', key, { key, by: 1 }, { deadlineMs: 30_000 })
      .then(
        () => void this.acked.set(key, (this.acked.get(key) ?? 0) + 1),
        (e: unknown) => void this.failures.push(`${key}: ${(e as Error).message}`),
      )
      .finally(() => {
        this.inflight--;
        this.pending.delete(p);
      });
    this.pending.add(p);
  }

  /** Stop sending and wait for every increment in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.pending]);
  }
}

/** `perRs` fresh keys for every RS of the counter app. */
function keysPerRs(routing: RoutingClient, prefix: string, perRs: number): Map<number, string[]> {
  const out = new Map<number, string[]>(Array.from({ length: RS_COUNT }, (_, i) => [i, [] as string[]]));
  for (let i = 0; out.size > 0 && [...out.values()].some((k) => k.length < perRs); i++) {
    const key = `${prefix}-${i}`;
    const list = out.get(routing.rsForKey('counter', key))!;
    if (list.length < perRs) list.push(key);
  }
  return out;
}

// ------------------------------------------------------------------------------- helpers

function activesOf(s: GetStatusResponse): Map<number, { copyId: string; epoch: number }> {
  const out = new Map<number, { copyId: string; epoch: number }>();
  for (const a of s.assignments) {
    if (a.app !== 'counter') continue;
    const active = a.members.find((m) => m.role === Role.ROLE_ACTIVE);
    out.set(a.rs, { copyId: active?.copyId ?? '', epoch: a.epoch });
  }
  return out;
}

/** Offered msg/s per copy for the given per-RS rates, by the current placement. */
function offeredPerCopy(actives: ReadonlyMap<number, { copyId: string }>, rateOf: (rs: number) => number, copies: readonly string[]): Map<string, number> {
  const out = new Map<string, number>(copies.map((c) => [c, 0]));
  for (const [rs, a] of actives) out.set(a.copyId, (out.get(a.copyId) ?? 0) + rateOf(rs));
  return out;
}

function lmClient(address: string): LoadManagerServiceClient {
  return new LoadManagerServiceClient(address, insecureCredentials());
}

async function getLoad(address: string): Promise<GetLoadResponse> {
  const c = lmClient(address);
  try {
    return await unaryCall(c.getLoad.bind(c), { app: 'counter' }, { deadlineMs: 5000 });
  } finally {
    c.close();
  }
}

async function getPlan(address: string): Promise<GetPlanResponse> {
  const c = lmClient(address);
  try {
    return await unaryCall(c.getPlan.bind(c), { app: 'counter' }, { deadlineMs: 5000 });
  } finally {
    c.close();
  }
}

/** Every copy reported (a verdict other than NO_DATA) with its current RS load attributed. */
async function allReporting(address: string): Promise<GetLoadResponse | false> {
  const l = await getLoad(address);
  return l.copies.length === 3 && l.copies.every((c) => c.verdict !== LoadVerdict.LOAD_VERDICT_NO_DATA) && l;
}

function describePlan(p: GetPlanResponse): string {
  return [
    ...p.summary,
    ...p.copies.map((c) => `${c.copyId}: ${c.explanation}`),
    ...p.recentMoves.map((m) => `${m.move?.rs}:${m.move?.fromCopyId}->${m.move?.toCopyId} ${MoveReason[m.move?.reason ?? 0]} ${m.outcome || 'under way'}`),
  ].join('\n');
}

// ------------------------------------------------------------------------------- the suite

describe('load manager (real processes)', { timeout: 420_000 }, () => {
  let cluster: CounterCluster;
  let lmPort: number;
  let lmAddress: string;
  let lm: Proc | undefined;
  const copies = ['c1', 'c2', 'c3'];
  /** The load manager's planned-move and move log lines (for failure messages). */
  const lmLog: string[] = [];
  const onLine = (line: string): void => {
    if (line.includes('planned move') || line.includes('"move ') || line.includes('failed or restarted')) lmLog.push(line);
  };
  const lmTail = (): string => lmLog.slice(-30).join('\n');

  before(async () => {
    lmPort = await freePort();
    lmAddress = `127.0.0.1:${lmPort}`;
    cluster = await startCounterCluster({
      copies: 3,
      rsCount: RS_COUNT,
      standbys: 1,
      faultManagers: 1,
      // Lenient hang detection: this machine is shared, and a false failure is not what these
      // tests are about (failover has its own suite).
      detection: { heartbeatIntervalMs: 250, missedHeartbeats: 12 },
      copyEnv: { UNDERSTUDY_LOAD_MANAGERS: lmAddress, UNDERSTUDY_LOAD_REPORT_INTERVAL_MS: '500' },
    });
  });

  after(async () => {
    await lm?.kill();
    await cluster?.stop();
  });

  test('skewed load: moves until every copy is inside the band, then zero moves for a minute; counters exact', { timeout: 240_000 }, async (t) => {
    // Capacity 250 msg/s per copy; band: 25% above the mean (and 0.1 = 25 msg/s above it).
    lm = await startLoadManagerProc({
      id: 'lm-1',
      port: lmPort,
      controllers: cluster.addresses,
      logLevel: 'info',
      onLine,
      args: [...COMMON_FLAGS, '--capacity-msgs-per-s', '250', '--band-fraction', '0.25', '--min-imbalance', '0.1', '--rs-cooldown-ms', '8000', '--horizon-ms', '5000'],
    });
    const before = activesOf(await cluster.status(true));
    const counts = new Map<string, number>(copies.map((c) => [c, 0]));
    for (const a of before.values()) counts.set(a.copyId, (counts.get(a.copyId) ?? 0) + 1);
    // The initial placement is balanced by count (2 RS each); make the busiest copy hot.
    const hot = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0];
    const hotRs = new Set([...before].filter(([, a]) => a.copyId === hot).map(([rs]) => rs));
    const rateOf = (rs: number): number => (hotRs.has(rs) ? 100 : 20);
    const keysByRs = keysPerRs(cluster.routing, 'skew', 8);
    const load = new RateLoad(cluster.routing, keysByRs, new Map(Array.from({ length: RS_COUNT }, (_, rs) => [rs, () => rateOf(rs)])));
    load.start();
    try {
      // Convergence: no move under way, every copy inside the band (the load manager's verdict
      // AND an independent check of the offered load against the current placement).
      let converged: Map<number, { copyId: string; epoch: number }> | undefined;
      await waitFor(
        async () => {
          const s = await cluster.status(true);
          if (s.moves.length > 0) return false;
          const plan = await getPlan(lmAddress);
          if (plan.recentMoves.some((m) => m.finishedUnixMs === 0) || plan.moves.length > 0) return false;
          const actives = activesOf(s);
          const offered = [...offeredPerCopy(actives, rateOf, copies).values()];
          const mean = offered.reduce((a, b) => a + b, 0) / offered.length;
          const upper = Math.max(mean * 1.25, mean + 25);
          if (!offered.every((x) => x <= upper + 1e-9)) return false;
          const load = await getLoad(lmAddress);
          if (!load.copies.every((c) => c.verdict === LoadVerdict.LOAD_VERDICT_OK || c.verdict === LoadVerdict.LOAD_VERDICT_UNDER)) return false;
          converged = actives;
          return true;
        },
        { timeoutMs: 90_000, intervalMs: 500, what: 'every copy inside the target band' },
      ).catch(async (e: unknown) => {
        throw new Error(`${(e as Error).message}\n${describePlan(await getPlan(lmAddress))}`);
      });
      const planAfter = await getPlan(lmAddress);
      const done = planAfter.recentMoves.filter((m) => m.outcome === 'ok');
      assert.ok(done.length >= 1, `the skew needed at least one move:\n${describePlan(planAfter)}`);
      assert.equal(done[0]!.move?.fromCopyId, hot, `the first move is off the hot copy ${hot}:\n${describePlan(planAfter)}`);
      const movesBefore = planAfter.recentMoves.length;
      t.diagnostic(`converged in ${load.elapsedS.toFixed(1)} s with ${done.length} moves: ${done.map((m) => `${m.move?.rs}:${m.move?.fromCopyId}->${m.move?.toCopyId} ${MoveReason[m.move?.reason ?? 0]} pause ${m.pauseMs.toFixed(1)} ms`).join(', ')}`);

      // A full minute of the same load: no RS changes hands, no move is even attempted.
      const steadyUntil = Date.now() + 60_000;
      while (Date.now() < steadyUntil) {
        await new Promise((r) => setTimeout(r, 2000));
        const actives = activesOf(await cluster.status(true));
        for (const [rs, a] of converged!) {
          assert.deepEqual(actives.get(rs), a, `RS ${rs} changed hands under steady load\n${describePlan(await getPlan(lmAddress))}\n${lmTail()}`);
        }
      }
      const planEnd = await getPlan(lmAddress);
      assert.equal(planEnd.recentMoves.length, movesBefore, `moves under steady load:\n${describePlan(planEnd)}`);
      assert.deepEqual(planEnd.moves, [], `the load manager still wants to move:\n${describePlan(planEnd)}`);
    } finally {
      await load.stop();
    }
    // Exact counters: every acknowledged increment counted once.
    assert.deepEqual(load.failures.slice(0, 5), [], 'every increment must be acknowledged (same id retried across moves)');
    assert.ok(load.sent > 5000, `load was offered (${load.sent} increments)`);
    for (const [rs, keys] of keysByRs) {
      for (const key of keys) {
        const value = await cluster.routing.query<number>('counter', rs, { key });
        assert.equal(value, load.acked.get(key) ?? 0, `counter ${key} (RS ${rs}): value must equal acknowledged increments`);
      }
    }
  });

  test('anticipation: a controlled ramp on one copy triggers a move before it saturates', { timeout: 150_000 }, async (t) => {
    // A new configuration: capacity 200 msg/s, saturation 0.85 (170 msg/s), 10 s look-ahead; a
    // band so wide (11 × the mean) that imbalance alone never moves anything here.
    await lm?.kill();
    lm = await startLoadManagerProc({
      id: 'lm-2',
      port: lmPort,
      controllers: cluster.addresses,
      logLevel: 'info',
      onLine,
      args: [...COMMON_FLAGS, '--capacity-msgs-per-s', '200', '--saturation-level', '0.85', '--saturation-margin', '0.1', '--band-fraction', '10', '--min-imbalance', '0.1', '--horizon-ms', '10000', '--rs-cooldown-ms', '30000'],
    });
    const actives = activesOf(await cluster.status(true));
    const byCopy = new Map<string, number[]>(copies.map((c) => [c, []]));
    for (const [rs, a] of actives) byCopy.get(a.copyId)!.push(rs);
    const [x, xRs] = [...byCopy].sort((a, b) => b[1].length - a[1].length || (a[0] < b[0] ? -1 : 1))[0]!;
    assert.ok(xRs.length >= 2, `copy ${x} holds at least 2 RS: ${JSON.stringify([...byCopy])}`);
    const [ra, rb] = xRs;
    // Ramp: ra and rb rise from 20 msg/s over 30 s after a 10 s flat start (longer than the trend
    // window), every other RS stays at 10, so that copy x reaches its saturation level
    // (0.85 × 200 msg/s) only at the very end.
    const rampStartS = 10;
    const rampS = 30;
    const top = (0.85 * 200 - 10 * (xRs.length - 2)) / 2;
    const ramp = (tS: number): number => 20 + (top - 20) * Math.min(1, Math.max(0, (tS - rampStartS) / rampS));
    const rateOf = (rs: number, tS: number): number => (rs === ra || rs === rb ? ramp(tS) : 10);
    const xLoadAt = (tS: number): number => xRs.reduce((a, rs) => a + rateOf(rs, tS), 0);
    const saturation = 0.85 * 200;
    assert.ok(xLoadAt(rampStartS + rampS) >= saturation - 1e-9, 'the ramp would saturate the copy');
    const keysByRs = keysPerRs(cluster.routing, 'ramp', 8);
    await waitFor(() => allReporting(lmAddress), { what: 'copies reporting to the new load manager', timeoutMs: 20_000 });
    const load = new RateLoad(cluster.routing, keysByRs, new Map(Array.from({ length: RS_COUNT }, (_, rs) => [rs, (t: number) => rateOf(rs, t)])));
    load.start();
    try {
      const first = await waitFor(
        async () => {
          const p = await getPlan(lmAddress);
          return p.recentMoves.find((m) => m.move?.fromCopyId === x) ?? false;
        },
        { timeoutMs: 60_000, intervalMs: 250, what: `a move off ${x}` },
      ).catch(async (e: unknown) => {
        throw new Error(`${(e as Error).message}\n${describePlan(await getPlan(lmAddress))}`);
      });
      const atS = (first.startedUnixMs - (Date.now() - load.elapsedS * 1000)) / 1000;
      const plan = await getPlan(lmAddress);
      assert.equal(first.move?.reason, MoveReason.MOVE_REASON_ANTICIPATION, `first move's reason:\n${describePlan(plan)}\n${lmTail()}`);
      assert.ok(atS < rampStartS + rampS, `the move came at ${atS.toFixed(1)} s, after the copy saturated (${rampStartS + rampS} s)`);
      assert.ok(xLoadAt(atS) < saturation, `copy ${x} carried ${xLoadAt(atS).toFixed(0)} msg/s when the move started (saturation ${saturation})`);
      assert.ok(atS > rampStartS, `the move came at ${atS.toFixed(1)} s, before the ramp began: not anticipation\n${describePlan(plan)}\n${lmTail()}`);
      t.diagnostic(`anticipation move ${first.move?.rs}:${x}->${first.move?.toCopyId} at ${atS.toFixed(1)} s (ramp ${rampStartS}..${rampStartS + rampS} s), ${x} carried ${xLoadAt(atS).toFixed(0)} of ${saturation} msg/s`);
      await waitFor(async () => (await getPlan(lmAddress)).recentMoves.every((m) => m.finishedUnixMs > 0), { what: 'the move to finish', timeoutMs: 30_000 });
      const done = (await getPlan(lmAddress)).recentMoves.find((m) => m.move?.fromCopyId === x)!;
      assert.equal(done.outcome, 'ok', `the move: ${done.outcome}`);
    } finally {
      await load.stop();
    }
    assert.deepEqual(load.failures.slice(0, 5), [], 'every increment acknowledged');
    for (const [rs, keys] of keysByRs) {
      for (const key of keys) assert.equal(await cluster.routing.query<number>('counter', rs, { key }), load.acked.get(key) ?? 0, `counter ${key}`);
    }
  });

  test('bad input gets a specific status; the CLI shows load and plan', { timeout: 60_000 }, async () => {
    const c = lmClient(lmAddress);
    try {
      const unary = async (method: 'getLoad' | 'getPlan', app: string): Promise<grpc.status> => {
        try {
          await unaryCall((c[method] as unknown as Parameters<typeof unaryCall>[0]).bind(c), { app }, { deadlineMs: 5000 });
          return grpc.status.OK;
        } catch (e) {
          return (e as { code: grpc.status }).code;
        }
      };
      assert.equal(await unary('getLoad', 'Not An App!'), grpc.status.INVALID_ARGUMENT);
      assert.equal(await unary('getPlan', 'nosuchapp'), grpc.status.NOT_FOUND);
      assert.equal(await unary('getLoad', ''), grpc.status.OK);

      const good: ReportLoadRequest = { copyId: 'probe-1', incarnation: 1, app: 'counter', seq: 1, intervalMs: 500, cpuPercent: 1, eventLoopLagMs: 1, msgsPerS: 0, queueDepth: 0, rs: [] };
      /** Send reports on one stream; resolve with the acks and the final status. */
      const stream = (msgs: ReportLoadRequest[]): Promise<{ acks: number; code: grpc.status; details: string }> =>
        new Promise((resolve) => {
          const s = c.reportLoad();
          let acks = 0;
          s.on('data', (_m: ReportLoadResponse) => {
            acks++;
            if (acks === msgs.length) s.end();
          });
          s.on('error', (e: grpc.ServiceError) => resolve({ acks, code: e.code, details: e.details }));
          s.on('end', () => resolve({ acks, code: grpc.status.OK, details: '' }));
          for (const m of msgs) s.write(m);
        });
      assert.equal((await stream([good])).code, grpc.status.OK);
      const cases: [Partial<ReportLoadRequest>, grpc.status, RegExp][] = [
        [{ copyId: '' }, grpc.status.INVALID_ARGUMENT, /copy_id/],
        [{ incarnation: 0 }, grpc.status.INVALID_ARGUMENT, /incarnation/],
        [{ app: 'BAD APP' }, grpc.status.INVALID_ARGUMENT, /app must match/],
        [{ cpuPercent: -1 }, grpc.status.INVALID_ARGUMENT, /cpu_percent/],
        [{ msgsPerS: Number.NaN }, grpc.status.INVALID_ARGUMENT, /msgs_per_s/],
        [{ rs: [{ rs: 1, msgsPerS: 1, stateBytes: 1 }, { rs: 1, msgsPerS: 1, stateBytes: 1 }] }, grpc.status.INVALID_ARGUMENT, /listed twice/],
      ];
      for (const [patch, code, re] of cases) {
        const r = await stream([{ ...good, ...patch }]);
        assert.equal(r.code, code, `${JSON.stringify(patch)} → ${grpc.status[r.code]} ${r.details}`);
        assert.match(r.details, re);
      }
      // Identity changes mid-stream; an older incarnation than one already reporting.
      const switched = await stream([good, { ...good, seq: 2, copyId: 'probe-2' }]);
      assert.equal(switched.code, grpc.status.FAILED_PRECONDITION, switched.details);
      assert.equal(switched.acks, 1);
      await stream([{ ...good, incarnation: 5 }]);
      const stale = await stream([{ ...good, incarnation: 4 }]);
      assert.equal(stale.code, grpc.status.FAILED_PRECONDITION);
      assert.match(stale.details, /older than the reporting incarnation 5/);
      // Bytes that do not decode.
      const raw = new grpc.Client(lmAddress, insecureCredentials());
      const id = (b: Buffer): Buffer => b;
      const rawStream = raw.makeBidiStreamRequest('/understudy.v1.LoadManagerService/ReportLoad', id, id, new grpc.Metadata());
      const rawCode = await new Promise<grpc.status>((resolve) => {
        rawStream.on('error', (e: grpc.ServiceError) => resolve(e.code));
        rawStream.on('end', () => resolve(grpc.status.OK));
        rawStream.on('data', () => undefined);
        rawStream.write(Buffer.from([0x0a, 0x05, 0x61]));
      });
      raw.close();
      assert.equal(rawCode, grpc.status.INVALID_ARGUMENT);
      // Still serving.
      assert.equal(await unary('getPlan', 'counter'), grpc.status.OK);
    } finally {
      c.close();
    }

    // The CLI, in process, against the real load manager.
    const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
      let out = '';
      let err = '';
      const io: CliIo = { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, now: () => Date.now() };
      const code = await runCli(argv, io);
      return { code, out, err };
    };
    const loadOut = await run(['load', '--load-managers', lmAddress]);
    assert.equal(loadOut.code, 0, loadOut.err);
    for (const copy of copies) assert.match(loadOut.out, new RegExp(`\\b${copy}\\b`));
    assert.match(loadOut.out, /Resource sets/);
    const planOut = await run(['plan', '--load-managers', lmAddress, '--json']);
    assert.equal(planOut.code, 0, planOut.err);
    const plan = JSON.parse(planOut.out) as { copies: { verdict: string }[]; recentMoves: { move: { reason: string } }[] };
    assert.ok(plan.copies.every((x) => typeof x.verdict === 'string'));
    assert.ok(plan.recentMoves.every((m) => ['IMBALANCE', 'SATURATED', 'ANTICIPATION'].includes(m.move.reason)), planOut.out);
    const missing = await run(['plan', '--load-managers', lmAddress, '--app', 'nosuchapp']);
    assert.equal(missing.code, 3, missing.err);
    const down = await run(['load', '--load-managers', '127.0.0.1:1', '--timeout-ms', '1000']);
    assert.equal(down.code, 5, down.err);
    assert.match(down.err, /no load manager answered/);
  });
});
