/**
 * The data-flow map on a copy (R-DFM-1, R-DFM-6) and the sending side of the outbox (R-CKP-5).
 *
 * - **The map.** A copy follows the edges out of its own application — the subset of the map it
 *   needs — on the controller's route watch (`WatchRoutes` with `edges_from`): the full list in
 *   the first message, and the new list whenever an ApplyTopology changes it. Why the route watch
 *   and not SetRoles: edges change independently of roles (SetRoles only goes out when a role
 *   moves), the watch already reaches every copy and every router with a full snapshot after each
 *   reconnect or leader change, and direct delivery needs that stream's routes anyway.
 * - **Sends.** A handler's `send` messages must follow the edges: the destination must be an edge
 *   out of the sender's app, the key is `OutgoingMessage.key` or the edge's `keyField` in the
 *   payload. A message whose sends break a rule is refused as a whole (no update, no send): the
 *   sender gets FAILED_PRECONDITION for an unknown edge (the same message succeeds once the edge
 *   is declared) and INVALID_ARGUMENT for a bad send (no key, payload too large, too many sends).
 * - **Delivery.** Committed outbox entries go out oldest first, at most `maxInflightPerRs` per RS,
 *   through a router (`routerAddresses`: one SendStream per router, the next router when one
 *   fails) or straight to the destination's active copy with the routing library's
 *   {@link Forwarder} (per-RS order, holding, resends). A failed attempt is retried with the same
 *   message id after a backoff, until the destination acknowledges; only INVALID_ARGUMENT (the
 *   destination refuses the message itself: retrying cannot help) drops an entry, logged as an
 *   error ("dead letter").
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  RouterServiceClient,
  type Edge,
  type OutboxEntry,
  type SendItem,
  type SendRequest,
  type SendStreamRequest,
  type SendStreamResponse,
} from '@understudy/proto';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
  clientChannelOptions,
  ensureError,
  fromServiceError,
  insecureCredentials,
} from '@understudy/runtime';
import { RoutingClient } from './client';
import { encodeJson } from './codec';
import { Forwarder } from './forwarder';
import type { OutgoingMessage } from './handler';
import type { Outbox, OutboxBounds, OutboxItem } from './outbox';

/** Options of a copy's data flow (`CopyOptions.dataFlow`). */
export interface DataFlowOptions {
  /**
   * Routers (host:port) outbox messages go through; empty: straight to the destination's active
   * copy (same routing library as the router). @default []
   */
  readonly routerAddresses?: readonly string[];
  /**
   * Outbox entries held per RS (sent, not yet acknowledged downstream). While the outbox is full
   * the RS takes no new input: its queue fills and senders get RESOURCE_EXHAUSTED (back-pressure).
   * A message is taken while the outbox is below the bound, so its own sends may pass it by up to
   * `maxSendsPerMessage - 1`. Keep it well below the destinations' `dedupeWindow` (see the
   * README). @default 1000
   */
  readonly maxOutboxPerRs?: number;
  /** Outbox bytes (payloads, ids, keys) held per RS; same back-pressure. @default 16777216 (16 MiB) */
  readonly maxOutboxBytesPerRs?: number;
  /** Messages one handler call may send; more refuse the message (INVALID_ARGUMENT). @default 1000 */
  readonly maxSendsPerMessage?: number;
  /** Outbox entries of one RS in flight at once. @default 256 */
  readonly maxInflightPerRs?: number;
  /**
   * Deadline of one delivery attempt (holding and resends inside the router / forwarder
   * included); after it the entry is tried again with the same id. @default 30000
   */
  readonly attemptDeadlineMs?: number;
  /** Longest backoff between attempts of one entry. @default 2000 */
  readonly maxBackoffMs?: number;
}

/** Longest key of an outgoing message, in UTF-16 code units (as ALDM's). */
export const MAX_SEND_KEY_LENGTH = 1024;

