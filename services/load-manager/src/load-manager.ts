/**
 * The Load Manager (R-LM, DESIGN §1): the gRPC shell around the pure planner in libs/core
 * (`planLoad`).
 *
 * - `ReportLoad`: every copy streams one load report per interval; the shell validates it, stamps
 *   it with its own clock and keeps a bounded history per copy and per RS (history.ts).
 * - Placement: every `placementRefreshMs` the controller leader's `GetStatus` (assignments
 *   included) gives who is ACTIVE / STANDBY where, copy statuses, the passive phase and the moves
 *   under way. A copy going OUT_OF_SERVICE (or restarting) between two reads is a failover: no
 *   moves for `failoverQuietMs`. An RS whose ACTIVE changed without a move of ours (failover,
 *   operator, another load manager) is in cooldown like one we moved.
 * - Every `planIntervalMs` the planner runs; unless `dryRun`, each planned move goes to the
 *   controller's `MoveRs`, which validates it and performs the live migration. Moves under way
 *   are never requested twice and count against the planner's cap.
 * - `GetLoad` / `GetPlan`: the planner's view now (a dry run), for `understudy load` / `plan`.
 */
import * as grpc from '@grpc/grpc-js';
import {
  LoadManagerServiceService,
  LoadVerdict,
  MoveReason as PbMoveReason,
  Role,
  copyStatusFromName,
  copyStatusName,
  modeName,
  type AppLoad,
  type CopyLoad,
  type GetLoadRequest,
  type GetLoadResponse,
  type GetPlanRequest,
  type GetPlanResponse,
  type GetStatusResponse,
  type LoadManagerServiceServer,
  type LoadMove,
  type MoveRecord,
  type ReportLoadRequest,
  type ReportLoadResponse,
  type RsLoadInfo,
} from '@understudy/proto';
import {
  APP_NAME_RE,
  compileLoadPlanOptions,
  planLoad,
  type CompiledLoadPlanOptions,
  type CopyLoadView,
  type CopyVerdict,
  type LoadPlan,
  type LoadPlanInput,
  type LoadPlanOptions,
  type MoveReason,
  type MoveRef,
  type PlacementApp,
  type PlacementCopy,
  type PlannedMove,
  type RecentMove,
} from '@understudy/core';
import { ControllerClient } from '@understudy/adsm';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  UnderstudyError,
  ensureError,
  malformedReason,
  startGrpcServer,
  toServiceError,
  unaryCall,
  unaryHandler,
  withSafeDeserialize,
  type GrpcServer,
  type Logger,
} from '@understudy/runtime';
import { LoadHistory, type LoadReport } from './history';

/** Options of {@link startLoadManager}. */
export interface LoadManagerOptions {
  /** Unique id of this instance (logs, the `reason` of its moves). */
  readonly id: string;
  /** Every controller replica's host:port (the leader is followed). */
  readonly controllerAddresses: readonly string[];
  readonly logger: Logger;
  /** Where the gRPC service listens. @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** Host copies use to reach this instance. @default '127.0.0.1' */
  readonly advertiseHost?: string;
  /** Plan only: never ask the controller for a move. @default false */
  readonly dryRun?: boolean;
  /** Period of planning (and executing) rounds. @default 2000 */
  readonly planIntervalMs?: number;
  /** Period of re-reading the placement from the controller. @default 1000 */
  readonly placementRefreshMs?: number;
  /** Report period asked of the copies. @default 1000 */
  readonly reportIntervalMs?: number;
  /** No moves for this long after a copy failed or restarted. @default 5000 */
  readonly failoverQuietMs?: number;
  /** Deadline of one MoveRs call (a target's catch-up included). @default 30000 */
  readonly moveTimeoutMs?: number;
  /** Load history kept per copy and RS. @default max(60000, 2 × trendWindowMs) */
  readonly retainMs?: number;
  /** Planner tuning (band, hysteresis, anticipation, cap, cooldown …). */
  readonly plan?: LoadPlanOptions;
  /** Copies tracked at most. @default 100000 */
  readonly maxCopies?: number;
  /** RS entries accepted in one report. @default 100000 */
  readonly maxRsPerReport?: number;
}

