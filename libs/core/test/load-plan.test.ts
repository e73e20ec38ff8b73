import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileLoadPlanOptions,
  fitTrend,
  planLoad,
  LOAD_PLAN_DEFAULTS,
  type CopyLoadSample,
  type CopyStatus,
  type LoadPlan,
  type LoadPlanInput,
  type LoadPlanOptions,
  type Mode,
  type MoveRef,
  type RecentMove,
} from '../src/index';
import { prng } from './sim';

// ---- a small world builder -------------------------------------------------------------------

interface RsSpec {
  readonly active: string | null;
  /** Caught-up standbys. */
  readonly standbys?: readonly string[];
  /** Standbys still catching up. */
  readonly catchingUp?: readonly string[];
  /** msg/s as a function of seconds relative to now (≤ 0), or a constant. */
  readonly msgs: number | ((tS: number) => number);
  readonly stateBytes?: number;
}

interface WorldSpec {
  readonly app?: string;
  readonly mode?: Mode;
  readonly activated?: boolean;
  readonly copies: readonly string[];
  readonly rs: readonly RsSpec[];
  readonly status?: Readonly<Record<string, CopyStatus>>;
  readonly failed?: readonly string[];
  /** Copies that send no load reports. */
  readonly silent?: readonly string[];
  /** Per copy: extra sample fields (e.g. cpu). */
  readonly copyExtra?: Readonly<Record<string, Partial<CopyLoadSample>>>;
  readonly passive?: boolean;
  readonly failoverInProgress?: boolean;
  readonly recentMoves?: readonly RecentMove[];
  readonly inFlight?: readonly MoveRef[];
  /** Seconds of history, one sample per second. @default 10 */
  readonly historyS?: number;
}

const NOW = 1_000_000;

function rateAt(r: RsSpec, tS: number): number {
  return typeof r.msgs === 'number' ? r.msgs : r.msgs(tS);
}

function world(w: WorldSpec): LoadPlanInput {
  const app = w.app ?? 'counter';
  const hist = w.historyS ?? 10;
  const times = Array.from({ length: hist }, (_, i) => i - hist + 1); // … -2, -1, 0
  return {
    passive: w.passive ?? false,
    failoverInProgress: w.failoverInProgress ?? false,
    apps: [
      {
        name: app,
        mode: w.mode ?? 'DISTRIBUTED_FAULT_TOLERANT',
        activated: w.activated ?? true,
        rs: w.rs.map((r, i) => ({
          rs: i,
          active: r.active,
          standbys: [...(r.standbys ?? []).map((copyId) => ({ copyId, caughtUp: true })), ...(r.catchingUp ?? []).map((copyId) => ({ copyId, caughtUp: false }))],
        })),
      },
    ],
    copies: w.copies.map((copyId) => ({ copyId, app, status: w.status?.[copyId] ?? 'UP', incarnation: 1, ...(w.failed?.includes(copyId) ? { failed: true } : {}) })),
    copyLoads: w.copies
      .filter((c) => !w.silent?.includes(c))
      .map((copyId) => ({
        copyId,
        incarnation: 1,
        samples: times.map((tS) => ({
          atMs: NOW + tS * 1000,
          cpuPercent: 5,
          eventLoopLagMs: 1,
          queueDepth: 0,
          msgsPerS: w.rs.filter((r) => r.active === copyId).reduce((a, r) => a + rateAt(r, tS), 0),
          ...w.copyExtra?.[copyId],
        })),
      })),
    rsLoads: w.rs.map((r, i) => ({
      app,
      rs: i,
      samples: r.active === null ? [] : times.map((tS) => ({ atMs: NOW + tS * 1000, msgsPerS: rateAt(r, tS), stateBytes: r.stateBytes ?? 100, copyId: r.active! })),
    })),
    recentMoves: w.recentMoves ?? [],
    inFlight: w.inFlight ?? [],
  };
}

/** Options that make utilization = msg/s ÷ 100 and ignore CPU. */
const O: LoadPlanOptions = { capacityMsgsPerS: 100, cpuSaturationPercent: 0, eventLoopLagSaturationMs: 0, queueDepthSaturation: 0 };

