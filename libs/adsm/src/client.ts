import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import * as grpc from '@grpc/grpc-js';
import { AdsmServiceClient, modeName, Partitioning, type AppSpec, type DeliverRequest, type DeliverResponse, type Edge, type Route, type WatchRoutesResponse } from '@understudy/proto';
import { rsOfKey, type KeyPartition } from '@understudy/core';
import {
  DeadlineExceededError,
  InvalidArgumentError,
  NotActiveError,
  NotFoundError,
  UnavailableError,
  ClientCache,
  clientChannelOptions,
  ensureError,
  fromServiceError,
  insecureCredentials,
  silentLogger,
  unaryCall,
} from '@understudy/runtime';
import { decodeJson, encodeJson } from './codec';
import { ControllerClient, LEADER_ADDRESS_KEY } from './controller-client';
import { DeliverLink } from './forwarder';

/** Where one RS is served, as the routing client knows it. */
export interface RouteInfo {
  readonly app: string;
  readonly rs: number;
  readonly epoch: number;
  readonly activeCopyId: string;
  readonly activeAddress: string;
}

/** Per-application routing table. */
interface AppTable {
  rsCount: number;
  mode: string;
  /** Key → RS mapping the application declared (hash or ranges). */
  partition: KeyPartition;
  /** The application as the controller last described it. */
  spec: AppSpec;
  routes: Map<number, RouteInfo>;
}

/** Options of {@link RoutingClient}. */
export interface RoutingClientOptions {
  /** Every controller replica's host:port. */
  readonly controllerAddresses: readonly string[];
  /** Watch only this application. @default all */
  readonly app?: string;
  /**
   * Also follow the data-flow map edges out of this application (R-DFM-6): see {@link RoutingClient.edges}.
   * @default none
   */
  readonly edgesFrom?: string;
  /** Overall deadline of one deliver / query, retries included. @default 10000 */
  readonly deliverDeadlineMs?: number;
  /** Deadline of one attempt. @default 2000 */
  readonly attemptTimeoutMs?: number;
  readonly logger?: Logger;
}

/** Outcome of a delivery. */
export interface Delivered<R> {
  readonly reply: R;
  readonly epoch: number;
  readonly copyId: string;
  /** The message id was seen before: this is the first delivery's reply. */
  readonly duplicate: boolean;
  readonly messageId: string;
  readonly attempts: number;
}

/**
 * Resolves RS → ACTIVE copy from the controller's route watch and delivers straight to the
 * copy, retrying on NOT_ACTIVE / UNAVAILABLE with the same message id (the copy dedupes, so a
 * retry never applies twice). The same logic backs the router service.
 */