/** Counters of a copy's data flow. */
export interface DataFlowStats {
  /** Delivery attempts started. */
  readonly sent: number;
  /** Entries the destination acknowledged. */
  readonly acked: number;
  /** Of those, acknowledged as duplicates (the destination had applied them before: a resend). */
  readonly duplicates: number;
  /** Attempts that failed and were scheduled again. */
  readonly retried: number;
  /** Entries dropped because the destination refused them (INVALID_ARGUMENT). */
  readonly deadLetters: number;
  /** Handler results refused (unknown edge, bad send). */
  readonly refused: number;
}

/** What the data flow reads of an RS slot (the copy's `RsSlot`). */
export interface OutboxSlot {
  readonly rs: number;
  readonly role: string;
  readonly epoch: number;
  /** Every standby applied the updates up to `committedSeq` at `committedEpoch`. */
  readonly committedEpoch: number;
  readonly committedSeq: number;
  readonly outbox: Outbox;
}

/**
 * Check a handler's sends against the edges out of `app` and turn them into outbox entries
 * (ids from `nextId`). Throws FailedPreconditionError for a destination without an edge,
 * InvalidArgumentError for a malformed send, a missing key, a payload over `maxPayloadBytes`
 * or more than `maxSends` sends. Pure.
 */
export function resolveSends(
  app: string,
  edges: readonly Edge[],
  sends: readonly OutgoingMessage[],
  limits: { readonly maxPayloadBytes: number; readonly maxSends: number },
  nextId: () => string,
): OutboxEntry[] {
  if (!Array.isArray(sends)) throw new InvalidArgumentError(`the handler of ${app} returned a send that is not a list`);
  if (sends.length > limits.maxSends) throw new InvalidArgumentError(`the handler of ${app} sent ${sends.length} messages for one message; at most ${limits.maxSends}`);
  const out: OutboxEntry[] = [];
  for (let i = 0; i < sends.length; i++) {
    const s = sends[i] as Partial<OutgoingMessage> | null | undefined;
    const at = `send[${i}]`;
    if (s === null || typeof s !== 'object') throw new InvalidArgumentError(`${at} of the ${app} handler is not an object`);
    if (typeof s.app !== 'string' || s.app === '') throw new InvalidArgumentError(`${at} of the ${app} handler has no destination app`);
    const edge = edges.find((e) => e.to === s.app);
    if (!edge) {
      const known = edges.map((e) => e.to).join(', ') || 'none';
      throw new FailedPreconditionError(
        `unknown edge: the ${app} handler sends to ${JSON.stringify(s.app)} but the data-flow map has no edge ${app} -> ${s.app} (edges from ${app}: ${known}); declare it in the topology`,
      );
    }
    let key: string;
    if (s.key !== undefined && s.key !== '') {
      if (typeof s.key !== 'string') throw new InvalidArgumentError(`${at} to ${s.app}: key must be a string`);
      key = s.key;
    } else {
      const v = s.payload !== null && typeof s.payload === 'object' && !Array.isArray(s.payload) ? (s.payload as Record<string, unknown>)[edge.keyField] : undefined;
      if (typeof v === 'string' && v !== '') key = v;
      else if (typeof v === 'number' && Number.isFinite(v)) key = String(v);
      else {
        throw new InvalidArgumentError(
          `${at} to ${s.app}: missing key — set OutgoingMessage.key or give the payload a field ${JSON.stringify(edge.keyField)} (the key field of edge ${app} -> ${s.app}) holding a non-empty string or a number`,
        );
      }
    }
    if (key.length > MAX_SEND_KEY_LENGTH) throw new InvalidArgumentError(`${at} to ${s.app}: key of ${key.length} characters; at most ${MAX_SEND_KEY_LENGTH}`);
    let payload: Buffer;
    try {
      payload = encodeJson(s.payload ?? null);
    } catch (e) {
      throw new InvalidArgumentError(`${at} to ${s.app}: payload is not JSON-serialisable (${ensureError(e).message})`);
    }
    if (payload.length > limits.maxPayloadBytes) {
      throw new InvalidArgumentError(`${at} to ${s.app}: payload of ${payload.length} bytes exceeds the limit of ${limits.maxPayloadBytes}`);
    }
    out.push({ messageId: nextId(), toApp: s.app, key, payload });
  }
  return out;
}

