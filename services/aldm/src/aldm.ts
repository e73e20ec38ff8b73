/**
 * ALDM (R-ALDM, DESIGN §6): the ingress for external events.
 *
 * For every event: check it (app name, key, idempotency key, payload size), admit it under the
 * in-flight bound (RESOURCE_EXHAUSTED / HTTP 429 beyond it: back-pressure, never an unbounded
 * queue), give it its message id, and forward it to the active copy of its RS (the key is mapped
 * as the application declares: hash or ranges). The client is answered only after the active
 * copy acknowledged, i.e. once the event is on every standby (R-NF-1).
 *
 * Message ids: with an idempotency key the id is `{app}/{idempotencyKey}` — namespaced by the
 * application, and never equal to an assigned id (a UUID holds no `/`), so a client's key cannot
 * collide with another app's events or with ALDM's own ids. Resending an event with the same
 * idempotency key (and the same routing key) is answered with the first result and applied once:
 * the copies keep a replicated dedupe table per RS that survives failover. Clients sharing an
 * application share its idempotency-key space and should prefix their keys with a client id.
 * Without an idempotency key ALDM assigns a random UUID; such an event cannot be resent safely.
 *
 * Served over gRPC (`AldmService`: Ingest, IngestStream) and HTTP/JSON (http.ts).
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { APP_NAME_RE } from '@understudy/core';
import {
  AldmServiceService,
  type AldmServiceServer,
  type IngestItem,
  type IngestRequest,
  type IngestResponse,
  type IngestResult,
  type IngestStreamRequest,
  type IngestStreamResponse,
} from '@understudy/proto';
import {
  DeadlineExceededError,
  INTERNAL_ERROR_DETAILS,
  InvalidArgumentError,
  ResourceExhaustedError,
  UnderstudyError,
  ensureError,
  malformedReason,
  startGrpcServer,
  toServiceError,
  unaryHandler,
  withSafeDeserialize,
  type GrpcServer,
  type Logger,
} from '@understudy/runtime';
import { PayloadTooLargeError } from './errors';
import { DirectDelivery, RouterDelivery, type EventDelivery } from './delivery';
import { startHttpServer, type HttpServer } from './http';
import { ENVELOPE_BYTES, JsonPayload } from './payload';

/** Longest routing key accepted, in UTF-16 code units. */
export const MAX_KEY_LENGTH = 1024;
/**
 * Longest idempotency key accepted, in UTF-16 code units (the message id `{app}/{key}` must fit
 * the copies' 256-character limit with a 63-character app name).
 */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 128;
/** Results of one IngestStream sent per response message at most. */
export const MAX_RESULTS_PER_RESPONSE = 500;

/** One external event, as both transports hand it over. */
export interface IngestEvent {
  readonly app: string;
  /** Routing key: mapped to the app's RS as the app declares. */
  readonly key: string;
  /** Client idempotency key; empty: ALDM assigns a message id. */
  readonly idempotencyKey: string;
  readonly payload: JsonPayload;
}

/** The acknowledgement of one event. */
export interface IngestOutcome {
  readonly messageId: string;
  readonly rs: number;
  readonly epoch: number;
  /** The event was applied before (same idempotency key): `reply` is the first one's. */
  readonly duplicate: boolean;
  readonly reply: JsonPayload;
}

/** Counters of one ALDM instance. */
export interface AldmStats {
  readonly mode: 'direct' | 'router';
  /** True once the delivery path is ready (routing table loaded). */
  readonly serving: boolean;
  /** Events admitted and not finished (HTTP: from before the body is read). */
  readonly inFlight: number;
  /** Of those, handed on and not answered yet (direct: held or in flight in the forwarder). */
  readonly held: number;
  readonly maxInFlight: number;
  /** Events acknowledged by the active copy (duplicates included). */
  readonly acknowledged: number;
  /** Of those, answered as duplicates. */
  readonly duplicates: number;
  /** Refused by the in-flight bound. */
  readonly rejectedOverload: number;
  /** Failed for any other reason (bad input, unknown app, unavailable, deadline…). */
  readonly failed: number;
}

/** Options of {@link Aldm}. */
export interface AldmCoreOptions {
  /** Where admitted events go (direct to the copies, or through routers). */
  readonly delivery: EventDelivery;
  readonly logger: Logger;
  /** Events admitted at the same time at most; beyond: RESOURCE_EXHAUSTED. @default 10000 */
  readonly maxInFlight?: number;
  /** Largest event payload (JSON bytes). @default 1048576 (1 MiB) */
  readonly maxPayloadBytes?: number;
  /** Deadline of one event, forwarding and retries included. @default 10000 */
  readonly deadlineMs?: number;
}

/** True when `s` holds no lone UTF-16 surrogate (it travels as UTF-8 unchanged). */
function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (next < 0xdc00 || next > 0xdfff) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}

