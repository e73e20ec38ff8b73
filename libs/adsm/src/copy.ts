import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import {
  AdsmServiceClient,
  AdsmServiceService,
  Role as PbRole,
  roleFromName,
  roleName,
  type AdsmServiceServer,
  type DeliverRequest,
  type DeliverResponse,
  type GetCopyInfoResponse,
  type Health,
  type AddOlderDedupeRequest,
  type AddOlderDedupeResponse,
  type InstallSnapshotRequest,
  type InstallSnapshotResponse,
  type Member as PbMember,
  type PbSyncedStandby,
  type QueryRequest,
  type QueryResponse,
  type ReplicateRequest,
  type ReplicateResponse,
  type ReplicateStreamRequest,
  type ReplicateStreamResponse,
  type SetRolesRequest,
  type SetRolesResponse,
  type UpdateEntry,
  type OutboxEntry,
  type ShutdownRequest,
  type ShutdownResponse,
  type FetchStateRequest,
  type FetchStateResponse,
  type PauseRsRequest,
  type PauseRsResponse,
  type PausedRs,
  type ResumeRsRequest,
  type ResumeRsResponse,
} from '@understudy/proto';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  INTERNAL_ERROR_DETAILS,
  InvalidArgumentError,
  NotActiveError,
  NotFoundError,
  ResourceExhaustedError,
  StaleEpochError,
  UnavailableError,
  malformedReason,
  ClientCache,
  toServiceError,
  clientChannelOptions,
  createLogger,
  ensureError,
  fromServiceError,
  insecureCredentials,
  startGrpcServer,
  unaryCall,
  unaryHandler,
  type GrpcServer,
  ChangeSignal,
} from '@understudy/runtime';
import { decodeJson, encodeJson } from './codec';
import { DedupeTable } from './dedupe';
import { controllerCheckpoints, decodeCheckpoint, encodeCheckpoint, type CheckpointStore } from './checkpoint';
import { ControllerClient } from './controller-client';
import { FaultManagerLink } from './watch';
import { LoadReporter } from './load';
import { DataFlow, type DataFlowOptions } from './dataflow';
import { Outbox } from './outbox';
import { MAX_PAUSE_LEASE_MS, RsPauses } from './pause';
import { SharedData } from './shared';
import { TickBatcher, streamBatchMetadata, takesBatches } from './stream-batch';
import { ByteGate } from './byte-gate';
import type { AppDefinition, RsHandler } from './handler';

type RoleName = 'ACTIVE' | 'STANDBY' | 'OUT_OF_SERVICE';

/** Background catch-up rounds per role change (see `kickSync`): 20 ms doubling to 2 s, ~15 s in all. */
const KICK_SYNC_ATTEMPTS = 12;
/** Delay before a standby builds the index of an installed dedupe table (see onInstallSnapshot). */
const DEDUPE_WARM_DELAY_MS = 1000;
/** Response header of a copy's ReplicateStream: it takes split snapshots (SNAPSHOT_SPLIT in adsm.proto). */
const SNAPSHOT_SPLIT_HEADER = 'understudy-snapshot-split';

/** Options of {@link startCopy}. */
export interface CopyOptions<S, M, U, R, Q, QR> {
  /** The application this process runs. */
  readonly app: AppDefinition<S, M, U, R, Q, QR>;
  /** Stable id of this copy (survives restarts; a restart gets a new incarnation). */
  readonly copyId: string;
  /** Every controller replica's host:port. */
  readonly controllerAddresses: readonly string[];
  /** Host id used for placement spread and host-fault location. @default os.hostname() */
  readonly host?: string;
  /** Where the ADSM gRPC service listens. @default '127.0.0.1:0' */
  readonly listenAddress?: string;
  /** Host part others use to reach this copy. @default '127.0.0.1' */
  readonly advertiseHost?: string;
  /** Increases on every start. @default Date.now() */
  readonly incarnation?: number;
  /** Heartbeat period towards the controller. @default 500 */
  readonly heartbeatIntervalMs?: number;
  /** A Deliver waits at most this long for its update to be replicated. @default 5000 */
  readonly deliverTimeoutMs?: number;
  /** Deadline of one Replicate / InstallSnapshot call. @default 1000 */
  readonly replicationCallTimeoutMs?: number;
  /**
   * Snapshot bytes (InstallSnapshot) in flight together to one peer. Several snapshots to a peer
   * that together exceed it go one after another, in order, so the first one (a promoted RS's
   * new standby after a failover) is not slowed down by the rest; one snapshot larger than this
   * always goes. @default 262144
   */
  readonly snapshotBytesInFlight?: number;
  /**
   * SNAPSHOT_SPLIT (adsm.proto): to a standby that takes it, a snapshot carries only the newest
   * dedupe entries up to this many bytes, and the older ones follow; commits wait only for the
   * first part. 0: always send the whole table with the state (a standby promoted in the window
   * between the parts, after a second fault, remembers only the newest ids). @default 65536
   */
  readonly snapshotSplitDedupeBytes?: number;
  /**
   * How long a copy activated for an RS whose state it lacks keeps trying to fetch it from the
   * RS's other members before starting from the initial state. @default 3000
   */
  readonly recoverTimeoutMs?: number;
  /**
   * A Deliver routed at an epoch newer than this copy holds waits this long for the role to
   * arrive before answering NOT_ACTIVE. @default 1000
   */
  readonly roleWaitMs?: number;
  /** Queued messages per RS before RESOURCE_EXHAUSTED. @default 10000 */
  readonly maxQueuePerRs?: number;
  /**
   * Group commit: at most this many queued messages of one RS run through the handler (in queue
   * order) and go to the standbys as ONE Replicate batch; all of them are acknowledged once every
   * standby applied the batch. 1 = one message per replication round trip. Capped at
   * `logTailEntries`. @default 256
   */
  readonly replicationBatchMax?: number;
  /** Message ids remembered per RS for dedupe (replicated with the state). @default 10000 */
  readonly dedupeWindow?: number;
  /** Committed updates kept per RS to catch a lagging standby up without a snapshot. @default 1024 */
  readonly logTailEntries?: number;
  /** Largest accepted payload. @default 1048576 */
  readonly maxPayloadBytes?: number;
  /** Fault manager instances (host:port) to keep a heartbeat stream to; none = not watched. @default [] */
  readonly faultManagerAddresses?: readonly string[];
  /** Load manager instances (host:port) to stream load reports to; none = no load reports. @default [] */
  readonly loadManagerAddresses?: readonly string[];
  /** Period of load reports (the load manager may ask for another). @default 1000 */
  readonly loadReportIntervalMs?: number;
  /**
   * Checkpoint every ACTIVE RS whose state moved, this often (R-CKP-1): app snapshot, sequence
   * number and message-id dedupe table, written at the RS's epoch. 0 = no periodic checkpoints.
   * Checkpointing (this or `checkpointBeforeAck`) also makes a copy activated without the RS's
   * state restore it from the checkpoint (DISTRIBUTED mode: always), after fencing it at the new
   * epoch so the previous active can no longer write. @default 0
   */
  readonly checkpointIntervalMs?: number;
  /**
   * Group commit writes the checkpoint of the RS after the batch is recorded (and replicated to
   * the standbys, if any) and acknowledges the batch only once the checkpoint is stored: nothing
   * acknowledged is lost when the copy fails (R-NF-1), even without standbys. A checkpoint refused
   * at a newer epoch means this copy was deposed: it demotes itself and acknowledges nothing.
   * @default false
   */
  readonly checkpointBeforeAck?: boolean;
  /**
   * Where checkpoints go (see `checkpoint.ts`): e.g. `storeCheckpoints(redisStore)` for a Redis
   * shared by every process. The caller owns (and closes) it.
   * @default through the controller (`controllerCheckpoints`)
   */
  readonly checkpoints?: CheckpointStore;
  /**
   * Data-flow map and outbox (dataflow.ts): how a handler's `send` messages reach other
   * applications (through routers or directly) and the outbox bounds. @default direct delivery
   */
  readonly dataFlow?: DataFlowOptions;
  /**
   * Called once when this incarnation learns it was fenced (declared failed by the controller).
   * By then the copy already holds no RS and commits nothing. @default stops the copy
   */
  readonly onFenced?: (reason: string) => void | Promise<void>;
  readonly logger?: Logger;
}

/** A running copy. */
export interface CopyHandle {
  readonly copyId: string;
  readonly incarnation: number;
  /** host:port of the ADSM service. */
  readonly address: string;
  /**
   * Current role per RS (for tests and tools). `waits`: waits in progress on the RS's change
   * signal (replication rounds, queries); bounded by the work under way, not by history.
   * `dedupeIds`: message ids remembered; `olderDedupePending`: a STANDBY waiting for the older
   * part of a split snapshot's dedupe table (SNAPSHOT_SPLIT in adsm.proto).
   */
  roles(): Map<number, { role: RoleName; epoch: number; seq: number; waits: number; dedupeIds: number; olderDedupePending: boolean }>;
  /** Stop serving (graceful). */
  stop(): Promise<void>;
}

interface PeerProgress {
  address: string;
  incarnation: number;
  ackedSeq: number;
  needsSnapshot: boolean;
  /**
   * New at this epoch, listed as a member before it, and not tried yet: offer it a batch based
   * on `RsSlot.base` before falling back to a snapshot (see `syncPeer`).
   */
  tryBase: boolean;
  /** The controller has been told (or a report is queued) that this standby is caught up. */
  reported: boolean;
  /** The older part of a split snapshot's dedupe table is on its way: not caught up until it lands. */
  olderDedupe?: boolean;
}

interface DeliverOutcome {
  reply: Buffer;
  epoch: number;
  duplicate: boolean;
}

interface Job {
  /** A progress probe (R-HM-6): goes through the RS queue like a message, runs nothing. */
  readonly probe?: true;
  readonly messageId: string;
  readonly key: string;
  readonly message: unknown;
  readonly epoch: number;
  resolve(o: DeliverOutcome): void;
  reject(e: Error): void;
}

/** One RS as this copy holds it. */
class RsSlot<S> {
  role: RoleName = 'OUT_OF_SERVICE';
  /**
   * STANDBY: installed a split snapshot (SNAPSHOT_SPLIT in adsm.proto) at this epoch and seq and
   * waits for the older part of its dedupe table; until then only the newest ids are remembered.
   */
  olderDedupeFor: { epoch: number; seq: number } | undefined = undefined;
  epoch = 0;
  version = 0;
  members: PbMember[] = [];
  seq = 0;
  /** True once this copy holds real state for the RS (activated it, or got a snapshot). */
  hasState = false;
  /** Standby: a snapshot from the active at the current epoch was installed. */
  synced = false;
  /**
   * The epoch whose active the state (at `seq`) came from: set when a standby syncs at an epoch
   * and when this copy becomes the active of one. Two copies at the same (`stateEpoch`, `seq`)
   * hold the same state (one active per epoch, each seq applied once in its history); this lets
   * a new active skip the snapshot to a standby that already has its state (see `base`).
   */
  stateEpoch = 0;
  /**
   * ACTIVE: the history point this copy started its epoch from (its `stateEpoch` and `seq` at
   * the promotion); undefined when it had to fetch or restore its state (no point to match).
   */
  base: { epoch: number; seq: number } | undefined = undefined;
  /** Message id → first reply (replaced whole when a snapshot is installed). */
  dedupe: DedupeTable;
  readonly inflight = new Map<string, Promise<DeliverOutcome>>();
  readonly queue: Job[] = [];
  running = false;
  /** Contiguous tail of the updates recorded here (oldest first), to catch a standby up. */
  readonly log: UpdateEntry[] = [];
  readonly peers = new Map<string, PeerProgress>();
  /** Set while this ACTIVE fetches the RS state it lacks (see `recoverState`); messages wait. */
  recovering: Promise<void> | null = null;
  /** The stored checkpoint holds this RS up to `ckptSeq`, written (or fenced) at `ckptEpoch`. */
  ckptEpoch = -1;
  ckptSeq = -1;
  /** The checkpoint write in flight (writes of one RS never overlap, so they land in order). */
  ckptWrite: Promise<void> | null = null;
  /**
   * ACTIVE: every STANDBY of the member list applied the updates up to `committedSeq` at
   * `committedEpoch`. `seq` runs ahead of it while a batch is being replicated (updates are
   * recorded locally first, acknowledged only once committed).
   */
  committedSeq = 0;
  committedEpoch = -1;
  /** Woken when `committedSeq` advances (queries waiting for the round that runs; bounded). */
  readonly commitWaiters: (() => void)[] = [];
  /** Messages to other applications not yet acknowledged downstream; replicated with the state (outbox.ts). */
  readonly outbox = new Outbox();
  /** Notified whenever the controller changes this RS (wakes replication waits). */
  readonly changes = new ChangeSignal();

  constructor(
    readonly rs: number,
    public state: S,
    dedupeWindow: number,
  ) {
    this.dedupe = new DedupeTable(dedupeWindow);
  }
  signalChanged(): void {
    this.changes.notify();
  }
}

/**
 * Start a copy of an application: serve the ADSM gRPC service, register with the
 * controller, heartbeat, and follow the roles the controller sets.
 *
 * Commit rule (R-NF-1, R-NF-2): the ACTIVE acknowledges a message only after every STANDBY
 * in the RS's member list has applied its update at the current epoch; a standby refuses an
 * older epoch. A deposed active therefore cannot acknowledge anything, whatever the timing.
 */
export async function startCopy<S, M, U, R, Q, QR>(opts: CopyOptions<S, M, U, R, Q, QR>): Promise<CopyHandle> {
  const copy = new AdsmCopy(opts);
  await copy.start();
  return copy;
}