const movesOf = (p: LoadPlan): string[] => p.moves.map((m) => `${m.rs}:${m.fromCopyId}>${m.toCopyId}:${m.reason}`);
const view = (p: LoadPlan, id: string) => p.copies.find((c) => c.copyId === id)!;

// ---- fitting and options ---------------------------------------------------------------------

test('fitTrend: exact line gives level now and slope; few samples give the last value', () => {
  const pts = [0, 1, 2, 3, 4].map((i) => ({ atMs: NOW - 4000 + i * 1000, value: 10 + 2 * i }));
  const f = fitTrend(pts, NOW);
  assert.ok(Math.abs(f.level - 18) < 1e-9);
  assert.ok(Math.abs(f.slopePerS - 2) < 1e-9);
  assert.deepEqual(fitTrend(pts.slice(0, 2), NOW, 4), { level: 12, slopePerS: 0, n: 2 });
  assert.deepEqual(fitTrend([], NOW), { level: 0, slopePerS: 0, n: 0 });
  // All at one instant: the mean, no slope.
  assert.deepEqual(fitTrend([{ atMs: NOW, value: 1 }, { atMs: NOW, value: 3 }], NOW), { level: 2, slopePerS: 0, n: 2 });
});

test('compileLoadPlanOptions: defaults, and clear errors for bad values', () => {
  assert.deepEqual(compileLoadPlanOptions(), LOAD_PLAN_DEFAULTS);
  assert.equal(compileLoadPlanOptions({ bandFraction: 0.5 }).bandFraction, 0.5);
  assert.throws(() => compileLoadPlanOptions({ bandFraction: -1 }), /bandFraction: -1 is out of range/);
  assert.throws(() => compileLoadPlanOptions({ maxConcurrentMoves: 1.5 }), /maxConcurrentMoves: 1.5 is out of range; must be an integer/);
  assert.throws(() => compileLoadPlanOptions({ horizonMs: Number.NaN }), /horizonMs: NaN/);
  assert.throws(() => compileLoadPlanOptions({ bogus: 1 } as LoadPlanOptions), /bogus: unknown option/);
  assert.throws(() => compileLoadPlanOptions({ saturationLevel: 0.5, saturationMargin: 0.5 }), /saturationMargin/);
});

// ---- rules -----------------------------------------------------------------------------------

const SKEW: WorldSpec = {
  copies: ['c1', 'c2', 'c3'],
  rs: [
    { active: 'c1', standbys: ['c2'], msgs: 40 },
    { active: 'c1', standbys: ['c3'], msgs: 40 },
    { active: 'c2', standbys: ['c3'], msgs: 5 },
    { active: 'c2', standbys: ['c1'], msgs: 5 },
    { active: 'c3', standbys: ['c1'], msgs: 5 },
    { active: 'c3', standbys: ['c2'], msgs: 5 },
  ],
};

test('skew: the hot copy sheds an RS to an under-loaded copy, by promotion of its caught-up standby', () => {
  const p = planLoad(world(SKEW), NOW, O);
  assert.equal(p.blocked, undefined);
  assert.equal(p.moves.length, 1, p.summary.join('\n'));
  const m = p.moves[0]!;
  assert.equal(m.fromCopyId, 'c1');
  assert.equal(m.reason, 'IMBALANCE');
  assert.equal(m.promotion, true);
  // rs 0's standby is c2, rs 1's is c3: either is a promotion; rs 0 wins the tie (lower id).
  assert.deepEqual(movesOf(p), ['0:c1>c2:IMBALANCE']);
  assert.equal(view(p, 'c1').verdict, 'OVER');
  assert.match(view(p, 'c1').explanation, /moves rs 0 → c2 \(promotion\)/);
  assert.match(view(p, 'c2').explanation, /receives rs 0 from c1/);
  assert.ok(Math.abs(view(p, 'c1').utilization - 0.8) < 1e-9);
  assert.ok(Math.abs(view(p, 'c1').plannedUtilization - 0.4) < 1e-9);
});

