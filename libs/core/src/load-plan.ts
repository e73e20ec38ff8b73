/**
 * Load planning of the Load Manager (R-LM, seed 003 "anticipatory rescheduling"): pure logic, no
 * I/O, no clock. The shell passes what it knows — load samples of every copy and RS, the current
 * placement, the controller's phase, recent and running moves — with the current time, and gets
 * back a plan: the RS moves to ask the controller for, and why (or why not) for every copy.
 *
 * The model:
 * - Load is counted in messages per second, the one measure that can be attributed to an RS (an
 *   RS's messages are handled on its ACTIVE copy, and they follow the RS when it moves). A copy's
 *   load is the sum over the RS it is ACTIVE for *in the placement*, so a move shows at once in
 *   the plan, without waiting for the copies' next reports (no thrash while reports catch up).
 * - A copy's utilization is its load over its capacity (`capacityMsgsPerS`). CPU, event-loop lag
 *   and queue depth ("pressure", each as a fraction of its saturation level) lower a copy's
 *   capacity estimate when they say the copy saturates earlier than its message rate suggests
 *   (a slow host, expensive messages): capacity = handled msg/s ÷ pressure.
 * - Levels and trends are least-squares fits over `trendWindowMs` (the level is the fitted value
 *   now, robust to one noisy sample). A trend counts only when it is sustained (both halves of the
 *   window move the same way): a step is a new level, not a ramp to extrapolate. An RS's trend is
 *   its own (it moves with the RS); a copy's projected utilization `horizonMs` ahead is its level
 *   plus the summed trend of its RS.
 *
 * The rules:
 * - No moves while the controller is passive (R-HM-3), while a failover is in progress, or while
 *   an activated app has an RS without an ACTIVE copy (a failover not finished).
 * - A copy is a *source* when it is over the band (utilization above `mean × (1 + bandFraction)`
 *   and above `mean + minImbalance`), saturated (≥ `saturationLevel`), or projected to saturate
 *   within the horizon (anticipation: act before, not after).
 * - A move takes an RS from a source to another UP copy of the same app that has fresh load data;
 *   never to a copy that is ACTIVE for the RS, nor to a STANDBY still catching up. It must lower
 *   the pair's peak (utilization, or projected utilization for saturation moves) by at least
 *   `minGain`, keep the target's projected utilization at or below `saturationLevel −
 *   saturationMargin`, and (imbalance moves) go to a copy below the mean.
 * - Fewest moves: the move leaving the least excess is taken first; within `transferPenalty` of
 *   that, a target that already holds a caught-up STANDBY of the RS wins (the move is only a
 *   promotion), then the better-balanced pair, then the smaller state.
 * - Hysteresis: nothing moves while every copy is inside the band; an RS moved less than
 *   `rsCooldownMs` ago is not moved again; moves under way count against `maxConcurrentMoves`
 *   and are modelled as done. A copy that receives an RS in a plan is not a source in the same
 *   plan. With steady load every move lowers the sum of squared utilizations, so moves stop.
 */
import type { CopyStatus, Mode } from './model';

// ---- input -------------------------------------------------------------------------------------

/** One load report of a copy, as the shell received it (stamped with the shell's clock). */
export interface CopyLoadSample {
  readonly atMs: number;
  /** Percent of one core over the report interval. */
  readonly cpuPercent: number;
  /** Worst event-loop delay over the report interval. */
  readonly eventLoopLagMs: number;
  /** Messages handled per second (all RS of the copy). */
  readonly msgsPerS: number;
  /** Messages waiting in the copy's RS queues. */
  readonly queueDepth: number;
}

/** Recent load reports of one copy incarnation, oldest first. */
export interface CopyLoadSeries {
  readonly copyId: string;
  readonly incarnation: number;
  readonly samples: readonly CopyLoadSample[];
}

/** One report of one RS by the copy that was ACTIVE for it. */
export interface RsLoadSample {
  readonly atMs: number;
  readonly msgsPerS: number;
  /** Size of the RS state (encoded snapshot), bytes. */
  readonly stateBytes: number;
  /** The reporting copy. */
  readonly copyId: string;
}

/** Recent load reports of one RS (from whichever copy was ACTIVE), oldest first. */
export interface RsLoadSeries {
  readonly app: string;
  readonly rs: number;
  readonly samples: readonly RsLoadSample[];
}

/** A copy as the controller sees it. */
export interface PlacementCopy {
  readonly copyId: string;
  readonly app: string;
  readonly status: CopyStatus;
  readonly incarnation: number;
  /** Declared failed while keeping an operator status: a dead process, never a target. */
  readonly failed?: boolean;
}

/** Who holds one RS. */
export interface PlacementRs {
  readonly rs: number;
  /** The ACTIVE copy; null while the RS has none (failover under way). */
  readonly active: string | null;
  /** STANDBY copies; `caughtUp` false while the active has not reported them holding the state. */
  readonly standbys: readonly { readonly copyId: string; readonly caughtUp: boolean }[];
}

/** One application's placement. */
export interface PlacementApp {
  readonly name: string;
  readonly mode: Mode;
  /** False until the initial distribution ran. */
  readonly activated: boolean;
  readonly rs: readonly PlacementRs[];
}

/** A move of one RS's ACTIVE role. */
export interface MoveRef {
  readonly app: string;
  readonly rs: number;
  readonly fromCopyId: string;
  readonly toCopyId: string;
}

/** A move that was started at `atMs` (for the per-RS cooldown). */
export interface RecentMove extends MoveRef {
  readonly atMs: number;
}