/** One delivery of an outbox entry; `cb` once, asynchronously. Throws when not admitted now. */
interface Transport {
  send(m: { app: string; key: string; messageId: string; payload: Buffer; deadlineMs: number }, cb: (err: Error | null, duplicate?: boolean) => void): void;
  close(): void;
}

/** Options of {@link DataFlow}. */
export interface DataFlowInit {
  readonly app: string;
  readonly controllerAddresses: readonly string[];
  readonly options: DataFlowOptions;
  /** Largest payload of one outgoing message (the copy's `maxPayloadBytes`). */
  readonly maxPayloadBytes: number;
  readonly logger: Logger;
  /** An entry of `slot` was acknowledged (or dropped): room in its outbox, a tombstone to record. */
  readonly onAcked: (slot: OutboxSlot) => void;
}

/** A copy's data flow: the edges it follows and the sending of its RS outboxes (see the module doc). */
export class DataFlow {
  /** Outbox bounds per RS. */
  readonly bounds: OutboxBounds;
  private readonly app: string;
  private readonly log: Logger;
  private watch: RoutingClient | undefined;
  private transportV: Transport | undefined;
  private readonly o: Required<Omit<DataFlowOptions, 'routerAddresses'>> & { routerAddresses: readonly string[] };
  private readonly warnAt = new Map<string, number>();
  private closed = false;
  private sent = 0;
  private acked = 0;
  private duplicates = 0;
  private retried = 0;
  private deadLetters = 0;
  private refused = 0;

  constructor(private readonly init: DataFlowInit) {
    const o = init.options;
    const positive = (name: string, v: number): number => {
      if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidArgumentError(`dataFlow.${name} must be a positive integer, got ${v}`);
      return v;
    };
    this.o = {
      routerAddresses: (o.routerAddresses ?? []).filter((a) => a !== ''),
      maxOutboxPerRs: positive('maxOutboxPerRs', o.maxOutboxPerRs ?? 1000),
      maxOutboxBytesPerRs: positive('maxOutboxBytesPerRs', o.maxOutboxBytesPerRs ?? 16 * 1024 * 1024),
      maxSendsPerMessage: positive('maxSendsPerMessage', o.maxSendsPerMessage ?? 1000),
      maxInflightPerRs: positive('maxInflightPerRs', o.maxInflightPerRs ?? 256),
      attemptDeadlineMs: positive('attemptDeadlineMs', o.attemptDeadlineMs ?? 30_000),
      maxBackoffMs: positive('maxBackoffMs', o.maxBackoffMs ?? 2000),
    };
    this.bounds = { maxEntries: this.o.maxOutboxPerRs, maxBytes: this.o.maxOutboxBytesPerRs };
    this.app = init.app;
    this.log = init.logger;
  }

  /** Start following the edges out of this app on the controller's route watch. Idempotent. */
  start(): void {
    if (this.watch || this.closed) return;
    // Only this app's routes (a few) plus the edges out of it.
    this.watch = new RoutingClient({ controllerAddresses: this.init.controllerAddresses, app: this.app, edgesFrom: this.app, logger: this.log });
    this.watch.onEdges((edges) => {
      this.log.info({ edges: edges.map((e) => `${e.from} -> ${e.to} (key ${e.keyField})`) }, 'data-flow map: edges out of this app');
      // A sender sets its delivery up now, so the destinations' routes are in before the first send.
      if (edges.length > 0 && !this.closed) {
        try {
          this.transport();
        } catch (e) {
          this.warnEvery('transport', { err: ensureError(e).message }, 'cannot set up delivery of outbox messages');
        }
      }
    });
  }

  /** `router` when sending through routers, else `direct`. */
  get mode(): 'router' | 'direct' {
    return this.o.routerAddresses.length > 0 ? 'router' : 'direct';
  }

  /** The edges out of this app, once loaded. */
  edges(): readonly Edge[] | undefined {
    return this.watch?.edges();
  }

  stats(): DataFlowStats {
    return { sent: this.sent, acked: this.acked, duplicates: this.duplicates, retried: this.retried, deadLetters: this.deadLetters, refused: this.refused };
  }

