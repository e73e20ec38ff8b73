/**
 * Shared data from a master RS (R-ADSM: "shared data from a master RS to all copies"; DESIGN §5).
 *
 * An application may declare one of its RS as the master (`sharedMasterRs` in the topology). That
 * RS is an ordinary RS — its ACTIVE copy handles its messages, replicates each batch to the RS's
 * standbys and acknowledges it once they applied it (the commit rule of copy.ts) — and on top of
 * that every copy of the application keeps a read-only VIEW of its COMMITTED state, which the
 * handlers of every RS read as `ctx.shared` (e.g. a rate table every enhancer RS prices with).
 *
 * - **Source.** The master RS's active keeps its own view, advanced each time a batch of the RS
 *   commits: the committed updates are applied again, to a separate state object (the RS's own
 *   state runs ahead of the commit while a batch is being replicated, and a view must never show
 *   what a failover could still lose). It also keeps a bounded tail of the committed updates with
 *   their sequence numbers.
 * - **Followers.** Every other copy (the master RS's standbys included: their view is the
 *   committed state, their RS slot is not) follows the active its own route watch names, with one
 *   `FollowShared` stream. Each step carries the master RS's epoch; updates carry their sequence
 *   numbers and are applied strictly in order (a gap makes the follower ask again, for a snapshot).
 * - **Catch-up.** A follower that is new (restarted copy), behind the source's log tail, or at
 *   another epoch gets a snapshot of the source's view first, then the updates after it.
 * - **Fencing.** A follower remembers the highest master epoch it has applied data of and refuses
 *   anything older, so a deposed master active (hung, partitioned, stale route) cannot move a
 *   view back; such a source is also refused at subscription (STALE_EPOCH) and ends its streams
 *   as soon as it learns it is no longer the master RS's active. Only committed updates are ever
 *   streamed, and a standby promoted for the master RS holds every committed update, so the
 *   sequence a view goes through is the same on every copy.
 * - **What the acknowledgement of an update to the master RS means.** As for any RS: the
 *   master RS's standbys applied it. The other copies apply it shortly after (the next stream
 *   write from the source after the commit), in sequence order; a copy that was down or cut off
 *   applies it when it catches up. A copy handles no message of another RS before its view holds
 *   a first snapshot (waiting up to `waitMs`, then UNAVAILABLE so the sender retries).
 *
 * The pure rules ({@link judgeSharedEvent}, {@link planCatchUp}, {@link planPublish}) are
 * exported for unit tests; {@link SharedData} is the I/O around them that copy.ts embeds.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  AdsmServiceClient,
  type FollowSharedRequest,
  type FollowSharedResponse,
  type SharedDataInfo,
  type SharedUpdate,
  type UpdateEntry,
} from '@understudy/proto';
import {
  ClientCache,
  InvalidArgumentError,
  NotActiveError,
  NotFoundError,
  ResourceExhaustedError,
  StaleEpochError,
  UnavailableError,
  clientChannelOptions,
  ensureError,
  fromServiceError,
  insecureCredentials,
  malformedReason,
  toServiceError,
  ChangeSignal,
} from '@understudy/runtime';
import { RoutingClient } from './client';
import { decodeJson, encodeJson } from './codec';

// ------------------------------------------------------------------------------------ pure rules

/** Where a view of the shared data is: the master RS's epoch and sequence number it reflects. */
export interface SharedPosition {
  /** False until a first snapshot was applied (nothing to protect, nothing to read). */
  readonly loaded: boolean;
  readonly epoch: number;
  readonly seq: number;
}

/** The parts of one stream step the rules look at (a `FollowSharedResponse`). */
export interface SharedStep {
  readonly epoch: number;
  readonly snapshot: boolean;
  readonly snapshotSeq: number;
  readonly updates: readonly { readonly seq: number }[];
}