/** The transport-independent ingress logic: checks, admission, message ids, forwarding. */
export class Aldm {
  /** Largest event payload (JSON bytes). */
  readonly maxPayloadBytes: number;
  /** Events admitted at the same time at most. */
  readonly maxInFlight: number;
  /** Deadline of one event. */
  readonly deadlineMs: number;
  private readonly delivery: EventDelivery;
  private readonly log: Logger;
  private inFlight = 0;
  private serving = false;
  private counters = { acknowledged: 0, duplicates: 0, rejectedOverload: 0, failed: 0 };

  constructor(opts: AldmCoreOptions) {
    this.delivery = opts.delivery;
    this.log = opts.logger;
    this.maxInFlight = opts.maxInFlight ?? 10_000;
    this.maxPayloadBytes = opts.maxPayloadBytes ?? 1 << 20;
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    for (const [name, v] of Object.entries({ maxInFlight: this.maxInFlight, maxPayloadBytes: this.maxPayloadBytes, deadlineMs: this.deadlineMs })) {
      if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`Aldm: ${name} must be a positive integer, got ${v}`);
    }
    void this.delivery.ready.then(() => (this.serving = true));
  }

  /**
   * Take one in-flight slot; call the returned function exactly once when the event is done.
   * @throws ResourceExhaustedError when `maxInFlight` events are in flight.
   */
  admit(): () => void {
    if (this.inFlight >= this.maxInFlight) {
      this.counters.rejectedOverload++;
      throw new ResourceExhaustedError(`ALDM is at its in-flight bound (${this.maxInFlight} events); retry later`);
    }
    this.inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight--;
    };
  }

  /** Admit, forward and release one event (see {@link Aldm.ingestAdmitted}). */
  async ingest(ev: IngestEvent, deadlineAtMs: number): Promise<IngestOutcome> {
    const release = this.admit();
    try {
      return await this.ingestAdmitted(ev, deadlineAtMs);
    } finally {
      release();
    }
  }

  /**
   * Check and forward an event that already holds a slot ({@link Aldm.admit}); resolves once the
   * active copy acknowledged. `deadlineAtMs` is capped at now + `deadlineMs`.
   */
  async ingestAdmitted(ev: IngestEvent, deadlineAtMs: number): Promise<IngestOutcome> {
    try {
      this.check(ev);
      const messageId = ev.idempotencyKey ? `${ev.app}/${ev.idempotencyKey}` : randomUUID();
      const deadline = Math.min(deadlineAtMs, Date.now() + this.deadlineMs);
      if (deadline <= Date.now()) throw new DeadlineExceededError('the deadline passed before the event was forwarded');
      const f = await this.delivery.deliver({ app: ev.app, key: ev.key, messageId, payload: ev.payload, deadlineAtMs: deadline });
      this.counters.acknowledged++;
      if (f.duplicate) this.counters.duplicates++;
      this.log.debug({ app: ev.app, rs: f.rs, epoch: f.epoch, messageId, duplicate: f.duplicate, copy: f.copyId }, 'event acknowledged');
      return { messageId, rs: f.rs, epoch: f.epoch, duplicate: f.duplicate, reply: f.reply };
    } catch (e) {
      this.counters.failed++;
      throw e;
    }
  }

  /** Input checks shared by both transports (R-NF-4: a precise error per field). */
  private check(ev: IngestEvent): void {
    if (!ev.app) throw new InvalidArgumentError('app is required');
    if (!APP_NAME_RE.test(ev.app)) throw new InvalidArgumentError(`app ${JSON.stringify(ev.app.slice(0, 80))} is not a valid application name (lower-case letter, then up to 62 of [a-z0-9_-])`);
    if (!ev.key) throw new InvalidArgumentError('key is required (the routing key that selects the RS)');
    if (ev.key.length > MAX_KEY_LENGTH) throw new InvalidArgumentError(`key is longer than ${MAX_KEY_LENGTH} characters`);
    if (!isWellFormed(ev.key)) throw new InvalidArgumentError('key contains a lone UTF-16 surrogate');
    if (ev.idempotencyKey.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new InvalidArgumentError(`idempotency key is longer than ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    if (!isWellFormed(ev.idempotencyKey)) throw new InvalidArgumentError('idempotency key contains a lone UTF-16 surrogate');
    const size = ev.payload.byteLength;
    if (size > this.maxPayloadBytes) throw new PayloadTooLargeError(`payload of ${size} bytes exceeds the limit of ${this.maxPayloadBytes} bytes`);
    // Malformed JSON is refused here (INVALID_ARGUMENT), never handed on: the same answer in both
    // modes, and nothing downstream is disturbed. Parsed once (JsonPayload keeps the value).
    ev.payload.value();
  }

  /** Current counters. */
  stats(): AldmStats {
    return { mode: this.delivery.mode, serving: this.serving, inFlight: this.inFlight, held: this.delivery.held(), maxInFlight: this.maxInFlight, ...this.counters };
  }
}

// ---------------------------------------------------------------------------------------- gRPC

/** Absolute deadline of a gRPC call (Infinity when the client set none). */
function callDeadlineMs(call: { getDeadline(): grpc.Deadline }): number {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(ms) ? ms : Number.POSITIVE_INFINITY;
}

function eventFromPb(r: IngestRequest): IngestEvent {
  return { app: r.app, key: r.key, idempotencyKey: r.idempotencyKey, payload: JsonPayload.fromBytes(r.payload) };
}

function responseToPb(o: IngestOutcome): IngestResponse {
  return { messageId: o.messageId, rs: o.rs, reply: o.reply.bytes(), duplicate: o.duplicate, epoch: o.epoch };
}

/** The AldmService implementation over `core`. */
function grpcImplementation(core: Aldm, log: Logger): AldmServiceServer {
  return {
    ingest: unaryHandler('Ingest', log, (req: IngestRequest, call) => core.ingest(eventFromPb(req), callDeadlineMs(call)).then(responseToPb)),
    ingestStream: (call) => serveIngestStream(core, log, call),
  };
}

/**
 * IngestStream: each item is handled exactly like Ingest (own slot, own deadline) and answered by
 * one result with its correlation id, in completion order; results finishing together go out in
 * one message (at most {@link MAX_RESULTS_PER_RESPONSE}). Reading pauses while the client does not
 * read its results (no unbounded buffer). The stream ends once the client half-closed and every
 * item was answered.
 */
function serveIngestStream(core: Aldm, log: Logger, call: grpc.ServerDuplexStream<IngestStreamRequest, IngestStreamResponse>): void {
  let open = true;
  let ended = false;
  let pending = 0;
  let outbox: IngestResult[] = [];
  let flushScheduled = false;
  let paused = false;
  const streamDeadline = callDeadlineMs(call);

  const finish = (): void => {
    if (open && ended && pending === 0 && outbox.length === 0) {
      open = false;
      call.end();
    }
  };
  const flush = (): void => {
    flushScheduled = false;
    while (open && outbox.length > 0) {
      const results = outbox.slice(0, MAX_RESULTS_PER_RESPONSE);
      outbox = outbox.slice(results.length);
      if (!call.write({ results }) && !paused) {
        // The client is not reading its results: take no new items until the buffer drained
        // (what is in flight still gets answered: at most the in-flight bound).
        paused = true;
        call.pause();
        call.once('drain', () => {
          paused = false;
          call.resume();
        });
      }
    }
    finish();
  };
  const answer = (r: IngestResult): void => {
    pending--;
    if (!open) return;
    outbox.push(r);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  };
  const failed = (correlationId: number, e: unknown): IngestResult => {
    const wire = toServiceError(e);
    if (wire.details === INTERNAL_ERROR_DETAILS) log.error({ method: 'IngestStream', err: ensureError(e) }, 'stream item failed with an internal error');
    else if (!(e instanceof UnderstudyError)) log.warn({ method: 'IngestStream', code: grpc.status[wire.code], err: ensureError(e) }, 'stream item failed');
    return { correlationId, response: undefined, statusCode: wire.code, statusMessage: wire.details };
  };
  const item = (it: IngestItem): void => {
    pending++;
    const correlationId = typeof it.correlationId === 'number' ? it.correlationId : 0;
    let run: Promise<IngestOutcome>;
    try {
      if (!it.request) throw new InvalidArgumentError('request is required');
      run = core.ingest(eventFromPb(it.request), streamDeadline);
    } catch (e) {
      answer(failed(correlationId, e));
      return;
    }
    run.then(
      (o) => answer({ correlationId, response: responseToPb(o), statusCode: 0, statusMessage: '' }),
      (e: unknown) => answer(failed(correlationId, e)),
    );
  };

  call.on('data', (msg: IngestStreamRequest) => {
    const bad = malformedReason(msg);
    if (bad !== undefined) {
      // No correlation id to answer with: the stream itself is malformed.
      open = false;
      call.emit('error', toServiceError(new InvalidArgumentError(`malformed request: ${bad}`)));
      return;
    }
    for (const it of msg.items) item(it);
  });
  call.on('end', () => {
    ended = true;
    finish();
  });
  call.on('error', () => {
    open = false;
  });
  call.on('cancelled', () => {
    open = false;
  });
}

// ---------------------------------------------------------------------------------- the service

/** Options of {@link startAldm}. */
export interface AldmOptions {
  /** Id of this instance (logs, stats). */
  readonly id: string;
  readonly logger: Logger;
  /** gRPC host:port (port 0: any free port). @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** HTTP/JSON host:port (port 0: any free port). @default '127.0.0.1:0' */
  readonly httpListenAddress?: string;
  /**
   * Routers to forward through (RouterService). When non-empty ALDM forwards through them;
   * otherwise it delivers directly with the ADSM forwarder, routes from `controllerAddresses`.
   * @default []
   */
  readonly routerAddresses?: readonly string[];
  /** Controller replicas (direct mode: the route watch). @default [] */
  readonly controllerAddresses?: readonly string[];
  /**
   * Direct mode: events held per RS while it has no reachable active copy (or in flight to it)
   * before RESOURCE_EXHAUSTED / HTTP 429; capped at `maxInFlight`. @default 10000
   */
  readonly maxHeldPerRs?: number;
  /** Direct mode: a copy answering none of an RS's events this long counts as unreachable (resend). @default 6000 */
  readonly attemptTimeoutMs?: number;
  /** Events in flight at most (both transports together). @default 10000 */
  readonly maxInFlight?: number;
  /** Largest event payload in JSON bytes (HTTP: 413 beyond it). @default 1048576 (1 MiB) */
  readonly maxPayloadBytes?: number;
  /** Deadline of one event, forwarding and retries included. @default 10000 */
  readonly deadlineMs?: number;
}

/** A running ALDM. */
export interface AldmHandle {
  readonly id: string;
  /** gRPC host:port. */
  readonly address: string;
  /** HTTP host:port. */
  readonly httpAddress: string;
  /** `direct` or `router`. */
  readonly mode: 'direct' | 'router';
  /** Resolves once events can be forwarded (routing table loaded); health says SERVING from then. */
  readonly ready: Promise<void>;
  /** Current counters. */
  stats(): AldmStats;
  /** Stop both servers (in-flight events get a short grace) and the delivery path. Idempotent. */
  stop(): Promise<void>;
}

/** Start an ALDM: gRPC (with health) and HTTP servers over one core and one delivery path. */
export async function startAldm(opts: AldmOptions): Promise<AldmHandle> {
  const log = opts.logger;
  const routers = opts.routerAddresses ?? [];
  const controllers = opts.controllerAddresses ?? [];
  if (routers.length === 0 && controllers.length === 0) {
    throw new TypeError('ALDM needs routers (--routers) or controllers (--controllers, direct delivery) to forward events to');
  }
  const maxInFlight = opts.maxInFlight ?? 10_000;
  // ALDM's in-flight bound caps what the forwarder can hold in all; the per-RS bound keeps one
  // unreachable RS from taking every slot.
  const delivery: EventDelivery =
    routers.length > 0
      ? new RouterDelivery({ routerAddresses: routers, logger: log })
      : new DirectDelivery({
          controllerAddresses: controllers,
          logger: log,
          maxHeldTotal: maxInFlight,
          maxHeldPerRs: Math.min(opts.maxHeldPerRs ?? 10_000, maxInFlight),
          attemptTimeoutMs: opts.attemptTimeoutMs,
        });
  let grpcServer: GrpcServer | undefined;
  let http: HttpServer | undefined;
  try {
    const core = new Aldm({ delivery, logger: log, maxInFlight, maxPayloadBytes: opts.maxPayloadBytes, deadlineMs: opts.deadlineMs });
    grpcServer = await startGrpcServer({
      address: opts.listenAddress ?? '127.0.0.1:0',
      services: [{ definition: withSafeDeserialize(AldmServiceService), implementation: grpcImplementation(core, log) as never }],
      logger: log,
      healthServiceNames: ['understudy.v1.AldmService'],
      initiallyServing: false,
      // One event's payload plus its envelope; stream batches must fit too.
      maxReceiveMessageBytes: Math.max(4 << 20, core.maxPayloadBytes + ENVELOPE_BYTES),
    });
    http = await startHttpServer({ address: opts.httpListenAddress ?? '127.0.0.1:0', core, logger: log });
    const g = grpcServer;
    const ready = delivery.ready.then(() => {
      g.setServing('', true);
      g.setServing('understudy.v1.AldmService', true);
      log.info({ mode: delivery.mode }, 'aldm serving');
    });
    let stopping: Promise<void> | undefined;
    const h = http;
    return {
      id: opts.id,
      address: grpcServer.address,
      httpAddress: http.address,
      mode: delivery.mode,
      ready,
      stats: () => core.stats(),
      stop: () =>
        (stopping ??= (async () => {
          await Promise.all([g.shutdown(2000), h.close(2000)]);
          delivery.close();
        })()),
    };
  } catch (e) {
    await grpcServer?.shutdown(0);
    await http?.close(0);
    delivery.close();
    throw e;
  }
}
