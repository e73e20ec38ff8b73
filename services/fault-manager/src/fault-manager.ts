/**
 * The Fault Manager (R-FM, DESIGN §7): the gRPC shell around the pure detector in libs/core.
 *
 * - `Attach`: a copy's watch stream (hello, then heartbeats and probe results). The shell looks
 *   up the application's DetectionPolicy from the controller (cached, refreshed), answers with
 *   `settings`, turns stream messages into detector events, sends progress probes when the
 *   detector says they are due, and feeds it a Sweep at its next deadline (`nextDeadline`: a
 *   hang is declared at its deadline, not up to a sweep period later) and one per
 *   `sweepIntervalMs` as a backstop. A broken stream is a CRASH (unless this instance is
 *   shutting down).
 * - Every detector report goes to the controller's `ReportFault` (reporter = this id), inside a
 *   `fault.detect` span, retried until acknowledged or `reportTimeoutMs` (reports are idempotent
 *   per copy + incarnation, so retries and several fault managers are safe).
 * - `ReportUnreachable` (R-DFM-5): a sender cannot reach a copy; this instance calls the copy's
 *   `GetCopyInfo` itself: it answers as the same incarnation → LINK (re-route, no kill); it does
 *   not → CRASH (unknown is failed, R-HM-4).
 * - `ListWatched`: what this instance watches.
 */
import * as grpc from '@grpc/grpc-js';
import { context, trace, SpanStatusCode, type Span } from '@opentelemetry/api';
import {
  AdsmServiceClient,
  FaultKind,
  FaultManagerServiceService,
  FaultOutcome,
  type AttachRequest,
  type AttachResponse,
  type FaultManagerServiceServer,
  type Health,
  type ListWatchedRequest,
  type ListWatchedResponse,
  type ReportFaultRequest,
  type ReportUnreachableRequest,
  type ReportUnreachableResponse,
  type WatchedCopy,
} from '@understudy/proto';
import {
  DETECTION_DEFAULTS,
  compileDetectionPolicy,
  createDetector,
  detect,
  validateDetectionPolicy,
  watchedCopies,
  watchedCopy,
  type CompiledDetectionPolicy,
  type DetectorEvent,
  type DetectorRejection,
  type DetectorState,
  type DetectorStep,
  type FaultReport,
  type HealthSample,
  type WatchedCopyView,
  nextDeadline,
} from '@understudy/core';
import { ControllerClient } from '@understudy/adsm';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  clientChannelOptions,
  ensureError,
  insecureCredentials,
  malformedReason,
  startGrpcServer,
  toServiceError,
  unaryCall,
  unaryHandler,
  withSafeDeserialize,
  UnderstudyError,
  type GrpcServer,
  type Logger,
} from '@understudy/runtime';

/** Options of {@link startFaultManager}. */
export interface FaultManagerOptions {
  /** Unique id of this instance; the `reporter` of its fault reports. */
  readonly id: string;
  /** Every controller replica's host:port (the leader is followed). */
  readonly controllerAddresses: readonly string[];
  readonly logger: Logger;
  /** Where the gRPC service listens. @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** Host copies use to reach this instance. @default '127.0.0.1' */
  readonly advertiseHost?: string;
  /** Period of re-reading application policies from the controller. @default 2000 */
  readonly policyRefreshMs?: number;
  /** Copies of one host lost within this window make a HOST fault. @default 1000 */
  readonly hostFaultWindowMs?: number;
  /** Period of the backstop sweep (a Sweep also runs at the detector's next deadline). @default 10 */
  readonly sweepIntervalMs?: number;
  /** How long a fault report is retried before it is given up (and logged). @default 10000 */
  readonly reportTimeoutMs?: number;
  /** Deadline of the GetCopyInfo check behind ReportUnreachable. @default 300 */
  readonly unreachableCheckTimeoutMs?: number;
  /** Copies one instance watches at most. @default 100000 */
  readonly maxWatched?: number;
}

/** A running fault manager. */
export interface FaultManagerHandle {
  readonly id: string;
  /** host:port of its gRPC service. */
  readonly address: string;
  /** What the detector watches now. */
  watched(): WatchedCopyView[];
  /** Stop: streams closed without reports, in-flight reports given a short grace. Idempotent. */
  stop(): Promise<void>;
}