/** Everything {@link planLoad} looks at. */
export interface LoadPlanInput {
  /** The controller leader is in its passive phase (R-HM-3): no moves. */
  readonly passive: boolean;
  /** A failover is in progress (the shell saw a copy fail recently): no moves. */
  readonly failoverInProgress: boolean;
  readonly apps: readonly PlacementApp[];
  readonly copies: readonly PlacementCopy[];
  readonly copyLoads: readonly CopyLoadSeries[];
  readonly rsLoads: readonly RsLoadSeries[];
  /** Moves started recently (done or not); an RS among them is in cooldown. */
  readonly recentMoves: readonly RecentMove[];
  /** Moves under way now: modelled as done, their RS locked, counted against the cap. */
  readonly inFlight: readonly MoveRef[];
}

// ---- options -----------------------------------------------------------------------------------

/** Tuning of {@link planLoad}. Utilization is load ÷ capacity (1 = the copy's capacity). */
export interface LoadPlanOptions {
  /** Messages per second one copy can handle (utilization 1). @default 1000 */
  readonly capacityMsgsPerS?: number;
  /** CPU percent (of one core) at which a copy is saturated; 0 = CPU not considered. @default 85 */
  readonly cpuSaturationPercent?: number;
  /** Event-loop lag at which a copy is saturated; 0 = not considered. @default 250 */
  readonly eventLoopLagSaturationMs?: number;
  /** Queue depth at which a copy is saturated; 0 = not considered. @default 1000 */
  readonly queueDepthSaturation?: number;
  /**
   * Pressure (CPU, lag, queue as a fraction of their saturation) below this does not lower a
   * copy's capacity estimate: at low load the ratio is noise. @default 0.5
   */
  readonly pressureFloor?: number;
  /** Target band: a copy above `mean × (1 + bandFraction)` is over-loaded. @default 0.25 */
  readonly bandFraction?: number;
  /**
   * Hysteresis: a copy is over-loaded only when it is also this much (utilization) above the
   * app's mean, so small absolute differences never move anything. @default 0.1
   */
  readonly minImbalance?: number;
  /** A move must lower the pair's peak utilization by at least this. @default 0.02 */
  readonly minGain?: number;
  /** Utilization at which a copy counts as saturated. @default 0.85 */
  readonly saturationLevel?: number;
  /** A move never takes a target's projected utilization above `saturationLevel − saturationMargin`. @default 0.1 */
  readonly saturationMargin?: number;
  /** Anticipation look-ahead: act when a copy is projected to saturate within this. @default 10000 */
  readonly horizonMs?: number;
  /** Samples of this recent window are fitted for levels and trends. @default 10000 */
  readonly trendWindowMs?: number;
  /** Samples needed in the window for a fitted level and trend (fewer: last sample, no trend). @default 4 */
  readonly minTrendSamples?: number;
  /** A projected rise below this (utilization over the horizon) is noise, not a trend. @default 0.05 */
  readonly minTrendRise?: number;
  /**
   * A trend must be sustained: the samples must cover at least three quarters of the window, and,
   * fitted separately, both halves must move the same way at least this fraction of the whole
   * window's slope. A step (load that just started or stopped) is flat on at least one side, so
   * it is a new level, not a trend to project. @default 0.5
   */
  readonly trendConsistency?: number;
  /** A copy whose last report is older than this has no load data (neither source nor target). @default 5000 */
  readonly staleAfterMs?: number;
  /** Moves under way at once (in flight plus new). @default 2 */
  readonly maxConcurrentMoves?: number;
  /** An RS moved less than this ago is not moved again. @default 30000 */
  readonly rsCooldownMs?: number;
  /** A move that needs a state transfer must leave this much less excess to beat a promotion. @default 0.05 */
  readonly transferPenalty?: number;
}

/** Options with every default filled in. */
export type CompiledLoadPlanOptions = { readonly [K in keyof LoadPlanOptions]-?: number };

/** Defaults of {@link LoadPlanOptions}. */
export const LOAD_PLAN_DEFAULTS: CompiledLoadPlanOptions = Object.freeze({
  capacityMsgsPerS: 1000,
  cpuSaturationPercent: 85,
  eventLoopLagSaturationMs: 250,
  queueDepthSaturation: 1000,
  pressureFloor: 0.5,
  bandFraction: 0.25,
  minImbalance: 0.1,
  minGain: 0.02,
  saturationLevel: 0.85,
  saturationMargin: 0.1,
  horizonMs: 10_000,
  trendWindowMs: 10_000,
  minTrendSamples: 4,
  minTrendRise: 0.05,
  trendConsistency: 0.5,
  staleAfterMs: 5000,
  maxConcurrentMoves: 2,
  rsCooldownMs: 30_000,
  transferPenalty: 0.05,
});

/** [min, max] of each option; integers where `int`. */
const OPTION_BOUNDS: { readonly [K in keyof LoadPlanOptions]-?: readonly [number, number, 'int' | 'num'] } = {
  capacityMsgsPerS: [0.001, 1e9, 'num'],
  cpuSaturationPercent: [0, 100_000, 'num'],
  eventLoopLagSaturationMs: [0, 3_600_000, 'num'],
  queueDepthSaturation: [0, 1e9, 'num'],
  pressureFloor: [0.01, 10, 'num'],
  bandFraction: [0, 10, 'num'],
  minImbalance: [0, 10, 'num'],
  minGain: [0.0001, 10, 'num'],
  saturationLevel: [0.01, 10, 'num'],
  saturationMargin: [0, 10, 'num'],
  horizonMs: [0, 3_600_000, 'int'],
  trendWindowMs: [100, 3_600_000, 'int'],
  minTrendSamples: [2, 100_000, 'int'],
  minTrendRise: [0, 10, 'num'],
  trendConsistency: [0, 1, 'num'],
  staleAfterMs: [1, 3_600_000, 'int'],
  maxConcurrentMoves: [1, 10_000, 'int'],
  rsCooldownMs: [0, 86_400_000, 'int'],
  transferPenalty: [0, 10, 'num'],
};