class AdsmCopy<S, M, U, R, Q, QR> implements CopyHandle {
  readonly copyId: string;
  readonly incarnation: number;
  address = '';
  private readonly handler: RsHandler<S, M, U, R, Q, QR>;
  private readonly appName: string;
  private readonly log: Logger;
  private readonly slots = new Map<number, RsSlot<S>>();
  /** Clients of the other members, by address; closed once no RS lists the address (restarted peers get new ports). */
  private readonly peerClients = new ClientCache((address) => new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions()));
  /** Per peer address with snapshots under way: their byte gate (see `snapshotBytesInFlight`). */
  private readonly snapshotGates = new Map<string, ByteGate>();
  private readonly replicationLinks = new ClientCache((address) => new ReplicationLink(this.peerClients.get(address)));
  private readonly controller: ControllerClient;
  private server: GrpcServer | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private maxLeaderTerm = 0;
  private registered = false;
  private stopped = false;
  private handledCount = 0;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private lastCpu = process.cpuUsage();
  private lastCpuAt = Date.now();
  private readonly o: Required<Omit<CopyOptions<S, M, U, R, Q, QR>, 'app' | 'logger' | 'controllerAddresses' | 'onFenced' | 'checkpoints' | 'dataFlow'>>;
  /** The edges this app follows and the sending of every RS outbox (upstream backup, R-CKP-5). */
  private readonly flow: DataFlow;
  /** The view of the app's shared data (master RS) handlers read as `ctx.shared` (shared.ts). */
  private readonly shared: SharedData<S>;
  /** Set when checkpointing is on (`checkpointIntervalMs` > 0 or `checkpointBeforeAck`). */
  private readonly checkpoints: CheckpointStore | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private readonly onFenced: ((reason: string) => void | Promise<void>) | undefined;
  private fmLink: FaultManagerLink | undefined;
  private loadReporter: LoadReporter | undefined;
  private fencedReason: string | undefined;
  private probeCursor = 0;
  /**
   * RS paused for a live move (PauseRs): no new batch starts until the lease ends, the
   * controller resumes it, or the role changes (see pause.ts).
   */
  private readonly pauses = new RsPauses((rs, epoch, why) => {
    this.log.info({ rs, epoch, why }, 'pause ended');
    if (why === 'role changed') return; // the role change itself settles the queue
    const slot = this.slots.get(rs);
    // Not synchronously: the caller may be in the middle of a role change.
    if (slot) setImmediate(() => void this.drain(slot));
  });

  constructor(opts: CopyOptions<S, M, U, R, Q, QR>) {
    if (!opts.copyId || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(opts.copyId)) {
      throw new InvalidArgumentError(`copyId must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got ${JSON.stringify(opts.copyId)}`);
    }
    if (opts.replicationBatchMax !== undefined && (!Number.isSafeInteger(opts.replicationBatchMax) || opts.replicationBatchMax < 1)) {
      throw new InvalidArgumentError(`replicationBatchMax must be a positive integer, got ${opts.replicationBatchMax}`);
    }
    if (opts.snapshotBytesInFlight !== undefined && !(Number.isSafeInteger(opts.snapshotBytesInFlight) && opts.snapshotBytesInFlight >= 1)) {
      throw new InvalidArgumentError(`snapshotBytesInFlight must be a positive integer, got ${opts.snapshotBytesInFlight}`);
    }
    if (opts.snapshotSplitDedupeBytes !== undefined && !(Number.isSafeInteger(opts.snapshotSplitDedupeBytes) && opts.snapshotSplitDedupeBytes >= 0)) {
      throw new InvalidArgumentError(`snapshotSplitDedupeBytes must be a non-negative integer, got ${opts.snapshotSplitDedupeBytes}`);
    }
    if (opts.dedupeWindow !== undefined && (!Number.isSafeInteger(opts.dedupeWindow) || opts.dedupeWindow < 1)) {
      throw new InvalidArgumentError(`dedupeWindow must be a positive integer, got ${opts.dedupeWindow}`);
    }
    if (opts.checkpointIntervalMs !== undefined && (!Number.isSafeInteger(opts.checkpointIntervalMs) || opts.checkpointIntervalMs < 0)) {
      throw new InvalidArgumentError(`checkpointIntervalMs must be a non-negative integer, got ${opts.checkpointIntervalMs}`);
    }
    this.handler = opts.app.handler;
    this.appName = opts.app.name;
    this.copyId = opts.copyId;
    this.o = {
      copyId: opts.copyId,
      host: opts.host ?? os.hostname(),
      listenAddress: opts.listenAddress ?? '127.0.0.1:0',
      advertiseHost: opts.advertiseHost ?? '127.0.0.1',
      incarnation: opts.incarnation ?? Date.now(),
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 500,
      deliverTimeoutMs: opts.deliverTimeoutMs ?? 5000,
      replicationCallTimeoutMs: opts.replicationCallTimeoutMs ?? 1000,
      snapshotBytesInFlight: opts.snapshotBytesInFlight ?? 262_144,
      snapshotSplitDedupeBytes: opts.snapshotSplitDedupeBytes ?? 65_536,
      recoverTimeoutMs: opts.recoverTimeoutMs ?? 3000,
      roleWaitMs: opts.roleWaitMs ?? 1000,
      maxQueuePerRs: opts.maxQueuePerRs ?? 10_000,
      replicationBatchMax: Math.min(opts.replicationBatchMax ?? 256, opts.logTailEntries ?? 1024),
      dedupeWindow: opts.dedupeWindow ?? 10_000,
      logTailEntries: opts.logTailEntries ?? 1024,
      maxPayloadBytes: opts.maxPayloadBytes ?? 1 << 20,
      faultManagerAddresses: opts.faultManagerAddresses ?? [],
      loadManagerAddresses: opts.loadManagerAddresses ?? [],
      loadReportIntervalMs: opts.loadReportIntervalMs ?? 1000,
      checkpointIntervalMs: opts.checkpointIntervalMs ?? 0,
      checkpointBeforeAck: opts.checkpointBeforeAck ?? false,
    };
    this.onFenced = opts.onFenced;
    this.incarnation = this.o.incarnation;
    this.log = (opts.logger ?? createLogger({ service: 'adsm' })).child({ copy: this.copyId, app: this.appName });
    this.controller = new ControllerClient({ addresses: opts.controllerAddresses, callTimeoutMs: 2000 });
    // Shared data of the app's master RS (shared.ts): idle until SetRoles names a master.
    this.shared = new SharedData<S>({
      appName: this.appName,
      copyId: this.copyId,
      handler: this.handler,
      controllerAddresses: opts.controllerAddresses,
      slot: (rs) => this.slots.get(rs),
      logger: this.log,
      logTailEntries: this.o.logTailEntries,
    });
    this.flow = new DataFlow({
      app: this.appName,
      controllerAddresses: opts.controllerAddresses,
      options: opts.dataFlow ?? {},
      maxPayloadBytes: this.o.maxPayloadBytes,
      logger: this.log,
      onAcked: (slot) => this.outboxAcked(slot as RsSlot<S>),
    });
    const checkpointing = this.o.checkpointIntervalMs > 0 || this.o.checkpointBeforeAck;
    this.checkpoints = checkpointing ? (opts.checkpoints ?? controllerCheckpoints(this.controller)) : undefined;
  }

  async start(): Promise<void> {
    this.loopDelay.enable();
    const impl: AdsmServiceServer = {
      setRoles: unaryHandler('SetRoles', this.log, (req: SetRolesRequest) => this.onSetRoles(req)),
      deliver: unaryHandler('Deliver', this.log, (req: DeliverRequest) => this.onDeliver(req)),
      deliverStream: (call) => this.serveCorrelated(call, 'DeliverStream', (req: DeliverRequest) => this.onDeliver(req)),
      query: unaryHandler('Query', this.log, (req: QueryRequest) => this.onQuery(req)),
      replicate: unaryHandler('Replicate', this.log, (req: ReplicateRequest) => this.whenRoleKnown(req.rs, req.epoch, () => this.onReplicate(req))),
      replicateStream: (call) => this.serveCorrelated(call, 'ReplicateStream', (req: ReplicateRequest) => this.whenRoleKnown(req.rs, req.epoch, () => this.onReplicate(req))),
      installSnapshot: unaryHandler('InstallSnapshot', this.log, (req: InstallSnapshotRequest) => this.whenRoleKnown(req.rs, req.epoch, () => this.onInstallSnapshot(req))),
      addOlderDedupe: unaryHandler('AddOlderDedupe', this.log, (req: AddOlderDedupeRequest) => this.onAddOlderDedupe(req)),
      getCopyInfo: unaryHandler('GetCopyInfo', this.log, () => this.onGetCopyInfo()),
      shutdown: unaryHandler('Shutdown', this.log, (req: ShutdownRequest) => this.onShutdown(req)),
      fetchState: unaryHandler('FetchState', this.log, (req: FetchStateRequest) => this.onFetchState(req)),
      followShared: (call) => this.shared.serve(call),
      pauseRs: unaryHandler('PauseRs', this.log, (req: PauseRsRequest) => this.onPauseRs(req)),
      resumeRs: unaryHandler('ResumeRs', this.log, (req: ResumeRsRequest) => this.onResumeRs(req)),
    };
    this.server = await startGrpcServer({
      address: this.o.listenAddress,
      services: [{ definition: AdsmServiceService, implementation: impl as never }],
      logger: this.log,
      healthServiceNames: ['understudy.v1.AdsmService'],
    });
    this.address = `${this.o.advertiseHost}:${this.server.port}`;
    this.flow.start();
    this.log.info(
      {
        address: this.address,
        incarnation: this.incarnation,
        checkpoints: this.checkpoints ? { to: this.checkpoints.kind, intervalMs: this.o.checkpointIntervalMs, beforeAck: this.o.checkpointBeforeAck } : 'off',
      },
      'copy serving',
    );
    if (this.checkpoints && this.o.checkpointIntervalMs > 0) {
      this.checkpointTimer = setInterval(() => this.checkpointTick(), this.o.checkpointIntervalMs);
    }
    // Registration and heartbeats run in the background: a copy keeps serving its RS while
    // no controller is reachable (the data plane never waits for the control plane).
    this.heartbeatLoop();
    if (this.o.faultManagerAddresses.length > 0) {
      this.fmLink = new FaultManagerLink({
        addresses: this.o.faultManagerAddresses,
        hello: { copyId: this.copyId, incarnation: this.incarnation, app: this.appName, host: this.o.host, address: this.address },
        health: () => this.health(),
        probe: (deadlineMs) => this.probe(deadlineMs),
        logger: this.log,
      });
      this.fmLink.start();
    }
    if (this.o.loadManagerAddresses.length > 0) {
      this.loadReporter = new LoadReporter({
        addresses: this.o.loadManagerAddresses,
        copyId: this.copyId,
        incarnation: this.incarnation,
        app: this.appName,
        activeRs: () => [...this.slots.values()].filter((s) => s.role === 'ACTIVE').map((s) => s.rs),
        queueDepth: () => [...this.slots.values()].reduce((n, s) => n + s.queue.length, 0),
        stateBytes: (rs) => {
          const slot = this.slots.get(rs);
          return slot ? encodeJson(this.handler.snapshot ? this.handler.snapshot(slot.state) : slot.state).length : 0;
        },
        reportIntervalMs: this.o.loadReportIntervalMs,
        logger: this.log,
      });
      this.loadReporter.start();
    }
  }

  /**
   * Progress probe (R-HM-6): a no-op job through the queue of one ACTIVE RS (round robin), so it
   * proves that messages still get through the handler path, not just that the process is alive.
   */
  private probe(deadlineMs: number): Promise<void> {
    // A paused RS holds its queue on purpose (live move): probing it would look like a hang.
    const active = [...this.slots.values()].filter((s) => s.role === 'ACTIVE' && !this.pauses.isPaused(s.rs, s.epoch));
    if (active.length === 0) return new Promise((r) => setImmediate(r));
    const slot = active[this.probeCursor++ % active.length]!;
    // A full outbox holds the queue on purpose (back-pressure from downstream): not a hang.
    if (this.flow.blocked(slot)) return Promise.resolve();
    const done = new Promise<DeliverOutcome>((resolve, reject) => {
      slot.queue.push({ probe: true, messageId: '', key: '', message: undefined, epoch: slot.epoch, resolve, reject });
    });
    void this.drain(slot);
    return withTimeout(done, Math.max(1, deadlineMs), () => new UnavailableError(`probe through ${this.appName}/${slot.rs} took over ${deadlineMs} ms`)).then(() => undefined);
  }

  /**
   * This incarnation was declared failed: stop committing now (drop every RS, refuse queued
   * messages), then leave through `onFenced`. Idempotent.
   */
  private fenced(reason: string): void {
    if (this.fencedReason !== undefined || this.stopped) return;
    this.fencedReason = reason;
    this.log.error({ incarnation: this.incarnation, reason }, 'fenced: this incarnation was declared failed; it holds nothing and stops');
    this.pauses.clear();
    this.flow.close();
    for (const slot of this.slots.values()) {
      slot.role = 'OUT_OF_SERVICE';
      this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} incarnation ${this.incarnation} was fenced`));
      slot.signalChanged();
    }
    this.slots.clear();
    const leave = this.onFenced ?? (() => this.stop());
    Promise.resolve()
      .then(() => leave(reason))
      .catch((e: unknown) => this.log.error({ err: ensureError(e).message }, 'onFenced failed'));
  }

  roles(): Map<number, { role: RoleName; epoch: number; seq: number; waits: number; dedupeIds: number; olderDedupePending: boolean }> {
    const out = new Map<number, { role: RoleName; epoch: number; seq: number; waits: number; dedupeIds: number; olderDedupePending: boolean }>();
    for (const [rs, s] of this.slots) {
      out.set(rs, { role: s.role, epoch: s.epoch, seq: s.seq, waits: s.changes.listenerCount, dedupeIds: s.dedupe.size, olderDedupePending: s.olderDedupeFor !== undefined });
    }
    return out;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.fmLink?.stop();
    this.loadReporter?.stop();
    this.shared.stop();
    this.loopDelay.disable();
    this.pauses.clear();
    this.flow.close();
    for (const slot of this.slots.values()) this.failQueued(slot, new UnavailableError('copy is stopping'));
    await this.server?.shutdown(1000);
    this.replicationLinks.closeAll();
    this.peerClients.closeAll();
    this.controller.close();
  }

  // ---- control plane link -------------------------------------------------------------

  private heartbeatLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      try {
        if (!this.registered) {
          await this.controller.withLeader((c) =>
            unaryCall(c.registerCopy.bind(c), {
              copyId: this.copyId,
              app: this.appName,
              host: this.o.host,
              address: this.address,
              incarnation: this.incarnation,
            }, { deadlineMs: 2000 }),
          );
          this.registered = true;
          this.log.info('registered with controller');
        }
        const res = await this.controller.withLeader((c) =>
          unaryCall(c.copyHeartbeat.bind(c), { copyId: this.copyId, incarnation: this.incarnation, health: this.health(false) }, { deadlineMs: 2000 }),
        );
        if (res.fenced) {
          this.fenced('the controller declared this incarnation failed');
          return;
        }
        if (!res.known) this.registered = false;
      } catch (e) {
        const err = ensureError(e);
        // A controller that forgot us (NOT_FOUND / stale) wants a fresh registration.
        if (err instanceof NotFoundError || err instanceof FailedPreconditionError) this.registered = false;
        this.log.debug({ err: err.message }, 'controller unreachable; still serving');
      }
      if (!this.stopped) this.heartbeatTimer = setTimeout(() => void tick(), this.o.heartbeatIntervalMs);
    };
    void tick();
  }

  /** A health sample; `resetLag` starts a new event-loop-lag window (the fault manager's cadence). */
  private health(resetLag = true): Health {
    const now = Date.now();
    const cpu = process.cpuUsage(this.lastCpu);
    const elapsedMs = Math.max(1, now - this.lastCpuAt);
    this.lastCpu = process.cpuUsage();
    this.lastCpuAt = now;
    let queueDepth = 0;
    for (const s of this.slots.values()) queueDepth += s.queue.length;
    const lagMs = this.loopDelay.max / 1e6;
    if (resetLag) this.loopDelay.reset();
    return {
      eventLoopLagMs: Number.isFinite(lagMs) ? lagMs : 0,
      cpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
      rssBytes: process.memoryUsage.rss(),
      heapUsedBytes: process.memoryUsage().heapUsed,
      handledCount: this.handledCount,
      queueDepth,
    };
  }

  // ---- roles ---------------------------------------------------------------------------

  private onSetRoles(req: SetRolesRequest): SetRolesResponse {
    if (req.copyId !== this.copyId) {
      throw new FailedPreconditionError(`SetRoles addressed to copy ${req.copyId} reached copy ${this.copyId}`);
    }
    if (req.incarnation !== this.incarnation) {
      throw new FailedPreconditionError(`SetRoles for incarnation ${req.incarnation}; this copy is incarnation ${this.incarnation}`);
    }
    if (req.leaderTerm < this.maxLeaderTerm) {
      throw new FailedPreconditionError(`stale controller term ${req.leaderTerm} (seen ${this.maxLeaderTerm})`);
    }
    this.maxLeaderTerm = req.leaderTerm;
    let applied = 0;
    let ignoredStale = 0;
    const listed = new Set<number>();
    for (const e of req.entries) {
      if (e.app !== this.appName) throw new InvalidArgumentError(`role entry for app ${e.app}; this copy runs ${this.appName}`);
      const role = roleName(e.role);
      if (!role) throw new InvalidArgumentError(`role entry for rs ${e.rs} has no valid role`);
      listed.add(e.rs);
    }
    for (const e of req.entries) {
      const role = roleName(e.role)!;
      const slot = this.slots.get(e.rs);
      if (slot && (e.epoch < slot.epoch || (e.epoch === slot.epoch && e.version <= slot.version))) {
        ignoredStale++;
        continue;
      }
      this.transition(e.rs, role, e.epoch, e.version, e.members, slot);
      applied++;
    }
    if (req.full) {
      for (const [rs, slot] of this.slots) {
        if (!listed.has(rs)) {
          this.transition(rs, 'OUT_OF_SERVICE', slot.epoch, slot.version + 1, [], slot);
          applied++;
        }
      }
    }
    this.shared.setMaster(req.sharedMasterRs);
    this.rolesChanged();
    this.sweepPeerClients();
    return { applied, ignoredStale };
  }

  private transition(rs: number, role: RoleName, epoch: number, version: number, members: PbMember[], existing: RsSlot<S> | undefined): void {
    const prevRole = existing?.role ?? 'OUT_OF_SERVICE';
    const log = this.log.child({ rs, epoch });
    if (existing && (role !== 'ACTIVE' || epoch !== existing.epoch)) this.pauses.roleChanged(rs);
    if (role === 'OUT_OF_SERVICE') {
      if (existing) {
        existing.role = 'OUT_OF_SERVICE';
        existing.epoch = epoch;
        this.failQueued(existing, new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} no longer holds ${this.appName}/${rs}`));
        existing.signalChanged();
        this.slots.delete(rs);
      }
      log.info({ from: prevRole }, 'role OUT_OF_SERVICE');
      this.hook(rs, role, epoch);
      return;
    }
    const slot = existing ?? new RsSlot<S>(rs, this.handler.init(rs), this.o.dedupeWindow);
    if (!existing) this.slots.set(rs, slot);
    const epochChanged = epoch !== slot.epoch;
    const listedBefore = slot.members;
    slot.epoch = epoch;
    slot.version = version;
    slot.members = members;
    slot.role = role;
    if (role === 'ACTIVE' && slot.olderDedupeFor !== undefined) {
      log.warn(
        { snapshotSeq: slot.olderDedupeFor.seq, idsRemembered: slot.dedupe.size },
        'promoted before the older part of its snapshot\'s dedupe table arrived (the controller only does that when no caught-up member is left): a retry of a message id older than those remembered could be applied again',
      );
      slot.olderDedupeFor = undefined;
    }
    if (role === 'ACTIVE') {
      if (!slot.hasState && slot.recovering === null) {
        // Epoch 1 is the RS's first activation ever: the initial state is the truth. Later, the
        // state lives on the RS's other members (a swap onto a standby still catching up, a
        // restarted copy): fetch it before serving or syncing anyone.
        // With checkpoints the state may live in the checkpoint, so only epoch 1 starts from init.
        if (epoch <= 1 || (!this.checkpoints && !members.some((m) => m.copyId !== this.copyId && m.address))) slot.hasState = true;
        else {
          slot.recovering = this.recoverState(slot, epoch).finally(() => {
            slot.recovering = null;
            if (slot.role === 'ACTIVE' && slot.epoch === epoch) {
              this.kickSync(slot);
              void this.drain(slot);
            }
          });
        }
      }
      if (epochChanged) {
        // The state this copy serves the epoch from: its own (a point standbys may share) or,
        // while it is being fetched or restored, none yet.
        slot.base = slot.hasState && slot.recovering === null ? { epoch: slot.stateEpoch, seq: slot.seq } : undefined;
        slot.stateEpoch = epoch;
      }
      const standbys = members.filter((m) => m.role === PbRole.ROLE_STANDBY);
      if (epochChanged) slot.peers.clear();
      for (const id of [...slot.peers.keys()]) if (!standbys.some((m) => m.copyId === id)) slot.peers.delete(id);
      for (const m of standbys) {
        const peer = slot.peers.get(m.copyId);
        // A new incarnation under the same id is a restarted process holding nothing: it
        // starts over with a snapshot, whatever the previous process had acknowledged.
        if (!peer || peer.incarnation !== m.incarnation) {
          // Only a copy that was a member until now can hold this copy's history point (a copy
          // holds an RS's state only while it is a member); anyone else, such as the new standby
          // of a failover with one standby, gets the snapshot at once instead of first spending
          // a round trip on an offer it must refuse.
          const wasMember = listedBefore.some((p) => p.copyId === m.copyId && p.incarnation === m.incarnation);
          slot.peers.set(m.copyId, { address: m.address, incarnation: m.incarnation, ackedSeq: -1, needsSnapshot: true, tryBase: wasMember, reported: false });
        } else peer.address = m.address;
      }
      // Bring new standbys up to date now rather than on the next message, so they are
      // ready to take over as soon as possible (after recovery, if one runs).
      if (slot.recovering === null) this.kickSync(slot);
    } else {
      if (prevRole === 'ACTIVE') {
        this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} was demoted for ${this.appName}/${rs} at epoch ${epoch}`));
      }
      if (epochChanged) slot.synced = false;
    }
    slot.signalChanged();
    if (prevRole !== role || epochChanged) {
      log.info({ from: prevRole, to: role, members: members.map((m) => m.copyId) }, 'role changed');
      this.hook(rs, role, epoch);
    }
  }

  private hook(rs: number, role: RoleName, epoch: number): void {
    this.shared.roleChanged(rs);
    try {
      this.handler.onRoleChange?.({ rs, role, epoch });
    } catch (e) {
      this.log.warn({ rs, err: ensureError(e).message }, 'onRoleChange hook threw');
    }
  }

  private failQueued(slot: RsSlot<S>, err: Error): void {
    for (const job of slot.queue.splice(0)) job.reject(err);
  }

  // ---- delivery on the active -------------------------------------------------------------

  private async onDeliver(req: DeliverRequest): Promise<DeliverResponse> {
    if (req.app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy (it runs ${this.appName})`);
    if (!req.messageId) throw new InvalidArgumentError('message_id is required');
    if (req.messageId.length > 256) throw new InvalidArgumentError('message_id is longer than 256 characters');
    if (req.payload.length > this.o.maxPayloadBytes) {
      throw new InvalidArgumentError(`payload of ${req.payload.length} bytes exceeds the limit of ${this.o.maxPayloadBytes}`);
    }
    let slot = await this.activeSlotFor(req.rs, req.routeEpoch);
    // Handlers of other RS read the master RS's shared data: not before a first snapshot of it.
    if (this.shared.mustWait(req.rs)) {
      await this.shared.whenLoaded(req.rs);
      slot = this.activeSlot(req.rs);
    }
    // A redelivery is answered at once only when everything recorded here is committed; else
    // (its update may still be on its way to a standby) it waits in the queue for the commit.
    const seen = slot.dedupe.get(req.messageId);
    if (seen && isCommitted(slot)) return { reply: seen, epoch: slot.epoch, duplicate: true, copyId: this.copyId };
    let pending = slot.inflight.get(req.messageId);
    if (!pending) {
      let message: unknown;
      try {
        message = decodeJson(req.payload);
      } catch {
        throw new InvalidArgumentError('payload is not valid JSON');
      }
      if (slot.queue.length >= this.o.maxQueuePerRs) {
        throw new ResourceExhaustedError(`queue of ${this.appName}/${req.rs} is full (${this.o.maxQueuePerRs} messages)`);
      }
      pending = new Promise<DeliverOutcome>((resolve, reject) => {
        slot.queue.push({ messageId: req.messageId, key: req.key, message, epoch: slot.epoch, resolve, reject });
      });
      const id = req.messageId;
      slot.inflight.set(id, pending);
      pending.then(
        () => slot.inflight.delete(id),
        () => slot.inflight.delete(id),
      );
      void this.drain(slot);
    }
    const outcome = await withTimeout(pending, this.o.deliverTimeoutMs, () =>
      new UnavailableError(`${this.appName}/${req.rs}: update not replicated within ${this.o.deliverTimeoutMs} ms; retry with the same message_id`),
    );
    return { reply: outcome.reply, epoch: outcome.epoch, duplicate: outcome.duplicate, copyId: this.copyId };
  }

  /**
   * Server side of DeliverStream / ReplicateStream: every request is handled exactly like the
   * unary call (same checks, same code path); every answer carries its request's correlation
   * id and its own status, and goes out as soon as that request completes (a synchronous
   * handler such as Replicate therefore answers in stream order). The stream ends after the
   * client half-closed and every request it sent was answered.
   *
   * STREAM_BATCH (stream-batch.ts): the response headers say this copy takes several requests
   * per message (`more`, handled in order after the message's own request, which a carrier
   * message may leave out); a client that said it takes batched answers gets the answers
   * completed in one turn of the event loop in one message.
   */
  private serveCorrelated<Q, A>(call: CorrelatedServerCall<Q, A>, method: string, fn: (req: Q) => Promise<A> | A): void {
    type Answer = CorrelatedAnswer<A>;
    let open = true;
    let pending = 0;
    let ended = false;
    const finish = (): void => {
      if (open && ended && pending === 0 && answers.size === 0) {
        open = false;
        call.end();
      }
    };
    const answers = new TickBatcher<Answer>(
      (batch) => {
        if (open) call.write(batch.length === 1 ? batch[0]! : { ...batch[0]!, more: batch.slice(1) });
        finish();
      },
      (a) => 32 + (a.statusMessage.length + ((a.response as { reply?: Uint8Array } | undefined)?.reply?.length ?? 0)),
    );
    const batchAnswers = takesBatches(call.metadata);
    const send = (a: Answer): void => {
      if (!open) return;
      if (batchAnswers) answers.push(a);
      else call.write(a);
    };
    const ok = (correlationId: number, response: A): void => {
      pending--;
      send({ correlationId, response, statusCode: 0, statusMessage: '', statusMetadata: {}, more: [] });
      finish();
    };
    const failed = (correlationId: number, e: unknown): void => {
      pending--;
      const wire = toServiceError(e);
      const statusMetadata: Record<string, string> = {};
      for (const [k, v] of Object.entries(wire.metadata.getMap())) if (typeof v === 'string') statusMetadata[k] = v;
      if (wire.details === INTERNAL_ERROR_DETAILS) this.log.error({ method, err: ensureError(e) }, 'stream request failed with an internal error');
      else this.log.debug({ method, code: grpc.status[wire.code], details: wire.details }, 'stream request failed');
      send({ correlationId, response: undefined, statusCode: wire.code, statusMessage: wire.details, statusMetadata, more: [] });
      finish();
    };
    const handle = (msg: CorrelatedRequest<Q>, nested: boolean): void => {
      pending++;
      const correlationId = typeof msg.correlationId === 'number' ? msg.correlationId : 0;
      let result: Promise<A> | A;
      try {
        if (nested && msg.more.length > 0) throw new InvalidArgumentError('malformed request: an item of `more` has `more` itself');
        if (!msg.request) throw new InvalidArgumentError('request is required');
        result = fn(msg.request);
      } catch (e) {
        failed(correlationId, e);
        return;
      }
      if (result instanceof Promise) result.then((r) => ok(correlationId, r), (e: unknown) => failed(correlationId, e));
      else ok(correlationId, result);
    };
    const headers = streamBatchMetadata();
    // This copy takes split snapshots (SNAPSHOT_SPLIT); an active learns it from its replication stream.
    if (method === 'ReplicateStream') headers.set(SNAPSHOT_SPLIT_HEADER, '1');
    call.sendMetadata(headers);
    call.on('data', (msg: CorrelatedRequest<Q>) => {
      const bad = malformedReason(msg);
      if (bad !== undefined) {
        pending++;
        failed(0, new InvalidArgumentError(`malformed request: ${bad}`));
        return;
      }
      // A carrier (no request of its own, items in `more`) is not itself a request.
      if (msg.request !== undefined || msg.more.length === 0) handle(msg, false);
      for (const item of msg.more) handle(item, true);
    });
    call.on('end', () => {
      ended = true;
      finish();
    });
    call.on('error', () => {
      open = false;
      answers.clear();
    });
    call.on('cancelled', () => {
      open = false;
      answers.clear();
    });
  }

  /**
   * The ACTIVE slot of `rs`; when this copy is not (yet) active there but the sender's route is
   * newer than what the copy holds, the SetRoles is on its way (routes and roles leave the
   * controller in parallel after a failover): wait for it, up to `roleWaitMs`, instead of
   * sending the client back with NOT_ACTIVE.
   */
  private async activeSlotFor(rs: number, routeEpoch: number): Promise<RsSlot<S>> {
    const deadline = Date.now() + this.o.roleWaitMs;
    for (;;) {
      const slot = this.slots.get(rs);
      if (slot?.role === 'ACTIVE') return slot;
      const left = deadline - Date.now();
      if (!(routeEpoch > (slot?.epoch ?? 0)) || left <= 0 || this.stopped) return this.activeSlot(rs);
      await this.roleSignal.wait(left);
    }
  }

  /** Wakes deliveries and replications waiting for a role (`activeSlotFor`, `whenRoleKnown`). */
  private readonly roleSignal = new ChangeSignal();
  private rolesChanged(): void {
    this.roleSignal.notify();
  }

  private activeSlot(rs: number): RsSlot<S> {
    const slot = this.slots.get(rs);
    if (!slot || slot.role !== 'ACTIVE') {
      throw new NotActiveError(
        `NOT_ACTIVE: copy ${this.copyId} is ${slot?.role ?? 'OUT_OF_SERVICE'} for ${this.appName}/${rs}${slot ? ` at epoch ${slot.epoch}` : ''}`,
      );
    }
    return slot;
  }

  private async drain(slot: RsSlot<S>): Promise<void> {
    if (slot.running || slot.recovering !== null || this.pauses.isPaused(slot.rs, slot.epoch)) return;
    slot.running = true;
    try {
      // A pause (live move) lets the running batch finish, then starts no other.
      while (slot.queue.length > 0 && !this.pauses.isPaused(slot.rs, slot.epoch)) {
        // Back-pressure (upstream backup): a full outbox takes no input until acks free room.
        if (this.outboxBlocked(slot)) break;
        const batch = slot.queue.splice(0, this.o.replicationBatchMax);
        try {
          await this.processBatch(slot, batch);
        } catch (e) {
          // processBatch settles every job itself; this is a last resort.
          const err = ensureError(e);
          for (const job of batch) job.reject(err);
        }
      }
    } finally {
      slot.running = false;
      this.pauses.idle(slot.rs);
    }
    if (slot.outbox.size > 0 || slot.outbox.hasDone()) this.outboxHousekeeping(slot);
  }

  /**
   * Group commit of one batch of queued jobs. Each message runs through the handler in queue
   * order (seeing the state its predecessors left) and its update is recorded here at the next
   * sequence number; then the whole batch goes to every standby in one Replicate round, and only
   * once every standby applied it are the messages acknowledged (commit rule). If replication
   * fails (handed over, fenced, stopping) none is acknowledged; what was recorded here stays
   * consistent (state, seq, dedupe and log move together): it is replicated before anything
   * later if this copy stays active, or replaced by a snapshot if it becomes a standby.
   */
  private async processBatch(slot: RsSlot<S>, jobs: Job[]): Promise<void> {
    const epoch = slot.epoch;
    const acks: { job: Job; outcome: DeliverOutcome }[] = [];
    const probes: Job[] = [];
    let fresh = 0;
    /** Not run because the outbox filled up: back to the head of the queue, in order. */
    let deferred: Job[] | undefined;
    for (const job of jobs) {
      if (job.probe) {
        probes.push(job);
        continue;
      }
      if (slot.role !== 'ACTIVE' || job.epoch !== epoch) {
        job.reject(new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} changed hands before the message ran`));
        continue;
      }
      const seen = slot.dedupe.get(job.messageId);
      if (seen) {
        // Already recorded (by an earlier batch, or a previous active): acknowledged with the
        // first reply once it is committed, i.e. after this batch's replication round.
        acks.push({ job, outcome: { reply: seen, epoch, duplicate: true } });
        continue;
      }
      if (deferred || this.flow.blocked(slot)) {
        (deferred ??= []).push(job);
        continue;
      }
      let result;
      try {
        result = this.handler.handle(slot.state, job.message as M, {
          app: this.appName,
          rs: slot.rs,
          epoch,
          messageId: job.messageId,
          key: job.key,
          shared: this.shared.state(),
          sharedSeq: this.shared.seq(),
        });
      } catch (e) {
        job.reject(new InvalidArgumentError(`handler rejected the message: ${ensureError(e).message}`));
        continue;
      }
      // Sends join the outbox in the same update (refused as a whole when they break the map).
      let sends: OutboxEntry[] = [];
      if (result.send !== undefined && result.send !== null) {
        try {
          sends = this.flow.prepare(slot, result.send, job.messageId);
        } catch (e) {
          job.reject(ensureError(e));
          continue;
        }
      }
      const updates = result.updates ?? [];
      const entry: UpdateEntry = { seq: slot.seq + 1, messageId: job.messageId, update: encodeJson(updates), reply: encodeJson(result.reply), outboxAdded: sends, outboxDone: [] };
      try {
        // All or nothing: a half-applied message would leave a state no history point describes.
        let next = slot.state;
        for (const u of updates) next = this.handler.apply(next, u);
        slot.state = next;
      } catch (e) {
        job.reject(new InvalidArgumentError(`apply rejected the update: ${ensureError(e).message}`));
        continue;
      }
      if (slot.outbox.hasDone()) entry.outboxDone = slot.outbox.takeDone();
      this.commitBookkeeping(slot, entry);
      acks.push({ job, outcome: { reply: entry.reply, epoch, duplicate: false } });
      fresh++;
    }
    if (deferred) slot.queue.unshift(...deferred);
    try {
      if (acks.length > 0 && !isCommitted(slot)) await this.replicateUntilCommitted(slot, epoch, false);
      this.handledCount += fresh;
      this.loadReporter?.handled(slot.rs, fresh);
      for (const a of acks) a.job.resolve(a.outcome);
    } catch (e) {
      const err = ensureError(e);
      for (const a of acks) a.job.reject(err);
    } finally {
      // A probe has gone through the queue once the batch it was in is done.
      for (const p of probes) p.resolve(PROBE_OUTCOME);
    }
  }

  private commitBookkeeping(slot: RsSlot<S>, entry: UpdateEntry): void {
    slot.seq = entry.seq;
    // An outbox housekeeping entry (tombstones only) has no message id.
    if (entry.messageId !== '') {
      slot.dedupe.set(entry.messageId, entry.reply);
    }
    if (entry.outboxAdded.length > 0 || entry.outboxDone.length > 0) slot.outbox.applyEntry(entry.seq, entry.outboxAdded, entry.outboxDone);
    slot.log.push(entry);
    if (slot.log.length > this.o.logTailEntries) slot.log.shift();
  }

  /**
   * Bring every STANDBY in the current member list up to this copy's sequence number (all that
   * is recorded here, the batch being committed included). Retries while this copy stays ACTIVE
   * at `epoch`; a changed member list (controller removed a dead or hung standby) is picked up
   * at once, even mid-round (see `unlessPeersLeft`). `background`: one round only (messages retry). Returns whether it is committed.
   */
  private async replicateUntilCommitted(slot: RsSlot<S>, epoch: number, background: boolean): Promise<boolean> {
    const target = slot.seq;
    let backoffMs = 10;
    for (;;) {
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) {
        throw new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} was handed over at epoch ${slot.epoch}`);
      }
      const peers = [...slot.peers.entries()];
      const seen = slot.changes.generation;
      if (peers.length === 0) {
        if (await this.checkpointBeforeCommit(slot, epoch, target)) return this.markCommitted(slot, epoch, target);
        if (background) return false;
        if (this.stopped) throw new UnavailableError(`copy ${this.copyId} is stopping`);
        await slot.changes.wait(backoffMs, seen);
        backoffMs = Math.min(backoffMs * 2, 200);
        continue;
      }
      if (this.stopped) throw new UnavailableError(`copy ${this.copyId} is stopping`);
      let fenced = false;
      const round = Promise.all(peers.map(([id, p]) => this.syncPeer(slot, id, p, target, epoch).then(() => {
        this.peerCaughtUp(slot, epoch, id, p);
        return true;
      }, (e) => {
        if (e instanceof StaleEpochError) fenced = true;
        this.log.debug({ rs: slot.rs, epoch, peer: id, err: ensureError(e).message }, 'replication to standby failed');
        return false;
      })));
      const results = await this.unlessPeersLeft(slot, epoch, peers, round);
      if (results === null) continue; // a standby of this round left: start over with the current list
      if (fenced && slot.role === 'ACTIVE' && slot.epoch === epoch) {
        // A standby is at a newer epoch: someone else was activated. Stop committing at once
        // (R-NF-2) and wait for the controller to tell us our new role.
        this.log.warn({ rs: slot.rs, epoch }, 'fenced: a standby holds a newer epoch; demoting self');
        slot.role = 'STANDBY';
        slot.synced = false;
        this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} was fenced for ${this.appName}/${slot.rs}`));
        this.hook(slot.rs, 'STANDBY', epoch);
        throw new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} was fenced for ${this.appName}/${slot.rs} (epoch ${epoch} is stale)`);
      }
      if (results.every(Boolean) && (await this.checkpointBeforeCommit(slot, epoch, target))) return this.markCommitted(slot, epoch, target);
      if (background) return false; // background sync: one round is enough, messages retry.
      await slot.changes.wait(backoffMs, seen);
      backoffMs = Math.min(backoffMs * 2, 200);
    }
  }

  /**
   * Waits for a replication round, but not for standbys that left meanwhile. A hung
   * (SIGSTOPped) standby holds its call until the call deadline (`replicationCallTimeoutMs`,
   * 1 s by default); once the controller removed it, the RS must commit with the standbys that
   * remain instead of waiting that out (it held whole RS for ~1 s after a hang failover, and
   * `running` blocked their new standbys' catch-up). Null when the round is given up (this copy
   * is no longer the RS's active at `epoch`, or a peer of the round left or was replaced): its
   * calls finish on their own, and a late answer only counts for a peer still listed
   * (`peerCaughtUp`, monotonic `ackedSeq`).
   */
  private unlessPeersLeft<T>(slot: RsSlot<S>, epoch: number, peers: readonly (readonly [string, PeerProgress])[], round: Promise<T>): Promise<T | null> {
    const left = (): boolean => slot.role !== 'ACTIVE' || slot.epoch !== epoch || peers.some(([id, p]) => slot.peers.get(id) !== p);
    if (left()) return Promise.resolve(null);
    return new Promise<T | null>((resolve, reject) => {
      // A subscription, not a race against a change promise: one round per batch, and the
      // subscription ends with the round (see ChangeSignal).
      const off = slot.changes.subscribe(() => {
        if (!left()) return;
        off();
        resolve(null);
      });
      round.then(
        (v) => {
          off();
          resolve(v);
        },
        (e: unknown) => {
          off();
          reject(ensureError(e));
        },
      );
    });
  }

  // ---- checkpoints (R-CKP-1, R-HM-5) --------------------------------------------------------

  /**
   * With `checkpointBeforeAck`: store a checkpoint covering `target` at `epoch` before the batch
   * counts as committed. True when stored (or not configured); false after a transient failure
   * (the caller retries). A refusal at a newer epoch means this copy was deposed: it demotes
   * itself and throws NOT_ACTIVE, so nothing of the batch is acknowledged.
   */
  private async checkpointBeforeCommit(slot: RsSlot<S>, epoch: number, target: number): Promise<boolean> {
    if (!this.checkpoints || !this.o.checkpointBeforeAck) return true;
    try {
      await this.checkpoint(slot, epoch, target);
      return true;
    } catch (e) {
      if (e instanceof NotActiveError) throw e;
      if (e instanceof StaleEpochError) {
        this.deposedByCheckpoint(slot, epoch, e.message);
        throw new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} was deposed for ${this.appName}/${slot.rs}: its checkpoint at epoch ${epoch} was refused`);
      }
      this.log.warn({ rs: slot.rs, epoch, err: ensureError(e).message }, 'checkpoint write failed; retrying before acknowledging');
      return false;
    }
  }

  /**
   * Make the stored checkpoint of `slot` cover `target` at `epoch`: writes the current state
   * (snapshot, seq, dedupe table, captured synchronously so they agree) unless a stored or
   * in-flight write already covers it. Writes of one RS are serialised, so they land in order.
   */
  private async checkpoint(slot: RsSlot<S>, epoch: number, target: number): Promise<void> {
    const store = this.checkpoints!;
    for (;;) {
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) {
        throw new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} was handed over at epoch ${slot.epoch}`);
      }
      if (slot.ckptEpoch === epoch && slot.ckptSeq >= target) return;
      if (slot.ckptWrite) {
        await slot.ckptWrite.catch(() => undefined);
        continue;
      }
      const seq = slot.seq;
      const bytes = encodeCheckpoint({
        epoch,
        seq,
        state: encodeJson(this.handler.snapshot ? this.handler.snapshot(slot.state) : slot.state),
        dedupe: slot.dedupe.entries(),
        outbox: slot.outbox.list(),
      });
      const write = store.save(this.appName, slot.rs, epoch, bytes).then(() => {
        if (slot.ckptEpoch < epoch || (slot.ckptEpoch === epoch && slot.ckptSeq < seq)) {
          slot.ckptEpoch = epoch;
          slot.ckptSeq = seq;
        }
      });
      const tracked = write.finally(() => {
        if (slot.ckptWrite === tracked) slot.ckptWrite = null;
      });
      slot.ckptWrite = tracked;
      tracked.catch(() => undefined);
      await write;
    }
  }

  /** Periodic checkpoints (`checkpointIntervalMs`) of every ACTIVE RS whose state moved. */
  private checkpointTick(): void {
    if (this.stopped) return;
    for (const slot of this.slots.values()) {
      if (slot.role !== 'ACTIVE' || !slot.hasState || slot.recovering !== null || slot.ckptWrite !== null) continue;
      if (slot.ckptEpoch === slot.epoch && slot.ckptSeq >= slot.seq) continue;
      const epoch = slot.epoch;
      this.checkpoint(slot, epoch, slot.seq).catch((e: unknown) => {
        if (e instanceof StaleEpochError) this.deposedByCheckpoint(slot, epoch, e.message);
        else if (!(e instanceof NotActiveError)) this.log.warn({ rs: slot.rs, epoch, err: ensureError(e).message }, 'periodic checkpoint failed; next interval retries');
      });
    }
  }

  /**
   * The checkpoint of `slot` is fenced at a newer epoch: another copy was activated for the RS and
   * took the checkpoint over. Stop committing at once and wait for the controller's new role. The
   * state held here may be ahead of (unacknowledged updates) or behind the truth, so it no longer
   * counts: a later activation recovers it again.
   */
  private deposedByCheckpoint(slot: RsSlot<S>, epoch: number, why: string): void {
    if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) return;
    this.log.warn({ rs: slot.rs, epoch, why }, 'deposed: the checkpoint is fenced at a newer epoch; demoting self');
    slot.role = 'STANDBY';
    slot.synced = false;
    slot.hasState = false;
    this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: copy ${this.copyId} was deposed for ${this.appName}/${slot.rs} (epoch ${epoch} is stale)`));
    slot.signalChanged();
    this.hook(slot.rs, 'STANDBY', epoch);
  }

  /**
   * Restore `slot` (ACTIVE at `epoch`, without state, no member holding it) from its checkpoint:
   * fence the checkpoint at `epoch` first, so the previous active can no longer write one this
   * copy has not read, then restore it — or start from the initial state when the RS was never
   * checkpointed. Retries while the store is unreachable (the RS waits: starting from an older
   * state would lose acknowledged updates); gives up when this copy is deposed meanwhile.
   */
  private async restoreFromCheckpoint(slot: RsSlot<S>, epoch: number, log: Logger): Promise<void> {
    const store = this.checkpoints!;
    for (let attempt = 0; ; attempt++) {
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch || this.stopped) return;
      try {
        const bytes = await store.fence(this.appName, slot.rs, epoch);
        if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) return;
        if (bytes) {
          const c = decodeCheckpoint(bytes);
          const snap = decodeJson(c.state);
          slot.state = this.handler.restore ? this.handler.restore(snap) : (snap as S);
          slot.seq = c.seq;
          slot.dedupe.clear();
          for (const [id, reply] of c.dedupe) slot.dedupe.set(id, reply);
          slot.outbox.restore(c.outbox ?? [], c.seq);
          log.info({ checkpointEpoch: c.epoch, seq: c.seq, dedupe: c.dedupe.length, from: store.kind }, 'activated without state: restored it from the checkpoint');
        } else {
          slot.state = this.handler.init(slot.rs);
          slot.seq = 0;
          slot.dedupe.clear();
          slot.outbox.clear();
          log.info({ from: store.kind }, 'activated without state and the RS has no checkpoint yet: starting from the initial state');
        }
        slot.log.length = 0;
        slot.ckptEpoch = epoch;
        slot.ckptSeq = slot.seq;
        slot.hasState = true;
        return;
      } catch (e) {
        if (e instanceof StaleEpochError) {
          // Fenced at a newer epoch already: another copy was activated after this one.
          if (slot.role === 'ACTIVE' && slot.epoch === epoch) {
            slot.role = 'STANDBY';
            slot.synced = false;
            this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} was activated elsewhere after epoch ${epoch}`));
            slot.signalChanged();
            this.hook(slot.rs, 'STANDBY', epoch);
          }
          log.warn({ err: e.message }, 'checkpoint already fenced at a newer epoch: not restoring; demoted self');
          return;
        }
        log.warn({ attempt, err: ensureError(e).message }, 'checkpoint restore failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(100 * (attempt + 1), 1000)));
      }
    }
  }

  private markCommitted(slot: RsSlot<S>, epoch: number, seq: number): true {
    if (slot.committedEpoch !== epoch || slot.committedSeq < seq) {
      slot.committedEpoch = epoch;
      slot.committedSeq = seq;
      for (const w of slot.commitWaiters.splice(0)) w();
      this.shared.committed(slot.rs);
      // Outbox entries up to `seq` can no longer be taken back by a failover: send them.
      if (slot.outbox.size > 0) this.flow.pump(slot);
    }
    return true;
  }

  // ---- outbox (upstream backup, R-CKP-5; see outbox.ts and dataflow.ts) --------------------------

  /** True when `slot`'s outbox is full. Progress probes queued behind are answered (waiting downstream is not a hang). */
  private outboxBlocked(slot: RsSlot<S>): boolean {
    const ob = slot.outbox;
    if (!this.flow.blocked(slot)) {
      ob.blockedScanned = false;
      return false;
    }
    // Once per blocked spell: while blocked, `probe` answers at once instead of queueing.
    if (!ob.blockedScanned) {
      ob.blockedScanned = true;
      for (let i = slot.queue.length - 1; i >= 0; i--) if (slot.queue[i]!.probe) slot.queue.splice(i, 1)[0]!.resolve(PROBE_OUTCOME);
    }
    return true;
  }

  /** An outbox entry of `slot` was acknowledged downstream: room for input, a tombstone to record. */
  private outboxAcked(slot: RsSlot<S>): void {
    if (slot.queue.length > 0) void this.drain(slot);
    this.outboxHousekeeping(slot);
  }

  /** Schedule {@link outboxRound} (once per event-loop turn). */
  private outboxHousekeeping(slot: RsSlot<S>, delayMs = 0): void {
    const ob = slot.outbox;
    if (ob.roundTimer || this.stopped) return;
    ob.roundTimer = setTimeout(() => {
      ob.roundTimer = undefined;
      void this.outboxRound(slot, delayMs);
    }, delayMs);
    ob.roundTimer.unref();
  }

  /**
   * Outbox work no message carries: record pending tombstones (an idle RS has no batch to put them
   * in; recorded promptly, they keep the window in which a failover resends acknowledged entries
   * short) and commit entries a new active holds before it sends them (its first replication
   * round may have failed). Serialised with batches; retried with a bounded backoff while needed.
   */
  private async outboxRound(slot: RsSlot<S>, lastDelayMs: number): Promise<void> {
    const ob = slot.outbox;
    if (slot.role !== 'ACTIVE' || !slot.hasState || this.stopped || this.slots.get(slot.rs) !== slot) return;
    // Busy: the batch (or sync round, or pause) that runs calls drain, which comes back here.
    if (slot.running || slot.recovering !== null || this.pauses.isPaused(slot.rs, slot.epoch)) return;
    // Scheduled only by outbox work, so an uncommitted tail here holds entries or tombstones.
    const uncommitted = !isCommitted(slot);
    if (!ob.hasDone() && !uncommitted) {
      if (ob.size > 0) this.flow.pump(slot);
      return;
    }
    // Messages waiting: their batch carries the tombstones.
    if (slot.queue.length > 0 && !this.flow.blocked(slot)) {
      void this.drain(slot);
      return;
    }
    const epoch = slot.epoch;
    slot.running = true;
    let committed = false;
    try {
      if (ob.hasDone()) {
        this.commitBookkeeping(slot, { seq: slot.seq + 1, messageId: '', update: EMPTY_UPDATES, reply: Buffer.alloc(0), outboxAdded: [], outboxDone: ob.takeDone() });
      }
      committed = await this.replicateUntilCommitted(slot, epoch, true);
    } catch {
      return; // not active any more
    } finally {
      slot.running = false;
      this.pauses.idle(slot.rs);
    }
    if (slot.queue.length > 0) void this.drain(slot);
    else if (!committed || ob.hasDone()) this.outboxHousekeeping(slot, Math.min(Math.max(50, lastDelayMs * 2), 1000));
  }

  private async syncPeer(slot: RsSlot<S>, peerId: string, peer: PeerProgress, target: number, epoch: number): Promise<void> {
    const client = this.peerClient(peer.address);
    if (peer.needsSnapshot && peer.tryBase) await this.offerBase(slot, peer, epoch);
    if (peer.needsSnapshot || (peer.ackedSeq >= 0 && peer.ackedSeq < slot.seq && logIndex(slot.log, peer.ackedSeq + 1) < 0)) {
      // SNAPSHOT_SPLIT when the standby announced it: the newest ids now, the older ones after.
      const newestBytes = this.o.snapshotSplitDedupeBytes;
      const split = newestBytes > 0 && this.replicationLink(peer.address).takesSplitSnapshots && slot.dedupe.packedBytes > newestBytes + 4;
      // Taken after the turn comes (state, seq and table of the same moment, at or past `target`).
      const release = await this.snapshotGate(peer.address).acquire(split ? newestBytes : slot.dedupe.packedBytes);
      let older: Buffer | undefined;
      let seq = 0;
      try {
        if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) throw new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} changed while its snapshot waited`);
        const parts = split ? slot.dedupe.packSplit(newestBytes) : { newest: slot.dedupe.pack(), older: undefined };
        older = parts.older;
        seq = slot.seq;
        const res = await unaryCall(client.installSnapshot.bind(client), {
          app: this.appName,
          rs: slot.rs,
          epoch,
          fromCopyId: this.copyId,
          seq,
          state: encodeJson(this.handler.snapshot ? this.handler.snapshot(slot.state) : slot.state),
          dedupe: [],
          dedupePacked: parts.newest,
          outbox: slot.outbox.list(),
          dedupeOlderFollows: older !== undefined,
        }, { deadlineMs: this.o.replicationCallTimeoutMs });
        peer.ackedSeq = res.appliedSeq;
        peer.needsSnapshot = false;
      } finally {
        release();
      }
      if (older !== undefined) {
        // Commits go on now; the standby counts as caught up once the rest is in.
        peer.olderDedupe = true;
        void this.sendOlderDedupe(slot, peerId, peer, epoch, seq, older);
      }
    }
    if (peer.ackedSeq >= target) return;
    const from = logIndex(slot.log, peer.ackedSeq + 1);
    const entries = from < 0 ? [] : slot.log.slice(from);
    try {
      const res = await this.replicationLink(peer.address).replicate({
        app: this.appName,
        rs: slot.rs,
        epoch,
        fromCopyId: this.copyId,
        entries,
        base: undefined,
      }, this.o.replicationCallTimeoutMs);
      // Answers of an abandoned round may arrive after newer ones (see unlessPeersLeft).
      peer.ackedSeq = Math.max(peer.ackedSeq, res.appliedSeq);
    } catch (e) {
      if (ensureError(e).message.includes('NEEDS_SNAPSHOT')) peer.needsSnapshot = true;
      throw e;
    }
    if (peer.ackedSeq < target) {
      peer.needsSnapshot = true;
      throw new UnavailableError(`standby ${peerId} at seq ${peer.ackedSeq}, needs ${target}`);
    }
  }

  /**
   * The older part of a split snapshot (SNAPSHOT_SPLIT), behind the snapshots already waiting for
   * the peer. Landed: the standby is caught up (reported to the controller). Failed: it gets a
   * whole snapshot on the next round (it remembers only the newest ids until then).
   */
  private async sendOlderDedupe(slot: RsSlot<S>, peerId: string, peer: PeerProgress, epoch: number, snapshotSeq: number, older: Buffer): Promise<void> {
    const current = (): boolean => slot.role === 'ACTIVE' && slot.epoch === epoch && slot.peers.get(peerId) === peer;
    const release = await this.snapshotGate(peer.address).acquire(older.length);
    try {
      if (!current()) return;
      const client = this.peerClient(peer.address);
      const res = await unaryCall(
        client.addOlderDedupe.bind(client),
        { app: this.appName, rs: slot.rs, epoch, fromCopyId: this.copyId, snapshotSeq, dedupePacked: older },
        { deadlineMs: this.o.replicationCallTimeoutMs },
      );
      // Not taken: the standby waits for a later snapshot's part, whose round completes it.
      if (!res.taken || !current()) return;
      peer.olderDedupe = false;
      this.peerCaughtUp(slot, epoch, peerId, peer);
    } catch (e) {
      if (!current()) return;
      this.log.debug({ rs: slot.rs, epoch, peer: peerId, err: ensureError(e).message }, 'older dedupe part failed; the standby gets a whole snapshot');
      peer.olderDedupe = false;
      peer.needsSnapshot = true;
      this.kickSync(slot);
    } finally {
      release();
    }
  }

  /**
   * A standby new at this epoch often holds exactly the state this active started the epoch
   * from: the old active of a move (paused, so fully replicated), or the other standby of a
   * failover (both applied the same batches of the dead active). Offer it the batches of this
   * epoch on top of that point (`ReplicateRequest.base`); it takes them when its own point
   * matches and answers NEEDS_SNAPSHOT otherwise. A match saves the snapshot (state, dedupe
   * table, outbox) that a promoted active's first acknowledgement would wait for. Tried once
   * per peer and epoch; on NEEDS_SNAPSHOT the caller sends the snapshot as before.
   */
  private async offerBase(slot: RsSlot<S>, peer: PeerProgress, epoch: number): Promise<void> {
    peer.tryBase = false; // a concurrent round goes straight to the snapshot
    const base = slot.base;
    if (base === undefined) return;
    const from = base.seq === slot.seq ? slot.log.length : logIndex(slot.log, base.seq + 1);
    if (from < 0) return; // this epoch's batches are no longer all in the log tail
    try {
      const res = await this.replicationLink(peer.address).replicate(
        { app: this.appName, rs: slot.rs, epoch, fromCopyId: this.copyId, entries: slot.log.slice(from), base: { epoch: base.epoch, seq: base.seq } },
        this.o.replicationCallTimeoutMs,
      );
      peer.ackedSeq = Math.max(peer.ackedSeq, res.appliedSeq);
      peer.needsSnapshot = false;
    } catch (e) {
      if (!ensureError(e).message.includes('NEEDS_SNAPSHOT')) {
        peer.tryBase = true; // e.g. the standby does not know the epoch yet: offer again next round
        throw e;
      }
    }
  }

  /**
   * `peer` holds everything this active recorded for the RS (so every acknowledged update, and
   * it is in the commit set from now on): tell the controller once, so it may promote the
   * standby (failover prefers caught-up standbys, balancing promotes no other). Reports are
   * batched per copy; the map is keyed by RS and standby, so it is bounded by the roles held.
   */
  private peerCaughtUp(slot: RsSlot<S>, epoch: number, peerId: string, peer: PeerProgress): void {
    if (peer.reported || peer.olderDedupe || slot.role !== 'ACTIVE' || slot.epoch !== epoch || slot.peers.get(peerId) !== peer) return;
    peer.reported = true;
    this.syncedQueue.set(`${slot.rs}/${peerId}`, { app: this.appName, rs: slot.rs, standbyCopyId: peerId, standbyIncarnation: peer.incarnation, version: slot.version });
    this.flushSynced();
  }

  private readonly syncedQueue = new Map<string, PbSyncedStandby>();
  private syncedFlushing = false;

  /** Sends queued caught-up reports to the controller leader; retries (bounded backoff) while it is unreachable. */
  private flushSynced(): void {
    if (this.syncedFlushing || this.stopped) return;
    this.syncedFlushing = true;
    void (async () => {
      let backoffMs = 50;
      while (this.syncedQueue.size > 0 && !this.stopped) {
        // A tick's worth of reports per call (a failover catches many standbys up at once).
        await new Promise((r) => setImmediate(r));
        const batch = [...this.syncedQueue.entries()].slice(0, 1000);
        for (const [k] of batch) this.syncedQueue.delete(k);
        try {
          await this.controller.withLeader((c) =>
            unaryCall(c.reportSynced.bind(c), { copyId: this.copyId, incarnation: this.incarnation, standbys: batch.map(([, v]) => v) }, { deadlineMs: 2000 }),
          );
          backoffMs = 50;
        } catch (e) {
          const err = ensureError(e);
          this.log.debug({ err: err.message, entries: batch.length }, 'caught-up report failed; retrying');
          // Re-queue unless a newer report for the same standby is already waiting.
          for (const [k, v] of batch) if (!this.syncedQueue.has(k)) this.syncedQueue.set(k, v);
          await new Promise((r) => setTimeout(r, backoffMs));
          backoffMs = Math.min(backoffMs * 2, 2000);
        }
      }
      this.syncedFlushing = false;
    })();
  }

  /**
   * One background round that brings new standbys up to date now rather than on the RS's next
   * message. Not retried: a background loop that kept re-sending snapshots raced with role
   * changes and, in bench/failover, left promoted copies without state (see the issue note);
   * a standby still missing its snapshot gets it with the RS's next replication round.
   */
  private kickSync(slot: RsSlot<S>, attempt = 0): void {
    const epoch = slot.epoch;
    // Without traffic nothing else catches a new standby up, and the controller keeps a
    // balancing standby move open (the old standby listed too) until it is: so a round that
    // could not run (a batch was running) or failed (the standby not ready yet) is tried again,
    // a bounded number of times, while this copy is still the RS's active at that epoch.
    const again = (): void => {
      if (attempt >= KICK_SYNC_ATTEMPTS || this.stopped) return;
      setTimeout(() => {
        if (!this.stopped && slot.role === 'ACTIVE' && slot.epoch === epoch && slot.recovering === null && !this.allPeersCaughtUp(slot)) this.kickSync(slot, attempt + 1);
      }, Math.min(20 * 2 ** attempt, 2000)).unref();
    };
    const run = async (): Promise<void> => {
      // Serialise with message processing so a snapshot never races an update.
      if (slot.recovering !== null) return;
      if (slot.running) return again();
      slot.running = true;
      let ok = false;
      try {
        await this.replicateUntilCommitted(slot, epoch, true);
        ok = true;
      } catch {
        /* not active any more, or a standby not reachable yet */
      } finally {
        slot.running = false;
        this.pauses.idle(slot.rs);
      }
      if (!ok) again();
      if (slot.queue.length > 0) void this.drain(slot);
      else if (slot.outbox.size > 0 || slot.outbox.hasDone()) this.outboxHousekeeping(slot);
    };
    void run();
  }

  /** True when every standby of the slot has been reported caught up (see `peerCaughtUp`). */
  private allPeersCaughtUp(slot: RsSlot<S>): boolean {
    for (const p of slot.peers.values()) if (!p.reported) return false;
    return true;
  }

  private replicationLink(address: string): ReplicationLink {
    return this.replicationLinks.get(address);
  }

  /** The snapshot gate of one peer; dropped once idle, so the map holds only peers with snapshots under way. */
  private snapshotGate(address: string): { acquire(bytes: number): Promise<() => void> } {
    let g = this.snapshotGates.get(address);
    if (!g) {
      g = new ByteGate(this.o.snapshotBytesInFlight);
      this.snapshotGates.set(address, g);
    }
    const gate = g;
    return {
      acquire: async (bytes) => {
        const release = await gate.acquire(bytes);
        return () => {
          release();
          if (gate.bytesInFlight === 0 && gate.queued === 0 && this.snapshotGates.get(address) === gate) this.snapshotGates.delete(address);
        };
      },
    };
  }

  private peerClient(address: string): AdsmServiceClient {
    return this.peerClients.get(address);
  }

  /** Closes clients of addresses no RS lists any more (see `ClientCache`). */
  private sweepPeerClients(): void {
    const live = new Set<string>();
    for (const slot of this.slots.values()) for (const m of slot.members) if (m.address) live.add(m.address);
    const now = Date.now();
    this.replicationLinks.sweep(live, now);
    this.peerClients.sweep(live, now);
  }

  // ---- standby side -------------------------------------------------------------------

  /**
   * Run a standby-side request at `epoch` once this copy knows that epoch for `rs`: right after a
   * switchover or move the new active replicates to the old one before the controller's SetRoles
   * (sent in parallel) has arrived there. Waiting for it briefly (up to `roleWaitMs`, at most
   * 500 ms) instead of answering UNAVAILABLE spares the active a retry backoff on the first batch
   * at the new epoch. Synchronous when the epoch is known (stream order is kept).
   */
  private whenRoleKnown<T>(rs: number, epoch: number, fn: () => T): T | Promise<T> {
    if (!(epoch > (this.slots.get(rs)?.epoch ?? 0))) return fn();
    const deadline = Date.now() + Math.min(this.o.roleWaitMs, 500);
    return (async () => {
      while (epoch > (this.slots.get(rs)?.epoch ?? 0) && !this.stopped) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        await this.roleSignal.wait(left);
      }
      return fn();
    })();
  }

  private standbySlot(app: string, rs: number, epoch: number, from: string): RsSlot<S> {
    if (app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(app)} is not served by this copy`);
    const slot = this.slots.get(rs);
    if (slot && epoch < slot.epoch) {
      throw new StaleEpochError(`stale epoch ${epoch} for ${app}/${rs}: this copy is at epoch ${slot.epoch}`);
    }
    if (!slot || epoch > slot.epoch) {
      // The controller persists before it sends, so the role change is on its way: retry.
      throw new UnavailableError(`${app}/${rs}: epoch ${epoch} not yet known to copy ${this.copyId}`);
    }
    if (slot.role !== 'STANDBY') throw new FailedPreconditionError(`NOT_STANDBY: copy ${this.copyId} is ${slot.role} for ${app}/${rs}`);
    if (slot.members[0]?.copyId !== from || slot.members[0]?.role !== PbRole.ROLE_ACTIVE) {
      throw new FailedPreconditionError(`${from} is not the active of ${app}/${rs} at epoch ${epoch}`);
    }
    return slot;
  }

  private onReplicate(req: ReplicateRequest): ReplicateResponse {
    const slot = this.standbySlot(req.app, req.rs, req.epoch, req.fromCopyId);
    if (!slot.synced) {
      const b = req.base;
      // A table still missing its older part is not a point to build on: a whole snapshot instead.
      if (b === undefined || !slot.hasState || slot.stateEpoch !== b.epoch || slot.seq !== b.seq || slot.olderDedupeFor !== undefined) {
        throw new FailedPreconditionError(`NEEDS_SNAPSHOT: ${req.app}/${req.rs} has no snapshot at epoch ${req.epoch}`);
      }
      // Same history point as the active's start of the epoch: same state (see HistoryPoint).
      // Only difference possible: an old active removed outbox entries its destination
      // acknowledged before their tombstones were recorded; they need no resend, and the new
      // active's tombstones for them are no-ops here.
      slot.synced = true;
      slot.stateEpoch = req.epoch;
      this.log.debug({ rs: req.rs, epoch: req.epoch, seq: slot.seq }, 'synced without a snapshot: the active started the epoch from this state');
    }
    for (const e of req.entries) {
      if (e.seq <= slot.seq) continue;
      if (e.seq !== slot.seq + 1) break;
      let updates: U[];
      try {
        updates = decodeJson<U[]>(e.update) ?? [];
      } catch {
        throw new InvalidArgumentError(`update ${e.seq} of ${req.app}/${req.rs} is not valid JSON`);
      }
      for (const u of updates) slot.state = this.handler.apply(slot.state, u);
      this.commitBookkeeping(slot, e);
    }
    return { appliedSeq: slot.seq };
  }

  private onInstallSnapshot(req: InstallSnapshotRequest): InstallSnapshotResponse {
    const slot = this.standbySlot(req.app, req.rs, req.epoch, req.fromCopyId);
    // Never move back within an epoch. Two replication rounds of the active (a message batch and
    // a query, say) can both decide to send a snapshot; a big older snapshot may then arrive AFTER
    // a Replicate the other round sent later. Installing it would drop updates the active already
    // counted as applied here, i.e. acknowledged ones, lost if this standby is promoted next
    // (seen as ~1% of a stage's records missing in test/e2e/usage-accounting.test.ts). What this
    // standby holds at this epoch came from this active's log, so it is the newer truth.
    if (slot.synced && req.seq <= slot.seq) return { appliedSeq: slot.seq };
    let snap: unknown;
    try {
      snap = decodeJson(req.state);
    } catch {
      throw new InvalidArgumentError(`snapshot of ${req.app}/${req.rs} is not valid JSON`);
    }
    const dedupe = snapshotDedupe(req, `snapshot of ${req.app}/${req.rs}`, this.o.dedupeWindow);
    slot.state = this.handler.restore ? this.handler.restore(snap) : (snap as S);
    slot.seq = req.seq;
    slot.dedupe = dedupe;
    // A standby never reads the table; build its index later, off the failover that installed
    // it, so a promotion does not pay for it on its first delivery.
    this.warmLater(slot, dedupe);
    slot.outbox.restore(req.outbox, req.seq);
    slot.log.length = 0;
    slot.synced = true;
    slot.stateEpoch = req.epoch;
    slot.hasState = true;
    slot.olderDedupeFor = req.dedupeOlderFollows ? { epoch: req.epoch, seq: req.seq } : undefined;
    this.log.debug({ rs: req.rs, epoch: req.epoch, seq: req.seq, split: req.dedupeOlderFollows }, 'snapshot installed');
    return { appliedSeq: slot.seq };
  }

  /**
   * The older part of a split snapshot's dedupe table: put in front of the table when this copy
   * waits for exactly that part. `taken: false` when it waits for another snapshot's part (that
   * one's sender completes it); `taken: true` also when it waits for none (a whole snapshot came
   * since, so nothing is missing).
   */
  private onAddOlderDedupe(req: AddOlderDedupeRequest): AddOlderDedupeResponse {
    const slot = this.standbySlot(req.app, req.rs, req.epoch, req.fromCopyId);
    const w = slot.olderDedupeFor;
    if (w === undefined) return { taken: true };
    if (w.epoch !== req.epoch || w.seq !== req.snapshotSeq) return { taken: false };
    try {
      slot.dedupe.prependPacked(req.dedupePacked);
    } catch (e) {
      throw new InvalidArgumentError(`older dedupe part of ${req.app}/${req.rs}: ${ensureError(e).message}`);
    }
    slot.olderDedupeFor = undefined;
    const dedupe = slot.dedupe;
    this.warmLater(slot, dedupe);
    this.log.debug({ rs: req.rs, epoch: req.epoch, snapshotSeq: req.snapshotSeq, ids: dedupe.size }, 'older dedupe part installed');
    return { taken: true };
  }

  /**
   * Build `table`'s index DEDUPE_WARM_DELAY_MS from now, unless the RS holds another table by
   * then. One table per event-loop turn: a full table takes 1–3 ms, and a copy that just joined
   * gets the snapshots of all its RS at once; indexing them in one timer turn stalled it 10–25 ms,
   * about when the next failover could need it.
   */
  private warmLater(slot: RsSlot<S>, table: DedupeTable): void {
    setTimeout(() => {
      this.toWarm.set(table, slot);
      if (this.toWarm.size === 1) setImmediate(() => this.warmOne());
    }, DEDUPE_WARM_DELAY_MS).unref();
  }

  /** Tables waiting for their index (at most one per RS snapshot installed in the last second or so). */
  private readonly toWarm = new Map<DedupeTable, RsSlot<S>>();

  private warmOne(): void {
    const next = this.toWarm.entries().next();
    if (next.done) return;
    const [table, slot] = next.value;
    this.toWarm.delete(table);
    if (!this.stopped && slot.dedupe === table) table.warm();
    if (this.toWarm.size > 0) setImmediate(() => this.warmOne());
  }

  // ---- queries & info --------------------------------------------------------------------

  /**
   * Read on the active. With group commit the active's state runs ahead of what the standbys
   * hold; a read must never show an update that a failover could still lose, so the answer
   * waits until everything it reflects is committed (or fails with NOT_ACTIVE / UNAVAILABLE).
   */
  private async onQuery(req: QueryRequest): Promise<QueryResponse> {
    if (req.app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy`);
    const slot = this.activeSlot(req.rs);
    if (!this.handler.query) throw new FailedPreconditionError(`application ${this.appName} defines no query`);
    let q: unknown;
    try {
      q = decodeJson(req.query);
    } catch {
      throw new InvalidArgumentError('query is not valid JSON');
    }
    if (slot.recovering !== null) {
      await withTimeout(slot.recovering, this.o.deliverTimeoutMs, () => new UnavailableError(`${this.appName}/${req.rs} is still recovering its state; retry`));
      this.activeSlot(req.rs);
    }
    const epoch = slot.epoch;
    const seq = slot.seq;
    const result = encodeJson(this.handler.query(slot.state, q as Q));
    if (!isCommitted(slot)) {
      await withTimeout(this.awaitCommit(slot, epoch, seq), this.o.deliverTimeoutMs, () =>
        new UnavailableError(`${this.appName}/${req.rs}: the state this query reads was not replicated within ${this.o.deliverTimeoutMs} ms; retry`),
      );
    }
    return { result, epoch, seq };
  }

  /**
   * Waits until `seq` is committed at `epoch`. Runs a replication round itself only when no
   * other round runs on the RS: two concurrent rounds could each send a standby a snapshot, and
   * the older one landing last would roll the standby back (see `onInstallSnapshot`).
   */
  private async awaitCommit(slot: RsSlot<S>, epoch: number, seq: number): Promise<void> {
    for (;;) {
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch || this.slots.get(slot.rs) !== slot) {
        throw new NotActiveError(`NOT_ACTIVE: ${this.appName}/${slot.rs} was handed over at epoch ${slot.epoch}`);
      }
      if (slot.committedEpoch === epoch && slot.committedSeq >= seq) return;
      if (!slot.running && slot.recovering === null) {
        slot.running = true;
        let committed = false;
        try {
          committed = await this.replicateUntilCommitted(slot, epoch, true);
        } finally {
          slot.running = false;
          this.pauses.idle(slot.rs);
          if (slot.queue.length > 0) void this.drain(slot);
        }
        if (committed) continue;
      }
      // Another round runs (or this one failed): wait for a commit, a role change or a short
      // retry delay. Waiters are few (queries); past the cap the delay alone wakes us.
      // (The commit waiter goes at the next commit whoever wins: `markCommitted` empties the list.)
      if (slot.commitWaiters.length < 1000) await Promise.race([slot.changes.wait(20), new Promise<void>((r) => slot.commitWaiters.push(r))]);
      else await slot.changes.wait(20);
    }
  }

  /**
   * The controller fenced this incarnation (declared it failed) and asks it to go. The copy stops
   * committing at once (every RS dropped, queued messages refused) and then ends the process
   * through `onFenced`. A request for another copy or incarnation is refused, not obeyed.
   */
  private onShutdown(req: ShutdownRequest): ShutdownResponse {
    if (req.copyId !== this.copyId) throw new FailedPreconditionError(`Shutdown addressed to copy ${req.copyId} reached copy ${this.copyId}`);
    if (req.incarnation !== this.incarnation) {
      throw new FailedPreconditionError(`Shutdown for incarnation ${req.incarnation}; this copy is incarnation ${this.incarnation}`);
    }
    // Answer first, then go: the controller should see the request accepted.
    setImmediate(() => this.fenced(`controller asked to stop: ${req.reason || 'no reason given'}`));
    return {};
  }

  /**
   * Fetch the state of `slot` (ACTIVE at `epoch`, holding none) from the RS's other members: the
   * most recent one wins (highest state epoch, then sequence). Members that cannot be reached
   * are retried until `recoverTimeoutMs`; when every member answered without state, or none
   * could be reached in time, the RS starts from its initial state and that is logged as an
   * error (every copy holding the state is gone: a double fault, or a DISTRIBUTED RS without
   * checkpoint).
   */
  private async recoverState(slot: RsSlot<S>, epoch: number): Promise<void> {
    const log = this.log.child({ rs: slot.rs, epoch });
    const deadline = Date.now() + this.o.recoverTimeoutMs;
    for (let round = 0; ; round++) {
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) return;
      // With checkpoints, members declared out of service are not waited for: the checkpoint
      // holds everything acknowledged (with checkpointBeforeAck) or what the interval allows.
      const others = slot.members.filter((m) => m.copyId !== this.copyId && m.address && (!this.checkpoints || m.role !== PbRole.ROLE_OUT_OF_SERVICE));
      const answers = await Promise.all(
        others.map((m) => {
          const c = this.peerClient(m.address);
          return unaryCall(c.fetchState.bind(c), { app: this.appName, rs: slot.rs, epoch, copyId: this.copyId }, { deadlineMs: this.o.replicationCallTimeoutMs }).then(
            (r) => ({ from: m.copyId, r }),
            (e: unknown) => {
              log.debug({ from: m.copyId, err: ensureError(e).message }, 'state fetch failed');
              return undefined;
            },
          );
        }),
      );
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) return;
      // A member whose state or table does not decode counts as one that could not be reached
      // (bad input from a peer must not take this copy down).
      const held: Fetched[] = [];
      let undecodable = 0;
      for (const a of answers) {
        if (!a || !a.r.hasState) continue;
        try {
          held.push({ ...a, snap: decodeJson(a.r.state), dedupe: snapshotDedupe(a.r, `state of ${this.appName}/${slot.rs} from ${a.from}`, this.o.dedupeWindow) });
        } catch (e) {
          undecodable++;
          log.warn({ from: a.from, err: ensureError(e).message }, 'a member answered with a state that does not decode: not used');
        }
      }
      const best = newestState(held);
      if (best) {
        const { snap, dedupe } = best;
        if (best.r.dedupePartial) this.fillOlderDedupe(dedupe, best, held, log);
        slot.state = this.handler.restore ? this.handler.restore(snap) : (snap as S);
        slot.seq = best.r.seq;
        slot.dedupe = dedupe;
        slot.outbox.restore(best.r.outbox, best.r.seq);
        slot.log.length = 0;
        slot.hasState = true;
        log.info({ from: best.from, stateEpoch: best.r.stateEpoch, seq: best.r.seq }, 'activated without state: fetched it from a member');
        return;
      }
      const allAnswered = undecodable === 0 && answers.every((a) => a !== undefined);
      if ((allAnswered || Date.now() >= deadline) && this.checkpoints) {
        await this.restoreFromCheckpoint(slot, epoch, log);
        return;
      }
      if (allAnswered || Date.now() >= deadline) {
        slot.hasState = true;
        log.error(
          { members: others.map((m) => m.copyId), reachable: answers.filter(Boolean).length },
          'activated without state and no member holds it: starting from the initial state (updates since the last checkpoint are lost)',
        );
        return;
      }
      await new Promise((r) => setTimeout(r, Math.min(100 * (round + 1), 500)));
    }
  }

  /**
   * The newest state held has only the newest part of its dedupe table (SNAPSHOT_SPLIT, its
   * older part not landed): take the older ids from the most recent complete table of the same
   * epoch (a prefix of the same history, so what it has and `dedupe` lacks is older than
   * `dedupe`'s first id). Without one, a retry of an older message would run again: logged.
   */
  private fillOlderDedupe(dedupe: DedupeTable, best: Fetched, held: readonly Fetched[], log: Logger): void {
    const complete = newestState(held.filter((a) => !a.r.dedupePartial && a.r.stateEpoch === best.r.stateEpoch));
    if (!complete) {
      log.warn({ from: best.from, idsRemembered: dedupe.size }, 'the newest state held has only the newest dedupe ids and no member holds the rest: a retry of an older message would run again');
      return;
    }
    const { added, joined } = dedupe.prependMissingFrom(complete.dedupe);
    const fields = { from: best.from, olderFrom: complete.from, olderSeq: complete.r.seq, added };
    if (joined) log.info(fields, 'the newest state had only the newest dedupe ids: the older ones taken from a complete table');
    else log.warn(fields, 'the newest state had only the newest dedupe ids; the complete table ends before them, so the ids in between are known to neither: a retry of one would run again');
  }

  /** Hand this copy's state of an RS to a newly activated member (see `recoverState`). */
  private onFetchState(req: FetchStateRequest): FetchStateResponse {
    if (req.app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy`);
    if (!(req.epoch > 0)) throw new InvalidArgumentError('epoch must be > 0 (the requester\'s new epoch for the RS)');
    if (!req.copyId) throw new InvalidArgumentError('copy_id is required (who is fetching the state)');
    const slot = this.slots.get(req.rs);
    if (!slot || !slot.hasState || slot.recovering !== null) return { hasState: false, stateEpoch: 0, seq: 0, state: Buffer.alloc(0), dedupe: [], dedupePacked: Buffer.alloc(0), outbox: [], dedupePartial: false };
    if (req.epoch <= slot.epoch && slot.role === 'ACTIVE') {
      throw new FailedPreconditionError(`copy ${this.copyId} is the ACTIVE of ${req.app}/${req.rs} at epoch ${slot.epoch}; epoch ${req.epoch} is not newer`);
    }
    if (slot.role === 'ACTIVE') {
      // A newer active exists: stop committing before handing the state over, so nothing is
      // acknowledged here that the new active does not have.
      this.log.warn({ rs: req.rs, epoch: slot.epoch, newEpoch: req.epoch, to: req.copyId }, 'a newer active fetches the state: demoting self');
      slot.role = 'STANDBY';
      slot.synced = false;
      this.failQueued(slot, new NotActiveError(`NOT_ACTIVE: ${this.appName}/${req.rs} moved to ${req.copyId} at epoch ${req.epoch}`));
      slot.signalChanged();
      this.hook(req.rs, 'STANDBY', slot.epoch);
    }
    return {
      hasState: true,
      stateEpoch: slot.stateEpoch,
      seq: slot.seq,
      state: encodeJson(this.handler.snapshot ? this.handler.snapshot(slot.state) : slot.state),
      dedupe: [],
      dedupePacked: slot.dedupe.pack(),
      outbox: slot.outbox.list(),
      dedupePartial: slot.olderDedupeFor !== undefined,
    };
  }

  // ---- live migration (PauseRs / ResumeRs, see pause.ts) --------------------------------------

  /**
   * The controller is about to move the ACTIVE role of the listed RS away: pause each one this
   * copy is ACTIVE for at the given epoch, let its running batch finish and replicate, write a
   * final checkpoint when checkpointing (so a DISTRIBUTED target restores everything), and answer
   * with the last sequence number. Entries not paused say why; the move goes on regardless (the
   * epoch fences the old active), a pause only avoids failed batches and resends.
   */
  private async onPauseRs(req: PauseRsRequest): Promise<PauseRsResponse> {
    if (req.copyId !== this.copyId) throw new FailedPreconditionError(`PauseRs addressed to copy ${req.copyId} reached copy ${this.copyId}`);
    if (req.incarnation !== this.incarnation) {
      throw new FailedPreconditionError(`PauseRs for incarnation ${req.incarnation}; this copy is incarnation ${this.incarnation}`);
    }
    if (req.app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy (it runs ${this.appName})`);
    if (req.rs.length === 0) throw new InvalidArgumentError('rs: at least one entry is required');
    if (req.rs.length > 100_000) throw new InvalidArgumentError(`rs: at most 100000 entries (got ${req.rs.length})`);
    if (new Set(req.rs.map((e) => e.rs)).size !== req.rs.length) throw new InvalidArgumentError('rs: an RS is listed twice');
    // Validates the lease (INVALID_ARGUMENT) before anything is paused.
    if (!(req.leaseMs >= 1 && req.leaseMs <= MAX_PAUSE_LEASE_MS)) throw new InvalidArgumentError(`lease_ms must be 1..${MAX_PAUSE_LEASE_MS}, got ${req.leaseMs}`);
    const results = await Promise.all(req.rs.map((e) => this.pauseOne(e.rs, e.epoch, req.leaseMs, req.reason)));
    const paused = results.filter((r) => r.paused).length;
    this.log.info({ rs: req.rs.length === 1 ? req.rs[0]!.rs : undefined, count: req.rs.length, paused, leaseMs: req.leaseMs, reason: req.reason }, 'paused RS for a move');
    return { rs: results };
  }

  private async pauseOne(rs: number, epoch: number, leaseMs: number, reason: string): Promise<PausedRs> {
    const started = performance.now();
    const no = (detail: string): PausedRs => ({ rs, epoch, paused: false, detail, lastSeq: 0, checkpointed: false, held: 0, drainMs: performance.now() - started });
    const slot = this.slots.get(rs);
    if (!slot || slot.role !== 'ACTIVE' || slot.epoch !== epoch) {
      return no(`copy ${this.copyId} is ${slot?.role ?? 'OUT_OF_SERVICE'} for ${this.appName}/${rs}${slot ? ` at epoch ${slot.epoch}` : ''}, not ACTIVE at epoch ${epoch}`);
    }
    if (slot.recovering !== null) return no(`${this.appName}/${rs} is still recovering its state`);
    this.pauses.pause(rs, epoch, leaseMs, reason);
    try {
      // The running batch (or background sync round) finishes: committed, or failed if handed over.
      await this.pauses.waitIdle(rs, () => slot.running, leaseMs, () => new UnavailableError(`the running batch of ${this.appName}/${rs} did not finish within ${leaseMs} ms`));
      if (slot.role !== 'ACTIVE' || slot.epoch !== epoch) return no(`${this.appName}/${rs} changed role while pausing (now ${slot.role} at epoch ${slot.epoch})`);
      if (!isCommitted(slot) && !slot.running) {
        // Serialised with message processing and background syncs, like a batch.
        slot.running = true;
        const round = this.replicateUntilCommitted(slot, epoch, false).finally(() => {
          slot.running = false;
          this.pauses.idle(rs);
        });
        await withTimeout(round, leaseMs, () => new UnavailableError(`${this.appName}/${rs}: recorded updates not replicated within ${leaseMs} ms`));
      }
      let checkpointed = false;
      if (this.checkpoints) {
        await withTimeout(this.checkpoint(slot, epoch, slot.seq), leaseMs, () => new UnavailableError(`${this.appName}/${rs}: final checkpoint not stored within ${leaseMs} ms`));
        checkpointed = true;
      }
      return { rs, epoch, paused: true, detail: '', lastSeq: slot.seq, checkpointed, held: slot.queue.length, drainMs: performance.now() - started };
    } catch (e) {
      if (e instanceof StaleEpochError) this.deposedByCheckpoint(slot, epoch, e.message);
      // Still paused (lease): the move goes on; the lease or the role change ends the pause.
      return no(ensureError(e).message);
    }
  }

  /** End pauses early (the controller refused or abandoned the move). */
  private onResumeRs(req: ResumeRsRequest): ResumeRsResponse {
    if (req.copyId !== this.copyId) throw new FailedPreconditionError(`ResumeRs addressed to copy ${req.copyId} reached copy ${this.copyId}`);
    if (req.incarnation !== this.incarnation) {
      throw new FailedPreconditionError(`ResumeRs for incarnation ${req.incarnation}; this copy is incarnation ${this.incarnation}`);
    }
    if (req.app !== this.appName) throw new NotFoundError(`application ${JSON.stringify(req.app)} is not served by this copy (it runs ${this.appName})`);
    let resumed = 0;
    for (const rs of req.rs) if (this.pauses.resume(rs)) resumed++;
    if (resumed > 0) this.log.info({ resumed, rs: req.rs.length === 1 ? req.rs[0] : undefined }, 'resumed paused RS');
    return { resumed };
  }

  private onGetCopyInfo(): GetCopyInfoResponse {
    return {
      copyId: this.copyId,
      app: this.appName,
      incarnation: this.incarnation,
      rs: [...this.slots.values()].map((s) => ({
        app: this.appName,
        rs: s.rs,
        role: roleFromName(s.role),
        epoch: s.epoch,
        version: s.version,
        appliedSeq: s.seq,
        synced: s.role === 'ACTIVE' ? true : s.synced,
        outboxEntries: s.outbox.size,
      })),
      health: this.health(false),
      shared: this.shared.info(),
    };
  }
}

/** A request message of a correlated bidi stream (DeliverStream, ReplicateStream). */
interface CorrelatedRequest<Q> {
  correlationId: number;
  request?: Q | undefined;
  more: CorrelatedRequest<Q>[];
}
/** An answer message of a correlated bidi stream. */
interface CorrelatedAnswer<A> {
  correlationId: number;
  response?: A | undefined;
  statusCode: number;
  statusMessage: string;
  statusMetadata: Record<string, string>;
  more: CorrelatedAnswer<A>[];
}
/** Server side of a correlated bidi stream. */
type CorrelatedServerCall<Q, A> = grpc.ServerDuplexStream<CorrelatedRequest<Q>, CorrelatedAnswer<A>>;

/**
 * Active → one standby address: Replicate requests over one long-lived ReplicateStream (no
 * HTTP/2 stream setup per batch), answered in order, each with its own deadline. The stream is
 * reopened after it breaks; a standby without ReplicateStream (UNIMPLEMENTED: an older version
 * during an upgrade) is served with unary Replicate calls from then on. Once the standby's
 * response headers say it takes STREAM_BATCH, the requests of one event-loop turn (the batches
 * of several RS) go out as one message, and batched answers are taken.
 */
class ReplicationLink {
  private stream: grpc.ClientDuplexStream<ReplicateStreamRequest, ReplicateStreamResponse> | undefined;
  private readonly waiting = new Map<number, { resolve: (r: ReplicateResponse) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private unaryOnly = false;
  private closed = false;
  /** The standby of the current stream takes several requests per message. */
  private batching = false;
  private splitSnapshots = false;
  private readonly outgoing = new TickBatcher<ReplicateStreamRequest>(
    (batch) => this.writeBatch(batch),
    (r) => 64 + (r.request?.entries.reduce((n, e) => n + e.update.length + e.reply.length + e.messageId.length, 0) ?? 0),
    { maxItems: 64 },
  );

  constructor(private readonly client: AdsmServiceClient) {}

  /** The standby of the current stream announced SNAPSHOT_SPLIT (adsm.proto); false until its headers came. */
  get takesSplitSnapshots(): boolean {
    return this.splitSnapshots && this.stream !== undefined;
  }

  replicate(req: ReplicateRequest, deadlineMs: number): Promise<ReplicateResponse> {
    if (this.unaryOnly || this.closed) return unaryCall(this.client.replicate.bind(this.client), req, { deadlineMs });
    const s = this.open();
    const correlationId = this.nextId++;
    return new Promise<ReplicateResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(correlationId);
        reject(new DeadlineExceededError(`Replicate to ${this.client.getChannel().getTarget()} took over ${deadlineMs} ms`));
      }, deadlineMs);
      this.waiting.set(correlationId, { resolve, reject, timer });
      const m: ReplicateStreamRequest = { correlationId, request: req, more: [] };
      if (this.batching) this.outgoing.push(m);
      else s.write(m);
    });
  }

  /** One message for the requests of a turn; those no longer waited for (stream broke, timed out) are left out. */
  private writeBatch(batch: ReplicateStreamRequest[]): void {
    const live = batch.filter((m) => this.waiting.has(m.correlationId));
    if (live.length === 0 || this.closed) return;
    const s = this.open();
    s.write(live.length === 1 ? live[0]! : { ...live[0]!, more: live.slice(1) });
  }

  private open(): grpc.ClientDuplexStream<ReplicateStreamRequest, ReplicateStreamResponse> {
    if (this.stream) return this.stream;
    const s = this.client.replicateStream(streamBatchMetadata());
    this.stream = s;
    this.batching = false;
    this.splitSnapshots = false;
    s.on('metadata', (md: grpc.Metadata) => {
      if (this.stream !== s) return;
      if (takesBatches(md)) this.batching = true;
      if (md.get(SNAPSHOT_SPLIT_HEADER)[0] === '1') this.splitSnapshots = true;
    });
    const answer = (m: ReplicateStreamResponse): void => {
      const w = this.waiting.get(m.correlationId);
      if (!w) return; // timed out already
      this.waiting.delete(m.correlationId);
      clearTimeout(w.timer);
      if (m.statusCode === grpc.status.OK && m.response) w.resolve(m.response);
      else {
        const metadata = new grpc.Metadata();
        for (const [k, v] of Object.entries(m.statusMetadata)) metadata.set(k, v);
        w.reject(fromServiceError({ code: m.statusCode || grpc.status.UNKNOWN, details: m.statusMessage, metadata }));
      }
    };
    s.on('data', (m: ReplicateStreamResponse) => {
      answer(m);
      for (const a of m.more) answer(a);
    });
    const broken = (e: Error): void => {
      if (this.stream === s) {
        this.stream = undefined;
        this.batching = false;
      }
      const err = fromServiceError(e);
      if ((e as Partial<grpc.ServiceError>).code === grpc.status.UNIMPLEMENTED) this.unaryOnly = true;
      for (const w of this.waiting.values()) {
        clearTimeout(w.timer);
        w.reject(err);
      }
      this.waiting.clear();
      this.outgoing.clear();
    };
    s.on('error', (e: Error) => broken(e));
    s.on('end', () => broken(new UnavailableError('replication stream ended')));
    return s;
  }

  close(): void {
    this.closed = true;
    this.outgoing.clear();
    this.stream?.cancel();
    this.stream = undefined;
  }
}

const PROBE_OUTCOME: DeliverOutcome = { reply: Buffer.alloc(0), epoch: 0, duplicate: false };
/**
 * The dedupe table a snapshot (InstallSnapshot, FetchState) carries: entries of an older sender,
 * then the packed blob. Checked whole before anything is installed: a malformed blob is bad
 * input (INVALID_ARGUMENT), not half a table.
 */
function snapshotDedupe(m: { readonly dedupe: readonly UpdateEntry[]; readonly dedupePacked: Uint8Array }, what: string, window: number): DedupeTable {
  const out = new DedupeTable(window);
  try {
    out.load(m.dedupe, m.dedupePacked);
  } catch (e) {
    throw new InvalidArgumentError(`${what}: dedupe table: ${(e as Error).message}`);
  }
  return out;
}

/** A member's FetchState answer with its state and dedupe table decoded. */
interface Fetched {
  readonly from: string;
  readonly r: FetchStateResponse;
  readonly snap: unknown;
  readonly dedupe: DedupeTable;
}

/**
 * The most recent of the states members answered with (highest state epoch, then sequence); of
 * equals, one whose dedupe table is complete (SNAPSHOT_SPLIT: `dedupe_partial` not set).
 */
function newestState<T extends { readonly r: FetchStateResponse }>(held: readonly T[]): T | undefined {
  let best: T | undefined;
  for (const a of held) {
    if (
      !best ||
      a.r.stateEpoch > best.r.stateEpoch ||
      (a.r.stateEpoch === best.r.stateEpoch && (a.r.seq > best.r.seq || (a.r.seq === best.r.seq && best.r.dedupePartial && !a.r.dedupePartial)))
    ) {
      best = a;
    }
  }
  return best;
}

/** `update` of an outbox housekeeping entry: no state update. */
const EMPTY_UPDATES = encodeJson([]);

/** Everything recorded on this ACTIVE slot is on every standby (see `RsSlot.committedSeq`). */
function isCommitted(slot: { epoch: number; seq: number; committedEpoch: number; committedSeq: number }): boolean {
  return slot.committedEpoch === slot.epoch && slot.committedSeq >= slot.seq;
}

/** Index of the entry with sequence number `seq` in a contiguous log, or -1. */
function logIndex(log: readonly UpdateEntry[], seq: number): number {
  if (log.length === 0) return -1;
  const i = seq - log[0]!.seq;
  return i >= 0 && i < log.length ? i : -1;
}

function withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(err()), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