/** Start a Fault Manager instance (see the module doc). */
export async function startFaultManager(opts: FaultManagerOptions): Promise<FaultManagerHandle> {
  const fm = new FaultManagerNode(opts);
  await fm.start();
  return fm;
}

const COPY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ADDRESS_RE = /^[A-Za-z0-9.\-:[\]]+:\d{1,5}$/;
/** Fault reports waiting for a sender; beyond this the oldest are dropped (and logged). */
const MAX_QUEUED_REPORTS = 100_000;
/** Reports sent to the controller at the same time. */
const REPORT_CONCURRENCY = 32;
/** Cached copy clients for ReportUnreachable checks. */
const MAX_COPY_CLIENTS = 1000;
/** How long a first Attach of an application waits for its policy before using defaults. */
const POLICY_FETCH_TIMEOUT_MS = 1000;

/** A monotonic clock that reads like unix ms (wall-clock jumps must not fake hangs). */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

interface StreamState {
  readonly call: grpc.ServerDuplexStream<AttachRequest, AttachResponse>;
  readonly peer: string;
  /** Set once the hello was accepted. */
  copy: { copyId: string; incarnation: number; app: string; host: string; address: string } | undefined;
  /** Messages are handled one after the other (the hello may wait for a policy). */
  chain: Promise<void>;
  /** The peer's side is gone (cancelled, errored, half-closed). */
  gone: boolean;
  /** This instance ended the stream (rejection, replacement, shutdown): never a crash. */
  ended: boolean;
}

interface PolicyEntry {
  policy: CompiledDetectionPolicy;
  /** The controller declared the app (false: defaults in use, retried on refresh). */
  known: boolean;
  fetch: Promise<void> | undefined;
}

/** One fault report on its way to the controller. */
interface Outgoing {
  readonly kind: FaultKind;
  readonly kindName: string;
  readonly copies: readonly { readonly copyId: string; readonly incarnation: number; readonly app?: string }[];
  readonly host: string;
  readonly detail: string;
  readonly fromCopyId: string;
  /** Detection latency (ms) for the span. */
  readonly latencyMs: number;
}

const KIND_OF: Record<FaultReport['kind'], FaultKind> = {
  CRASH: FaultKind.FAULT_KIND_CRASH,
  HANG: FaultKind.FAULT_KIND_HANG,
  UNHEALTHY: FaultKind.FAULT_KIND_UNHEALTHY,
  PROBE_TIMEOUT: FaultKind.FAULT_KIND_PROBE_TIMEOUT,
  HOST: FaultKind.FAULT_KIND_HOST,
};