const OPTION_KEYS = Object.keys(OPTION_BOUNDS) as (keyof LoadPlanOptions)[];

/**
 * Fills defaults and checks every option.
 *
 * @throws RangeError naming the option, its value and the allowed range (or an unknown option).
 */
export function compileLoadPlanOptions(o: LoadPlanOptions = {}): CompiledLoadPlanOptions {
  const rec = o as Record<string, unknown>;
  for (const k of Object.keys(rec)) {
    if (!(OPTION_KEYS as string[]).includes(k)) throw new RangeError(`LoadPlanOptions.${k}: unknown option; expected one of ${OPTION_KEYS.join(', ')}`);
  }
  const out: Record<string, number> = { ...LOAD_PLAN_DEFAULTS };
  for (const k of OPTION_KEYS) {
    const v = rec[k];
    if (v === undefined) continue;
    const [min, max, kind] = OPTION_BOUNDS[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (kind === 'int' && !Number.isInteger(v))) {
      throw new RangeError(`LoadPlanOptions.${k}: ${String(v)} is out of range; must be ${kind === 'int' ? 'an integer' : 'a number'} in ${min}..${max}`);
    }
    out[k] = v;
  }
  if (out.saturationMargin! >= out.saturationLevel!) {
    throw new RangeError(`LoadPlanOptions.saturationMargin (${out.saturationMargin}) must be below saturationLevel (${out.saturationLevel})`);
  }
  return out as CompiledLoadPlanOptions;
}

// ---- output ------------------------------------------------------------------------------------

/** Why a move is planned. */
export type MoveReason =
  /** The source is over the band around the app's mean. */
  | 'IMBALANCE'
  /** The source is at or above the saturation level now. */
  | 'SATURATED'
  /** The source is projected to reach the saturation level within the horizon (seed 003). */
  | 'ANTICIPATION';

/** One move of a plan. */
export interface PlannedMove extends MoveRef {
  readonly reason: MoveReason;
  /** The target holds a caught-up STANDBY of the RS: the move is only a promotion. */
  readonly promotion: boolean;
  /** The RS's load moved (msg/s, fitted level). */
  readonly msgsPerS: number;
  /** One line for people and logs. */
  readonly detail: string;
}

/** How the planner sees one copy. */
export type CopyVerdict =
  /** Above the band (a source). */
  | 'OVER'
  /** At or above the saturation level (a source). */
  | 'SATURATED'
  /** Projected to saturate within the horizon (a source). */
  | 'RISING'
  /** Inside the band. */
  | 'OK'
  /** Below the band: room for more. */
  | 'UNDER'
  /** No fresh load report from its current incarnation: neither source nor target. */
  | 'NO_DATA'
  /** Not UP (drained, disabled, out of service) or failed: neither source nor target. */
  | 'INELIGIBLE';

/** One copy in a plan (also what `GetLoad` shows). */
export interface CopyLoadView {
  readonly copyId: string;
  readonly app: string;
  readonly incarnation: number;
  readonly status: CopyStatus;
  readonly verdict: CopyVerdict;
  /** RS this copy is ACTIVE for (placement, in-flight moves applied). */
  readonly activeRs: number;
  /** Load by placement: the summed fitted rate of its ACTIVE RS. */
  readonly msgsPerS: number;
  /** Rate the copy itself last measured (all its RS). */
  readonly reportedMsgsPerS: number;
  readonly cpuPercent: number;
  readonly eventLoopLagMs: number;
  readonly queueDepth: number;
  /** Capacity estimate (msg/s). */
  readonly capacityMsgsPerS: number;
  /** Utilization now (before this plan's moves). */
  readonly utilization: number;
  /** Projected utilization `horizonMs` ahead. */
  readonly projected: number;
  /** Utilization once this plan's moves are done. */
  readonly plannedUtilization: number;
  /** Time of the last report (0 = none). */
  readonly lastReportAtMs: number;
  /** Why it moves, receives, or stays. */
  readonly explanation: string;
}

/** One RS in a plan. */
export interface RsLoadView {
  readonly app: string;
  readonly rs: number;
  /** ACTIVE copy (placement, in-flight moves applied); '' when none. */
  readonly active: string;
  /** Fitted rate now. */
  readonly msgsPerS: number;
  /** Trend, msg/s per second. */
  readonly slopePerS: number;
  readonly stateBytes: number;
  readonly lastReportAtMs: number;
  /** The RS is moving now, or moved less than `rsCooldownMs` ago, until this time; 0 = free. */
  readonly lockedUntilMs: number;
}

/** One application in a plan. */
export interface AppLoadView {
  readonly app: string;
  /** Mean utilization of its copies with data. */
  readonly meanUtilization: number;
  /** Upper edge of the band (utilization). */
  readonly upperUtilization: number;
  /** Highest utilization now. */
  readonly maxUtilization: number;
  readonly explanation: string;
}

/** Output of {@link planLoad}. */
export interface LoadPlan {
  readonly atMs: number;
  /** Moves to request now (at most `maxConcurrentMoves − inFlight`). */
  readonly moves: readonly PlannedMove[];
  readonly copies: readonly CopyLoadView[];
  readonly rs: readonly RsLoadView[];
  readonly apps: readonly AppLoadView[];
  /** Set when no move may happen at all (passive controller, failover). */
  readonly blocked?: string;
  /** A few lines for people: what the plan does and why. */
  readonly summary: readonly string[];
}

// ---- fitting -----------------------------------------------------------------------------------

/** A least-squares line through samples: the value now and the slope. */
export interface TrendFit {
  /** Fitted value at `nowMs` (the last sample's value when fewer than the minimum samples). */
  readonly level: number;
  /** Change per second (0 without enough samples). */
  readonly slopePerS: number;
  /** Samples used. */
  readonly n: number;
}