  /**
   * Turn a handler's sends into outbox entries of `slot` (see {@link resolveSends}); throws a
   * typed error (and logs it) when the message must be refused. UNAVAILABLE while the map was
   * never loaded (the sender retries).
   */
  prepare(slot: OutboxSlot, sends: readonly OutgoingMessage[], messageId: string): OutboxEntry[] {
    if (Array.isArray(sends) && sends.length === 0) return [];
    const edges = this.watch?.edges();
    try {
      if (edges === undefined) throw new UnavailableError(`the data-flow map of ${this.app} has not been loaded from the controller yet; retry`);
      return resolveSends(this.app, edges, sends, { maxPayloadBytes: this.init.maxPayloadBytes, maxSends: this.o.maxSendsPerMessage }, () =>
        slot.outbox.nextId(this.app, slot.rs, slot.epoch),
      );
    } catch (e) {
      this.refused++;
      this.warnEvery(`refused:${slot.rs}`, { rs: slot.rs, epoch: slot.epoch, messageId, err: ensureError(e).message }, 'handler result refused: its sends break the data-flow map');
      throw e;
    }
  }

  /** True when `slot`'s outbox is full: it must take no new input until acknowledgements free room. */
  blocked(slot: OutboxSlot): boolean {
    return slot.outbox.full(this.bounds);
  }

  /** Send what `slot` may send now (coalesced to once per event-loop turn). */
  pump(slot: OutboxSlot): void {
    const ob = slot.outbox;
    if (ob.pumpScheduled || this.closed || ob.size === 0) return;
    ob.pumpScheduled = true;
    setImmediate(() => {
      ob.pumpScheduled = false;
      this.pumpNow(slot);
    });
  }

  /** Stop sending for good (copy stopping or fenced). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.transportV?.close();
    this.watch?.close();
  }

  /** Forget `slot`'s timers (the copy dropped the RS). */
  forget(slot: OutboxSlot): void {
    if (slot.outbox.retryTimer) clearTimeout(slot.outbox.retryTimer);
    slot.outbox.retryTimer = undefined;
  }

  private pumpNow(slot: OutboxSlot): void {
    const ob = slot.outbox;
    // Only what a failover cannot take back: the ACTIVE's entries committed at its epoch.
    if (this.closed || slot.role !== 'ACTIVE' || slot.committedEpoch !== slot.epoch) return;
    if (ob.sendEpoch !== slot.epoch) {
      // A new activation sends everything the RS holds (again): the failover replay of R-CKP-5.
      this.log.info({ rs: slot.rs, epoch: slot.epoch, entries: ob.size }, 'outbox: sending every held entry (new active)');
      ob.beginSending(slot.epoch);
    }
    const epoch = slot.epoch;
    const gen = ob.gen;
    const now = performance.now();
    let transport: Transport;
    try {
      transport = this.transport();
    } catch (e) {
      this.warnEvery('transport', { err: ensureError(e).message }, 'cannot set up delivery of outbox messages');
      return;
    }
    for (const item of ob.values()) {
      if (item.seq > slot.committedSeq) break; // later entries are not committed either
      if (ob.inflight >= this.o.maxInflightPerRs) break;
      if (item.inflight || item.retryAt > now) continue;
      const e = item.entry;
      try {
        transport.send({ app: e.toApp, key: e.key, messageId: e.messageId, payload: e.payload, deadlineMs: this.o.attemptDeadlineMs }, (err, duplicate) =>
          this.settled(slot, epoch, gen, item, err, duplicate === true),
        );
      } catch (err) {
        // Not admitted (hold full, routes not loaded): this entry and the rest wait, in order.
        this.failed(slot, item, ensureError(err), now);
        break;
      }
      ob.markSent(item);
      this.sent++;
    }
    this.scheduleRetry(slot);
  }