class FaultManagerNode implements FaultManagerHandle {
  readonly id: string;
  address = '';
  private readonly log: Logger;
  private readonly listenAddress: string;
  private readonly advertiseHost: string;
  private readonly policyRefreshMs: number;
  private readonly sweepIntervalMs: number;
  private readonly reportTimeoutMs: number;
  private readonly checkTimeoutMs: number;
  private readonly ctl: ControllerClient;
  private readonly det: DetectorState;
  private readonly tracer = trace.getTracer('understudy-fault-manager');
  private server: GrpcServer | undefined;
  /** The live stream of each watched copy id. */
  private readonly streams = new Map<string, StreamState>();
  private readonly policies = new Map<string, PolicyEntry>();
  private readonly copyClients = new Map<string, AdsmServiceClient>();
  private readonly queue: Outgoing[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private nextProbeId = 1;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** One-shot Sweep at the detector's next deadline, and when it fires. */
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineAtMs = Infinity;
  private refreshTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(opts: FaultManagerOptions) {
    if (!COPY_ID_RE.test(opts.id)) throw new InvalidArgumentError(`fault manager id must match ${COPY_ID_RE}, got ${JSON.stringify(opts.id)}`);
    if (opts.controllerAddresses.length === 0) throw new InvalidArgumentError('at least one controller address is required');
    this.id = opts.id;
    this.log = opts.logger;
    this.listenAddress = opts.listenAddress ?? '127.0.0.1:0';
    this.advertiseHost = opts.advertiseHost ?? '127.0.0.1';
    this.policyRefreshMs = opts.policyRefreshMs ?? 2000;
    this.sweepIntervalMs = opts.sweepIntervalMs ?? 10;
    this.reportTimeoutMs = opts.reportTimeoutMs ?? 10_000;
    this.checkTimeoutMs = opts.unreachableCheckTimeoutMs ?? 300;
    this.ctl = new ControllerClient({ addresses: opts.controllerAddresses, callTimeoutMs: 5000 });
    this.det = createDetector({ hostFaultWindowMs: opts.hostFaultWindowMs ?? 1000, maxWatched: opts.maxWatched });
  }

  async start(): Promise<void> {
    const impl: FaultManagerServiceServer = {
      attach: (call) => this.attach(call),
      reportUnreachable: unaryHandler('ReportUnreachable', this.log, (r: ReportUnreachableRequest) => this.reportUnreachable(r)),
      listWatched: unaryHandler('ListWatched', this.log, (r: ListWatchedRequest) => this.listWatched(r)),
    };
    this.server = await startGrpcServer({
      address: this.listenAddress,
      services: [{ definition: withSafeDeserialize(FaultManagerServiceService), implementation: impl as never }],
      logger: this.log,
      healthServiceNames: ['understudy.v1.FaultManagerService'],
    });
    this.address = `${this.advertiseHost}:${this.server.port}`;
    this.sweepTimer = setInterval(() => this.apply({ type: 'Sweep' }), this.sweepIntervalMs);
    this.refreshTimer = setInterval(() => this.refreshPolicies(), this.policyRefreshMs);
    this.log.info({ address: this.address, controllers: this.ctl.preferredAddress }, 'fault manager started');
  }

  watched(): WatchedCopyView[] {
    return watchedCopies(this.det);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.sweepTimer);
    clearTimeout(this.deadlineTimer);
    clearInterval(this.refreshTimer);
    for (const s of this.streams.values()) this.endStream(s, new UnavailableError('fault manager shutting down; attach to another instance'));
    this.streams.clear();
    await this.server?.shutdown(500);
    // Reports already on their way get a short grace; queued ones are logged as dropped.
    const grace = new Promise((r) => setTimeout(r, 2000).unref());
    await Promise.race([Promise.allSettled([...this.inFlight]), grace]);
    if (this.queue.length > 0) this.log.error({ dropped: this.queue.length }, 'shutting down with fault reports not sent');
    this.queue.length = 0;
    this.ctl.close();
    for (const c of this.copyClients.values()) c.close();
    this.copyClients.clear();
  }

  // ---- the detector -------------------------------------------------------------------------

  /** Feed one event; route its reports and probes. Never throws. */
  private apply(event: DetectorEvent): DetectorStep | undefined {
    if (this.stopping) return undefined;
    let step: DetectorStep;
    try {
      step = detect(this.det, event, nowMs());
    } catch (e) {
      this.log.error({ err: ensureError(e), event: event.type }, 'detector failed on an event');
      return undefined;
    }
    for (const r of step.reports) this.onReport(r);
    for (const p of step.probesDue) this.sendProbe(p.copyId, p.incarnation, p.deadlineMs);
    this.armDeadline();
    return step;
  }

  /** Keep a one-shot Sweep set for the detector's next deadline (at most one timer). */
  private armDeadline(): void {
    const at = nextDeadline(this.det);
    if (at >= this.deadlineAtMs || at === Infinity || this.stopping) return;
    clearTimeout(this.deadlineTimer);
    this.deadlineAtMs = at;
    this.deadlineTimer = setTimeout(() => {
      this.deadlineAtMs = Infinity;
      this.apply({ type: 'Sweep' });
    }, Math.max(0, Math.ceil(at - nowMs())));
  }