/**
 * Least-squares fit of `value` over time, evaluated at `nowMs`. With fewer than `minSamples`
 * points (or all at one instant) the level is the last value and the slope 0.
 */
export function fitTrend(points: readonly { readonly atMs: number; readonly value: number }[], nowMs: number, minSamples = 2): TrendFit {
  const n = points.length;
  if (n === 0) return { level: 0, slopePerS: 0, n: 0 };
  if (n < Math.max(2, minSamples)) return { level: points[n - 1]!.value, slopePerS: 0, n };
  let sx = 0;
  let sy = 0;
  for (const p of points) {
    sx += (p.atMs - nowMs) / 1000;
    sy += p.value;
  }
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0;
  let sxy = 0;
  for (const p of points) {
    const dx = (p.atMs - nowMs) / 1000 - mx;
    sxx += dx * dx;
    sxy += dx * (p.value - my);
  }
  if (sxx < 1e-12) return { level: my, slopePerS: 0, n };
  const slope = sxy / sxx;
  // Value of the line at x = 0 (now).
  return { level: my - slope * mx, slopePerS: slope, n };
}

// ---- planning ----------------------------------------------------------------------------------

interface RsModel {
  readonly rs: number;
  active: string | null;
  readonly standbys: ReadonlyMap<string, boolean>;
  readonly level: number;
  readonly slopePerS: number;
  readonly stateBytes: number;
  readonly lastReportAtMs: number;
  lockedUntilMs: number;
  lockReason: string;
}

interface CopyModel {
  readonly copyId: string;
  readonly app: string;
  readonly incarnation: number;
  readonly status: CopyStatus;
  readonly eligible: boolean;
  readonly hasData: boolean;
  readonly why: string;
  readonly capacity: number;
  /** Utilization not explained by messages (a busy copy handling nothing). */
  readonly baseline: number;
  readonly reportedMsgsPerS: number;
  readonly cpuPercent: number;
  readonly eventLoopLagMs: number;
  readonly queueDepth: number;
  readonly lastReportAtMs: number;
  /** Placement load, msg/s (mutated as moves are planned). */
  load: number;
  /** Summed RS trend, msg/s per second. */
  slope: number;
  activeRs: number;
  /** Received an RS in this plan: not a source in it. */
  receiving: boolean;
  /** Sent an RS in this plan: not a target in it. */
  sending: boolean;
  readonly sent: string[];
  readonly received: string[];
  /** Why a source got no (more) moves. */
  stuck: string;
}

interface Candidate {
  readonly r: RsModel;
  readonly t: CopyModel;
  readonly promotion: boolean;
  readonly excessAfter: number;
  readonly peak: number;
}

const SATURATION_WEIGHT = 2;

/**
 * Plan RS moves for every application (see the module doc for the model and the rules).
 * Deterministic: the same input, time and options give the same plan.
 *
 * @throws RangeError for invalid options (see {@link compileLoadPlanOptions}).
 */
