import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Attributes } from '@opentelemetry/api';
import { performance } from 'node:perf_hooks';
import {
  AdsmServiceClient,
  ControllerServiceService,
  copyStatusFromName,
  type ApplyTopologyRequest,
  type ApplyTopologyResponse,
  type ControllerServiceServer,
  type CopyHeartbeatRequest,
  type CopyHeartbeatResponse,
  type DisableCopyRequest,
  type DisableCopyResponse,
  type DrainCopyRequest,
  type DrainCopyResponse,
  type EnableCopyRequest,
  type EnableCopyResponse,
  type FenceCheckpointRequest,
  type FenceCheckpointResponse,
  type SaveCheckpointRequest,
  type SaveCheckpointResponse,
  FaultKind,
  FaultOutcome,
  type FaultResult,
  type ReportFaultRequest,
  type ReportFaultResponse,
  type ReportSyncedRequest,
  type ReportSyncedResponse,
  type GetStatusRequest,
  type GetStatusResponse,
  type RegisterCopyRequest,
  type RegisterCopyResponse,
  type SwitchoverRequest,
  type SwitchoverResponse,
  type MoveRsRequest,
  type MoveRsResponse,
  type PbPendingMove,
  type PbPendingStandbyMove,
  type WatchRoutesRequest,
  type WatchRoutesResponse,
} from '@understudy/proto';
import {
  copyLoads,
  decide,
  MAX_SYNCED_ENTRIES,
  type SyncedStandby,
  emptyState,
  fullRoleSet,
  routesOf,
  type ClusterState,
  type ControllerCommand,
  type ControllerEvent,
  type Decision,
  type RouteChange,
} from '@understudy/core';
import {
  DeadlineExceededError,
  FencedError,
  InvalidArgumentError,
  FailedPreconditionError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  checkpointKey,
  ClientCache,
  clientChannelOptions,
  ensureError,
  insecureCredentials,
  malformedReason,
  startGrpcServer,
  toServiceError,
  unaryCall,
  unaryHandler,
  withSafeDeserialize,
  withSpan,
  type GrpcServer,
  type Store,
  ChangeSignal,
} from '@understudy/runtime';
import {
  appSpecToPb,
  assignmentToPb,
  copyToPb,
  edgeToPb,
  rejectionToError,
  roleEntriesToPb,
  routeToPb,
  topologyFromPb,
} from './convert';
import { handedOver, key as rsKey, LiveHandoffs, plannedHandoffs, type Handoff, type HandoffRecord, type PauseResult } from './migration';
import { RoleSendQueue } from './role-sends';

/** Tracer name of the controller's spans. */
const TRACER = 'understudy.controller';

/**
 * Called inside the decision loop with the state before and the decision (not yet persisted);
 * may return work to run after the persist and before the commands go out (see `submitLive`).
 */
type LiveStep = (before: ClusterState, d: Decision) => BeforeExecute | undefined;

/**
 * Work between a decision's persist and its commands (a live handoff's pause). It must stop
 * waiting when `interrupted` aborts: a fault report is queued behind it (see `serial`).
 */
type BeforeExecute = (interrupted: AbortSignal) => Promise<void>;

/** Runs one step of a decision, optionally as a span. */
type Step = <T>(name: string, attributes: Attributes, fn: () => Promise<T>) => Promise<T>;

/** A SetRoles command of a decision. */
type SetRolesCommand = Extract<ControllerCommand, { type: 'SetRoles' }>;

/** SetRoles waiting per copy before further ones fold into one full role set (see `RoleSendQueue`). */
const MAX_QUEUED_SENDS = 4;

/** Store key of the persisted cluster state. */
export const STATE_KEY = 'controller/state';
/** Name of the leader lease. */
export const LEADER_LEASE = 'controller/leader';
/** Metadata key naming the leader in a follower's UNAVAILABLE answer. */
export const LEADER_ADDRESS_KEY = 'understudy-leader-address';

/** Options of {@link startController}. */
export interface ControllerOptions {
  /** Unique id of this replica. */
  readonly controllerId: string;
  readonly store: Store;
  readonly logger: Logger;
  /** Where the gRPC service listens. @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** Host others use to reach this replica. @default '127.0.0.1' */
  readonly advertiseHost?: string;
  /** Leader lease time-to-live; a dead leader is replaced within about this long. @default 2000 */
  readonly leaseTtlMs?: number;
  /** A new leader stays passive at most this long waiting for known copies (R-HM-3). @default 2000 */
  readonly passiveTimeoutMs?: number;
  /** Period of the reconcile tick and of resyncs. @default 200 */
  readonly tickIntervalMs?: number;
  /** Deadline of one SetRoles call to a copy. @default 1000 */
  readonly setRolesTimeoutMs?: number;
  /** Events waiting for the decision loop before RESOURCE_EXHAUSTED. @default 10000 */
  readonly maxPendingEvents?: number;
  /**
   * Live moves (MoveRs, drain, completion of a pending move): deadline of the PauseRs call to the
   * RS's old active, inside the decision loop; past it, or as soon as a fault report is queued
   * behind it, the move goes on unpaused (the epoch fences the old active). @default 300
   */
  readonly pauseTimeoutMs?: number;
  /** Lease of such a pause: the old active resumes by itself after it (controller died mid-move). @default 3000 */
  readonly pauseLeaseMs?: number;
}

/** A running controller replica. */
export interface ControllerHandle {
  readonly controllerId: string;
  /** host:port of its gRPC service. */
  readonly address: string;
  isLeader(): boolean;
  /** The current state (leader only; followers hold none). */
  state(): ClusterState | undefined;
  stop(): Promise<void>;
}

interface Watcher {
  readonly app: string;
  /** The data-flow map edges out of this app go to this watcher too ('' = none; R-DFM-6). */
  readonly edgesFrom: string;
  readonly call: grpc.ServerWritableStream<WatchRoutesRequest, WatchRoutesResponse>;
}

const COPY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ADDRESS_RE = /^[A-Za-z0-9.\-:[\]]+:\d{1,5}$/;

/**
 * Start one System Controller replica (R-SC). Replicas elect a leader through a store lease;
 * only the leader decides. Every decision is `decide(state, event, now)` from libs/core; this
 * shell persists the new state (fenced by the lease token) BEFORE it sends any command, so a
 * copy never holds an epoch the store does not know, and a deposed leader cannot persist.
 */
export async function startController(opts: ControllerOptions): Promise<ControllerHandle> {
  const c = new ControllerNode(opts);
  await c.start();
  return c;
}

class ControllerNode implements ControllerHandle {
  readonly controllerId: string;
  address = '';
  private readonly store: Store;
  private readonly log: Logger;
  private readonly leaseTtlMs: number;
  private readonly passiveTimeoutMs: number;
  private readonly tickIntervalMs: number;
  private readonly setRolesTimeoutMs: number;
  private readonly maxPendingEvents: number;
  private readonly listenAddress: string;
  private readonly advertiseHost: string;
  private server: GrpcServer | undefined;