test('promotion is preferred over a slightly better state transfer, but not over a much better one', () => {
  // c3 (idle) is the best target, c2 (holding rs 0's caught-up standby) nearly as good.
  const spec: WorldSpec = {
    copies: ['c1', 'c2', 'c3'],
    rs: [
      { active: 'c1', standbys: ['c2'], msgs: 40 },
      { active: 'c1', msgs: 40 },
      { active: 'c2', msgs: 3 },
    ],
  };
  const p = planLoad(world(spec), NOW, O);
  assert.equal(p.moves[0]!.toCopyId, 'c2');
  assert.equal(p.moves[0]!.promotion, true);
  // Without the tolerance the better-balanced transfer to the idle c3 wins.
  const noTolerance = planLoad(world(spec), NOW, { ...O, transferPenalty: 0 });
  assert.equal(noTolerance.moves[0]!.toCopyId, 'c3');
  assert.equal(noTolerance.moves[0]!.promotion, false);
  assert.match(noTolerance.moves[0]!.detail, /state transfer/);
});

test('never to a copy that is not UP, declared failed, silent, or a standby still catching up', () => {
  for (const [label, extra] of [
    ['drained', { status: { c2: 'DRAINED' as CopyStatus, c3: 'DISABLED' as CopyStatus } }],
    ['failed', { failed: ['c2', 'c3'] }],
    ['silent', { silent: ['c2', 'c3'] }],
  ] as const) {
    const p = planLoad(world({ ...SKEW, ...extra }), NOW, O);
    assert.deepEqual(p.moves, [], label);
  }
  const p = planLoad(world({ ...SKEW, status: { c2: 'DRAINED' } }), NOW, O);
  assert.equal(view(p, 'c2').verdict, 'INELIGIBLE');
  assert.ok(p.moves.every((m) => m.toCopyId === 'c3'));
  const q = planLoad(world({ ...SKEW, silent: ['c3'] }), NOW, O);
  assert.equal(view(q, 'c3').verdict, 'NO_DATA');
  // rs 0 and rs 1 have standbys still catching up on c2 and c3: no target left.
  const r = planLoad(
    world({
      copies: ['c1', 'c2', 'c3'],
      rs: [
        { active: 'c1', catchingUp: ['c2', 'c3'], msgs: 40 },
        { active: 'c1', catchingUp: ['c2', 'c3'], msgs: 40 },
        { active: 'c2', msgs: 5 },
      ],
    }),
    NOW,
    O,
  );
  assert.deepEqual(r.moves, []);
  assert.match(view(r, 'c1').explanation, /catching up/);
});

test('no moves while the controller is passive, during a failover, or while an RS has no ACTIVE', () => {
  for (const extra of [{ passive: true }, { failoverInProgress: true }]) {
    const p = planLoad(world({ ...SKEW, ...extra }), NOW, O);
    assert.deepEqual(p.moves, []);
    assert.ok(p.blocked);
    assert.match(view(p, 'c1').explanation, /no moves/);
  }
  const rs = [...SKEW.rs];
  rs[2] = { active: null, msgs: 0 };
  const p = planLoad(world({ ...SKEW, rs }), NOW, O);
  assert.deepEqual(p.moves, []);
  assert.match(p.blocked ?? '', /counter\/2 has no ACTIVE copy/);
});

test('hysteresis: inside the band, or below the minimum imbalance, nothing moves', () => {
  const even = planLoad(
    world({ copies: ['c1', 'c2'], rs: [{ active: 'c1', standbys: ['c2'], msgs: 30 }, { active: 'c2', standbys: ['c1'], msgs: 25 }] }),
    NOW,
    O,
  );
  assert.deepEqual(even.moves, []);
  assert.deepEqual(even.summary, ['no move needed']);
  assert.equal(view(even, 'c1').verdict, 'OK');
  // 3 vs 1 msg/s is 200% over the mean, but 0.01 utilization apart: below minImbalance.
  const tiny = planLoad(
    world({ copies: ['c1', 'c2'], rs: [{ active: 'c1', msgs: 2 }, { active: 'c1', msgs: 1 }, { active: 'c2', msgs: 1 }] }),
    NOW,
    O,
  );
  assert.deepEqual(tiny.moves, []);
});

test('a single RS bigger than the band is not bounced between copies', () => {
  // Moving rs 0 would only make c2 the hot copy: no gain.
  const p = planLoad(world({ copies: ['c1', 'c2'], rs: [{ active: 'c1', standbys: ['c2'], msgs: 60 }, { active: 'c2', msgs: 5 }] }), NOW, O);
  assert.deepEqual(p.moves, []);
  assert.equal(view(p, 'c1').verdict, 'OVER');
  assert.match(view(p, 'c1').explanation, /no move: 1 move\(s\) would not lower the peak/);
});