export function planLoad(input: LoadPlanInput, nowMs: number, options: LoadPlanOptions | CompiledLoadPlanOptions = {}): LoadPlan {
  const o = compileLoadPlanOptions(options);
  const windowStart = nowMs - o.trendWindowMs;
  const horizonS = o.horizonMs / 1000;

  // Load series by key.
  const copySeries = new Map<string, CopyLoadSeries>();
  for (const s of input.copyLoads) {
    const prev = copySeries.get(s.copyId);
    if (!prev || s.incarnation > prev.incarnation) copySeries.set(s.copyId, s);
  }
  const rsSeries = new Map<string, RsLoadSeries>();
  for (const s of input.rsLoads) rsSeries.set(rsKey(s.app, s.rs), s);

  // Locks: running moves, then cooldowns.
  const inFlightByRs = new Map<string, MoveRef>();
  for (const m of input.inFlight) inFlightByRs.set(rsKey(m.app, m.rs), m);
  const cooldown = new Map<string, number>();
  for (const m of input.recentMoves) {
    const until = m.atMs + o.rsCooldownMs;
    const k = rsKey(m.app, m.rs);
    if (until > nowMs && until > (cooldown.get(k) ?? 0)) cooldown.set(k, until);
  }

  // Copies.
  const copies = new Map<string, CopyModel>();
  for (const c of [...input.copies].sort((a, b) => cmp(a.copyId, b.copyId))) copies.set(c.copyId, copyModel(c, copySeries.get(c.copyId), nowMs, windowStart, o));

  // Applications.
  const appModels: { app: PlacementApp; rs: RsModel[]; skip: string }[] = [];
  let unplaced: string | undefined;
  for (const app of [...input.apps].sort((a, b) => cmp(a.name, b.name))) {
    const rsModels: RsModel[] = [];
    for (const p of [...app.rs].sort((a, b) => a.rs - b.rs)) {
      const k = rsKey(app.name, p.rs);
      const fit = fitRs(rsSeries.get(k), nowMs, windowStart, o);
      const flight = inFlightByRs.get(k);
      let active = p.active;
      let lockedUntilMs = cooldown.get(k) ?? 0;
      let lockReason = lockedUntilMs > 0 ? `moved less than ${fmtS(o.rsCooldownMs)} ago (cooldown until +${fmtS(lockedUntilMs - nowMs)})` : '';
      if (flight) {
        // Modelled as done: the plan must not double-count or undo a move under way.
        if (copies.has(flight.toCopyId)) active = flight.toCopyId;
        lockedUntilMs = Math.max(lockedUntilMs, nowMs + o.rsCooldownMs);
        lockReason = `moving now (${flight.fromCopyId} → ${flight.toCopyId})`;
      }
      const standbys = new Map<string, boolean>();
      for (const s of p.standbys) standbys.set(s.copyId, s.caughtUp);
      rsModels.push({ rs: p.rs, active, standbys, level: fit.level, slopePerS: fit.slopePerS, stateBytes: fit.stateBytes, lastReportAtMs: fit.lastAtMs, lockedUntilMs, lockReason });
      if (app.activated && p.active === null && unplaced === undefined) unplaced = `${app.name}/${p.rs} has no ACTIVE copy (failover under way)`;
    }
    for (const r of rsModels) {
      const c = r.active === null ? undefined : copies.get(r.active);
      if (c && c.app === app.name) {
        c.load += r.level;
        c.slope += r.slopePerS;
        c.activeRs++;
      }
    }
    let skip = '';
    if (!app.activated) skip = 'not activated yet (initial distribution pending): nothing to balance';
    else if (app.mode === 'FAULT_TOLERANT') skip = 'FAULT_TOLERANT: one copy holds every RS active by design; not balanced';
    appModels.push({ app, rs: rsModels, skip });
  }

  const blocked = input.passive
    ? 'controller passive (a new leader is completing its first poll, R-HM-3): no moves'
    : input.failoverInProgress
      ? 'failover in progress: no moves until it settles'
      : unplaced !== undefined
        ? `${unplaced}: no moves`
        : undefined;

  const util = (c: CopyModel, load = c.load): number => c.baseline + load / c.capacity;
  const proj = (c: CopyModel, load = c.load, slope = c.slope): number => {
    const u = util(c, load);
    const rise = (slope * horizonS) / c.capacity;
    return rise >= o.minTrendRise && rise > 0 ? u + rise : u;
  };
  // Snapshot before planning (the views show "now" and "after the plan").
  const before = new Map<string, { u: number; p: number }>();
  for (const c of copies.values()) before.set(c.copyId, { u: util(c), p: proj(c) });

  const satTarget = o.saturationLevel - o.saturationMargin;
  const moves: PlannedMove[] = [];
  let budget = Math.max(0, o.maxConcurrentMoves - input.inFlight.length);
  const appViews: AppLoadView[] = [];
  const bands = new Map<string, { mean: number; upper: number }>();

  for (const { app, rs, skip } of appModels) {
    const members = [...copies.values()].filter((c) => c.app === app.name);
    const live = members.filter((c) => c.eligible && c.hasData);
    const us = live.map((c) => util(c));
    const mean = us.length > 0 ? us.reduce((a, b) => a + b, 0) / us.length : 0;
    const upper = Math.max(mean * (1 + o.bandFraction), mean + o.minImbalance);
    bands.set(app.name, { mean, upper });
    const maxU = us.length > 0 ? Math.max(...us) : 0;
    const head = `mean ${fmtU(mean)}, band up to ${fmtU(upper)}, max ${fmtU(maxU)} over ${live.length} copies with data`;
    if (skip) {
      appViews.push({ app: app.name, meanUtilization: mean, upperUtilization: upper, maxUtilization: maxU, explanation: skip });
      continue;
    }
    if (live.length < 2) {
      appViews.push({ app: app.name, meanUtilization: mean, upperUtilization: upper, maxUtilization: maxU, explanation: `${head}: fewer than 2 UP copies with load data, nothing to balance` });
      continue;
    }
    const excess = (c: CopyModel, load = c.load, slope = c.slope): number =>
      Math.max(0, util(c, load) - upper) + SATURATION_WEIGHT * Math.max(0, proj(c, load, slope) - satTarget);
    const reasonOf = (c: CopyModel): MoveReason | undefined => {
      if (util(c) >= o.saturationLevel) return 'SATURATED';
      if (proj(c) >= o.saturationLevel) return 'ANTICIPATION';
      if (util(c) > upper) return 'IMBALANCE';
      return undefined;
    };
    const rsOf = (c: CopyModel): RsModel[] => rs.filter((r) => r.active === c.copyId);
    const planned: string[] = [];
    for (;;) {
      if (blocked !== undefined) break;
      const sources = live
        .filter((c) => !c.receiving && reasonOf(c) !== undefined)
        .sort((a, b) => excess(b) - excess(a) || cmp(a.copyId, b.copyId));
      if (sources.length === 0) break;
      if (budget === 0) {
        for (const s of sources) if (!s.stuck) s.stuck = `waiting: ${o.maxConcurrentMoves} moves under way or planned (maxConcurrentMoves)`;
        break;
      }
      let chosen: { s: CopyModel; reason: MoveReason; c: Candidate } | undefined;
      for (const s of sources) {
        const reason = reasonOf(s)!;
        const { best, why } = bestMove(s, reason, rsOf(s), live, mean, excess, util, proj, satTarget, o, nowMs);
        if (best) {
          chosen = { s, reason, c: best };
          break;
        }
        s.stuck = why;
      }
      if (!chosen) break;
      const { s, reason, c } = chosen;
      const r = c.r;
      const t = c.t;
      const uS = util(s);
      const pS = proj(s);
      r.active = t.copyId;
      r.lockedUntilMs = nowMs + o.rsCooldownMs;
      r.lockReason = `moving in this plan (${s.copyId} → ${t.copyId})`;
      s.load -= r.level;
      s.slope -= r.slopePerS;
      s.activeRs--;
      t.load += r.level;
      t.slope += r.slopePerS;
      t.activeRs++;
      s.sending = true;
      s.stuck = '';
      t.receiving = true;
      s.sent.push(`rs ${r.rs} → ${t.copyId}${c.promotion ? ' (promotion)' : ' (state transfer)'}`);
      t.received.push(`rs ${r.rs} from ${s.copyId}`);
      const why =
        reason === 'IMBALANCE'
          ? `${s.copyId} at ${fmtU(uS)} is over the band (${fmtU(upper)}, mean ${fmtU(mean)})`
          : reason === 'SATURATED'
            ? `${s.copyId} at ${fmtU(uS)} is saturated (≥ ${fmtU(o.saturationLevel)})`
            : `${s.copyId} at ${fmtU(uS)} is projected to reach ${fmtU(pS)} within ${fmtS(o.horizonMs)} (saturation ${fmtU(o.saturationLevel)})`;
      const detail = `${why}; ${app.name}/${r.rs} (${fmtR(r.level)} msg/s${r.slopePerS > 0.005 ? `, rising ${fmtR(r.slopePerS)}/s` : ''}) → ${t.copyId}${c.promotion ? ' (caught-up standby: promotion only)' : ' (state transfer)'}; after: ${s.copyId} ${fmtU(util(s))}, ${t.copyId} ${fmtU(util(t))}`;
      moves.push({ app: app.name, rs: r.rs, fromCopyId: s.copyId, toCopyId: t.copyId, reason, promotion: c.promotion, msgsPerS: r.level, detail });
      planned.push(`${r.rs}:${s.copyId}→${t.copyId}`);
      budget--;
    }
    const expl = blocked !== undefined ? `${head}; ${blocked}` : planned.length > 0 ? `${head}; moves ${planned.join(', ')}` : live.some((c) => reasonOf(c) !== undefined) ? `${head}; sources but no helpful move` : `${head}; every copy inside the band`;
    appViews.push({ app: app.name, meanUtilization: mean, upperUtilization: upper, maxUtilization: maxU, explanation: expl });
  }

  // Views.
  const copyViews: CopyLoadView[] = [];
  for (const c of copies.values()) {
    const b = before.get(c.copyId)!;
    const band = bands.get(c.app);
    let verdict: CopyVerdict;
    let text: string;
    if (!c.eligible) {
      verdict = 'INELIGIBLE';
      text = c.why;
    } else if (!c.hasData) {
      verdict = 'NO_DATA';
      text = c.why;
    } else {
      const mean = band?.mean ?? 0;
      const upper = band?.upper ?? Infinity;
      verdict = b.u >= o.saturationLevel ? 'SATURATED' : b.p >= o.saturationLevel ? 'RISING' : b.u > upper ? 'OVER' : b.u < mean * (1 - o.bandFraction) ? 'UNDER' : 'OK';
      const state = `${fmtU(b.u)} (${fmtR(c.load + sentLoad(c, moves, input))} msg/s of ${fmtR(c.capacity)})${b.p > b.u ? `, projected ${fmtU(b.p)} in ${fmtS(o.horizonMs)}` : ''}`;
      const verdictText: Record<CopyVerdict, string> = {
        SATURATED: `saturated (≥ ${fmtU(o.saturationLevel)})`,
        RISING: `projected to saturate within ${fmtS(o.horizonMs)}`,
        OVER: `over the band (≤ ${fmtU(upper)})`,
        UNDER: `under the band (mean ${fmtU(mean)})`,
        OK: `inside the band (≤ ${fmtU(upper)})`,
        NO_DATA: '',
        INELIGIBLE: '',
      };
      const parts = [`${state}: ${verdictText[verdict]}`];
      if (c.sent.length > 0) parts.push(`moves ${c.sent.join(', ')}`);
      if (c.received.length > 0) parts.push(`receives ${c.received.join(', ')}`);
      if (c.sent.length === 0 && c.stuck) parts.push(`no move: ${c.stuck}`);
      if (blocked !== undefined && (verdict === 'OVER' || verdict === 'SATURATED' || verdict === 'RISING')) parts.push(blocked);
      const skip = appModels.find((a) => a.app.name === c.app)?.skip;
      if (skip && (verdict === 'OVER' || verdict === 'SATURATED' || verdict === 'RISING')) parts.push(`not balanced: ${skip}`);
      text = parts.join('; ');
    }
    copyViews.push({
      copyId: c.copyId,
      app: c.app,
      incarnation: c.incarnation,
      status: c.status,
      verdict,
      activeRs: c.activeRs + c.sent.length - c.received.length,
      msgsPerS: c.load + sentLoad(c, moves, input),
      reportedMsgsPerS: c.reportedMsgsPerS,
      cpuPercent: c.cpuPercent,
      eventLoopLagMs: c.eventLoopLagMs,
      queueDepth: c.queueDepth,
      capacityMsgsPerS: c.capacity,
      utilization: b.u,
      projected: b.p,
      plannedUtilization: util(c),
      lastReportAtMs: c.lastReportAtMs,
      explanation: text,
    });
  }
  const rsViews: RsLoadView[] = [];
  for (const { app, rs } of appModels) {
    for (const r of rs) {
      // Show the placement before this plan's moves (in-flight moves applied).
      const planned = moves.find((m) => m.app === app.name && m.rs === r.rs);
      rsViews.push({
        app: app.name,
        rs: r.rs,
        active: planned ? planned.fromCopyId : (r.active ?? ''),
        msgsPerS: r.level,
        slopePerS: r.slopePerS,
        stateBytes: r.stateBytes,
        lastReportAtMs: r.lastReportAtMs,
        lockedUntilMs: planned ? 0 : r.lockedUntilMs,
      });
    }
  }
  const summary: string[] = [];
  if (blocked !== undefined) summary.push(blocked);
  for (const m of moves) summary.push(`${m.reason}: ${m.detail}`);
  if (blocked === undefined && moves.length === 0) {
    const stuck = copyViews.filter((c) => c.verdict === 'OVER' || c.verdict === 'SATURATED' || c.verdict === 'RISING');
    if (stuck.length > 0) summary.push(`no helpful move for ${stuck.map((c) => `${c.copyId} (${c.verdict})`).join(', ')}: see their explanations`);
    else summary.push(input.inFlight.length > 0 ? `no new move (${input.inFlight.length} under way)` : 'no move needed');
  }
  return { atMs: nowMs, moves, copies: copyViews, rs: rsViews, apps: appViews, ...(blocked !== undefined ? { blocked } : {}), summary };
}