  private onReport(r: FaultReport): void {
    const c = r.copies[0]!;
    const fields = r.kind === 'HOST'
      ? { kind: r.kind, host: r.host, copies: r.copies.map((x) => `${x.copyId}#${x.incarnation}`) }
      : { kind: r.kind, copy: c.copyId, incarnation: c.incarnation, app: c.app, host: c.host };
    this.log.warn({ ...fields, detail: r.detail, latencyMs: Math.round(r.atMs - r.sinceMs) }, 'fault detected');
    this.enqueue({
      kind: KIND_OF[r.kind],
      kindName: r.kind,
      copies: r.copies.map((x) => ({ copyId: x.copyId, incarnation: x.incarnation, app: x.app })),
      host: r.host,
      detail: r.detail,
      fromCopyId: '',
      latencyMs: Math.max(0, r.atMs - r.sinceMs),
    });
  }

  private sendProbe(copyId: string, incarnation: number, deadlineMs: number): void {
    const s = this.streams.get(copyId);
    if (!s || s.gone || s.ended || s.copy?.incarnation !== incarnation) return;
    const probeId = this.nextProbeId++;
    if (!this.write(s, { probe: { probeId, deadlineMs } })) return;
    this.apply({ type: 'ProbeSent', copyId, incarnation, probeId });
  }

  // ---- Attach -------------------------------------------------------------------------------

  private attach(call: grpc.ServerDuplexStream<AttachRequest, AttachResponse>): void {
    const s: StreamState = { call, peer: safePeer(call), copy: undefined, chain: Promise.resolve(), gone: false, ended: false };
    if (this.stopping) {
      this.endStream(s, new UnavailableError('fault manager shutting down; attach to another instance'));
      return;
    }
    const enqueue = (fn: () => Promise<void> | void): void => {
      s.chain = s.chain.then(fn).catch((e: unknown) => {
        const err = ensureError(e);
        if (!isTyped(err)) this.log.error({ err, copy: s.copy?.copyId }, 'attach stream handling failed');
        this.endStream(s, isTyped(err) ? err : new UnavailableError('internal error handling the stream; attach again'));
      });
    };
    call.on('data', (m: AttachRequest) => enqueue(() => this.onMessage(s, m)));
    const gone = (why: string): void => {
      if (s.gone) return;
      s.gone = true;
      enqueue(() => this.onGone(s, why));
    };
    call.on('cancelled', () => gone('cancelled by the copy (process gone or connection lost)'));
    call.on('error', (e: Error) => gone(`stream error: ${e.message}`));
    call.on('end', () => gone('stream half-closed by the copy'));
    call.on('close', () => gone('stream closed'));
  }

  private async onMessage(s: StreamState, m: AttachRequest): Promise<void> {
    if (s.ended) return;
    const bad = malformedReason(m);
    if (bad !== undefined) throw new InvalidArgumentError(`malformed Attach message: ${bad}`);
    if (s.copy === undefined) {
      if (!m.hello) {
        const got = m.heartbeat ? 'heartbeat' : m.probeResult ? 'probe_result' : 'an empty message';
        throw new FailedPreconditionError(`the first message of an Attach stream must be hello (got ${got})`);
      }
      await this.onHello(s, m);
      return;
    }
    const { copyId, incarnation } = s.copy;
    if (m.hello) throw new FailedPreconditionError(`hello was already sent on this stream (copy ${copyId}); open a new stream to attach again`);
    if (m.heartbeat) {
      const step = this.apply({ type: 'Heartbeat', copyId, incarnation, health: healthFromPb(m.heartbeat.health) });
      // Declared lost (hang) or forgotten: end the stream; the copy attaches again if it still lives.
      if (step?.ignored !== undefined) {
        throw new FailedPreconditionError(`copy ${copyId} incarnation ${incarnation} is no longer watched on this stream: ${step.ignored}; attach again`);
      }
      return;
    }
    if (m.probeResult) {
      const { probeId, ok, error } = m.probeResult;
      this.apply({ type: 'ProbeResult', copyId, incarnation, probeId, ok, error });
      return;
    }
    throw new InvalidArgumentError('empty Attach message: set one of hello, heartbeat, probe_result');
  }

