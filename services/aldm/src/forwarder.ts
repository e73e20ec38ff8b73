/**
 * How ALDM hands an event to the application: one small interface, two implementations.
 *
 * - {@link DirectForwarder}: the routing library of @understudy/adsm (`RoutingClient`) watches the
 *   controller's routes, maps the key to its RS as the application declares (hash or ranges,
 *   `rsOfKey`) and delivers straight to the RS's active copy, retrying through failovers with
 *   the same message id. No extra hop.
 * - {@link RouterForwarder}: `RouterService.Send` on one of several routers (R-RT), which map the
 *   key with the same library and hold messages while an RS has no active copy. A router that
 *   cannot be reached is skipped for the next one with the same message id.
 *
 * Both resolve only once the active copy acknowledged (the update is on every standby), and
 * both keep the message id across retries: the copy dedupes, so nothing applies twice.
 */
import * as grpc from '@grpc/grpc-js';
import { RoutingClient } from '@understudy/adsm';
import { RouterServiceClient } from '@understudy/proto';
import {
  DeadlineExceededError,
  UnavailableError,
  clientChannelOptions,
  ensureError,
  insecureCredentials,
  unaryCall,
  type Logger,
} from '@understudy/runtime';
import { JsonPayload } from './payload';

/** One event to forward. */
export interface ForwardRequest {
  readonly app: string;
  readonly key: string;
  /** Kept across retries; the destination dedupes by it. */
  readonly messageId: string;
  readonly payload: JsonPayload;
  /** Absolute deadline (unix ms) for the whole forward, retries included. */
  readonly deadlineAtMs: number;
}

/** What the active copy acknowledged. */
export interface Forwarded {
  readonly rs: number;
  readonly epoch: number;
  /** The message id was seen before: `reply` is the first delivery's reply. */
  readonly duplicate: boolean;
  readonly reply: JsonPayload;
  /** The copy that acknowledged. */
  readonly copyId: string;
}

/** Forwards events to an application's active copies. */
export interface Forwarder {
  /** `direct` (routing client) or `router` (through RouterService). */
  readonly mode: 'direct' | 'router';
  /** Resolves once the forwarder can take events (the routing table is loaded). */
  readonly ready: Promise<void>;
  /**
   * Forward one event; resolves once the active copy acknowledged it. Rejects with the typed
   * error of @understudy/runtime: NotFoundError (unknown app), ResourceExhaustedError
   * (downstream full), UnavailableError / DeadlineExceededError (not acknowledged in time: it
   * may still apply; a resend with the same message id is safe), InvalidArgumentError (the
   * application rejected the payload).
   */
  forward(r: ForwardRequest): Promise<Forwarded>;
  /** Stop (close channels). Idempotent. */
  close(): void;
}

/** Rejects with DeadlineExceededError at `deadlineAtMs` unless `p` settles first. */
async function beforeDeadline<T>(p: Promise<T>, deadlineAtMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DeadlineExceededError(what)), Math.max(0, deadlineAtMs - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@link DirectForwarder}. */
export interface DirectForwarderOptions {
  /** Every controller replica's host:port (routes are watched from the leader). */
  readonly controllerAddresses: readonly string[];
  readonly logger: Logger;
  /** Deadline of one delivery attempt to a copy. @default 2000 */
  readonly attemptTimeoutMs?: number;
}

/** Delivers straight to the active copy with the routing client (see the module doc). */
export class DirectForwarder implements Forwarder {
  readonly mode = 'direct' as const;
  readonly ready: Promise<void>;
  private readonly routing: RoutingClient;
  private loaded = false;

  constructor(opts: DirectForwarderOptions) {
    if (opts.controllerAddresses.length === 0) throw new TypeError('DirectForwarder: at least one controller address is required');
    this.routing = new RoutingClient({ controllerAddresses: opts.controllerAddresses, logger: opts.logger, attemptTimeoutMs: opts.attemptTimeoutMs });
    // The first WatchRoutes message is a full snapshot: from then on the table knows every app.
    this.ready = new Promise<void>((resolve) => {
      const off = this.routing.onChange(() => {
        off();
        this.loaded = true;
        resolve();
      });
    });
  }