/** What a follower does with one step of its stream. */
export type SharedStepVerdict =
  /**
   * Apply: the snapshot first when `snapshot`, then `count` updates from index `first` (the ones
   * before it are already in the view); the view ends at `seq`, at epoch `max(view, step)`.
   */
  | { readonly kind: 'apply'; readonly snapshot: boolean; readonly first: number; readonly count: number; readonly seq: number }
  /** From an older master epoch than the view holds: a deposed source. Refuse it, drop the stream. */
  | { readonly kind: 'stale'; readonly reason: string }
  /** Not contiguous with the view (or no snapshot yet): ask again, for a snapshot. */
  | { readonly kind: 'gap'; readonly reason: string };

/**
 * Judge one step against the view (pure). A snapshot replaces the view unless it would move it
 * back within the same epoch; updates must continue the view's sequence without a hole (those
 * at or below it are skipped: a resend after a reconnect).
 */
export function judgeSharedEvent(view: SharedPosition, step: SharedStep): SharedStepVerdict {
  if (view.loaded && step.epoch < view.epoch) {
    return { kind: 'stale', reason: `step at master epoch ${step.epoch}; the view holds data of epoch ${view.epoch}` };
  }
  const takeSnapshot = step.snapshot && (!view.loaded || step.epoch > view.epoch || step.snapshotSeq >= view.seq);
  if (!takeSnapshot && !view.loaded) return { kind: 'gap', reason: 'the view holds no snapshot yet' };
  let pos = takeSnapshot ? step.snapshotSeq : view.seq;
  let first = -1;
  let count = 0;
  for (let i = 0; i < step.updates.length; i++) {
    const seq = step.updates[i]!.seq;
    if (seq <= pos) {
      if (first >= 0) return { kind: 'gap', reason: `update ${seq} after update ${pos}: out of order` };
      continue;
    }
    if (seq !== pos + 1) return { kind: 'gap', reason: `update ${seq} does not follow ${pos}` };
    if (first < 0) first = i;
    count++;
    pos = seq;
  }
  return { kind: 'apply', snapshot: takeSnapshot, first: first < 0 ? step.updates.length : first, count, seq: pos };
}

/** What a source sends a follower next. */
export type CatchUpPlan = { readonly kind: 'none' } | { readonly kind: 'snapshot' } | { readonly kind: 'updates'; readonly fromSeq: number };

/**
 * What the source sends a follower at `follower` (pure): a snapshot when the follower holds
 * none, is at another epoch, claims more than the source has, or is behind the log tail
 * (`firstLogSeq`: the oldest update kept; `seq + 1` when none is); else the updates after it.
 */
export function planCatchUp(follower: SharedPosition, source: { readonly epoch: number; readonly seq: number; readonly firstLogSeq: number }): CatchUpPlan {
  if (!follower.loaded || follower.epoch !== source.epoch || follower.seq > source.seq) return { kind: 'snapshot' };
  if (follower.seq === source.seq) return { kind: 'none' };
  if (follower.seq + 1 < source.firstLogSeq) return { kind: 'snapshot' };
  return { kind: 'updates', fromSeq: follower.seq + 1 };
}

/** How the source advances its own view to a commit. */
export type PublishPlan =
  /** Apply the RS log's updates `fromSeq..toSeq` (possibly none: an epoch change only). */
  | { readonly kind: 'updates'; readonly fromSeq: number; readonly toSeq: number }
  /** Copy the RS state (it equals the committed state now). */
  | { readonly kind: 'snapshot' }
  /** Nothing can be published now (the next commit will). */
  | { readonly kind: 'later'; readonly reason: string };

/**
 * How the source's view catches up with a commit of the master RS at (`epoch`, `seq`) (pure).
 * `slotSeq` is the RS's recorded sequence number (ahead of `seq` while a batch replicates), and
 * `firstLogSeq..lastLogSeq` the updates its log still holds.
 */