  private async onHello(s: StreamState, m: AttachRequest): Promise<void> {
    const h = m.hello!;
    if (!COPY_ID_RE.test(h.copyId)) throw new InvalidArgumentError(`hello.copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(h.copyId)}`);
    if (!(h.incarnation > 0)) throw new InvalidArgumentError(`hello.incarnation must be > 0 (copy ${h.copyId})`);
    if (!Number.isSafeInteger(h.incarnation)) throw new InvalidArgumentError(`hello.incarnation must be at most ${Number.MAX_SAFE_INTEGER} (copy ${h.copyId})`);
    if (!h.app) throw new InvalidArgumentError(`hello.app is required (copy ${h.copyId})`);
    if (!h.host) throw new InvalidArgumentError(`hello.host is required (copy ${h.copyId})`);
    if (!ADDRESS_RE.test(h.address)) throw new InvalidArgumentError(`hello.address must be host:port, got ${JSON.stringify(h.address)} (copy ${h.copyId})`);
    const policy = await this.policyFor(h.app);
    if (s.ended) return;
    const identity = { copyId: h.copyId, incarnation: h.incarnation, app: h.app, host: h.host, address: h.address };
    const step = this.apply({ type: 'Attached', ...identity, policy });
    if (!step) throw new UnavailableError('fault manager shutting down; attach to another instance');
    if (step.rejection) throw rejectionToError(step.rejection);
    const old = this.streams.get(h.copyId);
    s.copy = identity;
    this.streams.set(h.copyId, s);
    // The old stream is no longer current, so ending it forgets nothing in the detector.
    if (old && old !== s) {
      this.endStream(old, new FailedPreconditionError(`copy ${h.copyId} attached again (incarnation ${h.incarnation}); this stream is replaced`));
    }
    const log = this.log.child({ copy: h.copyId, incarnation: h.incarnation, app: h.app, host: h.host });
    log.info({ address: h.address, peer: s.peer, heartbeatIntervalMs: policy.heartbeatIntervalMs, replaced: step.replaced }, 'copy attached');
    this.write(s, { settings: { faultManagerId: this.id, heartbeatIntervalMs: policy.heartbeatIntervalMs } });
    // A peer that left while the policy was fetched is reported by its queued onGone (next in the chain).
  }

  private onGone(s: StreamState, why: string): void {
    if (s.ended || !s.copy) return;
    const { copyId, incarnation } = s.copy;
    if (this.streams.get(copyId) !== s) return;
    this.streams.delete(copyId);
    if (this.stopping) return;
    this.log.info({ copy: copyId, incarnation, app: s.copy.app, host: s.copy.host, why }, 'copy stream lost');
    this.apply({ type: 'StreamLost', copyId, incarnation, reason: why });
  }

  /**
   * End a stream from this side with a status; never counted as the copy's crash. A copy still
   * watched on it is forgotten: it attaches again, maybe to another instance, which must not see
   * a hang reported from here.
   */
  private endStream(s: StreamState, err: UnderstudyError): void {
    if (s.ended) return;
    s.ended = true;
    if (s.copy && this.streams.get(s.copy.copyId) === s) {
      this.streams.delete(s.copy.copyId);
      this.apply({ type: 'Detached', copyId: s.copy.copyId, incarnation: s.copy.incarnation });
    }
    if (s.gone) return;
    try {
      s.call.emit('error', toServiceError(err));
    } catch (e) {
      this.log.debug({ err: ensureError(e).message }, 'could not end an attach stream');
    }
  }

  private write(s: StreamState, m: AttachResponse): boolean {
    if (s.gone || s.ended || s.call.writableEnded || s.call.destroyed) return false;
    try {
      s.call.write(m);
      return true;
    } catch (e) {
      this.log.debug({ err: ensureError(e).message, copy: s.copy?.copyId }, 'attach stream write failed');
      return false;
    }
  }

  // ---- policies -----------------------------------------------------------------------------

  /** The app's compiled policy: cached, else fetched (bounded wait; defaults if unknown). */
  private async policyFor(app: string): Promise<CompiledDetectionPolicy> {
    let e = this.policies.get(app);
    if (!e) {
      e = { policy: DETECTION_DEFAULTS, known: false, fetch: undefined };
      this.policies.set(app, e);
      await this.fetchPolicy(app, e);
    } else if (e.fetch && !e.known) {
      // The first lookup (or a retry after failures) is under way: wait for it, bounded.
      await e.fetch;
    }
    return e.policy;
  }

