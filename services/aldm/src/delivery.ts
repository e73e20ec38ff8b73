/**
 * How ALDM hands an event to the application: one small interface, two paths.
 *
 * - {@link DirectDelivery} (`--controllers`): the ADSM {@link Forwarder}, the same routing
 *   library the router runs (libs/adsm/src/forwarder.ts), over a {@link RoutingClient} watching
 *   the controller's routes. The key is mapped to its RS as the application declares (hash or
 *   ranges); per RS one lane keeps arrival order on one long-lived `DeliverStream` per copy
 *   (pipelined, not one round trip per event); while an RS has no reachable active copy its events
 *   are held, bounded per RS (`maxHeldPerRs`), in total and in bytes, each until its deadline;
 *   after a failover they are resent, in order and with the same message id, to the new active.
 *   Unreachable copies are logged (ALDM does not report to fault managers; routers do).
 * - {@link RouterDelivery} (`--routers`): `RouterService.Send` on one of several routers (R-RT),
 *   which run the same forwarder. A router that cannot be reached is skipped for the next one
 *   with the same message id.
 *
 * Both resolve only once the active copy acknowledged (the update is on every standby), and
 * both keep the message id across resends: the copy dedupes, so nothing applies twice.
 */
import * as grpc from '@grpc/grpc-js';
import { Forwarder, RoutingClient } from '@understudy/adsm';
import { RouterServiceClient } from '@understudy/proto';
import {
  DeadlineExceededError,
  InvalidArgumentError,
  UnavailableError,
  clientChannelOptions,
  ensureError,
  insecureCredentials,
  unaryCall,
  type Logger,
} from '@understudy/runtime';
import { JsonPayload } from './payload';

/** One event to hand to its application. */
export interface DeliveryRequest {
  readonly app: string;
  readonly key: string;
  /** Kept across resends; the destination dedupes by it. */
  readonly messageId: string;
  readonly payload: JsonPayload;
  /** Absolute deadline (unix ms) for the whole delivery, resends included. */
  readonly deadlineAtMs: number;
}

/** What the active copy acknowledged. */
export interface DeliveryAck {
  readonly rs: number;
  readonly epoch: number;
  /** The message id was seen before: `reply` is the first delivery's reply. */
  readonly duplicate: boolean;
  readonly reply: JsonPayload;
  /** The copy that acknowledged. */
  readonly copyId: string;
}

/** Hands events to an application's active copies. */
export interface EventDelivery {
  /** `direct` (ADSM forwarder) or `router` (through RouterService). */
  readonly mode: 'direct' | 'router';
  /** Resolves once events can be delivered (direct: the routing table is loaded). */
  readonly ready: Promise<void>;
  /**
   * Deliver one event; resolves once the active copy acknowledged it. Rejects with the typed
   * error of @understudy/runtime: NotFoundError (unknown app), ResourceExhaustedError (a hold or
   * a queue downstream is full), DeadlineExceededError / UnavailableError (not acknowledged in
   * time: it may still apply; a resend with the same message id is safe), InvalidArgumentError
   * (the application rejected the payload).
   */
  deliver(r: DeliveryRequest): Promise<DeliveryAck>;
  /** Events accepted and not answered yet (held or in flight downstream of ALDM). */
  held(): number;
  /** Stop (held events are answered UNAVAILABLE; channels closed). Idempotent. */
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

/** Options of {@link DirectDelivery}. */
export interface DirectDeliveryOptions {
  /** Every controller replica's host:port (routes are watched from the leader). */
  readonly controllerAddresses: readonly string[];
  readonly logger: Logger;
  /** Events held per RS (waiting for an active copy or in flight) before RESOURCE_EXHAUSTED. @default 10000 */
  readonly maxHeldPerRs?: number;
  /** Events held in all before RESOURCE_EXHAUSTED (ALDM's own in-flight bound is usually lower). @default 100000 */
  readonly maxHeldTotal?: number;
  /** Payload bytes held in all before RESOURCE_EXHAUSTED. @default 268435456 (256 MiB) */
  readonly maxHeldBytes?: number;
  /** Events of one RS sent to its copy and not answered yet (the per-RS pipeline). @default 256 */
  readonly maxInflightPerRs?: number;
  /** A copy answering none of an RS's events this long is treated as unreachable (resend). @default 6000 */
  readonly attemptTimeoutMs?: number;
}

/** Delivers straight to the active copies with the ADSM forwarder (see the module doc). */
export class DirectDelivery implements EventDelivery {
  readonly mode = 'direct' as const;
  readonly ready: Promise<void>;
  private readonly routing: RoutingClient;
  private readonly forwarder: Forwarder;
  private loaded = false;