/** Load a copy sent away in this plan (to show "now" values in its view). */
function sentLoad(c: CopyModel, moves: readonly PlannedMove[], _input: LoadPlanInput): number {
  let d = 0;
  for (const m of moves) {
    if (m.fromCopyId === c.copyId) d += m.msgsPerS;
    if (m.toCopyId === c.copyId) d -= m.msgsPerS;
  }
  return d;
}

/** The best move off source `s`, or why there is none. */
function bestMove(
  s: CopyModel,
  reason: MoveReason,
  rsList: readonly RsModel[],
  live: readonly CopyModel[],
  mean: number,
  excess: (c: CopyModel, load?: number, slope?: number) => number,
  util: (c: CopyModel, load?: number) => number,
  proj: (c: CopyModel, load?: number, slope?: number) => number,
  satTarget: number,
  o: CompiledLoadPlanOptions,
  nowMs: number,
): { best?: Candidate; why: string } {
  const byProjection = reason !== 'IMBALANCE';
  const peakOf = (c: CopyModel, load: number, slope: number): number => (byProjection ? proj(c, load, slope) : util(c, load));
  const peakBefore = peakOf(s, s.load, s.slope);
  const counts = { locked: 0, small: 0, catchingUp: 0, saturates: 0, noGain: 0, aboveMean: 0 };
  const lockedRs: string[] = [];
  const cands: Candidate[] = [];
  for (const r of rsList) {
    if (r.lockedUntilMs > nowMs) {
      counts.locked++;
      if (lockedRs.length < 3) lockedRs.push(`rs ${r.rs} ${r.lockReason}`);
      continue;
    }
    if (r.level <= 0 && r.slopePerS <= 0) {
      counts.small++;
      continue;
    }
    const sLoad = s.load - r.level;
    const sSlope = s.slope - r.slopePerS;
    for (const t of live) {
      if (t === s || t.sending) continue;
      // The RS's ACTIVE is `s`; a STANDBY still catching up cannot be promoted (the controller
      // would first have to finish its transfer), so it is not a target either.
      if (r.standbys.get(t.copyId) === false) {
        counts.catchingUp++;
        continue;
      }
      if (reason === 'IMBALANCE' && !(util(t) < mean)) {
        counts.aboveMean++;
        continue;
      }
      const tLoad = t.load + r.level;
      const tSlope = t.slope + r.slopePerS;
      if (proj(t, tLoad, tSlope) > satTarget + 1e-12) {
        counts.saturates++;
        continue;
      }
      const peak = Math.max(peakOf(s, sLoad, sSlope), peakOf(t, tLoad, tSlope));
      if (peak > peakBefore - o.minGain + 1e-12) {
        counts.noGain++;
        continue;
      }
      cands.push({ r, t, promotion: r.standbys.get(t.copyId) === true, excessAfter: excess(s, sLoad, sSlope) + excess(t, tLoad, tSlope), peak });
    }
  }
  if (cands.length === 0) {
    const why: string[] = [];
    if (rsList.length === 0) why.push('it is ACTIVE for no RS');
    if (counts.locked > 0) why.push(`${counts.locked} RS locked (${lockedRs.join('; ')}${counts.locked > lockedRs.length ? '; …' : ''})`);
    if (counts.small > 0) why.push(`${counts.small} RS without load`);
    if (counts.noGain > 0) why.push(`${counts.noGain} move(s) would not lower the peak by ${fmtU(o.minGain)}`);
    if (counts.saturates > 0) why.push(`${counts.saturates} move(s) would take the target above ${fmtU(satTarget)}`);
    if (counts.aboveMean > 0) why.push(`${counts.aboveMean} target(s) not below the mean`);
    if (counts.catchingUp > 0) why.push(`${counts.catchingUp} target(s) still catching up`);
    if (why.length === 0) why.push('no other UP copy with load data');
    return { why: why.join(', ') };
  }
  const bestEx = Math.min(...cands.map((c) => c.excessAfter));
  let pool = cands.filter((c) => c.excessAfter <= bestEx + o.transferPenalty + 1e-12);
  if (pool.some((c) => c.promotion)) pool = pool.filter((c) => c.promotion);
  pool.sort((a, b) => a.peak - b.peak || a.excessAfter - b.excessAfter || a.r.stateBytes - b.r.stateBytes || a.r.rs - b.r.rs || cmp(a.t.copyId, b.t.copyId));
  return { best: pool[0]!, why: '' };
}