  private leader = false;
  private token = 0;
  private leaseValidUntil = 0;
  private leaderHint: { id: string; address: string } | undefined;
  private current: ClusterState | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private pending = 0;
  /** Fault reports queued in the decision loop and not started yet. */
  private urgentQueued = 0;
  /** Aborted while a fault report waits behind the running decision (see `serial`). */
  private interrupt = new AbortController();
  private readonly watchers = new Set<Watcher>();
  /** Clients of copies by address; closed once no registered copy has the address (a restart brings a new port). */
  private readonly copyClients = new ClientCache((address) => new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions()));
  private readonly lastHeard = new Map<string, number>();
  private readonly resync = new Set<string>();
  private readonly sendQueues = new Map<string, RoleSendQueue<SetRolesCommand>>();
  private leaseTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Pauses the old active of an RS before a live move (see migration.ts). */
  private readonly handoffs: LiveHandoffs;
  /** Latest completed live handoff per `app/rs` (MoveRs answers with it); bounded. */
  private readonly handoffRecords = new Map<string, HandoffRecord>();
  /** Notified whenever a new state is persisted: MoveRs waits on it. */
  private readonly stateChanged = new ChangeSignal();
  /** `app/rs` being handed over live right now (pause → decision → execution), with counts. */
  private readonly handoffsInFlight = new Map<string, number>();

  constructor(opts: ControllerOptions) {
    if (!COPY_ID_RE.test(opts.controllerId)) throw new InvalidArgumentError(`controllerId must match ${COPY_ID_RE}`);
    this.controllerId = opts.controllerId;
    this.store = opts.store;
    this.log = opts.logger.child({ controller: opts.controllerId });
    this.leaseTtlMs = opts.leaseTtlMs ?? 2000;
    this.passiveTimeoutMs = opts.passiveTimeoutMs ?? 2000;
    this.tickIntervalMs = opts.tickIntervalMs ?? 200;
    this.setRolesTimeoutMs = opts.setRolesTimeoutMs ?? 1000;
    this.maxPendingEvents = opts.maxPendingEvents ?? 10_000;
    this.listenAddress = opts.listenAddress ?? '127.0.0.1:0';
    this.advertiseHost = opts.advertiseHost ?? '127.0.0.1';
    this.handoffs = new LiveHandoffs((address) => this.copyClient(address), this.log, {
      ...(opts.pauseTimeoutMs !== undefined ? { pauseTimeoutMs: opts.pauseTimeoutMs } : {}),
      ...(opts.pauseLeaseMs !== undefined ? { pauseLeaseMs: opts.pauseLeaseMs } : {}),
    });
  }

  isLeader(): boolean {
    return this.leader;
  }

  state(): ClusterState | undefined {
    return this.leader ? this.current : undefined;
  }

  async start(): Promise<void> {
    const impl: ControllerServiceServer = {
      registerCopy: unaryHandler('RegisterCopy', this.log, (r: RegisterCopyRequest) => this.registerCopy(r)),
      copyHeartbeat: unaryHandler('CopyHeartbeat', this.log, (r: CopyHeartbeatRequest) => this.copyHeartbeat(r)),
      getStatus: unaryHandler('GetStatus', this.log, (r: GetStatusRequest) => this.getStatus(r)),
      applyTopology: unaryHandler('ApplyTopology', this.log, (r: ApplyTopologyRequest) => this.applyTopology(r)),
      switchover: unaryHandler('Switchover', this.log, (r: SwitchoverRequest) => this.switchover(r)),
      drainCopy: unaryHandler('DrainCopy', this.log, (r: DrainCopyRequest) => this.drainCopy(r)),
      disableCopy: unaryHandler('DisableCopy', this.log, (r: DisableCopyRequest) => this.disableCopy(r)),
      enableCopy: unaryHandler('EnableCopy', this.log, (r: EnableCopyRequest) => this.enableCopy(r)),
      watchRoutes: (call) => this.watchRoutes(call),
      reportFault: unaryHandler('ReportFault', this.log, (r: ReportFaultRequest) => this.reportFault(r)),
      saveCheckpoint: unaryHandler('SaveCheckpoint', this.log, (r: SaveCheckpointRequest) => this.saveCheckpoint(r)),
      fenceCheckpoint: unaryHandler('FenceCheckpoint', this.log, (r: FenceCheckpointRequest) => this.fenceCheckpoint(r)),
      reportSynced: unaryHandler('ReportSynced', this.log, (r: ReportSyncedRequest) => this.reportSynced(r)),
      moveRs: unaryHandler('MoveRs', this.log, (r: MoveRsRequest, call) => this.moveRs(r, call.getDeadline())),
    };
    this.server = await startGrpcServer({
      address: this.listenAddress,
      services: [{ definition: withSafeDeserialize(ControllerServiceService), implementation: impl as never }],
      logger: this.log,
      healthServiceNames: ['understudy.v1.ControllerService'],
    });
    this.address = `${this.advertiseHost}:${this.server.port}`;
    this.log.info({ address: this.address, store: this.store.kind }, 'controller replica started');
    await this.leadershipRound();
    this.leaseTimer = setInterval(() => void this.leadershipRound(), Math.max(50, Math.floor(this.leaseTtlMs / 3)));
    this.tickTimer = setInterval(() => void this.tick(), this.tickIntervalMs);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.leaseTimer);
    clearInterval(this.tickTimer);
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
    await this.chain.catch(() => undefined);
    if (this.leader) {
      this.leader = false;
      await this.store.releaseLease(LEADER_LEASE, this.controllerId, this.token).catch(() => undefined);
    }
    await this.server?.shutdown(1000);
    this.copyClients.closeAll();
  }

  // ---- leadership -------------------------------------------------------------------------

  private leadershipBusy = false;

  private async leadershipRound(): Promise<void> {
    if (this.stopped || this.leadershipBusy) return;
    this.leadershipBusy = true;
    const startedAt = Date.now();
    try {
      if (this.leader) {
        const ok = await this.store.renewLease(LEADER_LEASE, this.controllerId, this.token, this.leaseTtlMs);
        if (!ok) await this.stepDown('lease lost');
        else this.leaseValidUntil = startedAt + this.leaseTtlMs;
      } else {
        const lease = await this.store.acquireLease(LEADER_LEASE, this.controllerId, this.address, this.leaseTtlMs);
        if (lease) {
          this.leaseValidUntil = startedAt + this.leaseTtlMs;
          await this.becomeLeader(lease.token);
        } else {
          const cur = await this.store.readLease(LEADER_LEASE);
          this.leaderHint = cur ? { id: cur.holderId, address: cur.holderData } : undefined;
        }
      }
    } catch (e) {
      const err = ensureError(e);
      this.log.warn({ err: err.message }, 'leadership round failed');
      // Unknown standing is no standing (R-HM-4): once the lease may have lapsed, step down.
      if (this.leader && Date.now() >= this.leaseValidUntil) await this.stepDown('store unreachable past lease expiry');
    } finally {
      this.leadershipBusy = false;
    }
  }

  private becomeLeader(token: number): Promise<void> {
    return this.serial(async () => {
      const raw = await this.store.get(STATE_KEY);
      const loaded: ClusterState = raw ? (JSON.parse(Buffer.from(raw).toString('utf8')) as ClusterState) : emptyState();
      this.token = token;
      this.current = loaded;
      this.leader = true;
      this.leaderHint = { id: this.controllerId, address: this.address };
      this.log.info({ term: token, version: loaded.version, copies: Object.keys(loaded.copies).length }, 'became leader; passive until copies are heard');
      const d = decide(loaded, { type: 'LeadershipAcquired', passiveTimeoutMs: this.passiveTimeoutMs }, Date.now());
      void (await this.commit(d)).executed;
    });
  }

  private async stepDown(reason: string): Promise<void> {
    if (!this.leader) return;
    this.leader = false;
    this.current = undefined;
    this.resync.clear();
    this.log.warn({ reason, term: this.token }, 'stepped down as leader');
    // Watchers must move to the new leader: end their streams with UNAVAILABLE.
    for (const w of this.watchers) w.call.emit('error', toServiceError(this.notLeaderError()));
    this.watchers.clear();
  }

  private notLeaderError(): UnavailableError {
    const hint = this.leaderHint && this.leaderHint.id !== this.controllerId ? this.leaderHint : undefined;
    return new UnavailableError(
      hint ? `not the leader; leader is ${hint.id} at ${hint.address}` : 'not the leader; no leader known yet, retry shortly',
      hint ? { [LEADER_ADDRESS_KEY]: hint.address } : {},
    );
  }

  private requireLeader(): ClusterState {
    if (!this.leader || !this.current) throw this.notLeaderError();
    return this.current;
  }

  // ---- the decision loop ------------------------------------------------------------------

  /**
   * Run `fn` after every earlier event (decisions are strictly ordered). Bounded.
   *
   * An `urgent` event (a fault report) aborts `interrupt` while it waits: the one wait inside the
   * loop that is only an optimisation, a live handoff's pause (up to `pauseTimeoutMs`, e.g. on a
   * copy that hung and is not detected yet), then stops at once and the move goes on unpaused,
   * fenced by its epoch. Failover latency must not include a pause deadline.
   */
  private serial<T>(fn: () => Promise<T>, urgent = false): Promise<T> {
    if (this.pending >= this.maxPendingEvents) {
      return Promise.reject(new ResourceExhaustedError(`controller has ${this.pending} events pending; retry later`));
    }
    this.pending++;
    if (urgent) {
      this.urgentQueued++;
      this.interrupt.abort(new Error('a fault report is waiting'));
    }
    const start = (): Promise<T> => {
      if (urgent) this.urgentQueued--;
      if (this.interrupt.signal.aborted && this.urgentQueued === 0) this.interrupt = new AbortController();
      return fn();
    };
    const run = this.chain.then(start, start);
    this.chain = run.then(
      () => this.pending--,
      () => this.pending--,
    );
    return run;
  }

  /** Decide, persist, execute, in event order. `phase` names the trace spans (e.g. `failover`). */
  private async submit(event: ControllerEvent, phase?: string, live?: LiveStep): Promise<Decision> {
    const { d, executed } = await this.serial(async () => {
      const state = this.requireLeader();
      const d = decide(state, event, Date.now());
      if (d.rejection) throw rejectionToError(d.rejection);
      const { executed } = await this.commit(d, phase, live?.(state, d));
      return { d, executed };
    }, event.type === 'CopyFailed');
    // The caller (an RPC) answers once the commands went out; the decision loop did not wait.
    await executed;
    return d;
  }

  /**
   * Persist (fenced), then start executing. Must run inside `serial`. Ordering contract: the new
   * state is stored under the lease token BEFORE any command leaves, so a command never
   * describes a state a successor could miss. Execution is NOT awaited by the decision loop: a
   * hung copy's SetRoles (up to its deadline) must not hold back the next decision, typically
   * the failover of that very copy. Sends to one copy stay in order (see `sendRoles`), and
   * copies ignore role entries older than what they hold. With `phase`, each step is a span
   * `<phase>.isolate|promote|routes_published`.
   */
  private async commit(d: Decision, phase?: string, beforeExecute?: BeforeExecute): Promise<{ executed: Promise<void> }> {
    const step: Step = phase ? (name, attrs, fn) => withSpan(TRACER, `${phase}.${name}`, attrs, fn) : (_n, _a, fn) => fn();
    if (this.current === undefined || d.state.version !== this.current.version || d.state !== this.current) {
      await step('isolate', { 'understudy.state_version': d.state.version }, () => this.persist(d));
    }
    for (const n of d.notes) this.log.info({ version: d.state.version }, n);
    // Live handoffs: the old actives pause (bounded, cut short by a waiting fault report) after
    // the persist, right before the roles go out.
    if (beforeExecute) await beforeExecute(this.interrupt.signal);
    const executed = this.execute(d.commands, step).catch((e: unknown) => this.log.warn({ err: ensureError(e).message }, 'executing commands failed'));
    return { executed };
  }

  private async persist(d: Decision): Promise<void> {
    {
      try {
        await this.store.putFenced(STATE_KEY, Buffer.from(JSON.stringify(d.state)), LEADER_LEASE, this.token);
      } catch (e) {
        const err = ensureError(e);
        if (err instanceof FencedError) {
          await this.stepDown('fenced: another replica holds the lease');
          throw this.notLeaderError();
        }
        throw err;
      }
      const edgesBefore = this.current?.edges;
      this.current = d.state;
      this.notifyState();
      if (edgesBefore !== undefined && edgesBefore !== d.state.edges) this.publishEdges(d.state);
      if (d.state.copies !== this.sweptCopies) {
        this.sweptCopies = d.state.copies;
        this.copyClients.sweep(new Set(Object.values(d.state.copies).map((c) => c.address)), Date.now());
      }
    }
  }

  /** The copies record the client cache was last swept against (sweep only when it changes). */
  private sweptCopies: ClusterState['copies'] | undefined;

  /** Executes a decision's commands: SetRoles (per-copy ordered), routes, stop requests. */
  private async execute(commands: readonly ControllerCommand[], step: Step = (_n, _a, fn) => fn()): Promise<void> {
    const promote: SetRolesCommand[] = [];
    const others: Promise<void>[] = [];
    const routes: RouteChange[] = [];
    for (const c of commands) {
      switch (c.type) {
        case 'SetRoles':
          if (c.entries.some((e) => e.role === 'ACTIVE')) promote.push(c);
          else others.push(this.sendRoles(c));
          break;
        case 'PublishRoutes':
          routes.push(...c.routes);
          break;
        case 'StopCopy':
          // Isolation is by epoch (the copy's replication is refused at the new epochs); asking
          // the process to exit is best effort and not awaited: a hung or dead copy never answers.
          this.log.warn({ copy: c.copyId, incarnation: c.incarnation, reason: c.reason }, 'copy fenced; asking it to stop');
          this.stopCopy(c);
          break;
      }
    }
    // Routes go out together with the promotions: a copy that gets a delivery routed at an
    // epoch it does not hold yet waits for its SetRoles (ADSM `roleWaitMs`), so the client's
    // first retry after a failover costs max(route, role) latency, not their sum.
    let promoting: Promise<unknown> = Promise.resolve();
    if (promote.length > 0) {
      const actives = promote.flatMap((c) => c.entries.filter((e) => e.role === 'ACTIVE'));
      promoting = step(
        'promote',
        {
          'understudy.copy_ids': promote.map((c) => c.copyId),
          'understudy.rs_count': actives.length,
          'understudy.rs': actives.slice(0, 100).map((e) => `${e.app}/${e.rs}`),
          'understudy.epochs': actives.slice(0, 100).map((e) => e.epoch),
        },
        () => Promise.all(promote.map((c) => this.sendRoles(c))),
      );
    }
    if (routes.length > 0) {
      await step('routes_published', { 'understudy.routes': routes.length, 'understudy.watchers': this.watchers.size }, async () => this.publish(routes, false));
    }
    await promoting;
    await Promise.all(others);
  }

  /**
   * SetRoles to one copy, in order behind earlier sends to the same copy; past
   * `MAX_QUEUED_SENDS` waiting, later ones fold into one full role set (see `RoleSendQueue`).
   */
  private sendRoles(c: SetRolesCommand): Promise<void> {
    const queue =
      this.sendQueues.get(c.copyId) ??
      new RoleSendQueue<SetRolesCommand>(
        (cmd) => this.sendRolesNow(cmd),
        () => {
          const state = this.current;
          return this.leader && state?.copies[c.copyId] ? fullRoleSet(state, c.copyId) : undefined;
        },
        MAX_QUEUED_SENDS,
      );
    this.sendQueues.set(c.copyId, queue);
    return queue
      .push(c, (queued) => this.log.warn({ copy: c.copyId, queued }, 'SetRoles queue full (copy slow or hung); a full role set follows the queued ones'))
      .finally(() => {
        if (queue.depth === 0 && this.sendQueues.get(c.copyId) === queue) this.sendQueues.delete(c.copyId);
      });
  }

  private async sendRolesNow(c: SetRolesCommand): Promise<void> {
    const client = this.copyClient(c.address);
    // Shared data: the copy learns its app's master RS with its roles (see SetRolesRequest).
    const app = this.current?.copies[c.copyId]?.app;
    const sharedMasterRs = app === undefined ? undefined : this.current?.apps[app]?.spec.sharedMasterRs;
    try {
      await unaryCall(client.setRoles.bind(client), {
        copyId: c.copyId,
        incarnation: c.incarnation,
        leaderTerm: this.token,
        entries: roleEntriesToPb(c.entries),
        full: c.full,
        ...(sharedMasterRs === undefined ? {} : { sharedMasterRs }),
      }, { deadlineMs: this.setRolesTimeoutMs });
    } catch (e) {
      // Level-triggered repair: the copy gets its full role set on a later tick.
      this.resync.add(c.copyId);
      this.log.warn({ copy: c.copyId, err: ensureError(e).message }, 'SetRoles failed; will resync');
    }
  }

  private stopCopy(c: Extract<ControllerCommand, { type: 'StopCopy' }>): void {
    const address = this.current?.copies[c.copyId]?.address;
    if (!address) return;
    const client = this.copyClient(address);
    unaryCall(client.shutdown.bind(client), { copyId: c.copyId, incarnation: c.incarnation, reason: c.reason }, { deadlineMs: this.setRolesTimeoutMs }).catch(
      (e: unknown) => this.log.info({ copy: c.copyId, incarnation: c.incarnation, err: ensureError(e).message }, 'stop request not delivered (copy gone or hung)'),
    );
  }

  private copyClient(address: string): AdsmServiceClient {
    return this.copyClients.get(address);
  }

  private tickBusy = false;

  private async tick(): Promise<void> {
    if (!this.leader || this.stopped || this.tickBusy) return;
    this.tickBusy = true;
    try {
      await this.serial(async () => {
        if (!this.leader || !this.current) return;
        const before = this.current;
        const d = decide(before, { type: 'Tick' }, Date.now());
        if (!d.rejection) {
          // Balancing left pending may hand actives over now: live, like a move (paused first).
          const planned = plannedHandoffs(before, d.state);
          const pause = planned.length > 0 ? async (interrupted: AbortSignal): Promise<void> => void (await this.handoffs.pause(before, planned, 'balancing', interrupted)) : undefined;
          void (await this.commit(d, undefined, pause)).executed;
        }
        if (this.current.leader.passive) return;
        const due = [...this.resync];
        this.resync.clear();
        for (const id of due) if (this.current.copies[id]) void this.sendRoles(fullRoleSet(this.current, id));
      });
    } catch (e) {
      this.log.warn({ err: ensureError(e).message }, 'tick failed');
    } finally {
      this.tickBusy = false;
    }
  }

  // ---- routes -------------------------------------------------------------------------------

  private publish(routes: readonly RouteChange[], full: boolean): void {
    if (this.watchers.size === 0 || routes.length === 0) return;
    const state = this.current!;
    for (const w of this.watchers) {
      const mine = w.app ? routes.filter((r) => r.app === w.app) : routes;
      if (mine.length === 0) continue;
      const apps = [...new Set(mine.map((r) => r.app))].map((a) => state.apps[a]).filter((a) => a).map((a) => appSpecToPb(a!.spec));
      w.call.write({ full, stateVersion: state.version, routes: mine.map(routeToPb), apps, hasEdges: false, edges: [] });
    }
  }

  /**
   * The data-flow map changed (ApplyTopology): every watcher that follows the edges of an app
   * gets that app's new subset, complete (R-DFM-6: each copy holds the part of the map it needs).
   */
  private publishEdges(state: ClusterState): void {
    for (const w of this.watchers) {
      if (!w.edgesFrom) continue;
      w.call.write({ full: false, stateVersion: state.version, routes: [], apps: [], hasEdges: true, edges: edgesFrom(state, w.edgesFrom) });
    }
  }

  private watchRoutes(call: grpc.ServerWritableStream<WatchRoutesRequest, WatchRoutesResponse>): void {
    try {
      const bad = malformedReason(call.request);
      if (bad) throw new InvalidArgumentError(`malformed request: ${bad}`);
      const state = this.requireLeader();
      const app = call.request.app;
      if (app && !state.apps[app]) throw new NotFoundError(`application ${JSON.stringify(app)} is not declared`);
      const from = call.request.edgesFrom;
      if (from && !state.apps[from]) throw new NotFoundError(`edges_from: application ${JSON.stringify(from)} is not declared`);
      const w: Watcher = { app, edgesFrom: from, call };
      this.watchers.add(w);
      call.on('cancelled', () => this.watchers.delete(w));
      call.on('close', () => this.watchers.delete(w));
      const apps = Object.values(state.apps).filter((a) => !app || a.spec.name === app);
      call.write({
        full: true,
        stateVersion: state.version,
        routes: routesOf(state, app || undefined).map(routeToPb),
        apps: apps.map((a) => appSpecToPb(a.spec)),
        hasEdges: from !== '',
        edges: from ? edgesFrom(state, from) : [],
      });
    } catch (e) {
      call.emit('error', toServiceError(e));
    }
  }

  // ---- copy-facing RPCs -------------------------------------------------------------------

  private async registerCopy(r: RegisterCopyRequest): Promise<RegisterCopyResponse> {
    if (!COPY_ID_RE.test(r.copyId)) throw new InvalidArgumentError(`copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(r.copyId)}`);
    if (!r.app) throw new InvalidArgumentError('app is required');
    if (!ADDRESS_RE.test(r.address)) throw new InvalidArgumentError(`address must be host:port, got ${JSON.stringify(r.address)}`);
    if (!r.host) throw new InvalidArgumentError('host is required');
    if (!(r.incarnation > 0)) throw new InvalidArgumentError('incarnation must be > 0');
    await this.submit({ type: 'CopyRegistered', copyId: r.copyId, app: r.app, host: r.host, address: r.address, incarnation: r.incarnation });
    this.lastHeard.set(r.copyId, Date.now());
    // The copy may have missed commands while it was away: give it its complete role set.
    this.resync.add(r.copyId);
    return { controllerId: this.controllerId, leaderTerm: this.token };
  }

  private async copyHeartbeat(r: CopyHeartbeatRequest): Promise<CopyHeartbeatResponse> {
    if (!COPY_ID_RE.test(r.copyId)) throw new InvalidArgumentError(`copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(r.copyId)}`);
    if (!(r.incarnation > 0)) throw new InvalidArgumentError('incarnation must be > 0');
    const state = this.requireLeader();
    const c = state.copies[r.copyId];
    // A process whose incarnation was declared failed, or replaced by a newer one, is fenced:
    // it must stop committing and exit (R-FM isolation); a restart registers a new incarnation.
    if (c && (c.incarnation > r.incarnation || (c.incarnation === r.incarnation && (c.status === 'OUT_OF_SERVICE' || c.failed === true)))) {
      return { known: false, fenced: true };
    }
    if (!c || c.incarnation !== r.incarnation) return { known: false, fenced: false };
    this.lastHeard.set(r.copyId, Date.now());
    // Heartbeats are decisions only while a new leader waits for its copies (R-HM-3);
    // afterwards they are liveness data kept in memory, not persisted state.
    if (state.leader.passive && state.leader.awaiting.includes(r.copyId)) {
      await this.submit({ type: 'CopyHeard', copyId: r.copyId, incarnation: r.incarnation });
    }
    return { known: true, fenced: false };
  }

  /**
   * A fault manager reports failed copies. Idempotent per copy + incarnation: duplicate reports
   * (several fault managers, retries) find the incarnation already failed and do nothing. A link
   * fault is recorded only: the copy is healthy, so it keeps its roles (R-DFM-5).
   */
  private async reportFault(r: ReportFaultRequest): Promise<ReportFaultResponse> {
    const kindName = FaultKind[r.kind] as string | undefined;
    if (r.kind === FaultKind.FAULT_KIND_UNSPECIFIED || kindName === undefined || r.kind === FaultKind.UNRECOGNIZED) {
      throw new InvalidArgumentError(`kind must be one of CRASH, HANG, UNHEALTHY, PROBE_TIMEOUT, HOST, LINK (got ${r.kind})`);
    }
    if (r.copies.length === 0) throw new InvalidArgumentError('copies: at least one copy is required');
    if (r.copies.length > 10_000) throw new InvalidArgumentError(`copies: at most 10000 per report (got ${r.copies.length})`);
    for (const [i, c] of r.copies.entries()) {
      if (!COPY_ID_RE.test(c.copyId)) throw new InvalidArgumentError(`copies[${i}].copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(c.copyId)}`);
      if (!(c.incarnation > 0)) throw new InvalidArgumentError(`copies[${i}].incarnation must be > 0 (copy ${c.copyId})`);
    }
    if (r.kind === FaultKind.FAULT_KIND_HOST && !r.host) throw new InvalidArgumentError('host is required for a HOST fault');
    if (r.kind === FaultKind.FAULT_KIND_LINK && r.copies.length !== 1) throw new InvalidArgumentError('a LINK fault names exactly one copy');
    const state = this.requireLeader();
    for (const c of r.copies) if (!state.copies[c.copyId]) throw new NotFoundError(`copy ${c.copyId} is not registered`);
    const kind = kindName.replace(/^FAULT_KIND_/, '');
    const where = { kind, reporter: r.reporter, host: r.host || undefined, detail: r.detail };
    if (r.kind === FaultKind.FAULT_KIND_LINK) {
      this.log.warn({ ...where, copy: r.copies[0]!.copyId, from: r.fromCopyId }, 'link fault: copy is healthy but unreachable from a sender; not failed over');
      return { results: [{ copyId: r.copies[0]!.copyId, outcome: FaultOutcome.FAULT_OUTCOME_RECORDED, failedOver: 0 }] };
    }
    if (r.kind === FaultKind.FAULT_KIND_HOST) this.log.warn({ ...where, copies: r.copies.map((c) => c.copyId) }, 'host fault: every copy of the host lost');
    const results: FaultResult[] = [];
    for (const c of r.copies) {
      // One trace per failover (R-TR-5): detect (fault manager) → isolate → promote → routes_published.
      const attrs = { 'understudy.copy_id': c.copyId, 'understudy.incarnation': c.incarnation, 'understudy.fault_kind': kind, 'understudy.reporter': r.reporter };
      const result = await withSpan(TRACER, 'failover', attrs, async (span) => {
        const reason = `${kind}${r.detail ? `: ${r.detail}` : ''} (reported by ${r.reporter || 'unknown'})`;
        const d = await this.submit({ type: 'CopyFailed', copyId: c.copyId, incarnation: c.incarnation, reason }, 'failover');
        const outcome = faultOutcome(d, c.copyId, c.incarnation);
        span.setAttributes({ 'understudy.outcome': FaultOutcome[outcome], 'understudy.failed_over': d.moved?.active ?? 0 });
        return { copyId: c.copyId, outcome, failedOver: d.moved?.active ?? 0 };
      });
      results.push(result);
    }
    this.log.warn({ ...where, results: results.map((x) => `${x.copyId}:${FaultOutcome[x.outcome]}`) }, 'fault report handled');
    return { results };
  }

  /**
   * An active copy reports standbys it caught up. Only the RS's current active may clear a mark
   * (a deposed active's word proves nothing about the new member list); the core ignores late or
   * duplicate entries.
   */
  private async reportSynced(r: ReportSyncedRequest): Promise<ReportSyncedResponse> {
    if (!COPY_ID_RE.test(r.copyId)) throw new InvalidArgumentError(`copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(r.copyId)}`);
    if (r.standbys.length === 0) throw new InvalidArgumentError('standbys: at least one entry is required');
    if (r.standbys.length > MAX_SYNCED_ENTRIES) throw new InvalidArgumentError(`standbys: at most ${MAX_SYNCED_ENTRIES} per report (got ${r.standbys.length})`);
    const state = this.requireLeader();
    const reporter = state.copies[r.copyId];
    if (!reporter) throw new NotFoundError(`copy ${r.copyId} is not registered`);
    if (reporter.incarnation !== r.incarnation) {
      throw new FailedPreconditionError(`copy ${r.copyId}: incarnation ${r.incarnation} is not the registered one (${reporter.incarnation})`);
    }
    const entries: SyncedStandby[] = [];
    for (const [i, x] of r.standbys.entries()) {
      if (!x.app) throw new InvalidArgumentError(`standbys[${i}].app is required`);
      if (!COPY_ID_RE.test(x.standbyCopyId)) throw new InvalidArgumentError(`standbys[${i}].standby_copy_id must match ${COPY_ID_RE}`);
      if (!state.apps[x.app]?.rs[x.rs]) throw new NotFoundError(`standbys[${i}]: ${x.app}/${x.rs} does not exist`);
      // The core drops entries from a copy that is no longer the RS's active (normal after a
      // failover raced the report).
      entries.push({ app: x.app, rs: x.rs, copyId: x.standbyCopyId, incarnation: x.standbyIncarnation, version: x.version, reportedBy: r.copyId });
    }
    const event: ControllerEvent = { type: 'StandbysSynced', entries };
    // A report may complete a pending move or a balancing swap that waited for the standby,
    // which hands its RS over: pause the old active first (nothing is paused when nothing moves).
    const moving = Object.values(state.apps).some((a) => a.moves !== undefined);
    const { d } = await this.submitLive(event, moving ? 'move completed (target caught up)' : 'balancing (standby caught up)');
    const marked = (st: ClusterState, e: SyncedStandby): boolean => st.apps[e.app]?.syncing?.[e.rs]?.[e.copyId] !== undefined;
    let cleared = 0;
    for (const e of entries) if (marked(state, e) && !marked(d.state, e)) cleared++;
    if (cleared > 0) this.log.debug({ copy: r.copyId, cleared }, 'standbys caught up');
    return { cleared };
  }

  // ---- checkpoints (R-CKP-1, R-HM-5) -----------------------------------------------------------

  /**
   * The checkpoint key of an RS the controller knows, for a caller at `epoch`. Refuses an unknown
   * app or RS, and an epoch the controller never issued for the RS (only the store's epoch
   * fence decides between issued epochs).
   */
  private checkpointTarget(app: string, rs: number, epoch: number): string {
    if (!app) throw new InvalidArgumentError('app is required');
    if (!(epoch >= 1)) throw new InvalidArgumentError('epoch must be >= 1');
    const state = this.requireLeader();
    const a = state.apps[app];
    if (!a) throw new NotFoundError(`application ${JSON.stringify(app)} is not declared`);
    const assignment = a.rs[rs];
    if (!assignment) throw new NotFoundError(`${app} has no rs ${rs} (rs_count ${a.rs.length})`);
    if (epoch > assignment.epoch) throw new InvalidArgumentError(`epoch ${epoch} of ${app}/${rs} was never issued (current epoch ${assignment.epoch})`);
    return checkpointKey(app, rs);
  }

  /** Store an RS checkpoint at its epoch; a stale epoch is refused (StaleEpochError → FAILED_PRECONDITION). */
  private async saveCheckpoint(r: SaveCheckpointRequest): Promise<SaveCheckpointResponse> {
    const key = this.checkpointTarget(r.app, r.rs, r.epoch);
    await this.store.putAtEpoch(key, r.epoch, r.checkpoint);
    return {};
  }

  /** Fence an RS checkpoint at the caller's (new) epoch and return it. */
  private async fenceCheckpoint(r: FenceCheckpointRequest): Promise<FenceCheckpointResponse> {
    const key = this.checkpointTarget(r.app, r.rs, r.epoch);
    const got = await this.store.fenceAndGet(key, r.epoch);
    this.log.info({ app: r.app, rs: r.rs, epoch: r.epoch, found: got !== null, bytes: got?.value.length ?? 0 }, 'checkpoint fenced for a new active');
    return got ? { found: true, epoch: got.epoch, checkpoint: Buffer.from(got.value) } : { found: false, epoch: r.epoch, checkpoint: Buffer.alloc(0) };
  }

  // ---- ops RPCs ------------------------------------------------------------------------------

  private getStatus(r: GetStatusRequest): GetStatusResponse {
    const state = this.requireLeader();
    if (r.app && !state.apps[r.app]) throw new NotFoundError(`application ${JSON.stringify(r.app)} is not declared`);
    const apps = Object.values(state.apps).filter((a) => !r.app || a.spec.name === r.app);
    const copies = Object.values(state.copies).filter((c) => !r.app || c.app === r.app);
    const loadsByApp = new Map(apps.map((a) => [a.spec.name, copyLoads(state, a.spec.name)]));
    return {
      controllerId: this.controllerId,
      leaderId: this.controllerId,
      leaderAddress: this.address,
      leaderTerm: this.token,
      passive: state.leader.passive,
      apps: apps.map((a) => ({
        spec: appSpecToPb(a.spec),
        activated: a.activated,
        rsWithActive: a.rs.filter((x) => x.members[0]?.role === 'ACTIVE').length,
        rsFullyReplicated: a.rs.filter(
          (x) => x.members[0]?.role === 'ACTIVE' && x.members.filter((m) => m.role === 'STANDBY').length >= a.spec.standbys,
        ).length,
      })),
      copies: copies.map((c) => copyToPb(state, c.copyId, loadsByApp.get(c.app)?.get(c.copyId), this.lastHeard.get(c.copyId))),
      assignments: r.includeAssignments ? apps.flatMap((a) => a.rs.map((x) => assignmentToPb(state, x))) : [],
      edges: state.edges.map(edgeToPb),
      stateVersion: state.version,
      moves: apps.flatMap((a) => Object.entries(a.moves ?? {}).map(([rs, m]): PbPendingMove => ({
        app: a.spec.name,
        rs: Number(rs),
        fromCopyId: m.fromCopyId,
        toCopyId: m.toCopyId,
        sinceUnixMs: m.sinceMs,
        reason: m.reason ?? '',
      }))),
      standbyMoves: apps.flatMap((a) => Object.entries(a.standbyMoves ?? {}).map(([rs, m]): PbPendingStandbyMove => ({
        app: a.spec.name,
        rs: Number(rs),
        fromCopyId: m.fromCopyId,
        toCopyId: m.toCopyId,
        sinceUnixMs: m.sinceMs,
      }))),
    };
  }

  private async applyTopology(r: ApplyTopologyRequest): Promise<ApplyTopologyResponse> {
    const topology = topologyFromPb(r.topology);
    const d = await this.submit({ type: 'TopologyApplied', topology });
    return { stateVersion: d.state.version, changes: [...d.notes] };
  }

  private async switchover(r: SwitchoverRequest): Promise<SwitchoverResponse> {
    if (!r.app) throw new InvalidArgumentError('app is required');
    if (!r.toCopyId) throw new InvalidArgumentError('to_copy_id is required');
    // Live like a move: the old active pauses what it hands over (FAULT_TOLERANT: every RS).
    const { d, records } = await this.submitLive({ type: 'SwitchoverRequested', app: r.app, rs: r.rs, toCopyId: r.toCopyId }, `switchover to ${r.toCopyId}`);
    const a = d.state.apps[r.app]!.rs[r.rs]!;
    const mine = records.filter((x) => x.app === r.app);
    const paused = mine.length > 0 && mine.every((x) => x.pause.paused);
    return { assignment: assignmentToPb(d.state, a), paused, pauseMs: mine[0]?.pauseMs ?? 0, pauseDetail: paused ? '' : (mine.find((x) => !x.pause.paused)?.pause.detail ?? '') };
  }

  /**
   * Live move of one RS's ACTIVE role (issue 5). Refusals (unknown app/RS/copy, target not UP or
   * already ACTIVE, FAULT_TOLERANT app, passive controller) come from a dry run of the core and
   * disturb nothing. Otherwise the old active is paused, the core decides, and either the target
   * is promoted now (a caught-up standby; DISTRIBUTED: it restores the checkpoint the paused
   * active just wrote) or it joins as an extra standby and the call waits, within its deadline,
   * until the active reports it caught up and the move completes (paused again at that point).
   */
  private async moveRs(r: MoveRsRequest, callDeadline: grpc.Deadline): Promise<MoveRsResponse> {
    if (!r.app) throw new InvalidArgumentError('app is required');
    if (!COPY_ID_RE.test(r.toCopyId)) throw new InvalidArgumentError(`to_copy_id must match ${COPY_ID_RE}, got ${JSON.stringify(r.toCopyId)}`);
    if (r.reason.length > 256) throw new InvalidArgumentError(`reason: at most 256 characters (got ${r.reason.length})`);
    const started = performance.now();
    const where = rsKey(r.app, r.rs);
    const before = this.requireLeader();
    const app = before.apps[r.app];
    const fromBefore = app?.rs[r.rs]?.members[0]?.role === 'ACTIVE' ? app.rs[r.rs]!.members[0]!.copyId : '';
    const event: ControllerEvent = { type: 'MoveRequested', app: r.app, rs: r.rs, toCopyId: r.toCopyId, ...(r.reason ? { reason: r.reason } : {}) };
    // DISTRIBUTED: the target restores the RS from its checkpoint, so the old active must have
    // written one; a copy that does not checkpoint at all would hand over an empty RS.
    const needsCheckpoint = (pauses: ReadonlyMap<string, PauseResult>): void => {
      const p = pauses.get(where);
      if (p?.paused === true && !p.checkpointed) {
        throw new FailedPreconditionError(
          `cannot move ${where}: app ${r.app} is DISTRIBUTED and its copies do not checkpoint (start them with --checkpoint-before-ack or --checkpoint-interval-ms), so the target could not restore the RS state`,
        );
      }
    };
    const attrs = { 'understudy.app': r.app, 'understudy.rs': r.rs, 'understudy.to_copy_id': r.toCopyId, 'understudy.reason': r.reason };
    return withSpan(TRACER, 'move', attrs, async (span) => {
      const check = app?.spec.mode === 'DISTRIBUTED' ? needsCheckpoint : undefined;
      const { d, records } = await this.submitLive(event, `move to ${r.toCopyId}${r.reason ? ` (${r.reason})` : ''}`, check, 'move');
      let state = d.state;
      const pending = state.apps[r.app]?.moves?.[r.rs];
      if (pending !== undefined) {
        this.log.info({ app: r.app, rs: r.rs, from: pending.fromCopyId, to: r.toCopyId, reason: r.reason || undefined }, 'move started: the target joins as standby and takes over once caught up');
        const deadlineMs = typeof callDeadline === 'number' ? callDeadline : callDeadline.getTime();
        // Answer a little before the caller's deadline, so it gets our reason, not just a timeout.
        const untilMs = Math.min(Number.isFinite(deadlineMs) ? deadlineMs - 100 : Infinity, Date.now() + MAX_MOVE_WAIT_MS);
        state = await this.waitForState(
          (s) => s.apps[r.app]?.moves?.[r.rs] === undefined && !this.handoffsInFlight.has(where),
          untilMs,
          () => new DeadlineExceededError(`the move of ${where} to ${r.toCopyId} is still in progress (the target is catching up); it goes on: see 'understudy status'`),
        );
      }
      const a = state.apps[r.app]!.rs[r.rs]!;
      const head = a.members[0];
      if (head?.role !== 'ACTIVE' || head.copyId !== r.toCopyId) {
        throw new FailedPreconditionError(
          `the move of ${where} to ${r.toCopyId} did not complete: the RS's active is ${head?.role === 'ACTIVE' ? head.copyId : 'none'} at epoch ${a.epoch} (the move was abandoned: its target or source failed, or the target did not catch up in time)`,
        );
      }
      const rec = records.find((x) => x.app === r.app && x.rs === r.rs) ?? (this.handoffRecords.get(where)?.epoch === a.epoch ? this.handoffRecords.get(where) : undefined);
      const totalMs = performance.now() - started;
      const res: MoveRsResponse = {
        fromCopyId: rec?.fromCopyId ?? pending?.fromCopyId ?? fromBefore,
        toCopyId: r.toCopyId,
        epoch: a.epoch,
        pauseMs: rec?.pauseMs ?? 0,
        totalMs,
        paused: rec?.pause.paused ?? false,
        pauseDetail: rec === undefined || rec.pause.paused ? '' : rec.pause.detail,
        lastSeq: rec?.pause.lastSeq ?? 0,
        caughtUpFirst: pending !== undefined,
        assignment: assignmentToPb(state, a),
      };
      span.setAttributes({ 'understudy.from_copy_id': res.fromCopyId, 'understudy.epoch': res.epoch, 'understudy.pause_ms': res.pauseMs, 'understudy.paused': res.paused });
      this.log.info(
        { app: r.app, rs: r.rs, epoch: a.epoch, from: res.fromCopyId, to: r.toCopyId, pauseMs: round2(res.pauseMs), totalMs: round2(totalMs), paused: res.paused, pauseDetail: res.pauseDetail || undefined, lastSeq: res.lastSeq, caughtUpFirst: res.caughtUpFirst, reason: r.reason || undefined },
        'RS moved',
      );
      return res;
    });
  }

  /**
   * `submit` for decisions that hand RS over from a live ACTIVE (moves, their completion, drain).
   * Inside the decision loop, the RS whose ACTIVE role the decision takes from a live copy are
   * found (`plannedHandoffs`); after the new state is persisted and right before the roles go
   * out, that copy is asked to pause them (bounded by `pauseTimeoutMs`; a failure is logged and
   * the move goes on, fenced by the epoch). Pausing after the persist keeps the store write out
   * of the pause window, and a refused event pauses nothing.
   *
   * With `check` (a condition on the pause results that may still refuse the event: DISTRIBUTED
   * moves need the old active's final checkpoint), the pause comes first, from a dry run of the
   * pure core, and a refusal resumes what was paused.
   */
  private async submitLive(
    event: ControllerEvent,
    reason: string,
    check?: (pauses: ReadonlyMap<string, PauseResult>) => void,
    phase?: string,
  ): Promise<{ d: Decision; records: HandoffRecord[] }> {
    let planned: Handoff[] = [];
    let pauses: ReadonlyMap<string, PauseResult> = new Map();
    let started = 0;
    let pausedAt = 0;
    const mark = (hs: readonly Handoff[]): void => {
      for (const h of hs) this.handoffsInFlight.set(rsKey(h.app, h.rs), (this.handoffsInFlight.get(rsKey(h.app, h.rs)) ?? 0) + 1);
    };
    try {
      let d: Decision;
      if (check === undefined) {
        d = await this.submit(event, phase, (before, dec) => {
          planned = plannedHandoffs(before, dec.state);
          if (planned.length === 0) return undefined;
          mark(planned); // before the persist: a MoveRs waiting on the state must also wait for the record
          return async (interrupted) => {
            started = performance.now();
            pauses = await this.handoffs.pause(before, planned, reason, interrupted);
            pausedAt = performance.now();
          };
        });
      } else {
        const state = this.requireLeader();
        const dry = decide(state, event, Date.now());
        if (dry.rejection) throw rejectionToError(dry.rejection);
        planned = plannedHandoffs(state, dry.state);
        mark(planned);
        started = performance.now();
        pauses = planned.length > 0 ? await this.handoffs.pause(state, planned, reason) : new Map();
        pausedAt = performance.now();
        const pausedOnly = (hs: readonly Handoff[]): Handoff[] => hs.filter((h) => pauses.get(rsKey(h.app, h.rs))?.paused === true);
        try {
          check(pauses);
          d = await this.submit(event, phase);
        } catch (e) {
          this.handoffs.resume(state, pausedOnly(planned));
          throw e;
        }
        // The state may have changed between the dry run and the decision: resume what stayed put.
        const missed = planned.filter((h) => !handedOver(d.state, h));
        if (missed.length > 0) this.handoffs.resume(state, pausedOnly(missed));
      }
      if (planned.length === 0) return { d, records: [] };
      const pauseMs = performance.now() - started;
      const records: HandoffRecord[] = [];
      for (const h of planned) {
        if (!handedOver(d.state, h)) continue;
        const a = d.state.apps[h.app]!.rs[h.rs]!;
        const head = a.members[0];
        const pause = pauses.get(rsKey(h.app, h.rs)) ?? { paused: false, detail: 'not asked', lastSeq: 0, checkpointed: false, held: 0 };
        const rec: HandoffRecord = { app: h.app, rs: h.rs, fromCopyId: h.fromCopyId, toCopyId: head?.role === 'ACTIVE' ? head.copyId : '', epoch: a.epoch, pauseMs, pause };
        records.push(rec);
        this.handoffRecords.delete(rsKey(h.app, h.rs));
        this.handoffRecords.set(rsKey(h.app, h.rs), rec);
        if (this.handoffRecords.size > MAX_HANDOFF_RECORDS) this.handoffRecords.delete(this.handoffRecords.keys().next().value as string);
      }
      const paused = records.filter((x) => x.pause.paused).length;
      const one = records.length === 1 ? records[0]! : undefined;
      this.log.info(
        { reason, handoffs: records.length, paused, pauseMs: round2(pauseMs), pauseRpcMs: round2(pausedAt - started), ...(one ? { app: one.app, rs: one.rs, epoch: one.epoch, from: one.fromCopyId, to: one.toCopyId, lastSeq: one.pause.lastSeq } : {}) },
        'live handoff done',
      );
      return { d, records };
    } finally {
      for (const h of planned) {
        const k = rsKey(h.app, h.rs);
        const n = (this.handoffsInFlight.get(k) ?? 1) - 1;
        if (n <= 0) this.handoffsInFlight.delete(k);
        else this.handoffsInFlight.set(k, n);
      }
      if (planned.length > 0) this.notifyState();
    }
  }

  /** Wait until `pred` holds for the current state (re-checked on every persisted change). */
  private async waitForState(pred: (s: ClusterState) => boolean, untilMs: number, onTimeout: () => Error): Promise<ClusterState> {
    for (;;) {
      const s = this.requireLeader();
      if (pred(s)) return s;
      const left = untilMs - Date.now();
      if (left <= 0) throw onTimeout();
      await this.stateChanged.wait(Math.min(left, 1000));
    }
  }

  private notifyState(): void {
    this.stateChanged.notify();
  }

  private async drainCopy(r: DrainCopyRequest): Promise<DrainCopyResponse> {
    if (!r.copyId) throw new InvalidArgumentError('copy_id is required');
    const before = this.current ? copyLoads(this.current, this.current.copies[r.copyId]?.app ?? '').get(r.copyId) : undefined;
    // Live, like a move: every RS the copy is ACTIVE for is paused there before it is handed over.
    await this.submitLive({ type: 'DrainRequested', copyId: r.copyId }, `drain of ${r.copyId}`);
    return { movedActive: before?.active ?? 0, movedStandby: before?.standby ?? 0 };
  }

  private async disableCopy(r: DisableCopyRequest): Promise<DisableCopyResponse> {
    if (!r.copyId) throw new InvalidArgumentError('copy_id is required');
    const before = this.current ? copyLoads(this.current, this.current.copies[r.copyId]?.app ?? '').get(r.copyId) : undefined;
    await this.submit({ type: 'CopyDisabled', copyId: r.copyId });
    return { failedOver: before?.active ?? 0 };
  }

  private async enableCopy(r: EnableCopyRequest): Promise<EnableCopyResponse> {
    if (!r.copyId) throw new InvalidArgumentError('copy_id is required');
    const d = await this.submit({ type: 'CopyEnabled', copyId: r.copyId });
    const status = d.state.copies[r.copyId]!.status;
    return { status: copyStatusFromName(status) };
  }
}

/** What a CopyFailed decision did (see `Decision.moved`). */
function faultOutcome(d: Decision, copyId: string, incarnation: number): FaultOutcome {
  if (d.moved !== undefined) return FaultOutcome.FAULT_OUTCOME_FAILED_OVER;
  const c = d.state.copies[copyId];
  return c !== undefined && c.incarnation > incarnation ? FaultOutcome.FAULT_OUTCOME_STALE : FaultOutcome.FAULT_OUTCOME_DUPLICATE;
}

/** The edges out of `app`, in declaration order (the subset of the map a copy of `app` needs). */
function edgesFrom(state: ClusterState, app: string): ReturnType<typeof edgeToPb>[] {
  return state.edges.filter((e) => e.from === app).map(edgeToPb);
}

/** Completed handoffs remembered for MoveRs answers. */
const MAX_HANDOFF_RECORDS = 10_000;
/** Longest a MoveRs call waits for a pending move (its target catching up), whatever its deadline. */
const MAX_MOVE_WAIT_MS = 120_000;

function round2(ms: number): number {
  return Math.round(ms * 100) / 100;
}