  private fetchPolicy(app: string, e: PolicyEntry): Promise<void> {
    e.fetch ??= this.ctl
      .withLeader((c) => unaryCall(c.getStatus.bind(c), { app, includeAssignments: false }, { deadlineMs: POLICY_FETCH_TIMEOUT_MS }), POLICY_FETCH_TIMEOUT_MS)
      .then(
        (res) => {
          const spec = res.apps.find((a) => a.spec?.name === app)?.spec;
          let next = DETECTION_DEFAULTS;
          if (spec?.detection) {
            const bad = validateDetectionPolicy({ ...spec.detection }, `app ${app} detection`);
            if (bad) this.log.warn({ app, why: bad.message }, 'controller sent an invalid detection policy; using defaults');
            else next = compileDetectionPolicy({ ...spec.detection });
          }
          if (!e.known) this.log.info({ app, policy: next }, 'detection policy loaded');
          e.known = true;
          this.setPolicy(app, e, next);
        },
        (err: unknown) => {
          const why = ensureError(err).message;
          if (err instanceof NotFoundError) this.log.warn({ app, why }, 'application not declared at the controller; default detection policy, retried later');
          else this.log.warn({ app, why }, 'controller unreachable for the detection policy; keeping the current one, retried later');
          if (err instanceof NotFoundError && e.known) {
            e.known = false;
            this.setPolicy(app, e, DETECTION_DEFAULTS);
          }
        },
      )
      .finally(() => {
        e.fetch = undefined;
      });
    return e.fetch;
  }

  private setPolicy(app: string, e: PolicyEntry, next: CompiledDetectionPolicy): void {
    if (samePolicy(e.policy, next)) return;
    e.policy = next;
    this.apply({ type: 'PolicyChanged', app, policy: next });
    for (const s of this.streams.values()) {
      if (s.copy?.app === app) this.write(s, { settings: { faultManagerId: this.id, heartbeatIntervalMs: next.heartbeatIntervalMs } });
    }
    this.log.info({ app, policy: next }, 'detection policy changed');
  }

  private refreshPolicies(): void {
    if (this.stopping) return;
    const watchedApps = new Set<string>();
    for (const s of this.streams.values()) if (s.copy) watchedApps.add(s.copy.app);
    for (const [app, e] of this.policies) {
      // Apps nobody watched since the last refresh are forgotten (bounded cache).
      if (!watchedApps.has(app)) {
        if (!e.fetch) this.policies.delete(app);
        continue;
      }
      if (!e.fetch) void this.fetchPolicy(app, e);
    }
  }

  // ---- reports to the controller ------------------------------------------------------------

  private enqueue(o: Outgoing): void {
    if (this.stopping) {
      this.log.error({ kind: o.kindName, copies: o.copies.map((c) => c.copyId) }, 'fault report dropped: shutting down');
      return;
    }
    if (this.queue.length >= MAX_QUEUED_REPORTS) {
      const dropped = this.queue.shift()!;
      this.log.error({ kind: dropped.kindName, copies: dropped.copies.map((c) => c.copyId) }, 'fault report queue full; oldest report dropped');
    }
    this.queue.push(o);
    this.pump();
  }

  private pump(): void {
    while (this.inFlight.size < REPORT_CONCURRENCY && this.queue.length > 0) {
      const o = this.queue.shift()!;
      const p: Promise<void> = this.report(o).finally(() => {
        this.inFlight.delete(p);
        this.pump();
      });
      this.inFlight.add(p);
    }
  }

  /** Send one report inside a `fault.detect` span; retried until acknowledged or the budget is spent. */
  private report(o: Outgoing): Promise<void> {
    const first = o.copies[0]!;
    const span = this.tracer.startSpan('fault.detect', {
      attributes: {
        'understudy.copy_id': o.copies.map((c) => c.copyId).join(','),
        'understudy.incarnation': first.incarnation,
        'understudy.fault_kind': o.kindName,
        'understudy.host': o.host,
        'understudy.app': first.app ?? '',
        'understudy.copy_count': o.copies.length,
        'understudy.detection_latency_ms': Math.round(o.latencyMs),
        'understudy.fault_manager_id': this.id,
      },
    });
    return context.with(trace.setSpan(context.active(), span), () => this.send(o, span));
  }