function copyModel(c: PlacementCopy, series: CopyLoadSeries | undefined, nowMs: number, windowStart: number, o: CompiledLoadPlanOptions): CopyModel {
  const base = {
    copyId: c.copyId,
    app: c.app,
    incarnation: c.incarnation,
    status: c.status,
    load: 0,
    slope: 0,
    activeRs: 0,
    receiving: false,
    sending: false,
    sent: [] as string[],
    received: [] as string[],
    stuck: '',
  };
  const empty = { capacity: o.capacityMsgsPerS, baseline: 0, reportedMsgsPerS: 0, cpuPercent: 0, eventLoopLagMs: 0, queueDepth: 0, lastReportAtMs: 0 };
  if (c.status !== 'UP' || c.failed) {
    return { ...base, ...empty, eligible: false, hasData: false, why: c.failed ? `status ${c.status}, declared failed: neither source nor target` : `status ${c.status}: neither source nor target` };
  }
  if (!series || series.incarnation !== c.incarnation) {
    const why = series ? `load reports are from incarnation ${series.incarnation}, the controller knows ${c.incarnation}: no data yet` : 'no load report (no load manager link, or not reported yet): neither source nor target';
    return { ...base, ...empty, eligible: true, hasData: false, why };
  }
  const samples = series.samples.filter((x) => x.atMs >= windowStart && x.atMs <= nowMs && finiteSample(x));
  const last = series.samples.length > 0 ? series.samples[series.samples.length - 1]! : undefined;
  const lastAt = last?.atMs ?? 0;
  if (samples.length === 0 || nowMs - lastAt > o.staleAfterMs) {
    return { ...base, ...empty, lastReportAtMs: lastAt, eligible: true, hasData: false, why: lastAt > 0 ? `last load report ${fmtS(nowMs - lastAt)} ago (stale after ${fmtS(o.staleAfterMs)}): neither source nor target` : 'no load report yet: neither source nor target' };
  }
  const fit = (f: (x: CopyLoadSample) => number): number => Math.max(0, fitTrend(samples.map((x) => ({ atMs: x.atMs, value: f(x) })), nowMs, o.minTrendSamples).level);
  const msgs = fit((x) => x.msgsPerS);
  const pressure = fit((x) => pressureOf(x, o));
  let capacity = o.capacityMsgsPerS;
  let baseline = 0;
  if (pressure >= o.pressureFloor) {
    if (msgs >= 1) capacity = Math.min(capacity, msgs / pressure);
    else baseline = pressure;
  }
  const l = samples[samples.length - 1]!;
  return {
    ...base,
    eligible: true,
    hasData: true,
    why: '',
    capacity: Math.max(capacity, 1e-6),
    baseline,
    reportedMsgsPerS: msgs,
    cpuPercent: l.cpuPercent,
    eventLoopLagMs: l.eventLoopLagMs,
    queueDepth: l.queueDepth,
    lastReportAtMs: lastAt,
  };
}

