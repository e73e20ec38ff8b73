/**
 * A counter cluster of real processes for end-to-end tests: controller replica(s) on fixed
 * ports (so a restarted replica keeps its address), counter copies, and a load client that
 * records every acknowledged increment.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControllerClient, RoutingClient } from '@understudy/adsm';
import { Mode, Partitioning, type DetectionPolicy, type GetStatusResponse } from '@understudy/proto';
import { unaryCall } from '@understudy/runtime';
import { freePort, startControllerProc, startCounterCopy, startFaultManagerProc, type Proc } from './processes';
import { waitFor } from './wait';

/** Options of {@link startCounterCluster}. */
export interface ClusterOptions {
  readonly redisUrl?: string;
  readonly controllers?: number;
  readonly copies?: number;
  readonly rsCount?: number;
  readonly standbys?: number;
  readonly mode?: Mode;
  readonly leaseTtlMs?: number;
  readonly passiveTimeoutMs?: number;
  /** The app's detection policy (fault managers apply it). */
  readonly detection?: Partial<DetectionPolicy>;
  /** Fault manager processes to start; copies attach to them. @default 0 */
  readonly faultManagers?: number;
  /** Host id of copy `cN` (1-based). @default `host-cN` */
  readonly hostOf?: (copyId: string) => string;
  /** Extra environment of every controller process (e.g. `UNDERSTUDY_PAUSE_TIMEOUT_MS`). */
  readonly controllerEnv?: Record<string, string>;
  /** Extra environment of every copy process (e.g. `UNDERSTUDY_CHECKPOINT_BEFORE_ACK`). */
  readonly copyEnv?: Record<string, string>;
  /** Declare the app with RANGE partitioning split at these keys (rsCount - 1 of them). @default hash partitioning */
  readonly rangeStarts?: readonly string[];
}

/** A running cluster. */
export interface CounterCluster {
  readonly ports: number[];
  readonly addresses: string[];
  readonly dataDirs: string[];
  readonly controllers: (Proc | undefined)[];
  readonly copies: Map<string, Proc>;
  /** Fault manager processes (index i = fm-(i+1)). */
  readonly faultManagers: (Proc | undefined)[];
  /** Their host:port (fixed across restarts). */
  readonly faultManagerAddresses: string[];
  /** Start copy `copyId` again (a new process: new incarnation, same id and host). */
  restartCopy(copyId: string): Promise<Proc>;
  /** Start fault manager i again on its address. */
  restartFaultManager(i: number): Promise<Proc>;
  readonly ctl: ControllerClient;
  readonly routing: RoutingClient;
  status(includeAssignments?: boolean): Promise<GetStatusResponse>;
  restartController(i: number): Promise<Proc>;
  stop(): Promise<void>;
}