/** One move this instance asked for. */
export interface MoveRecordView {
  readonly move: PlannedMove;
  readonly startedAtMs: number;
  /** 0 while under way. */
  finishedAtMs: number;
  /** '' while under way; 'ok'; or the refusal / error. */
  outcome: string;
  pauseMs: number;
}

/** A running load manager. */
export interface LoadManagerHandle {
  readonly id: string;
  /** host:port of its gRPC service. */
  readonly address: string;
  /** The planner's view now (undefined before the first placement). */
  plan(): LoadPlan | undefined;
  /** Moves asked for so far (bounded, newest last). */
  moves(): readonly MoveRecordView[];
  /** Copies whose reports are in the history now (id, incarnation, app, last report time). */
  reporting(): { copyId: string; incarnation: number; app: string; lastReportAtMs: number }[];
  /** Stop: streams ended, moves under way abandoned (the controller finishes or drops them). Idempotent. */
  stop(): Promise<void>;
}

/** Start a Load Manager instance (see the module doc). */
export async function startLoadManager(opts: LoadManagerOptions): Promise<LoadManagerHandle> {
  const lm = new LoadManagerNode(opts);
  await lm.start();
  return lm;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Largest value accepted for a rate, CPU percent or lag (beyond: a broken reporter). */
const MAX_METRIC = 1e12;
/** Records of moves kept. */
const MAX_RECORDS = 200;
/** Largest RS id (matches the core's MAX_RS_COUNT). */
const MAX_RS = 1_000_000;

/** A monotonic clock that reads like unix ms (wall-clock jumps must not bend trends). */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** What the load manager knows of the controller's placement. */
export interface Placement {
  readonly atMs: number;
  readonly passive: boolean;
  readonly apps: readonly PlacementApp[];
  readonly copies: readonly PlacementCopy[];
  /** Moves the controller is carrying out (make-before-break targets catching up). */
  readonly pending: readonly MoveRef[];
}

interface StreamState {
  readonly call: grpc.ServerDuplexStream<ReportLoadRequest, ReportLoadResponse>;
  identity: { copyId: string; incarnation: number; app: string } | undefined;
  ended: boolean;
}

const VERDICT_PB: Record<CopyVerdict, LoadVerdict> = {
  OVER: LoadVerdict.LOAD_VERDICT_OVER,
  SATURATED: LoadVerdict.LOAD_VERDICT_SATURATED,
  RISING: LoadVerdict.LOAD_VERDICT_RISING,
  OK: LoadVerdict.LOAD_VERDICT_OK,
  UNDER: LoadVerdict.LOAD_VERDICT_UNDER,
  NO_DATA: LoadVerdict.LOAD_VERDICT_NO_DATA,
  INELIGIBLE: LoadVerdict.LOAD_VERDICT_INELIGIBLE,
};
const REASON_PB: Record<MoveReason, PbMoveReason> = {
  IMBALANCE: PbMoveReason.MOVE_REASON_IMBALANCE,
  SATURATED: PbMoveReason.MOVE_REASON_SATURATED,
  ANTICIPATION: PbMoveReason.MOVE_REASON_ANTICIPATION,
};

class LoadManagerNode implements LoadManagerHandle {
  readonly id: string;
  address = '';
  private readonly log: Logger;
  private readonly o: {
    listenAddress: string;
    advertiseHost: string;
    dryRun: boolean;
    planIntervalMs: number;
    placementRefreshMs: number;
    reportIntervalMs: number;
    failoverQuietMs: number;
    moveTimeoutMs: number;
    maxRsPerReport: number;
  };
  private readonly planOptions: CompiledLoadPlanOptions;
  private readonly ctl: ControllerClient;
  private readonly history: LoadHistory;
  private server: GrpcServer | undefined;
  private readonly streams = new Set<StreamState>();
  private placement: Placement | undefined;
  private placementFetch: Promise<void> | undefined;
  private lastFailoverAtMs = -Infinity;
  /** RS whose ACTIVE changed without a move of ours, with the time it was seen. */
  private observed: RecentMove[] = [];
  private readonly inFlight = new Map<string, PlannedMove>();
  private readonly records: MoveRecordView[] = [];
  private planTimer: NodeJS.Timeout | undefined;
  private placementTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(opts: LoadManagerOptions) {
    if (!ID_RE.test(opts.id)) throw new InvalidArgumentError(`load manager id must match ${ID_RE}, got ${JSON.stringify(opts.id)}`);
    if (opts.controllerAddresses.length === 0) throw new InvalidArgumentError('at least one controller address is required');
    try {
      this.planOptions = compileLoadPlanOptions(opts.plan ?? {});
    } catch (e) {
      throw new InvalidArgumentError(ensureError(e).message);
    }
    const positive = (name: string, v: number | undefined, dflt: number): number => {
      const x = v ?? dflt;
      if (!Number.isSafeInteger(x) || x < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(x)}`);
      return x;
    };
    this.id = opts.id;
    this.log = opts.logger;
    this.o = {
      listenAddress: opts.listenAddress ?? '127.0.0.1:0',
      advertiseHost: opts.advertiseHost ?? '127.0.0.1',
      dryRun: opts.dryRun ?? false,
      planIntervalMs: positive('planIntervalMs', opts.planIntervalMs, 2000),
      placementRefreshMs: positive('placementRefreshMs', opts.placementRefreshMs, 1000),
      reportIntervalMs: positive('reportIntervalMs', opts.reportIntervalMs, 1000),
      failoverQuietMs: positive('failoverQuietMs', opts.failoverQuietMs, 5000),
      moveTimeoutMs: positive('moveTimeoutMs', opts.moveTimeoutMs, 30_000),
      maxRsPerReport: positive('maxRsPerReport', opts.maxRsPerReport, 100_000),
    };
    const retainMs = positive('retainMs', opts.retainMs, Math.max(60_000, 2 * this.planOptions.trendWindowMs));
    this.history = new LoadHistory({ retainMs, maxCopies: positive('maxCopies', opts.maxCopies, 100_000) });
    this.ctl = new ControllerClient({ addresses: opts.controllerAddresses, callTimeoutMs: 5000 });
  }

  async start(): Promise<void> {
    const impl: LoadManagerServiceServer = {
      reportLoad: (call) => this.reportLoad(call),
      getLoad: unaryHandler('GetLoad', this.log, (r: GetLoadRequest) => this.getLoad(r)),
      getPlan: unaryHandler('GetPlan', this.log, (r: GetPlanRequest) => this.getPlan(r)),
    };
    this.server = await startGrpcServer({
      address: this.o.listenAddress,
      services: [{ definition: withSafeDeserialize(LoadManagerServiceService), implementation: impl as never }],
      logger: this.log,
      healthServiceNames: ['understudy.v1.LoadManagerService'],
    });
    this.address = `${this.o.advertiseHost}:${this.server.port}`;
    void this.refreshPlacement();
    this.placementTimer = setInterval(() => void this.refreshPlacement(), this.o.placementRefreshMs);
    this.planTimer = setInterval(() => this.round(), this.o.planIntervalMs);
    this.log.info({ address: this.address, dryRun: this.o.dryRun, plan: this.planOptions, planIntervalMs: this.o.planIntervalMs }, 'load manager started');
  }

  plan(): LoadPlan | undefined {
    const now = nowMs();
    const input = this.input(now);
    return input ? planLoad(input, now, this.planOptions) : undefined;
  }

  moves(): readonly MoveRecordView[] {
    return this.records;
  }

  reporting(): { copyId: string; incarnation: number; app: string; lastReportAtMs: number }[] {
    return this.history.copySeries().map((s) => ({ copyId: s.copyId, incarnation: s.incarnation, app: this.history.appOf(s.copyId) ?? '', lastReportAtMs: s.samples[s.samples.length - 1]?.atMs ?? 0 }));
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.planTimer);
    clearInterval(this.placementTimer);
    for (const s of this.streams) this.endStream(s, new UnavailableError('load manager shutting down; report to another instance'));
    this.streams.clear();
    await this.server?.shutdown(500);
    this.ctl.close();
  }

  // ---- ReportLoad ---------------------------------------------------------------------------

  private reportLoad(call: grpc.ServerDuplexStream<ReportLoadRequest, ReportLoadResponse>): void {
    const s: StreamState = { call, identity: undefined, ended: false };
    if (this.stopping) {
      this.endStream(s, new UnavailableError('load manager shutting down; report to another instance'));
      return;
    }
    this.streams.add(s);
    call.on('data', (m: ReportLoadRequest) => {
      if (s.ended) return;
      try {
        this.onReport(s, m);
      } catch (e) {
        const err = ensureError(e);
        if (err instanceof UnderstudyError) {
          this.log.warn({ copy: s.identity?.copyId ?? (typeof m?.copyId === 'string' ? m.copyId.slice(0, 128) : undefined), code: grpc.status[err.code], why: err.message }, 'load report refused; stream ended');
          this.endStream(s, err);
        } else {
          this.log.error({ err, copy: s.identity?.copyId }, 'load report handling failed');
          this.endStream(s, new UnavailableError('internal error handling the load report; report again'));
        }
      }
    });
    const gone = (): void => {
      if (s.ended) return;
      s.ended = true;
      this.streams.delete(s);
      if (s.identity && !this.stopping) this.log.info({ copy: s.identity.copyId, incarnation: s.identity.incarnation }, 'load stream closed');
    };
    call.on('cancelled', gone);
    call.on('error', gone);
    call.on('end', () => {
      // The copy half-closed: answer by closing our side too.
      gone();
      try {
        call.end();
      } catch {
        // already closed
      }
    });
    call.on('close', gone);
  }

  private onReport(s: StreamState, m: ReportLoadRequest): void {
    const bad = malformedReason(m);
    if (bad !== undefined) throw new InvalidArgumentError(`malformed load report: ${bad}`);
    const r = validateReport(m, this.o.maxRsPerReport);
    if (s.identity === undefined) {
      s.identity = { copyId: r.copyId, incarnation: r.incarnation, app: r.app };
      this.log.info({ copy: r.copyId, incarnation: r.incarnation, app: r.app }, 'copy reporting load');
    } else if (s.identity.copyId !== r.copyId || s.identity.incarnation !== r.incarnation || s.identity.app !== r.app) {
      const was = s.identity;
      throw new FailedPreconditionError(
        `this stream reports for copy ${was.copyId} incarnation ${was.incarnation} app ${was.app}; got copy ${r.copyId} incarnation ${r.incarnation} app ${r.app} (open a new stream)`,
      );
    }
    const refused = this.history.record(r, nowMs());
    if (refused) {
      if (refused.code === 'FULL') throw new ResourceExhaustedError(refused.message);
      throw new FailedPreconditionError(refused.message);
    }
    this.write(s, { ackedSeq: m.seq, loadManagerId: this.id, reportIntervalMs: this.o.reportIntervalMs });
  }

  private write(s: StreamState, m: ReportLoadResponse): void {
    if (s.ended || s.call.writableEnded || s.call.destroyed) return;
    try {
      s.call.write(m);
    } catch (e) {
      this.log.debug({ err: ensureError(e).message }, 'load ack write failed');
    }
  }

  private endStream(s: StreamState, err: UnderstudyError): void {
    if (s.ended) return;
    s.ended = true;
    this.streams.delete(s);
    try {
      s.call.emit('error', toServiceError(err));
    } catch (e) {
      this.log.debug({ err: ensureError(e).message }, 'could not end a load stream');
    }
  }

  // ---- placement ----------------------------------------------------------------------------

  private refreshPlacement(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    this.placementFetch ??= this.ctl
      .withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: true }, { deadlineMs: 2000 }), 3000)
      .then(
        (res) => this.setPlacement(placementOf(res, nowMs())),
        (e: unknown) => this.log.warn({ err: ensureError(e).message }, 'could not read the placement from the controller; no moves until it answers'),
      )
      .finally(() => {
        this.placementFetch = undefined;
      });
    return this.placementFetch;
  }

  private setPlacement(next: Placement): void {
    const prev = this.placement;
    this.placement = next;
    if (!prev) return;
    const before = new Map(prev.copies.map((c) => [c.copyId, c]));
    for (const c of next.copies) {
      const p = before.get(c.copyId);
      if (!p) continue;
      if ((c.status === 'OUT_OF_SERVICE' && p.status !== 'OUT_OF_SERVICE') || c.incarnation !== p.incarnation) {
        this.lastFailoverAtMs = next.atMs;
        this.log.info({ copy: c.copyId, status: c.status, incarnation: c.incarnation, was: { status: p.status, incarnation: p.incarnation } }, `copy failed or restarted: no moves for ${this.o.failoverQuietMs} ms`);
      }
    }
    // RS whose ACTIVE changed without a move of ours: cooldown as if moved.
    const prevActive = new Map<string, string | null>();
    for (const a of prev.apps) for (const r of a.rs) prevActive.set(`${a.name}/${r.rs}`, r.active);
    const ours = new Set(this.records.filter((x) => x.startedAtMs > next.atMs - this.planOptions.rsCooldownMs).map((x) => `${x.move.app}/${x.move.rs}`));
    for (const a of next.apps) {
      for (const r of a.rs) {
        const k = `${a.name}/${r.rs}`;
        const was = prevActive.get(k);
        if (was === undefined || was === r.active || r.active === null || was === null || ours.has(k)) continue;
        this.observed.push({ app: a.name, rs: r.rs, fromCopyId: was, toCopyId: r.active, atMs: next.atMs });
      }
    }
    this.observed = this.observed.filter((m) => m.atMs > next.atMs - this.planOptions.rsCooldownMs);
  }

  // ---- planning -----------------------------------------------------------------------------

  /** The planner's input now; undefined without a fresh placement. */
  private input(now: number): LoadPlanInput | undefined {
    const p = this.placement;
    if (!p || now - p.atMs > 3 * this.o.placementRefreshMs + 2000) return undefined;
    const inFlight = new Map<string, MoveRef>();
    for (const m of p.pending) inFlight.set(`${m.app}/${m.rs}`, m);
    for (const m of this.inFlight.values()) inFlight.set(`${m.app}/${m.rs}`, m);
    const recentMoves: RecentMove[] = [
      ...this.records.filter((r) => r.startedAtMs > now - this.planOptions.rsCooldownMs).map((r) => ({ ...r.move, atMs: r.startedAtMs })),
      ...this.observed,
    ];
    return {
      passive: p.passive,
      failoverInProgress: now - this.lastFailoverAtMs < this.o.failoverQuietMs,
      apps: p.apps,
      copies: p.copies,
      copyLoads: this.history.copySeries(),
      rsLoads: this.history.rsSeries(),
      recentMoves,
      inFlight: [...inFlight.values()],
    };
  }

  private round(): void {
    if (this.stopping) return;
    const now = nowMs();
    this.history.prune(now);
    let plan: LoadPlan | undefined;
    try {
      plan = this.plan();
    } catch (e) {
      this.log.error({ err: ensureError(e) }, 'planning failed');
      return;
    }
    if (!plan) return;
    for (const m of plan.moves) {
      this.log.info(
        { app: m.app, rs: m.rs, from: m.fromCopyId, to: m.toCopyId, reason: m.reason, promotion: m.promotion, msgsPerS: round2(m.msgsPerS), dryRun: this.o.dryRun },
        `planned move: ${m.detail}`,
      );
      if (!this.o.dryRun) void this.execute(m);
    }
  }

  private async execute(m: PlannedMove): Promise<void> {
    const key = `${m.app}/${m.rs}`;
    if (this.inFlight.has(key)) return;
    this.inFlight.set(key, m);
    const rec: MoveRecordView = { move: m, startedAtMs: nowMs(), finishedAtMs: 0, outcome: '', pauseMs: 0 };
    this.records.push(rec);
    if (this.records.length > MAX_RECORDS) this.records.splice(0, this.records.length - MAX_RECORDS);
    const log = this.log.child({ app: m.app, rs: m.rs, from: m.fromCopyId, to: m.toCopyId, reason: m.reason });
    const reason = `load-manager ${this.id}: ${m.reason}${m.promotion ? ' (promotion)' : ''}`;
    try {
      const res = await this.ctl.withLeader(async (c) => {
        try {
          return await unaryCall(c.moveRs.bind(c), { app: m.app, rs: m.rs, toCopyId: m.toCopyId, reason }, { deadlineMs: this.o.moveTimeoutMs });
        } catch (e) {
          // Not retried: the controller may be carrying it out (GetStatus shows it pending).
          if (ensureError(e) instanceof DeadlineExceededError) return undefined;
          throw e;
        }
      }, this.o.moveTimeoutMs);
      if (res === undefined) {
        rec.outcome = `no answer within ${this.o.moveTimeoutMs} ms; the controller may still complete it`;
        log.warn(rec.outcome);
      } else {
        rec.outcome = 'ok';
        rec.pauseMs = res.pauseMs;
        log.info({ epoch: res.epoch, pauseMs: round2(res.pauseMs), totalMs: round2(res.totalMs), paused: res.paused }, 'move done');
      }
    } catch (e) {
      const err = ensureError(e);
      const code = err instanceof UnderstudyError ? grpc.status[err.code] : 'ERROR';
      rec.outcome = `${code}: ${err.message}`;
      log.warn({ code, why: err.message }, 'move refused or failed');
    } finally {
      rec.finishedAtMs = nowMs();
      this.inFlight.delete(key);
      void this.refreshPlacement();
    }
  }

  // ---- GetLoad / GetPlan --------------------------------------------------------------------

  private planFor(app: string): LoadPlan {
    if (app !== '' && !APP_NAME_RE.test(app)) throw new InvalidArgumentError(`app must match ${APP_NAME_RE}, got ${JSON.stringify(app.slice(0, 100))}`);
    const plan = this.plan();
    if (!plan) throw new UnavailableError('no placement from the controller yet (or it stopped answering); try again shortly');
    if (app !== '' && !this.placement!.apps.some((a) => a.name === app)) throw new NotFoundError(`application ${app} is not declared at the controller`);
    return plan;
  }

  private getLoad(r: GetLoadRequest): GetLoadResponse {
    const plan = this.planFor(r.app);
    const keep = (a: string): boolean => r.app === '' || a === r.app;
    return {
      loadManagerId: this.id,
      atUnixMs: Math.round(plan.atMs),
      copies: plan.copies.filter((c) => keep(c.app)).map(copyToPb),
      rs: plan.rs.filter((x) => keep(x.app)).map(
        (x): RsLoadInfo => ({
          app: x.app,
          rs: x.rs,
          activeCopyId: x.active,
          msgsPerS: x.msgsPerS,
          slopePerS: x.slopePerS,
          stateBytes: Math.round(x.stateBytes),
          lastReportUnixMs: Math.round(x.lastReportAtMs),
          lockedUntilUnixMs: Math.round(x.lockedUntilMs),
        }),
      ),
      apps: plan.apps.filter((a) => keep(a.app)).map(appToPb),
      placementUnixMs: Math.round(this.placement?.atMs ?? 0),
    };
  }

  private getPlan(r: GetPlanRequest): GetPlanResponse {
    const plan = this.planFor(r.app);
    const keep = (a: string): boolean => r.app === '' || a === r.app;
    return {
      loadManagerId: this.id,
      atUnixMs: Math.round(plan.atMs),
      dryRun: this.o.dryRun,
      blocked: plan.blocked ?? '',
      moves: plan.moves.filter((m) => keep(m.app)).map(moveToPb),
      copies: plan.copies.filter((c) => keep(c.app)).map(copyToPb),
      apps: plan.apps.filter((a) => keep(a.app)).map(appToPb),
      summary: [...plan.summary],
      recentMoves: this.records.filter((x) => keep(x.move.app)).slice(-50).map(
        (x): MoveRecord => ({
          move: moveToPb(x.move),
          startedUnixMs: Math.round(x.startedAtMs),
          finishedUnixMs: Math.round(x.finishedAtMs),
          outcome: x.outcome,
          pauseMs: x.pauseMs,
        }),
      ),
    };
  }
}

// ---------------------------------------------------------------------------------------------

/** Checks one wire report; INVALID_ARGUMENT naming the field otherwise. */
export function validateReport(m: ReportLoadRequest, maxRs: number): LoadReport {
  if (!ID_RE.test(m.copyId)) throw new InvalidArgumentError(`copy_id must match ${ID_RE}, got ${JSON.stringify(String(m.copyId).slice(0, 140))}`);
  if (!Number.isSafeInteger(m.incarnation) || m.incarnation < 1) throw new InvalidArgumentError(`incarnation must be a positive integer (copy ${m.copyId}), got ${m.incarnation}`);
  if (!APP_NAME_RE.test(m.app)) throw new InvalidArgumentError(`app must match ${APP_NAME_RE} (copy ${m.copyId}), got ${JSON.stringify(String(m.app).slice(0, 100))}`);
  const metric = (name: string, v: number): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_METRIC) throw new InvalidArgumentError(`${name} must be a finite number in 0..${MAX_METRIC} (copy ${m.copyId}), got ${v}`);
    return v;
  };
  if (m.rs.length > maxRs) throw new InvalidArgumentError(`a report carries at most ${maxRs} RS entries (copy ${m.copyId}), got ${m.rs.length}`);
  const seen = new Set<number>();
  const rs = m.rs.map((x, i) => {
    if (!x || !Number.isInteger(x.rs) || x.rs < 0 || x.rs >= MAX_RS) throw new InvalidArgumentError(`rs[${i}].rs must be an RS id in 0..${MAX_RS - 1} (copy ${m.copyId})`);
    if (seen.has(x.rs)) throw new InvalidArgumentError(`rs[${i}]: RS ${x.rs} is listed twice (copy ${m.copyId})`);
    seen.add(x.rs);
    return { rs: x.rs, msgsPerS: metric(`rs[${i}].msgs_per_s`, x.msgsPerS), stateBytes: metric(`rs[${i}].state_bytes`, x.stateBytes) };
  });
  return {
    copyId: m.copyId,
    incarnation: m.incarnation,
    app: m.app,
    cpuPercent: metric('cpu_percent', m.cpuPercent),
    eventLoopLagMs: metric('event_loop_lag_ms', m.eventLoopLagMs),
    msgsPerS: metric('msgs_per_s', m.msgsPerS),
    queueDepth: metric('queue_depth', m.queueDepth),
    rs,
  };
}

/** The controller's status as the planner's placement. */
export function placementOf(res: GetStatusResponse, atMs: number): Placement {
  const apps: PlacementApp[] = [];
  for (const a of res.apps) {
    const spec = a.spec;
    const mode = spec ? modeName(spec.mode) : undefined;
    if (!spec || !mode) continue;
    const rs = Array.from({ length: spec.rsCount }, (_, i) => ({ rs: i, active: null as string | null, standbys: [] as { copyId: string; caughtUp: boolean }[] }));
    for (const x of res.assignments) {
      if (x.app !== spec.name || x.rs >= spec.rsCount) continue;
      const slot = rs[x.rs]!;
      for (const m of x.members) {
        if (m.role === Role.ROLE_ACTIVE) slot.active = m.copyId;
        else if (m.role === Role.ROLE_STANDBY) slot.standbys.push({ copyId: m.copyId, caughtUp: !m.catchingUp });
      }
    }
    apps.push({ name: spec.name, mode, activated: a.activated, rs });
  }
  const copies: PlacementCopy[] = [];
  for (const c of res.copies) {
    const status = copyStatusName(c.status);
    if (!status) continue;
    copies.push({ copyId: c.copyId, app: c.app, status, incarnation: c.incarnation });
  }
  const pending: MoveRef[] = res.moves.map((m) => ({
    app: m.app,
    rs: m.rs,
    fromCopyId: m.fromCopyId,
    toCopyId: m.toCopyId,
  }));
  return { atMs, passive: res.passive, apps, copies, pending };
}

function copyToPb(c: CopyLoadView): CopyLoad {
  return {
    copyId: c.copyId,
    app: c.app,
    incarnation: c.incarnation,
    status: copyStatusFromName(c.status),
    verdict: VERDICT_PB[c.verdict],
    activeRs: c.activeRs,
    msgsPerS: c.msgsPerS,
    reportedMsgsPerS: c.reportedMsgsPerS,
    cpuPercent: c.cpuPercent,
    eventLoopLagMs: c.eventLoopLagMs,
    queueDepth: Math.round(c.queueDepth),
    capacityMsgsPerS: c.capacityMsgsPerS,
    utilization: c.utilization,
    projected: c.projected,
    plannedUtilization: c.plannedUtilization,
    lastReportUnixMs: Math.round(c.lastReportAtMs),
    explanation: c.explanation,
  };
}

function appToPb(a: LoadPlan['apps'][number]): AppLoad {
  return { app: a.app, meanUtilization: a.meanUtilization, upperUtilization: a.upperUtilization, maxUtilization: a.maxUtilization, explanation: a.explanation };
}

function moveToPb(m: PlannedMove): LoadMove {
  return { app: m.app, rs: m.rs, fromCopyId: m.fromCopyId, toCopyId: m.toCopyId, reason: REASON_PB[m.reason], promotion: m.promotion, msgsPerS: m.msgsPerS, detail: m.detail };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