function pressureOf(x: CopyLoadSample, o: CompiledLoadPlanOptions): number {
  let p = 0;
  if (o.cpuSaturationPercent > 0) p = Math.max(p, x.cpuPercent / o.cpuSaturationPercent);
  if (o.eventLoopLagSaturationMs > 0) p = Math.max(p, x.eventLoopLagMs / o.eventLoopLagSaturationMs);
  if (o.queueDepthSaturation > 0) p = Math.max(p, x.queueDepth / o.queueDepthSaturation);
  return p;
}

function fitRs(series: RsLoadSeries | undefined, nowMs: number, windowStart: number, o: CompiledLoadPlanOptions): { level: number; slopePerS: number; stateBytes: number; lastAtMs: number } {
  if (!series || series.samples.length === 0) return { level: 0, slopePerS: 0, stateBytes: 0, lastAtMs: 0 };
  const last = series.samples[series.samples.length - 1]!;
  const pts = series.samples.filter((x) => x.atMs >= windowStart && x.atMs <= nowMs && Number.isFinite(x.msgsPerS) && x.msgsPerS >= 0);
  const stateBytes = Number.isFinite(last.stateBytes) ? Math.max(0, last.stateBytes) : 0;
  if (pts.length === 0) return { level: 0, slopePerS: 0, stateBytes, lastAtMs: last.atMs };
  const t = sustainedTrend(pts.map((x) => ({ atMs: x.atMs, value: x.msgsPerS })), nowMs, o);
  return { level: Math.max(0, t.level), slopePerS: t.slopePerS, stateBytes, lastAtMs: last.atMs };
}

/**
 * The fitted level and slope, where the slope counts only when it is sustained (see
 * `trendConsistency`); otherwise the slope is 0 and the level is the mean of the recent half of
 * the window (after a step, that is the new level).
 */
function sustainedTrend(points: readonly { atMs: number; value: number }[], nowMs: number, o: CompiledLoadPlanOptions): { level: number; slopePerS: number } {
  const f = fitTrend(points, nowMs, o.minTrendSamples);
  if (f.n < o.minTrendSamples || f.n < 4) return { level: f.level, slopePerS: 0 };
  // Split at the middle of the covered time span (not the sample count: reports may bunch).
  const mid = (points[0]!.atMs + points[points.length - 1]!.atMs) / 2;
  const older = points.filter((p) => p.atMs < mid);
  const recent = points.filter((p) => p.atMs >= mid);
  const flat = { level: recent.reduce((a, p) => a + p.value, 0) / Math.max(1, recent.length), slopePerS: 0 };
  if (f.slopePerS === 0 || older.length < 2 || recent.length < 2) return flat;
  // Too little history (a load manager that just started, a copy that just began reporting).
  if (nowMs - points[0]!.atMs < 0.75 * o.trendWindowMs) return flat;
  const a = fitTrend(older, nowMs, 2).slopePerS;
  const b = fitTrend(recent, nowMs, 2).slopePerS;
  const need = o.trendConsistency * Math.abs(f.slopePerS);
  const same = (x: number): boolean => Math.sign(x) === Math.sign(f.slopePerS) && Math.abs(x) >= need;
  return same(a) && same(b) ? { level: f.level, slopePerS: f.slopePerS } : flat;
}

function finiteSample(x: CopyLoadSample): boolean {
  return [x.cpuPercent, x.eventLoopLagMs, x.msgsPerS, x.queueDepth].every((v) => Number.isFinite(v) && v >= 0);
}

function rsKey(app: string, rs: number): string {
  return `${app}\u0000${rs}`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function fmtU(u: number): string {
  return `${(u * 100).toFixed(1)}%`;
}

function fmtR(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

function fmtS(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)}s` : `${Math.round(ms)}ms`;
}