  constructor(opts: DirectDeliveryOptions) {
    if (opts.controllerAddresses.length === 0) throw new InvalidArgumentError('DirectDelivery: at least one controller address is required');
    const log = opts.logger;
    this.routing = new RoutingClient({ controllerAddresses: opts.controllerAddresses, logger: log });
    this.forwarder = new Forwarder({
      routing: this.routing,
      maxHeldPerRs: opts.maxHeldPerRs,
      maxHeldTotal: opts.maxHeldTotal,
      maxHeldBytes: opts.maxHeldBytes,
      maxInflightPerRs: opts.maxInflightPerRs,
      attemptTimeoutMs: opts.attemptTimeoutMs,
      onUnreachable: (u) => log.warn({ app: u.app, rs: u.rs, copy: u.copyId, address: u.address, epoch: u.epoch, detail: u.detail }, 'active copy unreachable; holding its events'),
      logger: log,
    });
    // The first WatchRoutes message is a full snapshot: from then on the table knows every app
    // (an app missing from it is NOT_FOUND, see Forwarder.resolveRs).
    this.ready = new Promise<void>((resolve) => {
      const done = (): void => {
        off();
        this.loaded = true;
        resolve();
      };
      const off = this.routing.onChange((_routes, full) => {
        if (full || this.routing.tableInfo().synced) done();
      });
      if (this.routing.tableInfo().synced) done();
    });
  }

  async deliver(r: DeliveryRequest): Promise<DeliveryAck> {
    if (!this.loaded) await beforeDeadline(this.ready, r.deadlineAtMs, 'the routing table was not loaded from the controller within the deadline');
    const left = Math.ceil(r.deadlineAtMs - Date.now());
    if (left <= 0) throw new DeadlineExceededError(`deadline passed before the event to ${r.app} was forwarded`);
    const f = await this.forwarder.forwardAsync({ app: r.app, key: r.key, messageId: r.messageId, payload: r.payload.bytes(), deadlineMs: left });
    return { rs: f.rs, epoch: f.epoch, duplicate: f.duplicate, reply: JsonPayload.fromBytes(f.reply), copyId: f.copyId };
  }

  held(): number {
    return this.forwarder.stats().heldTotal;
  }

  close(): void {
    this.forwarder.close();
    this.routing.close();
  }
}

/** Options of {@link RouterDelivery}. */
export interface RouterDeliveryOptions {
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

/** Delivers through RouterService.Send (see the module doc). */
export class RouterDelivery implements EventDelivery {
  readonly mode = 'router' as const;
  readonly ready = Promise.resolve();
  private readonly clients: RouterServiceClient[];
  private readonly log: Logger;
  private readonly answerMarginMs: number;
  private next = 0;
  private pending = 0;

  constructor(opts: RouterDeliveryOptions) {
    if (opts.routerAddresses.length === 0) throw new InvalidArgumentError('RouterDelivery: at least one router address is required');
    this.clients = opts.routerAddresses.map((a) => new RouterServiceClient(a, insecureCredentials(), clientChannelOptions()));
    this.log = opts.logger;
    this.answerMarginMs = opts.answerMarginMs ?? 50;
  }

  async deliver(r: DeliveryRequest): Promise<DeliveryAck> {
    this.pending++;
    try {
      return await this.send(r);
    } finally {
      this.pending--;
    }
  }

  private async send(r: DeliveryRequest): Promise<DeliveryAck> {
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
        // router itself already held and resent the event until its deadline, and a
        // RESOURCE_EXHAUSTED / NOT_FOUND / INVALID_ARGUMENT answer would be the same from any router.
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

  held(): number {
    return this.pending;
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