  private settled(slot: OutboxSlot, epoch: number, gen: number, item: OutboxItem, err: Error | null, duplicate: boolean): void {
    const ob = slot.outbox;
    if (!ob.settle(item, gen) || slot.role !== 'ACTIVE' || slot.epoch !== epoch) return;
    const id = item.entry.messageId;
    if (err === null) {
      ob.acked(id);
      this.acked++;
      if (duplicate) this.duplicates++;
      this.init.onAcked(slot);
    } else if (err instanceof InvalidArgumentError) {
      // The destination refuses the message itself: no resend can succeed.
      ob.acked(id);
      this.deadLetters++;
      this.log.error({ rs: slot.rs, epoch, messageId: id, to: item.entry.toApp, key: item.entry.key, err: err.message }, 'outbox message refused by its destination; dropped (dead letter)');
      this.init.onAcked(slot);
    } else {
      this.failed(slot, item, err, performance.now());
    }
    this.pump(slot);
  }

  private failed(slot: OutboxSlot, item: OutboxItem, err: Error, now: number): void {
    item.attempts++;
    item.retryAt = now + Math.min(50 * 2 ** Math.min(item.attempts - 1, 10), this.o.maxBackoffMs);
    this.retried++;
    this.warnEvery(`retry:${slot.rs}`, { rs: slot.rs, epoch: slot.epoch, messageId: item.entry.messageId, to: item.entry.toApp, attempts: item.attempts, err: err.message }, 'outbox message not acknowledged yet; retrying with the same id');
    this.scheduleRetry(slot);
  }

  private scheduleRetry(slot: OutboxSlot): void {
    const ob = slot.outbox;
    if (ob.retryTimer || this.closed) return;
    const at = ob.nextRetryAt();
    if (at === undefined) return;
    ob.retryTimer = setTimeout(() => {
      ob.retryTimer = undefined;
      this.pump(slot);
    }, Math.max(1, at - performance.now()));
    ob.retryTimer.unref();
  }

  private transport(): Transport {
    if (!this.transportV) {
      this.transportV =
        this.o.routerAddresses.length > 0
          ? new RouterTransport(this.o.routerAddresses, this.log)
          : new DirectTransport(this.init.controllerAddresses, this.log);
      this.log.info({ mode: this.mode, routers: this.o.routerAddresses }, 'outbox delivery started');
    }
    return this.transportV;
  }

  /** Warn at most once per 2 s per key (a failing destination must not flood the log). */
  private warnEvery(key: string, fields: Record<string, unknown>, msg: string): void {
    const now = performance.now();
    const last = this.warnAt.get(key);
    if (last !== undefined && now - last < 2000) return;
    if (this.warnAt.size > 10_000) this.warnAt.clear();
    this.warnAt.set(key, now);
    this.log.warn(fields, msg);
  }
}

// ------------------------------------------------------------------------------- transports

/** Straight to the destination's active copy with the routing library (see forwarder.ts). */
class DirectTransport implements Transport {
  private readonly routing: RoutingClient;
  private readonly forwarder: Forwarder;

  constructor(controllerAddresses: readonly string[], log: Logger) {
    this.routing = new RoutingClient({ controllerAddresses, logger: log });
    this.forwarder = new Forwarder({
      routing: this.routing,
      logger: log,
      // R-DFM-5 for direct sends is a log line; the router reports to a fault manager.
      onUnreachable: (u) => log.warn({ to: u.app, toRs: u.rs, copy: u.copyId, address: u.address, epoch: u.epoch, detail: u.detail }, 'destination copy unreachable; holding outbox messages'),
    });
  }

  send(m: { app: string; key: string; messageId: string; payload: Buffer; deadlineMs: number }, cb: (err: Error | null, duplicate?: boolean) => void): void {
    this.forwarder.forward({ app: m.app, key: m.key, messageId: m.messageId, payload: m.payload, deadlineMs: m.deadlineMs }, (err, res) =>
      err || !res ? cb(err ?? new UnavailableError('empty answer')) : cb(null, res.duplicate),
    );
  }

  close(): void {
    this.forwarder.close();
    this.routing.close();
  }
}

/**
 * Through routers: one `SendStream` per router, items batched per event-loop turn; every message
 * goes to the current router, and to the next one once that one's stream fails or a message
 * stays unanswered past its deadline (plus a margin). Answers carry each message's own status.
 */
class RouterTransport implements Transport {
  private readonly links: RouterLink[];
  private current = 0;