export function planPublish(
  view: SharedPosition,
  commit: { readonly epoch: number; readonly seq: number; readonly slotSeq: number; readonly firstLogSeq: number; readonly lastLogSeq: number },
): PublishPlan {
  if (view.loaded && view.epoch > commit.epoch) return { kind: 'later', reason: `the view holds epoch ${view.epoch}, newer than this active's ${commit.epoch}` };
  if (view.loaded && view.seq <= commit.seq) {
    if (view.seq === commit.seq) return { kind: 'updates', fromSeq: commit.seq + 1, toSeq: commit.seq };
    if (commit.firstLogSeq <= view.seq + 1 && commit.lastLogSeq >= commit.seq) return { kind: 'updates', fromSeq: view.seq + 1, toSeq: commit.seq };
  }
  if (commit.slotSeq === commit.seq) return { kind: 'snapshot' };
  return { kind: 'later', reason: `the RS log no longer holds update ${view.seq + 1} and a batch is replicating` };
}

// ----------------------------------------------------------------------------------- the module

/** What the shared-data module reads of the master RS on this copy (an `RsSlot` of copy.ts). */
export interface SharedSlotView<S> {
  readonly rs: number;
  readonly role: 'ACTIVE' | 'STANDBY' | 'OUT_OF_SERVICE';
  readonly epoch: number;
  /** Recorded sequence number (ahead of `committedSeq` while a batch replicates). */
  readonly seq: number;
  readonly state: S;
  /** Contiguous tail of the recorded updates (oldest first). */
  readonly log: readonly UpdateEntry[];
  readonly committedEpoch: number;
  readonly committedSeq: number;
}

/** The parts of the application's handler the view needs. */
export interface SharedStateMachine<S> {
  init(rs: number): S;
  apply(state: S, update: never): S;
  snapshot?(state: S): unknown;
  restore?(snapshot: unknown): S;
}

/** Options of {@link SharedData}. */
export interface SharedDataOptions<S> {
  readonly appName: string;
  readonly copyId: string;
  readonly handler: SharedStateMachine<S>;
  /** Every controller replica (the route watch that names the master RS's active). */
  readonly controllerAddresses: readonly string[];
  /** The RS as this copy holds it, if it does. */
  readonly slot: (rs: number) => SharedSlotView<S> | undefined;
  readonly logger: Logger;
  /** Committed updates the source keeps to catch a follower up without a snapshot. @default 1024 */
  readonly logTailEntries?: number;
  /**
   * How long a message of another RS waits for this copy's first snapshot of the shared data
   * before it is answered UNAVAILABLE (the sender retries). @default 3000
   */
  readonly waitMs?: number;
  /** Followers one source serves at most (RESOURCE_EXHAUSTED beyond). @default 1024 */
  readonly maxFollowers?: number;
  /** How often the module re-checks roles and streams (missed wake-ups). @default 200 */
  readonly sweepMs?: number;
}

/** Updates per stream message at most. */
const UPDATES_PER_MESSAGE = 512;
/** Reconnect backoff of a follower whose source failed, in ms. */
const MIN_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;

interface View<S> {
  loaded: boolean;
  epoch: number;
  seq: number;
  state: S | undefined;
}

interface FollowerConn {
  readonly call: grpc.ServerWritableStream<FollowSharedRequest, FollowSharedResponse>;
  readonly copyId: string;
  loaded: boolean;
  epoch: number;
  seq: number;
  paused: boolean;
  closed: boolean;
}

interface Source {
  readonly epoch: number;
  /** Committed updates after the view's last snapshot, oldest first (bounded). */
  log: SharedUpdate[];
  /** True once the view was published at `epoch` (followers are served from then on). */
  ready: boolean;
  readonly followers: Set<FollowerConn>;
}

interface Upstream {
  readonly call: grpc.ClientReadableStream<FollowSharedResponse>;
  readonly address: string;
  readonly copyId: string;
  readonly routeEpoch: number;
}

/**
 * One copy's shared data: the view handlers read, the source side when this copy is the master
 * RS's active, and the follower side otherwise (see the module doc).
 */
