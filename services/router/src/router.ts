/**
 * The Router (R-RT, DESIGN §6): the gRPC shell around the ADSM {@link Forwarder}.
 *
 * - `Send`: one message by logical address (application + key, or application + RS), answered
 *   once the RS's ACTIVE copy acknowledged it (i.e. once its update is on every standby).
 * - `SendStream`: the same per message, many messages per stream frame both ways: requests come
 *   in batches, results go out in batches (everything that completed in one event-loop turn).
 *   A stream with too many unanswered messages stops being read (HTTP/2 flow control pushes
 *   back on the sender) until half of them are answered.
 * - `GetRouterStats`: the route table's size and version, what is held, and the counters.
 *
 * Holding, per-RS order, resends with the same message id and the bounds are the forwarder's
 * (libs/adsm/src/forwarder.ts); unreachable copies go to a fault manager (unreachable.ts).
 * Request checks happen here so that every problem gets its specific status: INVALID_ARGUMENT
 * (no app, no key and no RS, RS out of range, key/RS disagreeing, message id too long, payload
 * over `maxPayloadBytes`), NOT_FOUND (unknown application), RESOURCE_EXHAUSTED (hold full),
 * DEADLINE_EXCEEDED (not acknowledged in time), UNAVAILABLE (route table not loaded yet).
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ControllerClient, Forwarder, RoutingClient } from '@understudy/adsm';
import {
  RouterServiceService,
  type DeliverResponse,
  type GetRouterStatsResponse,
  type RouterServiceServer,
  type SendRequest,
  type SendResponse,
  type SendResult,
  type SendStreamRequest,
  type SendStreamResponse,
} from '@understudy/proto';
import {
  INTERNAL_ERROR_DETAILS,
  InvalidArgumentError,
  UnavailableError,
  ensureError,
  malformedReason,
  startGrpcServer,
  toServiceError,
  unaryHandler,
  withSafeDeserialize,
  type GrpcServer,
  type Logger,
} from '@understudy/runtime';
import { UnreachableReporter } from './unreachable';

/** Options of {@link startRouter}. */
export interface RouterOptions {
  /** Unique id of this router (reporter name, prefix of the message ids it assigns). */
  readonly id: string;
  /** Every controller replica's host:port (route watch, incarnation lookups). */
  readonly controllerAddresses: readonly string[];
  /** Fault managers to report unreachable copies to (any live one). @default [] */
  readonly faultManagerAddresses?: readonly string[];
  readonly logger: Logger;
  /** Where the gRPC service listens. @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** Host clients use to reach this router. @default '127.0.0.1' */
  readonly advertiseHost?: string;
  /** Messages held per RS (waiting for an active copy or in flight) before RESOURCE_EXHAUSTED. @default 10000 */
  readonly maxHeldPerRs?: number;
  /** Messages held in all before RESOURCE_EXHAUSTED. @default 100000 */
  readonly maxHeldTotal?: number;
  /** Payload bytes held in all before RESOURCE_EXHAUSTED. @default 268435456 */
  readonly maxHeldBytes?: number;
  /** Deadline of a message whose request sets no `deadline_ms`: past it, DEADLINE_EXCEEDED. @default 10000 */
  readonly holdDeadlineMs?: number;
  /** Largest payload accepted; larger is INVALID_ARGUMENT. @default 1048576 */
  readonly maxPayloadBytes?: number;
  /** Messages of one RS in flight to its copy at once (the per-RS pipeline). @default 256 */
  readonly maxInflightPerRs?: number;
  /** A copy answering none of an RS's messages this long counts as unreachable. @default 6000 */
  readonly attemptTimeoutMs?: number;
  /** Unanswered messages of one SendStream before the router stops reading it. @default 20000 */
  readonly maxStreamPending?: number;
  /** How long start waits for the first route snapshot before serving anyway. @default 5000 */
  readonly routesWaitMs?: number;
}