export class RoutingClient {
  private readonly tables = new Map<string, AppTable>();
  /** Clients of active copies by address; closed once no route points at the address (restarts bring new ports). */
  private readonly copies = new ClientCache((address) => new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions()));
  /**
   * Deliveries go over one long-lived DeliverStream per copy address (a {@link DeliverLink}):
   * the copy runs them on the same path as a unary Deliver, and what a process sends in one
   * event-loop turn leaves in one write. A unary call per delivery cost several times the CPU on
   * both sides (HTTP/2 stream setup, grpc-js per-call machinery), which a busy client and the
   * copies it calls pay for in latency.
   */
  private readonly links = new ClientCache((address) => new DeliverLink<LinkWaiter>(address, answerWaiter));
  private readonly events = new EventEmitter();
  private readonly controller: ControllerClient;
  private readonly log: Logger;
  private stream: grpc.ClientReadableStream<WatchRoutesResponse> | undefined;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private tableVersion = 0;
  /** When the client cache was last swept (see `apply`). */
  private lastSweepMs = 0;
  /** A full snapshot arrived at least once (before that, an unknown app may just be not loaded yet). */
  private synced = false;
  /** The controller's state version of the last routing message. */
  private stateVersion = 0;
  /** Edges out of `opts.edgesFrom`, once the controller sent them. */
  private edgeList: readonly Edge[] | undefined;
  private readonly deliverDeadlineMs: number;
  private readonly attemptTimeoutMs: number;

  constructor(private readonly opts: RoutingClientOptions) {
    this.controller = new ControllerClient({ addresses: opts.controllerAddresses });
    this.log = opts.logger ?? silentLogger();
    this.deliverDeadlineMs = opts.deliverDeadlineMs ?? 10_000;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    this.events.setMaxListeners(0);
    this.watch();
  }

  /** Current route of one RS, if known. */
  route(app: string, rs: number): RouteInfo | undefined {
    return this.tables.get(app)?.routes.get(rs);
  }

  /**
   * What the table holds: `synced` once the controller's first full snapshot arrived (until
   * then an application missing from it may simply not be loaded yet), the controller's state
   * version of the last update, and how many RS have an active copy.
   */
  tableInfo(): { synced: boolean; stateVersion: number; updates: number; routes: number } {
    let routes = 0;
    for (const t of this.tables.values()) for (const r of t.routes.values()) if (r.activeAddress) routes++;
    return { synced: this.synced, stateVersion: this.stateVersion, updates: this.tableVersion, routes };
  }

  /**
   * The data-flow map edges out of the `edgesFrom` application, as last sent by the controller
   * (kept while the controller is unreachable); undefined until they arrived or without `edgesFrom`.
   */
  edges(): readonly Edge[] | undefined {
    return this.edgeList;
  }

  /** Subscribe to changes of {@link edges}. */
  onEdges(fn: (edges: readonly Edge[]) => void): () => void {
    this.events.on('edges', fn);
    return () => this.events.off('edges', fn);
  }

  /** The application's declared spec (mode, partitioning, shared master RS…), if known. */
  appSpec(app: string): AppSpec | undefined {
    return this.tables.get(app)?.spec;
  }

  /** Number of RS of an application, if known. */
  rsCount(app: string): number | undefined {
    return this.tables.get(app)?.rsCount;
  }

  /** RS a key maps to, as the application declares (hash or ranges). Throws NOT_FOUND for an unknown application. */
  rsForKey(app: string, key: string): number {
    const t = this.tables.get(app);
    if (!t) throw new NotFoundError(`application ${JSON.stringify(app)} is unknown to the routing table`);
    return rsOfKey(t.partition, key);
  }

  /** Resolve once every RS of `app` has an active copy (or reject at the deadline). */
  async waitReady(app: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = this.tables.get(app);
      if (t && t.routes.size === t.rsCount && [...t.routes.values()].every((r) => r.activeAddress)) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new DeadlineExceededError(`routes for ${app} not ready within ${timeoutMs} ms`);
      await this.nextChange(left);
    }
  }

  /**
   * Deliver `payload` (JSON) to the RS of `key` (or `opts.rs`). Resolves with the reply once the
   * active copy acknowledged, i.e. once the update is on every standby.
   */
  async deliver<R = unknown>(app: string, key: string, payload: unknown, opts: { messageId?: string; rs?: number; deadlineMs?: number } = {}): Promise<Delivered<R>> {
    const messageId = opts.messageId ?? randomUUID();
    const bytes = encodeJson(payload);
    const res = await this.withActive(app, opts.rs ?? null, key, opts.deadlineMs, (address, rs, deadlineMs, routeEpoch) =>
      this.deliverOnLink(address, { app, rs, messageId, payload: bytes, key, routeEpoch }, deadlineMs),
    );
    return {
      reply: decodeJson<R>(res.value.reply),
      epoch: res.value.epoch,
      copyId: res.value.copyId,
      duplicate: res.value.duplicate,
      messageId,
      attempts: res.attempts,
    };
  }

  /** Read-only query to the active copy of one RS. */
  async query<QR = unknown>(app: string, rs: number, query: unknown, opts: { deadlineMs?: number } = {}): Promise<QR> {
    const bytes = encodeJson(query);
    const res = await this.withActive(app, rs, '', opts.deadlineMs, (address, r, deadlineMs) => {
      const client = this.copyClient(address);
      return unaryCall(client.query.bind(client), { app, rs: r, query: bytes }, { deadlineMs });
    });
    return decodeJson<QR>(res.value.result);
  }

  private async withActive<T>(
    app: string,
    rsOrNull: number | null,
    key: string,
    deadlineMsOpt: number | undefined,
    fn: (address: string, rs: number, deadlineMs: number, routeEpoch: number) => Promise<T>,
  ): Promise<{ value: T; attempts: number }> {
    const deadline = Date.now() + (deadlineMsOpt ?? this.deliverDeadlineMs);
    let attempts = 0;
    let last: Error | undefined;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw last ?? new DeadlineExceededError(`no active copy for ${app} within the deadline`);
      }
      const t = this.tables.get(app);
      // Once the controller's full snapshot is in, an application missing from it is not declared
      // (or not placed yet): say so now rather than wait out the deadline.
      if (!t && this.synced) throw new NotFoundError(`application ${JSON.stringify(app)} is not in the routing table (not declared, or not placed yet)`);
      if (!t) {
        last = new UnavailableError(`application ${app} not in the routing table yet`);
        await this.nextChange(Math.min(left, 200));
        continue;
      }
      const rs = rsOrNull ?? rsOfKey(t.partition, key);
      if (rs < 0 || rs >= t.rsCount || !Number.isInteger(rs)) {
        throw new InvalidArgumentError(`rs ${rs} out of range for ${app} (rs_count ${t.rsCount})`);
      }
      const route = t.routes.get(rs);
      if (!route || !route.activeAddress) {
        last = new UnavailableError(`${app}/${rs} has no active copy`);
        await this.nextChange(Math.min(left, 200));
        continue;
      }
      attempts++;
      const versionBefore = this.tableVersion;
      // A hung active never answers: when the controller publishes a new route for this RS
      // (failover), give up on the attempt at once and retry there. Safe with the same message
      // id: the old active cannot commit at a superseded epoch, and a commit that happened
      // before is answered from the replicated dedupe table.
      const moved = this.routeMoved(app, rs, route);
      try {
        const value = await Promise.race([fn(route.activeAddress, rs, Math.min(left, this.attemptTimeoutMs), route.epoch), moved.promise]);
        return { value, attempts };
      } catch (e) {
        const err = ensureError(e);
        last = err;
        const retry = err instanceof NotActiveError || (err as { retryable?: boolean }).retryable === true;
        if (!retry) throw err;
        this.log.debug({ app, rs, copy: route.activeCopyId, err: err.message }, 'delivery attempt failed; retrying');
        // Wait for the controller to publish a new route, but not forever: the copy may
        // only have been briefly unreachable.
        if (this.tableVersion === versionBefore) await this.nextChange(Math.min(deadline - Date.now(), 20 * Math.min(attempts, 10)));
      } finally {
        moved.cancel();
      }
    }
  }

  /** Rejects (retryably) when the route of `app`/`rs` stops pointing at `route`'s copy and epoch. */
  private routeMoved(app: string, rs: number, route: RouteInfo): { promise: Promise<never>; cancel: () => void } {
    let cancel = (): void => {};
    const promise = new Promise<never>((_, reject) => {
      const check = (): void => {
        const now = this.tables.get(app)?.routes.get(rs);
        if (now && now.activeAddress === route.activeAddress && now.epoch === route.epoch) return;
        cancel();
        reject(new UnavailableError(`${app}/${rs} moved from ${route.activeCopyId} (epoch ${route.epoch}) while the attempt was in flight`));
      };
      this.events.on('change', check);
      cancel = () => this.events.off('change', check);
    });
    promise.catch(() => undefined); // only observed through the race
    return { promise, cancel };
  }

  private copyClient(address: string): AdsmServiceClient {
    return this.copies.get(address);
  }

  /** One delivery attempt on the link to `address`; past `deadlineMs` its answer is dropped. */
  private deliverOnLink(address: string, req: DeliverRequest, deadlineMs: number): Promise<DeliverResponse> {
    const link = this.links.get(address);
    return new Promise<DeliverResponse>((resolve, reject) => {
      const w: LinkWaiter = { resolve, reject, timer: undefined };
      // The link answers asynchronously (even a refusal), so the timer is always set first.
      const id = link.send(req, w);
      w.timer = setTimeout(() => {
        link.forget(id);
        w.resolve = settled;
        reject(new DeadlineExceededError(`Deliver to ${address}: no answer within ${deadlineMs} ms`));
      }, deadlineMs);
    });
  }

  /** Resolves on the next routing-table change or after `ms` (whichever first). */
  nextChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.events.off('change', done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, ms));
      this.events.on('change', done);
    });
  }

  /** Subscribe to routing changes (fires after the table was updated). */
  onChange(fn: (routes: readonly Route[], full: boolean) => void): () => void {
    const h = (routes: readonly Route[], full: boolean): void => fn(routes, full);
    this.events.on('routes', h);
    return () => this.events.off('routes', h);
  }

  private watch(): void {
    if (this.closed) return;
    const address = this.controller.preferredAddress;
    const client = this.controller.clientFor(address);
    const stream = client.watchRoutes({ app: this.opts.app ?? '', edgesFrom: this.opts.edgesFrom ?? '' });
    this.stream = stream;
    stream.on('data', (msg: WatchRoutesResponse) => this.apply(msg));
    stream.on('error', (e: grpc.ServiceError) => {
      const err = fromServiceError(e) as { metadata?: Record<string, string> };
      const leader = err.metadata?.[LEADER_ADDRESS_KEY];
      if (leader && leader !== address) this.controller.noteLeader(leader);
      else this.controller.rotate();
      if (e.code !== grpc.status.CANCELLED) this.log.debug({ controller: address, err: e.details }, 'route watch broke; reconnecting');
      this.scheduleReconnect();
    });
    stream.on('end', () => this.scheduleReconnect());
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.watch();
    }, 100);
  }

  private apply(msg: WatchRoutesResponse): void {
    if (msg.full) {
      // A full snapshot replaces the table, but keep apps it does not mention only if filtered.
      for (const app of [...this.tables.keys()]) if (!this.opts.app || app === this.opts.app) this.tables.delete(app);
    }
    for (const spec of msg.apps) this.ensureApp(spec);
    for (const r of msg.routes) {
      const t = this.tables.get(r.app);
      if (!t) continue;
      const cur = t.routes.get(r.rs);
      if (cur && cur.epoch > r.epoch) continue; // never go back to an older epoch
      t.routes.set(r.rs, { app: r.app, rs: r.rs, epoch: r.epoch, activeCopyId: r.activeCopyId, activeAddress: r.activeAddress });
    }
    this.tableVersion++;
    // At most once a second: a sweep walks every route (100,000 RS in a big cluster).
    const now = Date.now();
    if (msg.routes.length > 0 && now - this.lastSweepMs >= 1000) {
      this.lastSweepMs = now;
      const live = new Set<string>();
      for (const t of this.tables.values()) for (const r of t.routes.values()) if (r.activeAddress) live.add(r.activeAddress);
      this.copies.sweep(live, now);
      this.links.sweep(live, now);
    }
    if (msg.hasEdges) {
      this.edgeList = msg.edges;
      this.events.emit('edges', msg.edges);
    }
    if (msg.full) this.synced = true;
    this.stateVersion = msg.stateVersion;
    this.events.emit('routes', msg.routes, msg.full);
    this.events.emit('change');
  }

  private ensureApp(spec: AppSpec): void {
    const t = this.tables.get(spec.name);
    const partition: KeyPartition =
      spec.partitioning === Partitioning.PARTITIONING_RANGE
        ? { partitioning: 'RANGE', rsCount: spec.rsCount, rangeStarts: spec.rangeStarts }
        : { partitioning: 'HASH', rsCount: spec.rsCount };
    if (t && t.rsCount === spec.rsCount) {
      t.partition = partition;
      t.spec = spec;
      return;
    }
    this.tables.set(spec.name, { rsCount: spec.rsCount, mode: modeName(spec.mode) ?? 'UNKNOWN', partition, spec, routes: new Map() });
  }

  /** Stop watching and close channels. */
  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.stream?.cancel();
    this.copies.closeAll();
    this.links.closeAll();
    this.controller.close();
    this.events.removeAllListeners();
  }
}

/** A delivery waiting for its answer on a {@link DeliverLink}. */
interface LinkWaiter {
  resolve: (r: DeliverResponse) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** Marks a waiter that was answered (or gave up): a second outcome is ignored. */
const settled = (): void => undefined;

function answerWaiter(w: LinkWaiter, err: Error | null, res: DeliverResponse | undefined): void {
  if (w.resolve === settled) return;
  const { resolve, reject } = w;
  w.resolve = settled;
  if (w.timer) clearTimeout(w.timer);
  if (err) reject(err);
  else if (res) resolve(res);
  else reject(new UnavailableError('Deliver: empty answer'));
}