  async forward(r: ForwardRequest): Promise<Forwarded> {
    if (!this.loaded) await beforeDeadline(this.ready, r.deadlineAtMs, 'the routing table was not loaded from the controller within the deadline');
    // NotFoundError for an app the controller does not route (not declared, or not placed yet).
    const rs = this.routing.rsForKey(r.app, r.key);
    const left = r.deadlineAtMs - Date.now();
    if (left <= 0) throw new DeadlineExceededError(`deadline passed before ${r.app}/${rs} was tried`);
    const d = await this.routing.deliver(r.app, r.key, r.payload.value(), { messageId: r.messageId, rs, deadlineMs: left });
    return { rs, epoch: d.epoch, duplicate: d.duplicate, reply: JsonPayload.fromValue(d.reply), copyId: d.copyId };
  }

  close(): void {
    this.routing.close();
  }
}

/** Options of {@link RouterForwarder}. */
export interface RouterForwarderOptions {
  /** host:port of every router; events are spread over them, an unreachable one is skipped. */
  readonly routerAddresses: readonly string[];
  readonly logger: Logger;
  /**
   * Time left for the router's answer after its own deadline (`deadline_ms` of the request is
   * this much shorter than ALDM's), so a router's DEADLINE_EXCEEDED arrives as an answer.
   * @default 50
   */
  readonly answerMarginMs?: number;
}

/** Forwards through RouterService.Send (see the module doc). */
export class RouterForwarder implements Forwarder {
  readonly mode = 'router' as const;
  readonly ready = Promise.resolve();
  private readonly clients: RouterServiceClient[];
  private readonly log: Logger;
  private readonly answerMarginMs: number;
  private next = 0;

  constructor(opts: RouterForwarderOptions) {
    if (opts.routerAddresses.length === 0) throw new TypeError('RouterForwarder: at least one router address is required');
    this.clients = opts.routerAddresses.map((a) => new RouterServiceClient(a, insecureCredentials(), clientChannelOptions()));
    this.log = opts.logger;
    this.answerMarginMs = opts.answerMarginMs ?? 50;
  }

  async forward(r: ForwardRequest): Promise<Forwarded> {
    const payload = r.payload.bytes();
    let attempts = 0;
    let last: Error | undefined;
    for (;;) {
      const left = r.deadlineAtMs - Date.now();
      if (left <= 0) throw last ?? new DeadlineExceededError(`no router answered for ${r.app} within the deadline`);
      const i = this.next++ % this.clients.length;
      const client = this.clients[i]!;
      attempts++;
      try {
        const res = await unaryCall(
          client.send.bind(client),
          {
            app: r.app,
            key: r.key,
            rs: 0,
            hasRs: false,
            messageId: r.messageId,
            payload,
            deadlineMs: Math.max(1, Math.floor(left - this.answerMarginMs)),
          },
          { deadlineMs: left },
        );
        return { rs: res.rs, epoch: res.epoch, duplicate: res.duplicate, reply: JsonPayload.fromBytes(res.reply), copyId: res.copyId };
      } catch (e) {
        const err = ensureError(e);
        last = err;
        // Only an unreachable router is retried here (on the next one, same message id): the
        // router itself already retried the copy until its deadline, and a RESOURCE_EXHAUSTED /
        // NOT_FOUND / INVALID_ARGUMENT answer would be the same from any router.
        const unreachable = err instanceof UnavailableError || (err as { code?: number }).code === grpc.status.UNAVAILABLE;
        if (!unreachable) throw err;
        this.log.debug({ app: r.app, router: i, err: err.message, attempts }, 'router unavailable; trying the next one');
        // Every router tried once in this round: back off a little before the next round.
        if (attempts % this.clients.length === 0) {
          await new Promise((res) => setTimeout(res, Math.min(20 * (attempts / this.clients.length), 200, Math.max(0, r.deadlineAtMs - Date.now()))));
        }
      }
    }
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