  private async send(o: Outgoing, span: Span): Promise<void> {
    const req: ReportFaultRequest = {
      kind: o.kind,
      copies: o.copies.map((c) => ({ copyId: c.copyId, incarnation: c.incarnation })),
      host: o.host,
      detail: o.detail,
      reporter: this.id,
      fromCopyId: o.fromCopyId,
    };
    const where = { kind: o.kindName, copies: o.copies.map((c) => `${c.copyId}#${c.incarnation}`), host: o.host };
    const startedAt = Date.now();
    try {
      const res = await this.ctl.withLeader((c) => {
        const left = this.reportTimeoutMs - (Date.now() - startedAt);
        return unaryCall(c.reportFault.bind(c), req, { deadlineMs: Math.max(50, Math.min(2000, left)) });
      }, this.reportTimeoutMs);
      const outcomes = res.results.map((r) => `${r.copyId}:${(FaultOutcome[r.outcome] as string | undefined)?.replace(/^FAULT_OUTCOME_/, '') ?? r.outcome}`);
      span.setAttribute('understudy.fault_outcomes', outcomes.join(','));
      span.setAttribute('understudy.failed_over', res.results.reduce((n, r) => n + r.failedOver, 0));
      this.log.info({ ...where, outcomes, ms: Date.now() - startedAt }, 'fault reported');
    } catch (e) {
      const err = ensureError(e);
      span.recordException(err);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
      this.log.error({ ...where, err: err.message, ms: Date.now() - startedAt }, 'fault report not acknowledged by the controller; given up');
    } finally {
      span.end();
    }
  }

  // ---- ReportUnreachable / ListWatched ------------------------------------------------------

  private async reportUnreachable(r: ReportUnreachableRequest): Promise<ReportUnreachableResponse> {
    if (!COPY_ID_RE.test(r.copyId)) throw new InvalidArgumentError(`copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(r.copyId)}`);
    if (!(r.incarnation > 0) || !Number.isSafeInteger(r.incarnation)) throw new InvalidArgumentError(`incarnation must be a positive integer (copy ${r.copyId})`);
    if (r.address !== '' && !ADDRESS_RE.test(r.address)) throw new InvalidArgumentError(`address must be host:port, got ${JSON.stringify(r.address)}`);
    if (this.stopping) throw new UnavailableError('fault manager shutting down');
    const w = watchedCopy(this.det, r.copyId);
    if (w && w.incarnation > r.incarnation) {
      throw new FailedPreconditionError(`copy ${r.copyId} incarnation ${r.incarnation} is stale: incarnation ${w.incarnation} is attached here; refresh the route`);
    }
    const watchedSame = w !== undefined && w.incarnation === r.incarnation;
    const address = r.address || (watchedSame ? w.address : '');
    if (!address) throw new NotFoundError(`copy ${r.copyId} incarnation ${r.incarnation} is not watched by this fault manager; pass its address`);
    const log = this.log.child({ copy: r.copyId, incarnation: r.incarnation, app: w?.app, host: w?.host });
    log.info({ reporter: r.reporter, address, detail: r.detail }, 'copy reported unreachable; checking it');

    let reachable = false;
    let why: string;
    try {
      const client = this.copyClient(address);
      const info = await unaryCall(client.getCopyInfo.bind(client), {}, { deadlineMs: this.checkTimeoutMs });
      if (info.copyId !== r.copyId) why = `${address} answers as copy ${JSON.stringify(info.copyId)}, not ${r.copyId}`;
      else if (info.incarnation !== r.incarnation) why = `${address} answers as incarnation ${info.incarnation}, not ${r.incarnation}`;
      else {
        reachable = true;
        why = `${address} answers as ${r.copyId} incarnation ${r.incarnation}`;
      }
    } catch (e) {
      why = `${address} did not answer GetCopyInfo within ${this.checkTimeoutMs} ms: ${ensureError(e).message}`;
    }
    const detail = `unreachable from ${r.reporter || 'unknown'}${r.detail ? ` (${r.detail})` : ''}; ${why}`;
    if (reachable) {
      log.warn({ reporter: r.reporter, why }, 'verdict LINK: the copy answers; not failed');
      this.enqueue({
        kind: FaultKind.FAULT_KIND_LINK,
        kindName: 'LINK',
        copies: [{ copyId: r.copyId, incarnation: r.incarnation, app: w?.app }],
        host: w?.host ?? '',
        detail,
        fromCopyId: r.reporter,
        latencyMs: 0,
      });
      return { verdict: FaultKind.FAULT_KIND_LINK, detail: why };
    }
    log.warn({ reporter: r.reporter, why }, 'verdict CRASH: the copy does not answer either');
    const step = watchedSame ? this.apply({ type: 'ExternalFault', copyId: r.copyId, incarnation: r.incarnation, kind: 'CRASH', detail }) : undefined;
    if (step === undefined || step.ignored !== undefined) {
      // Not watched here (another instance may watch it): report it directly; duplicates are safe.
      this.enqueue({
        kind: FaultKind.FAULT_KIND_CRASH,
        kindName: 'CRASH',
        copies: [{ copyId: r.copyId, incarnation: r.incarnation, app: w?.app }],
        host: w?.host ?? '',
        detail,
        fromCopyId: '',
        latencyMs: 0,
      });
    }
    return { verdict: FaultKind.FAULT_KIND_CRASH, detail: why };
  }