export class SharedData<S> {
  private readonly o: Required<Omit<SharedDataOptions<S>, 'slot' | 'logger' | 'handler' | 'controllerAddresses'>>;
  private readonly handler: SharedStateMachine<S>;
  private readonly log: Logger;
  private readonly slotOf: (rs: number) => SharedSlotView<S> | undefined;
  private readonly controllerAddresses: readonly string[];
  /** The master RS the controller names (SetRoles); undefined: the application shares nothing. */
  private master: number | undefined;
  private readonly view: View<S> = { loaded: false, epoch: 0, seq: 0, state: undefined };
  private source: Source | undefined;
  private snapshotCache: { epoch: number; seq: number; bytes: Buffer } | undefined;
  private routing: RoutingClient | undefined;
  private unsubscribe: (() => void) | undefined;
  private upstream: Upstream | undefined;
  /** The next follow attempt to the same source waits until then (after a failure). */
  private retryAt = 0;
  /** The master RS's route as last seen (`copy@address/epoch`). */
  private lastRouteKey = '';
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs = MIN_BACKOFF_MS;
  /** Ask for a snapshot on the next subscription (after a gap or a failed apply). */
  private forceSnapshot = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Clients of the master RS's actives; one is used at a time, older ones close after a grace period. */
  private readonly clients = new ClientCache((address) => new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions()));
  private readonly changed = new ChangeSignal();
  private stopped = false;

  constructor(opts: SharedDataOptions<S>) {
    this.handler = opts.handler;
    this.log = opts.logger.child({ shared: true });
    this.slotOf = opts.slot;
    this.controllerAddresses = opts.controllerAddresses;
    this.o = {
      appName: opts.appName,
      copyId: opts.copyId,
      logTailEntries: positive('logTailEntries', opts.logTailEntries ?? 1024),
      waitMs: positive('waitMs', opts.waitMs ?? 3000),
      maxFollowers: positive('maxFollowers', opts.maxFollowers ?? 1024),
      sweepMs: positive('sweepMs', opts.sweepMs ?? 200),
    };
  }

  // ---- what copy.ts calls -------------------------------------------------------------------

  /**
   * The master RS as the controller names it with the roles (undefined: none). The first time
   * it is set the copy starts following; a master cannot change once declared.
   */
  setMaster(rs: number | undefined): void {
    if (this.stopped || rs === undefined || rs === this.master) return;
    if (this.master !== undefined) {
      // The controller refuses this change; a different master would mean a different state.
      this.log.error({ master: this.master, offered: rs }, 'the controller names another master RS; keeping the first');
      return;
    }
    this.master = rs;
    this.log.info({ rs }, 'application shares the state of a master RS: following it');
    this.routing = new RoutingClient({ controllerAddresses: this.controllerAddresses, app: this.o.appName, logger: this.log });
    this.unsubscribe = this.routing.onChange(() => this.onRoutes());
    this.sweepTimer = setInterval(() => this.sweep(), this.o.sweepMs);
    this.sweepTimer.unref();
    this.signal();
    this.tryPublish();
  }

  /** The master RS, when the application declares one. */
  get masterRs(): number | undefined {
    return this.master;
  }

  /** The shared state handlers read (`ctx.shared`); undefined without a master or before the first snapshot. */
  state(): S | undefined {
    return this.view.loaded ? this.view.state : undefined;
  }

  /** Sequence number of the master RS the view reflects (`ctx.sharedSeq`). */
  seq(): number {
    return this.view.loaded ? this.view.seq : 0;
  }

  /** True when a message of `rs` must wait for the first snapshot (see {@link whenLoaded}). */
  mustWait(rs: number): boolean {
    return this.master !== undefined && rs !== this.master && !this.view.loaded && !this.stopped;
  }

  /**
   * Resolves once the view holds a first snapshot; rejects with UNAVAILABLE after `waitMs`
   * (the message was not queued: the sender resends it). Call only when {@link mustWait}.
   */
  async whenLoaded(rs: number): Promise<void> {
    const deadline = Date.now() + this.o.waitMs;
    while (this.mustWait(rs)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new UnavailableError(
          `${this.o.appName}/${rs}: copy ${this.o.copyId} has not received the shared data of master RS ${this.master} yet (waited ${this.o.waitMs} ms); retry`,
        );
      }
      await this.changed.wait(left);
    }
  }

  /** A batch of `rs` committed on this copy (copy.ts `markCommitted`). */
  committed(rs: number): void {
    if (rs === this.master) this.tryPublish();
  }

  /** This copy's role for `rs` changed (copy.ts role hooks). */
  roleChanged(rs: number): void {
    if (rs !== this.master) return;
    this.tryPublish();
    this.reconsider();
  }

  /** What GetCopyInfo reports (undefined without a master). */
  info(): SharedDataInfo | undefined {
    if (this.master === undefined) return undefined;
    return {
      masterRs: this.master,
      loaded: this.view.loaded,
      epoch: this.view.epoch,
      seq: this.view.seq,
      source: this.source?.ready === true,
      followers: this.source?.followers.size ?? 0,
    };
  }

  /** Stop: streams ended, route watch and channels closed. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.endSource(new UnavailableError(`copy ${this.o.copyId} is stopping`));
    this.closeUpstream();
    this.unsubscribe?.();
    this.routing?.close();
    this.clients.closeAll();
    this.signal();
  }

  // ---- source side ----------------------------------------------------------------------------

  /** FollowShared: serve one follower from this copy's view (see the module doc). */
  serve(call: grpc.ServerWritableStream<FollowSharedRequest, FollowSharedResponse>): void {
    try {
      const req = call.request;
      const bad = malformedReason(req);
      if (bad !== undefined) throw new InvalidArgumentError(`malformed request: ${bad}`);
      if (req.app !== this.o.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy (it runs ${this.o.appName})`);
      if (!req.copyId) throw new InvalidArgumentError('copy_id is required (who follows)');
      if (this.stopped) throw new UnavailableError(`copy ${this.o.copyId} is stopping`);
      if (this.master === undefined) throw new UnavailableError(`copy ${this.o.copyId} knows no master RS for ${this.o.appName} (not declared, or its roles have not arrived yet)`);
      if (req.rs !== this.master) throw new InvalidArgumentError(`rs ${req.rs} is not the master RS of ${this.o.appName} (${this.master})`);
      const slot = this.slotOf(this.master);
      if (!slot || slot.role !== 'ACTIVE') {
        throw new NotActiveError(`NOT_ACTIVE: copy ${this.o.copyId} is ${slot?.role ?? 'OUT_OF_SERVICE'} for master RS ${this.o.appName}/${this.master}`);
      }
      if (req.epoch > slot.epoch) {
        throw new StaleEpochError(`copy ${this.o.copyId} is at epoch ${slot.epoch} of master RS ${this.o.appName}/${this.master}; the follower has seen epoch ${req.epoch}`);
      }
      this.tryPublish();
      const src = this.source;
      if (!src || src.epoch !== slot.epoch) {
        // Not committed at this epoch yet: followers are served from the first publish on.
        this.source = { epoch: slot.epoch, log: [], ready: false, followers: new Set() };
      }
      const s = this.source!;
      if (s.followers.size >= this.o.maxFollowers) throw new ResourceExhaustedError(`copy ${this.o.copyId} serves ${s.followers.size} followers already (maxFollowers)`);
      const f: FollowerConn = { call, copyId: req.copyId, loaded: req.hasState, epoch: req.epoch, seq: req.seq, paused: false, closed: false };
      s.followers.add(f);
      const gone = (): void => {
        f.closed = true;
        s.followers.delete(f);
      };
      call.on('cancelled', gone);
      call.on('close', gone);
      call.on('error', gone);
      this.log.debug({ rs: this.master, epoch: s.epoch, follower: req.copyId, at: { epoch: req.epoch, seq: req.seq, loaded: req.hasState } }, 'follower subscribed');
      this.pump(f);
    } catch (e) {
      call.emit('error', toServiceError(e));
    }
  }

  /**
   * Publish the master RS's newly committed updates to the view and the followers, when this
   * copy is its active; end the source when it is not (any more).
   */
  private tryPublish(): void {
    if (this.master === undefined || this.stopped) return;
    const slot = this.slotOf(this.master);
    if (!slot || slot.role !== 'ACTIVE') {
      if (this.source) this.endSource(new NotActiveError(`NOT_ACTIVE: copy ${this.o.copyId} is no longer the active of master RS ${this.o.appName}/${this.master}`));
      return;
    }
    if (this.source && this.source.epoch !== slot.epoch) {
      this.endSource(new NotActiveError(`NOT_ACTIVE: master RS ${this.o.appName}/${this.master} moved to epoch ${slot.epoch}; follow again`));
    }
    if (slot.committedEpoch !== slot.epoch) return; // nothing committed at this epoch yet
    const epoch = slot.epoch;
    const seq = slot.committedSeq;
    if (this.source?.ready && this.view.epoch === epoch && this.view.seq === seq) return;
    const first = slot.log[0]?.seq ?? slot.seq + 1;
    const last = slot.log.length > 0 ? slot.log[slot.log.length - 1]!.seq : slot.seq;
    const plan = planPublish(this.view, { epoch, seq, slotSeq: slot.seq, firstLogSeq: first, lastLogSeq: last });
    if (plan.kind === 'later') {
      this.log.debug({ rs: this.master, epoch, seq, why: plan.reason }, 'shared data not published yet');
      return;
    }
    this.source ??= { epoch, log: [], ready: false, followers: new Set() };
    const src = this.source;
    try {
      if (plan.kind === 'snapshot') {
        this.view.state = this.cloneState(slot.state);
        this.view.seq = seq;
        src.log = [];
      } else {
        for (let s = plan.fromSeq; s <= plan.toSeq; s++) {
          const entry = slot.log[s - first]!;
          this.applyUpdates(entry.update, s);
          this.view.seq = s;
          src.log.push({ seq: s, update: entry.update });
        }
        if (src.log.length > 2 * this.o.logTailEntries) src.log = src.log.slice(src.log.length - this.o.logTailEntries);
      }
    } catch (e) {
      // The view no longer matches any committed state: rebuild it from the RS state when it
      // equals the committed one (a later commit), and hold the other RS' messages meanwhile.
      this.log.error({ rs: this.master, epoch, seq, err: ensureError(e).message }, 'applying a committed update to the shared view failed; rebuilding the view from a snapshot');
      this.view.loaded = false;
      this.endSource(new UnavailableError('the shared view is being rebuilt; follow again'));
      return;
    }
    const wasReady = src.ready;
    this.view.epoch = epoch;
    this.view.loaded = true;
    src.ready = true;
    this.snapshotCache = undefined;
    if (!wasReady) this.log.info({ rs: this.master, epoch, seq, via: plan.kind }, 'serving the shared data as the master RS active');
    this.signal();
    for (const f of src.followers) this.pump(f);
  }

  /** Send a follower what it lacks (a snapshot or the updates after its position). */
  private pump(f: FollowerConn): void {
    const src = this.source;
    if (!src || !src.ready || f.paused || f.closed || !src.followers.has(f)) return;
    for (;;) {
      const plan = planCatchUp(f, { epoch: src.epoch, seq: this.view.seq, firstLogSeq: src.log[0]?.seq ?? this.view.seq + 1 });
      if (plan.kind === 'none') return;
      let msg: FollowSharedResponse;
      if (plan.kind === 'snapshot') {
        msg = { epoch: src.epoch, snapshot: true, snapshotSeq: this.view.seq, state: this.snapshotBytes(), updates: [] };
        f.loaded = true;
        f.seq = this.view.seq;
      } else {
        const i = plan.fromSeq - src.log[0]!.seq;
        const updates = src.log.slice(i, i + UPDATES_PER_MESSAGE);
        msg = { epoch: src.epoch, snapshot: false, snapshotSeq: 0, state: Buffer.alloc(0), updates };
        f.seq = updates[updates.length - 1]!.seq;
      }
      f.epoch = src.epoch;
      if (!f.call.write(msg)) {
        // The follower reads slowly: stop writing until the buffer drained; it then gets the
        // updates it lacks, or a snapshot if the log moved past it meanwhile (bounded memory).
        f.paused = true;
        f.call.once('drain', () => {
          f.paused = false;
          this.pump(f);
        });
        return;
      }
    }
  }

  private endSource(err: Error): void {
    const src = this.source;
    if (!src) return;
    this.source = undefined;
    const wire = toServiceError(err);
    for (const f of src.followers) {
      f.closed = true;
      f.call.emit('error', wire);
    }
    src.followers.clear();
    if (src.ready) this.log.info({ rs: this.master, epoch: src.epoch, why: err.message }, 'no longer serving the shared data');
  }

  private snapshotBytes(): Buffer {
    const c = this.snapshotCache;
    if (c && c.epoch === this.view.epoch && c.seq === this.view.seq) return c.bytes;
    const state = this.view.state as S;
    const bytes = encodeJson(this.handler.snapshot ? this.handler.snapshot(state) : state);
    this.snapshotCache = { epoch: this.view.epoch, seq: this.view.seq, bytes };
    return bytes;
  }

  /** A deep copy through the application's snapshot/restore (the view must not share objects with the RS state). */
  private cloneState(state: S): S {
    const snap = decodeJson(encodeJson(this.handler.snapshot ? this.handler.snapshot(state) : state));
    return this.handler.restore ? this.handler.restore(snap) : (snap as S);
  }

  /** Apply one committed entry (the JSON list of the application's updates) to the view. */
  private applyUpdates(bytes: Uint8Array, seq: number): void {
    let updates: unknown[];
    try {
      updates = decodeJson<unknown[]>(bytes) ?? [];
    } catch {
      throw new InvalidArgumentError(`shared update ${seq} is not valid JSON`);
    }
    if (!Array.isArray(updates)) throw new InvalidArgumentError(`shared update ${seq} is not a list of updates`);
    let state = this.view.state as S;
    for (const u of updates) state = this.handler.apply(state, u as never);
    this.view.state = state;
  }

  // ---- follower side -------------------------------------------------------------------------

  /** A route update: a new route of the master RS is news a backoff waits for. */
  private onRoutes(): void {
    if (this.master === undefined || !this.routing) return;
    const r = this.routing.route(this.o.appName, this.master);
    const key = r ? `${r.activeCopyId}@${r.activeAddress}/${r.epoch}` : '';
    if (key !== this.lastRouteKey) {
      this.lastRouteKey = key;
      this.retryAt = 0;
      this.backoffMs = MIN_BACKOFF_MS;
    }
    this.reconsider();
  }

  /** Follow the master RS's active the route table names (none when that is this copy). */
  private reconsider(): void {
    if (this.stopped || this.master === undefined || !this.routing) return;
    const route = this.routing.route(this.o.appName, this.master);
    if (!route || !route.activeAddress || route.activeCopyId === this.o.copyId) {
      // No active (held until there is one), or this copy is the source.
      this.closeUpstream();
      return;
    }
    // A route older than the data already applied names a deposed active: wait for a newer one.
    if (this.view.loaded && route.epoch < this.view.epoch) {
      this.closeUpstream();
      return;
    }
    const up = this.upstream;
    if (up && up.address === route.activeAddress && up.routeEpoch === route.epoch) return;
    const left = this.retryAt - Date.now();
    if (!up && left > 0) {
      this.scheduleRetry(left);
      return;
    }
    this.openUpstream(route.activeAddress, route.activeCopyId, route.epoch);
  }

  private openUpstream(address: string, copyId: string, routeEpoch: number): void {
    this.closeUpstream();
    const client = this.client(address);
    const hasState = this.view.loaded && !this.forceSnapshot;
    this.forceSnapshot = false;
    const call = client.followShared({ app: this.o.appName, rs: this.master!, copyId: this.o.copyId, epoch: this.view.epoch, seq: this.view.seq, hasState });
    const up: Upstream = { call, address, copyId, routeEpoch };
    this.upstream = up;
    call.on('data', (m: FollowSharedResponse) => this.onStep(up, m));
    call.on('error', (e: Error) => this.upstreamEnded(up, e));
    call.on('end', () => this.upstreamEnded(up, undefined));
    this.log.debug({ rs: this.master, source: copyId, routeEpoch, at: { epoch: this.view.epoch, seq: this.view.seq, loaded: hasState } }, 'following the shared data');
  }

  private onStep(up: Upstream, m: FollowSharedResponse): void {
    if (this.upstream !== up) return;
    const v = judgeSharedEvent(this.view, m);
    if (v.kind === 'stale') {
      this.log.warn({ rs: this.master, source: up.copyId, epoch: m.epoch, viewEpoch: this.view.epoch, why: v.reason }, 'refused shared data from a deposed master active');
      this.failUpstream(up);
      return;
    }
    if (v.kind === 'gap') {
      this.log.warn({ rs: this.master, source: up.copyId, why: v.reason }, 'shared data stream has a gap; asking for a snapshot');
      this.forceSnapshot = true;
      this.failUpstream(up);
      return;
    }
    try {
      if (v.snapshot) {
        const snap = decodeJson(m.state);
        this.view.state = this.handler.restore ? this.handler.restore(snap) : (snap as S);
        this.view.seq = m.snapshotSeq;
        this.view.loaded = true;
      }
      for (let i = v.first; i < v.first + v.count; i++) {
        const u = m.updates[i]!;
        this.applyUpdates(u.update, u.seq);
        this.view.seq = u.seq;
      }
    } catch (e) {
      this.log.error({ rs: this.master, source: up.copyId, err: ensureError(e).message }, 'applying shared data failed; asking for a snapshot');
      this.forceSnapshot = true;
      this.failUpstream(up);
      return;
    }
    if (m.epoch > this.view.epoch) this.view.epoch = m.epoch;
    this.backoffMs = MIN_BACKOFF_MS;
    this.signal();
  }

  private upstreamEnded(up: Upstream, e: Error | undefined): void {
    if (this.upstream !== up) return;
    this.upstream = undefined;
    const err = e ? fromServiceError(e) : undefined;
    this.log.debug({ rs: this.master, source: up.copyId, err: err?.message ?? 'stream ended' }, 'shared data stream ended; following again');
    this.noteFailure();
  }

  private failUpstream(up: Upstream): void {
    if (this.upstream !== up) return;
    this.upstream = undefined;
    up.call.cancel();
    this.noteFailure();
  }

  /** Back off before following the same source again; a route change retries at once. */
  private noteFailure(): void {
    this.retryAt = Date.now() + this.backoffMs;
    this.scheduleRetry(this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
  }

  private scheduleRetry(ms: number): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconsider();
    }, Math.max(1, ms));
    this.retryTimer.unref();
  }

  private closeUpstream(): void {
    const up = this.upstream;
    if (!up) return;
    this.upstream = undefined;
    up.call.cancel();
  }

  /** Missed wake-ups: a commit or role change the hooks did not see, a stream to reopen. */
  private sweep(): void {
    if (this.stopped) return;
    this.tryPublish();
    if (!this.upstream && !this.retryTimer) this.reconsider();
  }

  private client(address: string): AdsmServiceClient {
    const c = this.clients.get(address);
    // The master RS's active moves with failovers, and a restarted copy comes back on a new
    // port: without this, one channel per move would stay open for the life of the copy.
    this.clients.sweep(new Set([address]), Date.now());
    return c;
  }

  private signal(): void {
    this.changed.notify();
  }
}

function positive(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidArgumentError(`${name} must be a positive integer, got ${v}`);
  return v;
}