/** A running router. */
export interface RouterHandle {
  readonly id: string;
  /** host:port of its gRPC service. */
  readonly address: string;
  /** What GetRouterStats answers. */
  stats(): GetRouterStatsResponse;
  /** Stop: no new messages, held ones answered UNAVAILABLE, channels closed. Idempotent. */
  stop(): Promise<void>;
}

/** Start a Router (see the module doc). */
export async function startRouter(opts: RouterOptions): Promise<RouterHandle> {
  const r = new RouterNode(opts);
  await r.start();
  return r;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_MESSAGE_ID_LENGTH = 256;
const MAX_APP_LENGTH = 256;
/** A result batch is written early once its replies add up to this many bytes. */
const RESULT_BATCH_BYTES = 1 << 20;
/** Bad-input log lines per second per status code (the rest are counted and summarised). */
const BAD_INPUT_LOG_PER_S = 20;

class RouterNode implements RouterHandle {
  readonly id: string;
  address = '';
  private readonly log: Logger;
  private readonly routing: RoutingClient;
  private readonly ctl: ControllerClient;
  private readonly forwarder: Forwarder;
  private readonly reporter: UnreachableReporter;
  private readonly maxPayloadBytes: number;
  private readonly maxStreamPending: number;
  private readonly routesWaitMs: number;
  private readonly holdDeadlineMs: number;
  private readonly badInputLog: RateLimitedLog;
  private server: GrpcServer | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: RouterOptions) {
    if (!ID_RE.test(opts.id)) throw new InvalidArgumentError(`router id must match ${ID_RE}, got ${JSON.stringify(opts.id)}`);
    if (opts.controllerAddresses.length === 0) throw new InvalidArgumentError('at least one controller address is required');
    this.id = opts.id;
    this.log = opts.logger;
    this.maxPayloadBytes = opts.maxPayloadBytes ?? 1 << 20;
    this.maxStreamPending = opts.maxStreamPending ?? 20_000;
    this.routesWaitMs = opts.routesWaitMs ?? 5000;
    this.holdDeadlineMs = opts.holdDeadlineMs ?? 10_000;
    this.badInputLog = new RateLimitedLog(this.log, BAD_INPUT_LOG_PER_S);
    this.routing = new RoutingClient({ controllerAddresses: opts.controllerAddresses, logger: this.log });
    this.ctl = new ControllerClient({ addresses: opts.controllerAddresses, callTimeoutMs: 2000 });
    this.reporter = new UnreachableReporter({
      reporter: this.id,
      faultManagerAddresses: opts.faultManagerAddresses ?? [],
      controller: this.ctl,
      logger: this.log,
    });
    this.forwarder = new Forwarder({
      routing: this.routing,
      maxHeldPerRs: opts.maxHeldPerRs,
      maxHeldTotal: opts.maxHeldTotal,
      maxHeldBytes: opts.maxHeldBytes,
      maxInflightPerRs: opts.maxInflightPerRs,
      attemptTimeoutMs: opts.attemptTimeoutMs,
      defaultDeadlineMs: this.holdDeadlineMs,
      onUnreachable: (u) => {
        this.log.warn({ app: u.app, rs: u.rs, copy: u.copyId, address: u.address, epoch: u.epoch, detail: u.detail }, 'active copy unreachable; holding its messages');
        this.reporter.report(u);
      },
      logger: this.log,
    });
  }

  async start(): Promise<void> {
    const impl: RouterServiceServer = {
      send: unaryHandler('Send', this.log, (req: SendRequest, call) => this.send(req, call)),
      sendStream: (call) => this.sendStream(call),
      getRouterStats: unaryHandler('GetRouterStats', this.log, () => this.stats()),
    };
    this.server = await startGrpcServer({
      address: this.opts.listenAddress ?? '127.0.0.1:0',
      services: [{ definition: withSafeDeserialize(RouterServiceService), implementation: impl as never }],
      logger: this.log,
      healthServiceNames: ['understudy.v1.RouterService'],
      // A request carrying a payload just over the limit must reach the check (and get its
      // INVALID_ARGUMENT naming the limit) rather than be cut off by the transport.
      maxReceiveMessageBytes: Math.max(16 * 1024 * 1024, 2 * this.maxPayloadBytes + 64 * 1024),
    });
    this.address = `${this.opts.advertiseHost ?? '127.0.0.1'}:${this.server.port}`;
    // Serving before the routes are in would answer every message UNAVAILABLE; waiting for
    // ever would keep a router from starting while the controller is down.
    const deadline = Date.now() + this.routesWaitMs;
    while (!this.routing.tableInfo().synced && Date.now() < deadline) await this.routing.nextChange(deadline - Date.now());
    const t = this.routing.tableInfo();
    if (t.synced) this.log.info({ address: this.address, routes: t.routes }, 'router started');
    else this.log.warn({ address: this.address, waitedMs: this.routesWaitMs }, 'router started without a route table: no controller answered yet');
  }

  stats(): GetRouterStatsResponse {
    const f = this.forwarder.stats();
    const t = this.routing.tableInfo();
    return {
      routerId: this.id,
      routesVersion: t.stateVersion,
      routes: t.routes,
      forwarded: f.forwarded,
      heldTotal: f.heldTotal,
      held: f.held.map((h) => ({ app: h.app, rs: h.rs, held: h.held })),
      rejectedOverflow: f.rejectedOverflow,
      expired: f.expired,
      unreachableReports: this.reporter.reported,
    };
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.forwarder.close();
      await this.server?.shutdown(1000);
      this.reporter.close();
      this.routing.close();
      this.ctl.close();
    })();
    return this.stopping;
  }

  // ---- Send ---------------------------------------------------------------------------------

  private send(req: SendRequest, call: grpc.ServerUnaryCall<SendRequest, SendResponse>): Promise<SendResponse> {
    // The caller's own gRPC deadline bounds the hold too: nobody waits for the answer after it.
    const callDeadline = deadlineMsOf(call.getDeadline());
    return new Promise<SendResponse>((resolve, reject) => {
      this.admit(req, callDeadline, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }

  /**
   * Check one request and hand it to the forwarder; `done` is called exactly once (also for a
   * request refused at once).
   */
  private admit(req: SendRequest, callDeadlineMs: number, done: (err: Error | null, res: SendResponse | undefined) => void): void {
    let messageId = req.messageId;
    let rs: number;
    try {
      if (this.stopping) throw new UnavailableError(`router ${this.id} is stopping`);
      if (req.app === '') throw new InvalidArgumentError('app is required');
      if (req.app.length > MAX_APP_LENGTH) throw new InvalidArgumentError(`app is longer than ${MAX_APP_LENGTH} characters`);
      if (!req.hasRs && req.key === '') throw new InvalidArgumentError('a message needs an address: a key, or an rs with has_rs set');
      if (messageId.length > MAX_MESSAGE_ID_LENGTH) throw new InvalidArgumentError(`message_id is longer than ${MAX_MESSAGE_ID_LENGTH} characters`);
      if (req.payload.length > this.maxPayloadBytes) {
        throw new InvalidArgumentError(`payload of ${req.payload.length} bytes exceeds the router's limit of ${this.maxPayloadBytes} bytes (max-payload-bytes)`);
      }
      if (messageId === '') messageId = this.forwarder.newMessageId(`${this.id}-`);
      const deadlineMs = Math.max(1, Math.min(req.deadlineMs > 0 ? req.deadlineMs : this.holdDeadlineMs, callDeadlineMs));
      const id = messageId;
      rs = this.forwarder.forward(
        { app: req.app, key: req.key, rs: req.hasRs ? req.rs : undefined, messageId: id, payload: req.payload, deadlineMs },
        (err: Error | null, res: DeliverResponse | undefined) => {
          if (err || !res) done(err ?? new UnavailableError('no answer'), undefined);
          else done(null, { reply: res.reply, epoch: res.epoch, duplicate: res.duplicate, copyId: res.copyId, rs, messageId: id });
        },
      );
    } catch (e) {
      done(ensureError(e), undefined);
    }
  }

  // ---- SendStream ---------------------------------------------------------------------------

  private sendStream(call: grpc.ServerDuplexStream<SendStreamRequest, SendStreamResponse>): void {
    let open = true;
    let ended = false;
    let pending = 0;
    let paused = false;
    let batch: SendResult[] = [];
    let batchBytes = 0;
    let flushScheduled = false;
    const flush = (): void => {
      flushScheduled = false;
      if (batch.length === 0) return;
      const results = batch;
      batch = [];
      batchBytes = 0;
      if (open) call.write({ results });
      if (ended && pending === 0 && open) {
        open = false;
        call.end();
      }
    };
    const answer = (r: SendResult, bytes: number): void => {
      pending--;
      batch.push(r);
      batchBytes += bytes + 64;
      if (paused && pending <= this.maxStreamPending / 2) {
        paused = false;
        call.resume();
      }
      if (batchBytes >= RESULT_BATCH_BYTES) flush();
      else if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    };
    const failed = (correlationId: number, e: unknown): void => {
      const wire = toServiceError(e);
      const statusMetadata: Record<string, string> = {};
      for (const [k, v] of Object.entries(wire.metadata.getMap())) if (typeof v === 'string') statusMetadata[k] = v;
      this.logFailure('SendStream', wire.code, wire.details, e);
      answer({ correlationId, response: undefined, statusCode: wire.code, statusMessage: wire.details, statusMetadata }, wire.details.length);
    };
    call.on('data', (msg: SendStreamRequest) => {
      const bad = malformedReason(msg);
      if (bad !== undefined) {
        // No correlation ids to answer by: one result with id 0 says why; the stream stays open.
        pending++;
        failed(0, new InvalidArgumentError(`malformed SendStreamRequest: ${bad}`));
        return;
      }
      for (const item of msg.items) {
        pending++;
        const correlationId = item.correlationId;
        if (!item.request) {
          failed(correlationId, new InvalidArgumentError('item without a request'));
          continue;
        }
        this.admit(item.request, Infinity, (err, res) => {
          if (err || !res) failed(correlationId, err ?? new UnavailableError('no answer'));
          else answer({ correlationId, response: res, statusCode: 0, statusMessage: '', statusMetadata: {} }, res.reply.length);
        });
      }
      if (!paused && pending >= this.maxStreamPending) {
        paused = true;
        call.pause();
      }
    });
    call.on('end', () => {
      ended = true;
      if (pending === 0 && !flushScheduled && open) {
        open = false;
        call.end();
      }
    });
    call.on('error', () => {
      open = false;
    });
    call.on('cancelled', () => {
      open = false;
    });
  }

  /** Stream failures are logged like unaryHandler logs unary ones, rate-limited per code. */
  private logFailure(method: string, code: grpc.status, details: string, e: unknown): void {
    if (details === INTERNAL_ERROR_DETAILS) {
      this.log.error({ method, err: ensureError(e) }, 'stream request failed with an internal error');
      return;
    }
    this.badInputLog.warn(grpc.status[code] ?? String(code), { method, code: grpc.status[code], details }, 'rpc failed');
  }
}

/** ms left until a server call's deadline (Infinity when it has none). */
function deadlineMsOf(d: grpc.Deadline): number {
  const at = d instanceof Date ? d.getTime() : d;
  if (!Number.isFinite(at)) return Infinity;
  return Math.max(1, at - Date.now());
}

/** At most `perSecond` warn lines per key and second; the rest are counted into one summary line. */
class RateLimitedLog {
  private readonly windows = new Map<string, { start: number; n: number; dropped: number }>();

  constructor(
    private readonly log: Logger,
    private readonly perSecond: number,
  ) {}

  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    const now = performance.now();
    let w = this.windows.get(key);
    if (!w || now - w.start >= 1000) {
      if (w && w.dropped > 0) this.log.warn({ code: key, suppressed: w.dropped }, 'similar rpc failures not logged in the last second');
      w = { start: now, n: 0, dropped: 0 };
      this.windows.set(key, w);
    }
    if (w.n++ < this.perSecond) this.log.warn(fields, msg);
    else w.dropped++;
  }
}