test('cooldown: an RS moved recently is not moved again; the explanation says so', () => {
  const recentMoves: RecentMove[] = [
    { app: 'counter', rs: 0, fromCopyId: 'c2', toCopyId: 'c1', atMs: NOW - 5000 },
    { app: 'counter', rs: 1, fromCopyId: 'c3', toCopyId: 'c1', atMs: NOW - 5000 },
  ];
  const p = planLoad(world({ ...SKEW, recentMoves }), NOW, O);
  assert.deepEqual(p.moves, []);
  assert.match(view(p, 'c1').explanation, /2 RS locked \(rs 0 moved less than 30s ago/);
  const later = planLoad(world({ ...SKEW, recentMoves }), NOW + 26_000, { ...O, staleAfterMs: 60_000, trendWindowMs: 60_000 });
  assert.equal(later.moves.length, 1);
  const lockedView = p.rs.find((r) => r.rs === 0)!;
  assert.equal(lockedView.lockedUntilMs, NOW + 25_000);
});

test('cap: moves under way count against maxConcurrentMoves and are modelled as done', () => {
  const hot: WorldSpec = {
    copies: ['c1', 'c2', 'c3', 'c4'],
    rs: [
      { active: 'c1', msgs: 30 },
      { active: 'c1', msgs: 30 },
      { active: 'c1', msgs: 30 },
      { active: 'c2', msgs: 2 },
      { active: 'c3', msgs: 2 },
      { active: 'c4', msgs: 2 },
    ],
  };
  const free = planLoad(world(hot), NOW, { ...O, maxConcurrentMoves: 5 });
  assert.equal(free.moves.length, 2, free.summary.join('\n'));
  const capped = planLoad(world(hot), NOW, { ...O, maxConcurrentMoves: 1 });
  assert.equal(capped.moves.length, 1);
  const inFlight: MoveRef[] = [{ app: 'counter', rs: 0, fromCopyId: 'c1', toCopyId: 'c2' }];
  const full = planLoad(world({ ...hot, inFlight }), NOW, { ...O, maxConcurrentMoves: 1 });
  assert.deepEqual(full.moves, []);
  // With room for one more: rs 0 counts as on c2 already, so the next move goes elsewhere.
  const next = planLoad(world({ ...hot, inFlight }), NOW, { ...O, maxConcurrentMoves: 2 });
  assert.equal(next.moves.length, 1);
  assert.notEqual(next.moves[0]!.rs, 0);
  assert.notEqual(next.moves[0]!.toCopyId, 'c2');
  assert.equal(next.rs.find((r) => r.rs === 0)!.active, 'c2');
});

test('anticipation: a copy whose load rises toward saturation moves an RS before it saturates', () => {
  // c1's two RS rise by 1.5 msg/s each per second: c1 at 70 now (0.7 < 0.85), +30 in 10 s.
  const rising: WorldSpec = {
    copies: ['c1', 'c2', 'c3'],
    rs: [
      { active: 'c1', standbys: ['c2'], msgs: (t) => 35 + 1.5 * t },
      { active: 'c1', standbys: ['c3'], msgs: (t) => 35 + 1.5 * t },
      { active: 'c2', msgs: 10 },
      { active: 'c3', msgs: 10 },
    ],
  };
  const opts = { ...O, bandFraction: 2, saturationLevel: 0.85 };
  const p = planLoad(world(rising), NOW, opts);
  assert.deepEqual(movesOf(p), ['0:c1>c2:ANTICIPATION']);
  assert.equal(view(p, 'c1').verdict, 'RISING');
  assert.ok(view(p, 'c1').utilization < 0.85);
  assert.ok(view(p, 'c1').projected >= 0.85);
  assert.match(p.moves[0]!.detail, /projected to reach/);
  // The same level, flat: no move (the band is wide).
  const flat = planLoad(world({ ...rising, rs: rising.rs.map((r, i) => (i < 2 ? { ...r, msgs: 35 } : r)) }), NOW, opts);
  assert.deepEqual(flat.moves, []);
  // Without anticipation (horizon 0), the rising copy waits until it saturates.
  assert.deepEqual(planLoad(world(rising), NOW, { ...opts, horizonMs: 0 }).moves, []);
});

test('anticipation ignores a step: load that just started is a new level, not a ramp', () => {
  // c1's RS jumped from 0 to 35 msg/s five seconds ago: a straight-line fit would see +7 msg/s².
  const step = (t: number): number => (t > -5 ? 35 : 0);
  const p = planLoad(
    world({
      copies: ['c1', 'c2', 'c3'],
      rs: [
        { active: 'c1', standbys: ['c2'], msgs: step },
        { active: 'c1', standbys: ['c3'], msgs: step },
        { active: 'c2', msgs: 10 },
        { active: 'c3', msgs: 10 },
      ],
    }),
    NOW,
    { ...O, bandFraction: 2 },
  );
  assert.deepEqual(p.moves, [], p.summary.join('\n'));
  assert.equal(view(p, 'c1').verdict, 'OK');
  // The level after the step is the new rate, not the line's value.
  assert.ok(Math.abs(p.rs[0]!.msgsPerS - 35) < 1e-9, String(p.rs[0]!.msgsPerS));
  assert.equal(p.rs[0]!.slopePerS, 0);
  // A ramp seen for less than three quarters of the window is not a trend yet either.
  const ramp = (t: number): number => 35 + 1.5 * t;
  const short = planLoad(
    world({
      historyS: 6,
      copies: ['c1', 'c2', 'c3'],
      rs: [
        { active: 'c1', standbys: ['c2'], msgs: ramp },
        { active: 'c1', standbys: ['c3'], msgs: ramp },
        { active: 'c2', msgs: 10 },
        { active: 'c3', msgs: 10 },
      ],
    }),
    NOW,
    { ...O, bandFraction: 2 },
  );
  assert.deepEqual(short.moves, []);
  assert.equal(short.rs[0]!.slopePerS, 0);
});

test('saturated copy: reason SATURATED; a target is never pushed above saturation − margin', () => {
  const p = planLoad(
    world({ copies: ['c1', 'c2'], rs: [{ active: 'c1', msgs: 50 }, { active: 'c1', msgs: 45 }, { active: 'c2', msgs: 20 }] }),
    NOW,
    { ...O, bandFraction: 5 },
  );
  assert.deepEqual(movesOf(p), ['1:c1>c2:SATURATED']);
  // Both copies near saturation: nowhere to go.
  const q = planLoad(
    world({ copies: ['c1', 'c2'], rs: [{ active: 'c1', msgs: 50 }, { active: 'c1', msgs: 45 }, { active: 'c2', msgs: 70 }] }),
    NOW,
    { ...O, bandFraction: 5 },
  );
  assert.deepEqual(q.moves, []);
  assert.match(view(q, 'c1').explanation, /would take the target above/);
});

test('CPU pressure lowers a copy capacity estimate (a slow copy looks hotter)', () => {
  const spec: WorldSpec = {
    copies: ['c1', 'c2'],
    rs: [{ active: 'c1', msgs: 20 }, { active: 'c1', msgs: 20 }, { active: 'c2', msgs: 20 }, { active: 'c2', msgs: 20 }],
    copyExtra: { c1: { cpuPercent: 80 } },
  };
  const p = planLoad(world(spec), NOW, { capacityMsgsPerS: 100, cpuSaturationPercent: 100, eventLoopLagSaturationMs: 0, queueDepthSaturation: 0 });
  assert.ok(Math.abs(view(p, 'c1').capacityMsgsPerS - 50) < 1e-9);
  assert.ok(Math.abs(view(p, 'c1').utilization - 0.8) < 1e-9);
  assert.equal(p.moves.length, 1);
  assert.equal(p.moves[0]!.fromCopyId, 'c1');
});

test('FAULT_TOLERANT and not-yet-activated apps are left alone', () => {
  assert.deepEqual(planLoad(world({ ...SKEW, mode: 'FAULT_TOLERANT' }), NOW, O).moves, []);
  const p = planLoad(world({ ...SKEW, activated: false }), NOW, O);
  assert.deepEqual(p.moves, []);
  assert.match(p.apps[0]!.explanation, /not activated/);
});

test('stale reports and reports of an older incarnation are no data', () => {
  const p = planLoad(world(SKEW), NOW + 20_000, O);
  assert.deepEqual(p.moves, []);
  assert.match(view(p, 'c1').explanation, /last load report 20s ago/);
  const input = world(SKEW);
  const q = planLoad({ ...input, copies: input.copies.map((c) => (c.copyId === 'c2' ? { ...c, incarnation: 2 } : c)) }, NOW, O);
  assert.equal(view(q, 'c2').verdict, 'NO_DATA');
  assert.match(view(q, 'c2').explanation, /incarnation 1, the controller knows 2/);
});

// ---- seeded property test --------------------------------------------------------------------

interface SimRs {
  active: string;
  standbys: { copyId: string; caughtUp: boolean }[];
  msgs: number;
}

/**
 * A synthetic cluster: RS with steady rates, copies reporting the sum of their ACTIVE RS. The
 * planner runs every 5 s; its moves are applied at once (a promotion swaps active and standby,
 * a transfer leaves the source out), as the controller would.
 */
function simulate(seed: number, o: { noise: number; rounds: number }) {
  const rnd = prng(seed);
  const n = 2 + Math.floor(rnd() * 5);
  const copies = Array.from({ length: n }, (_, i) => `c${i + 1}`);
  const rsCount = 2 + Math.floor(rnd() * 22);
  const hot = new Set(copies.filter(() => rnd() < 0.3));
  const rs: SimRs[] = Array.from({ length: rsCount }, () => {
    const active = copies[Math.floor(rnd() * n)]!;
    const others = copies.filter((c) => c !== active);
    const standbys = rnd() < 0.8 ? [{ copyId: others[Math.floor(rnd() * others.length)]!, caughtUp: rnd() < 0.8 }] : [];
    return { active, standbys, msgs: Math.round(rnd() * (hot.has(active) ? 120 : 30)) };
  });
  const down = new Set(copies.filter((c, i) => i > 1 && rnd() < 0.15));
  const capacity = 300 + Math.floor(rnd() * 400);
  const opts: LoadPlanOptions = { capacityMsgsPerS: capacity, cpuSaturationPercent: 0, eventLoopLagSaturationMs: 0, queueDepthSaturation: 0, maxConcurrentMoves: 1 + Math.floor(rnd() * 3) };
  const compiled = compileLoadPlanOptions(opts);
  const history = new Map<string, CopyLoadSample[]>();
  const rsHistory = new Map<number, { atMs: number; msgsPerS: number; stateBytes: number; copyId: string }[]>();
  const recent: RecentMove[] = [];
  const trace: { round: number; moves: number; sumSq: number }[] = [];
  let now = 0;
  const sumSq = (): number => {
    let s = 0;
    for (const c of copies) {
      if (down.has(c)) continue;
      const u = rs.filter((r) => r.active === c).reduce((a, r) => a + r.msgs, 0) / capacity;
      s += u * u;
    }
    return s;
  };
  for (let round = 0; round < o.rounds; round++) {
    // Five 1 s reports per round.
    for (let k = 0; k < 5; k++) {
      now += 1000;
      for (const c of copies) {
        const h = history.get(c) ?? [];
        const msgs = rs.filter((r) => r.active === c).reduce((a, r) => a + r.msgs * (1 + (rnd() * 2 - 1) * o.noise), 0);
        h.push({ atMs: now, cpuPercent: 5, eventLoopLagMs: 1, msgsPerS: msgs, queueDepth: 0 });
        if (h.length > 30) h.shift();
        history.set(c, h);
      }
      rs.forEach((r, i) => {
        const h = rsHistory.get(i) ?? [];
        h.push({ atMs: now, msgsPerS: r.msgs * (1 + (rnd() * 2 - 1) * o.noise), stateBytes: 100 + i, copyId: r.active });
        if (h.length > 30) h.shift();
        rsHistory.set(i, h);
      });
    }
    const passive = rnd() < 0.05;
    const input: LoadPlanInput = {
      passive,
      failoverInProgress: false,
      apps: [{ name: 'a', mode: 'DISTRIBUTED_FAULT_TOLERANT', activated: true, rs: rs.map((r, i) => ({ rs: i, active: r.active, standbys: r.standbys })) }],
      copies: copies.map((c) => ({ copyId: c, app: 'a', status: down.has(c) ? 'DRAINED' : 'UP', incarnation: 1 })),
      copyLoads: copies.map((c) => ({ copyId: c, incarnation: 1, samples: history.get(c) ?? [] })),
      rsLoads: rs.map((_, i) => ({ app: 'a', rs: i, samples: rsHistory.get(i) ?? [] })),
      recentMoves: recent.filter((m) => m.atMs > now - 60_000),
      inFlight: [],
    };
    const before = sumSq();
    const plan = planLoad(input, now, opts);
    // Rules every plan keeps.
    const where = `seed ${seed} round ${round}`;
    if (passive) assert.deepEqual(plan.moves, [], `${where}: moved while passive`);
    assert.ok(plan.moves.length <= compiled.maxConcurrentMoves, `${where}: cap`);
    const seen = new Set<number>();
    for (const m of plan.moves) {
      const r = rs[m.rs]!;
      assert.ok(!seen.has(m.rs), `${where}: rs ${m.rs} twice`);
      seen.add(m.rs);
      assert.equal(m.fromCopyId, r.active, `${where}: move of rs ${m.rs} not from its active`);
      assert.notEqual(m.toCopyId, r.active, `${where}: move to the active`);
      assert.ok(!down.has(m.toCopyId), `${where}: move to a drained copy`);
      assert.ok(!r.standbys.some((s) => s.copyId === m.toCopyId && !s.caughtUp), `${where}: move to a standby catching up`);
      assert.ok(!recent.some((x) => x.rs === m.rs && x.atMs > now - compiled.rsCooldownMs), `${where}: rs ${m.rs} moved within its cooldown`);
      assert.equal(m.promotion, r.standbys.some((s) => s.copyId === m.toCopyId && s.caughtUp), `${where}: promotion flag`);
    }
    // Apply: promotion swaps, a transfer leaves the source out.
    for (const m of plan.moves) {
      const r = rs[m.rs]!;
      const sb = r.standbys.findIndex((s) => s.copyId === m.toCopyId);
      if (sb >= 0) r.standbys[sb] = { copyId: m.fromCopyId, caughtUp: true };
      r.active = m.toCopyId;
      recent.push({ app: 'a', rs: m.rs, fromCopyId: m.fromCopyId, toCopyId: m.toCopyId, atMs: now });
    }
    if (o.noise === 0 && plan.moves.length > 0) {
      // Steady load: every round of moves strictly lowers the sum of squared utilizations.
      assert.ok(sumSq() < before - 1e-12, `${where}: moves did not improve the balance (${before} → ${sumSq()})`);
    }
    trace.push({ round, moves: plan.moves.length, sumSq: sumSq() });
  }
  return { trace, rsCount };
}

test('property: random loads — plans keep the rules, moves converge, and steady load then gives zero moves', () => {
  let moved = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const { trace, rsCount } = simulate(seed, { noise: 0, rounds: 60 });
    const total = trace.reduce((a, t) => a + t.moves, 0);
    moved += total;
    // Converged well within the run: the last 20 rounds (100 s, beyond every cooldown) move nothing.
    const tail = trace.slice(-20);
    assert.ok(tail.every((t) => t.moves === 0), `seed ${seed}: still moving at the end: ${JSON.stringify(trace.filter((t) => t.moves > 0))}`);
    // Fewest moves: never more than RS count moves in all.
    assert.ok(total <= rsCount, `seed ${seed}: ${total} moves for ${rsCount} RS`);
  }
  // Sanity: the generator produces skew that needs moves.
  assert.ok(moved > 50, `only ${moved} moves over all seeds; generator too tame`);
  if (process.env.LOAD_PLAN_DEBUG) console.log(`moves over all seeds: ${moved}`);
});

test('property: with ±2% measurement noise moves still stop (no thrash)', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const { trace, rsCount } = simulate(seed, { noise: 0.02, rounds: 80 });
    const tail = trace.slice(-30);
    assert.ok(tail.every((t) => t.moves === 0), `seed ${seed}: moves under steady noisy load: ${JSON.stringify(trace.filter((t) => t.moves > 0).map((t) => t.round))}`);
    const total = trace.reduce((a, t) => a + t.moves, 0);
    assert.ok(total <= rsCount * 2, `seed ${seed}: ${total} moves for ${rsCount} RS`);
  }
});