  constructor(addresses: readonly string[], private readonly log: Logger) {
    this.links = addresses.map((a) => new RouterLink(a, (why) => this.linkFailed(a, why)));
  }

  send(m: { app: string; key: string; messageId: string; payload: Buffer; deadlineMs: number }, cb: (err: Error | null, duplicate?: boolean) => void): void {
    this.links[this.current]!.send({ app: m.app, key: m.key, rs: 0, hasRs: false, messageId: m.messageId, payload: m.payload, deadlineMs: m.deadlineMs }, cb);
  }

  private linkFailed(address: string, why: string): void {
    if (this.links[this.current]?.address !== address) return;
    this.current = (this.current + 1) % this.links.length;
    this.log.warn({ router: address, next: this.links[this.current]!.address, why }, 'router stream failed; sending outbox messages through the next router');
  }

  close(): void {
    for (const l of this.links) l.close();
  }
}

/** Margin over a message's own deadline before a router that did not answer counts as failed. */
const ROUTER_ANSWER_MARGIN_MS = 2000;

/** One SendStream to one router (see {@link RouterTransport}). */
class RouterLink {
  private readonly client: RouterServiceClient;
  private call: grpc.ClientDuplexStream<SendStreamRequest, SendStreamResponse> | undefined;
  private readonly waiting = new Map<number, { cb: (err: Error | null, duplicate?: boolean) => void; dueAt: number }>();
  private batch: SendItem[] = [];
  private flushScheduled = false;
  private nextId = 1;
  private closed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly address: string,
    private readonly onFailed: (why: string) => void,
  ) {
    this.client = new RouterServiceClient(address, insecureCredentials(), clientChannelOptions());
    this.timer = setInterval(() => this.sweep(), 250);
    this.timer.unref();
  }

  send(request: SendRequest, cb: (err: Error | null, duplicate?: boolean) => void): void {
    if (this.closed) throw new UnavailableError(`router link to ${this.address} is closed`);
    const correlationId = this.nextId++;
    this.waiting.set(correlationId, { cb, dueAt: performance.now() + request.deadlineMs + ROUTER_ANSWER_MARGIN_MS });
    this.batch.push({ correlationId, request });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.batch.length === 0 || this.closed) return;
    const items = this.batch;
    this.batch = [];
    this.open().write({ items });
  }

  private open(): grpc.ClientDuplexStream<SendStreamRequest, SendStreamResponse> {
    if (this.call) return this.call;
    const call = this.client.sendStream();
    this.call = call;
    call.on('data', (m: SendStreamResponse) => {
      for (const r of m.results) {
        const w = this.waiting.get(r.correlationId);
        if (!w) continue;
        this.waiting.delete(r.correlationId);
        if (r.statusCode === grpc.status.OK) w.cb(null, r.response?.duplicate === true);
        else {
          const metadata = new grpc.Metadata();
          for (const [k, v] of Object.entries(r.statusMetadata)) metadata.set(k, v);
          w.cb(fromServiceError({ code: r.statusCode, details: r.statusMessage, metadata }));
        }
      }
    });
    const broken = (why: string): void => {
      if (this.call !== call) return;
      this.call = undefined;
      this.failAll(new UnavailableError(`router ${this.address}: ${why}`));
      if (!this.closed) this.onFailed(why);
    };
    call.on('error', (e: Error) => broken(e.message));
    call.on('end', () => broken('stream ended'));
    return call;
  }

  /** Messages unanswered past their deadline: the router is hung or gone; start over elsewhere. */
  private sweep(): void {
    // Every message of a link has the same deadline, so the oldest is due first.
    const oldest = this.waiting.values().next().value;
    if (oldest === undefined || oldest.dueAt > performance.now()) return;
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.failAll(new DeadlineExceededError(`router ${this.address} did not answer in time`));
    this.onFailed('a message stayed unanswered past its deadline');
  }

  private failAll(err: Error): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    this.batch = []; // not written yet: their callers retry them anyway
    for (const w of all) w.cb(err);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.failAll(new UnavailableError(`router link to ${this.address} closed`));
    this.client.close();
  }
}