  private copyClient(address: string): AdsmServiceClient {
    let c = this.copyClients.get(address);
    if (c) {
      // Refresh its LRU position.
      this.copyClients.delete(address);
      this.copyClients.set(address, c);
      return c;
    }
    if (this.copyClients.size >= MAX_COPY_CLIENTS) {
      const [oldest, client] = this.copyClients.entries().next().value as [string, AdsmServiceClient];
      client.close();
      this.copyClients.delete(oldest);
    }
    // No reconnect backoff worth speaking of: a check is one call with a short deadline.
    c = new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions());
    this.copyClients.set(address, c);
    return c;
  }

  private listWatched(_r: ListWatchedRequest): ListWatchedResponse {
    return { faultManagerId: this.id, copies: watchedCopies(this.det).map(watchedToPb) };
  }
}

// ---------------------------------------------------------------------------------------------

function watchedToPb(w: WatchedCopyView): WatchedCopy {
  return {
    copyId: w.copyId,
    incarnation: w.incarnation,
    app: w.app,
    host: w.host,
    address: w.address,
    lastHeartbeatUnixMs: Math.round(w.lastHeartbeatMs),
    health: w.health
      ? {
          eventLoopLagMs: w.health.eventLoopLagMs,
          cpuPercent: w.health.cpuPercent,
          rssBytes: w.health.rssBytes,
          handledCount: w.health.handledCount ?? 0,
          queueDepth: w.health.queueDepth,
          heapUsedBytes: w.health.heapUsedBytes ?? 0,
        }
      : undefined,
    breaches: w.breaches,
  };
}

function healthFromPb(h: Health | undefined): HealthSample {
  const num = (x: number | undefined): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  return {
    eventLoopLagMs: num(h?.eventLoopLagMs),
    cpuPercent: num(h?.cpuPercent),
    rssBytes: num(h?.rssBytes),
    queueDepth: num(h?.queueDepth),
    handledCount: num(h?.handledCount),
    heapUsedBytes: num(h?.heapUsedBytes),
  };
}

function samePolicy(a: CompiledDetectionPolicy, b: CompiledDetectionPolicy): boolean {
  return (Object.keys(a) as (keyof CompiledDetectionPolicy)[]).every((k) => a[k] === b[k]);
}

function rejectionToError(r: DetectorRejection): UnderstudyError {
  switch (r.code) {
    case 'INVALID_ARGUMENT':
      return new InvalidArgumentError(r.message);
    case 'FAILED_PRECONDITION':
      return new FailedPreconditionError(r.message);
    case 'RESOURCE_EXHAUSTED':
      return new ResourceExhaustedError(r.message);
  }
}

function isTyped(e: Error): e is UnderstudyError {
  return e instanceof UnderstudyError;
}

function safePeer(call: grpc.ServerDuplexStream<AttachRequest, AttachResponse>): string {
  try {
    return call.getPeer();
  } catch {
    return 'unknown';
  }
}