/** Start controllers, declare the counter app, start copies, wait until every RS is placed. */
export async function startCounterCluster(o: ClusterOptions = {}): Promise<CounterCluster> {
  const n = o.controllers ?? 1;
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  const dataDirs = ports.map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-ctl-')));
  const startCtl = (i: number): Promise<Proc> =>
    startControllerProc({
      id: `ctl-${i + 1}`,
      port: ports[i]!,
      redisUrl: o.redisUrl,
      dataDir: dataDirs[i],
      leaseTtlMs: o.leaseTtlMs,
      passiveTimeoutMs: o.passiveTimeoutMs,
      env: o.controllerEnv,
    });
  const controllers: (Proc | undefined)[] = [];
  for (let i = 0; i < n; i++) controllers.push(await startCtl(i));
  const ctl = new ControllerClient({ addresses, callTimeoutMs: 10_000 });
  const rsCount = o.rsCount ?? 8;
  const copyCount = o.copies ?? 3;
  const mode = o.mode ?? Mode.MODE_DISTRIBUTED_FAULT_TOLERANT;
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: {
        apps: [{ name: 'counter', mode, rsCount, standbys: o.standbys ?? (mode === Mode.MODE_DISTRIBUTED ? 0 : 1), minCopies: copyCount, partitioning: o.rangeStarts ? Partitioning.PARTITIONING_RANGE : Partitioning.PARTITIONING_HASH, rangeStarts: [...(o.rangeStarts ?? [])], detection: detectionPb(o.detection) }],
        edges: [],
      },
    }),
  );
  const fmPorts = await Promise.all(Array.from({ length: o.faultManagers ?? 0 }, () => freePort()));
  const faultManagerAddresses = fmPorts.map((p) => `127.0.0.1:${p}`);
  const startFm = (i: number): Promise<Proc> => startFaultManagerProc({ id: `fm-${i + 1}`, port: fmPorts[i]!, controllers: addresses });
  const faultManagers: (Proc | undefined)[] = await Promise.all(fmPorts.map((_, i) => startFm(i)));
  const copies = new Map<string, Proc>();
  const startCopy = (id: string): Promise<Proc> =>
    startCounterCopy({ copyId: id, controllers: addresses, host: o.hostOf?.(id), faultManagers: faultManagerAddresses, env: { UNDERSTUDY_FAULT_INJECTION: '1', ...o.copyEnv } });
  await Promise.all(
    Array.from({ length: copyCount }, async (_, i) => {
      const id = `c${i + 1}`;
      copies.set(id, await startCopy(id));
    }),
  );
  const status = (includeAssignments = false): Promise<GetStatusResponse> =>
    ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments }, { deadlineMs: 3000 }), 10_000);
  await waitFor(async () => {
    const s = await status();
    const app = s.apps.find((a) => a.spec?.name === 'counter');
    return app && !s.passive && app.activated && app.rsWithActive === rsCount;
  }, { what: 'counter app placed', timeoutMs: 30_000 });
  const routing = new RoutingClient({ controllerAddresses: addresses, deliverDeadlineMs: 20_000 });
  await routing.waitReady('counter', 15_000);
  return {
    ports,
    addresses,
    dataDirs,
    controllers,
    copies,
    faultManagers,
    faultManagerAddresses,
    restartCopy: async (id) => {
      const p = await startCopy(id);
      copies.set(id, p);
      return p;
    },
    restartFaultManager: async (i) => {
      const p = await startFm(i);
      faultManagers[i] = p;
      return p;
    },
    ctl,
    routing,
    status,
    restartController: async (i) => {
      const p = await startCtl(i);
      controllers[i] = p;
      return p;
    },
    stop: async () => {
      routing.close();
      ctl.close();
      await Promise.all([...copies.values()].map((p) => p.kill()));
      await Promise.all(faultManagers.map((p) => p?.kill()));
      await Promise.all(controllers.map((p) => p?.kill()));
      for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true });
    },
  };
}

/**
 * Drives increments with bounded concurrency and records what was acknowledged. Each
 * increment keeps its message id across retries, so an acknowledged increment is applied
 * exactly once however many attempts it took.
 */
export class CounterLoad {
  readonly acked = new Map<string, number>();
  readonly failures: string[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private seq = 0;
  count = 0;

  constructor(
    private readonly routing: RoutingClient,
    private readonly keys: readonly string[],
    private readonly concurrency = 4,
  ) {}

  /** Start sending until `stop()`. */
  start(): void {
    this.running = true;
    this.loops = Array.from({ length: this.concurrency }, () => this.loop());
  }

  /** Send `n` increments now (sequentially per worker), resolving when all are acknowledged. */
  async burst(n: number): Promise<void> {
    const per = Math.ceil(n / this.concurrency);
    await Promise.all(Array.from({ length: this.concurrency }, async () => {
      for (let i = 0; i < per; i++) await this.one();
    }));
  }

  private async loop(): Promise<void> {
    while (this.running) await this.one();
  }

  private async one(): Promise<void> {
    const key = this.keys[this.seq++ % this.keys.length]!;
    try {
      await this.routing.deliver('counter', key, { key, by: 1 }, { deadlineMs: 20_000 });
      this.acked.set(key, (this.acked.get(key) ?? 0) + 1);
      this.count++;
    } catch (e) {
      this.failures.push(`${key}: ${(e as Error).message}`);
    }
  }

  /** Stop and wait for in-flight increments. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Read every key's value from its active copy. */
  async values(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const key of this.keys) {
      const rs = this.routing.rsForKey('counter', key);
      out.set(key, await this.routing.query<number>('counter', rs, { key }));
    }
    return out;
  }
}

let keySpace = 0;
/** `n` fresh keys (never used before in this process) spread over the RS of a counter app. */
export function keys(n: number): string[] {
  const prefix = `t${keySpace++}`;
  return Array.from({ length: n }, (_, i) => `${prefix}-k${i}`);
}

/** Wire policy from a partial one (0 = default for every missing field). */
function detectionPb(d: Partial<DetectionPolicy> | undefined): DetectionPolicy | undefined {
  if (d === undefined) return undefined;
  return {
    heartbeatIntervalMs: 0,
    missedHeartbeats: 0,
    maxEventLoopLagMs: 0,
    maxCpuPercent: 0,
    maxRssBytes: 0,
    maxQueueDepth: 0,
    breachSamples: 0,
    probeIntervalMs: 0,
    probeTimeoutMs: 0,
    ...d,
  };
}
