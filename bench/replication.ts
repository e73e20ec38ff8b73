/**
 * Synchronous replication benchmark, real processes on 127.0.0.1, measured, not a test.
 *
 * Cluster: one System Controller (embedded store) and 3 counter copies (examples/counter), the
 * counter app in DISTRIBUTED_FAULT_TOLERANT mode with `standbys: 2`, so every RS has 1 ACTIVE
 * and 2 STANDBYs on the three copies (each copy is active for ~1/3 of the RS and standby for
 * the rest). Replication is synchronous to both standbys.
 *
 * What one "update" is: one increment `{key, by: 1}` with its own message id, delivered to the
 * active copy of the key's RS and acknowledged by it. The active runs the handler, sends the
 * resulting update to both standbys (Replicate; the copy groups the messages queued for one RS
 * into one Replicate batch: group commit) and acknowledges only once both standbys applied it.
 * The client never merges updates: each has its own request, message id, ack and latency.
 *
 * Three ways to send, measured one after the other on the same cluster (BENCH_MODES):
 *   unary   one AdsmService.Deliver call per update
 *   stream  AdsmService.DeliverStream through a grpc-js client stream: one long-lived stream per
 *           (load process, active copy); each update is one DeliverStreamRequest answered by one
 *           DeliverStreamResponse (saves the per-call HTTP/2 stream setup)
 *   link    DeliverStream through the library's DeliverLink (what RoutingClient.deliver and the
 *           Router use): requests
 *           of one event-loop turn share one write, and with STREAM_BATCH (adsm.proto) one
 *           message; the copy answers the acks of one turn in one message
 * The headline figures (updates_per_s, p50_ms, p99_ms, max_ms) are those of the LAST mode in
 * BENCH_MODES (default: unary,stream,link, so link); every mode's figures are in the JSON under
 * its name.
 *
 * Load: BENCH_WORKERS load processes (forked from this file), each with BENCH_CONCURRENCY
 * closed-loop senders straight at the active copy (routes from a RoutingClient; a failed attempt
 * is retried with the same message id through the RoutingClient, so an update counts once
 * however many attempts it took). Closed loop measures capacity: the senders keep the cluster
 * saturated, so latency there is mostly queueing (in flight / throughput). BENCH_RATE=N instead
 * offers N updates/s in an OPEN loop (updates go out when due whatever the answers do, and each
 * latency counts from when it was due, so stalls are not hidden: no coordinated omission);
 * `behind` counts updates not sent because 4096 were unanswered, `load_send_lag_p99_ms` how late
 * the load process itself was. Per mode: warm-up BENCH_WARMUP_S seconds, then BENCH_SECONDS
 * measured.
 *   updates_per_s  updates acknowledged inside the measured window / window length
 *   p50_ms, p99_ms, max_ms  client-observed ack latency (request sent → ack received) of the
 *                  updates sent and acknowledged inside the window
 *   machine_busy_pct  the whole machine's CPU (all cores, /proc/stat) busy over the window: compare
 *                  p99 with `relay-floor`'s at the same figure
 *   copies_rss_mb, copies_rss_growth_mb  (per mode) largest copy RSS at the end of the window,
 *                  and largest growth of one copy across it: a per-message leak shows here
 * Check at the end: every key's value (queried from its active) equals the increments the
 * load acknowledged for it (`lost` = fewer, `doubled` = more; both must be 0), and every RS's
 * two standbys report the same applied sequence number as its active, and the active sequence
 * numbers add up to the acknowledged updates (`standby_mismatch` must be 0).
 *
 * The machine is shared by everything here (copies, controller, load): on a small box the
 * figures are CPU-bound; `loadavg_1m` at the start is printed to show outside load. What the
 * same message path costs with no framework code at all, on the same machine: `npm run bench --
 * relay-floor` (compare p99 at the same machine load).
 * BENCH_DUMP=<path>: each load process writes `<path>.<index>`, a Float64Array of (due time as
 * epoch ms, latency ms) pairs of the measured updates, to line latency spikes up with other
 * processes' logs (GC, event-loop stalls).
 * Progress lines go to stdout; the last line is one JSON object.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ControllerClient, DeliverLink, RoutingClient, encodeJson } from '@understudy/adsm';
import { keyToRs } from '@understudy/core';
import {
  AdsmServiceClient,
  Mode,
  Partitioning,
  Role,
  type DeliverRequest,
  type DeliverStreamRequest,
  type DeliverStreamResponse,
  type GetStatusResponse,
} from '@understudy/proto';
import { cpuSeconds, machineBusyPct, machineTicks, PROCESSES, rssMb } from './lib';
import { entryScript } from '../test/harness/processes';
import { clientChannelOptions, freePort, insecureCredentials, startProcess, unaryCall, type Proc } from '@understudy/runtime';

const ROOT = path.resolve(__dirname, '..');
const RS = Number(process.env.BENCH_RS ?? 12);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
/** Open loop: total updates/s offered (split over the load processes); 0 = closed loop. */
const RATE_PER_S = Number(process.env.BENCH_RATE ?? 0);
const OPEN_LOOP_MAX_IN_FLIGHT = 4096;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const KEYS_PER_WORKER = Number(process.env.BENCH_KEYS ?? 512);
const MODES = (process.env.BENCH_MODES ?? 'unary,stream,link').split(',').map((m) => m.trim()) as SendMode[];
const APP = 'counter';

type SendMode = 'unary' | 'stream' | 'link';

// ---- messages between the bench and its load workers ------------------------------------

interface WorkerInit {
  type: 'init';
  index: number;
  mode: SendMode;
  controllers: string[];
  concurrency: number;
  ratePerS: number;
  keys: number;
}
type ToWorker = WorkerInit | { type: 'measure' } | { type: 'stop' };
interface WorkerDone {
  type: 'done';
  windowMs: number;
  ackedInWindow: number;
  ackedTotal: number;
  retried: number;
  failed: number;
  behind: number;
  sendLagP99Ms: number;
  latencies: string; // base64 of a Float64Array (ms)
  acked: Record<string, number>;
  cpuMs: number;
  elapsedMs: number;
}
type FromWorker = { type: 'ready' } | { type: 'progress'; acked: number } | WorkerDone;

// ---- load worker -----------------------------------------------------------------------------

/** One DeliverStream to one copy, shared by all senders of a load process. */
class StreamSender {
  private stream: grpc.ClientDuplexStream<DeliverStreamRequest, DeliverStreamResponse> | undefined;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private next = 1;

  constructor(private readonly client: AdsmServiceClient) {}

  send(request: DeliverRequest): Promise<void> {
    const s = this.open();
    const correlationId = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(correlationId, { resolve, reject });
      s.write({ correlationId, request, more: [] });
    });
  }

  private open(): NonNullable<StreamSender['stream']> {
    if (this.stream) return this.stream;
    const s = this.client.deliverStream();
    this.stream = s;
    s.on('data', (m: DeliverStreamResponse) => {
      const w = this.waiting.get(m.correlationId);
      if (!w) return;
      this.waiting.delete(m.correlationId);
      if (m.statusCode === 0) w.resolve();
      else w.reject(new Error(`${grpc.status[m.statusCode] ?? m.statusCode}: ${m.statusMessage}`));
    });
    const broken = (e: Error): void => {
      if (this.stream === s) this.stream = undefined;
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    s.on('error', (e: Error) => broken(e));
    s.on('end', () => broken(new Error('stream ended')));
    return s;
  }

  close(): void {
    this.stream?.end();
    this.stream = undefined;
  }
}

async function worker(): Promise<void> {
  const send = (m: FromWorker): void => void process.send!(m);
  const init = await new Promise<WorkerInit>((resolve) => process.once('message', (m: ToWorker) => resolve(m as WorkerInit)));
  const routing = new RoutingClient({ controllerAddresses: init.controllers, app: APP, deliverDeadlineMs: 20_000 });
  await routing.waitReady(APP, 30_000);
  const rsCount = routing.rsCount(APP)!;
  const keys = Array.from({ length: init.keys }, (_, i) => `w${init.index}-k${i}`);
  const keyRs = keys.map((k) => keyToRs(k, rsCount));
  const payloads = keys.map((k) => encodeJson({ key: k, by: 1 }));
  const acked = new Int32Array(keys.length);
  const clients = new Map<string, AdsmServiceClient>();
  const streams = new Map<string, StreamSender>();
  const clientFor = (address: string): AdsmServiceClient => {
    let c = clients.get(address);
    if (!c) {
      c = new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions());
      clients.set(address, c);
    }
    return c;
  };
  const metadata = new grpc.Metadata();
  const deliverUnary = (address: string, req: DeliverRequest): Promise<void> =>
    new Promise((resolve, reject) => {
      clientFor(address).deliver(req, metadata, { deadline: Date.now() + 20_000 }, (err) => (err ? reject(err) : resolve()));
    });
  const deliverStream = (address: string, req: DeliverRequest): Promise<void> => {
    let s = streams.get(address);
    if (!s) {
      s = new StreamSender(clientFor(address));
      streams.set(address, s);
    }
    return s.send(req);
  };
  type Waiter = { resolve: () => void; reject: (e: Error) => void };
  const links = new Map<string, DeliverLink<Waiter>>();
  const deliverLink = (address: string, req: DeliverRequest): Promise<void> => {
    let l = links.get(address);
    if (!l) {
      l = new DeliverLink<Waiter>(address, (w, err) => (err ? w.reject(err) : w.resolve()));
      links.set(address, l);
    }
    const link = l;
    return new Promise((resolve, reject) => void link.send(req, { resolve, reject }));
  };
  const deliver = init.mode === 'stream' ? deliverStream : init.mode === 'link' ? deliverLink : deliverUnary;

  let phase: 'warmup' | 'measure' | 'stop' = 'warmup';
  let windowStart = 0;
  let windowEnd = 0;
  let lat = new Float64Array(1 << 18);
  const DUMP = process.env.BENCH_DUMP;
  const dump = new Float64Array(DUMP ? 1 << 22 : 0);
  let dumpN = 0;
  let latN = 0;
  let ackedTotal = 0;
  let ackedInWindow = 0;
  let retried = 0;
  let failed = 0;
  let behind = 0;
  let next = 0;
  let seq = 0;
  const prefix = `${init.mode[0]}${init.index}-${process.pid}-`;

  /** `scheduledAt`: open loop, the time the update was due (latency counts from then). */
  const one = async (scheduledAt?: number): Promise<void> => {
    const k = next++ % keys.length;
    const key = keys[k]!;
    const rs = keyRs[k]!;
    const messageId = prefix + seq++;
    const t0 = scheduledAt ?? performance.now();
    if (scheduledAt !== undefined && phase === 'measure' && sendLagN < sendLag.length) sendLag[sendLagN++] = performance.now() - scheduledAt;
    const route = routing.route(APP, rs);
    try {
      if (!route?.activeAddress) throw new Error('no route');
      await deliver(route.activeAddress, { app: APP, rs, messageId, payload: payloads[k]!, key, routeEpoch: 0 });
    } catch {
      // Retry with the same message id (the copy dedupes) through the routing client.
      retried++;
      try {
        await routing.deliver(APP, key, { key, by: 1 }, { messageId, rs });
      } catch {
        failed++; // outcome unknown: would show up as lost/doubled only if it was applied
        return;
      }
    }
    const t1 = performance.now();
    acked[k]!++;
    ackedTotal++;
    if (phase === 'measure' && t0 >= windowStart) {
      ackedInWindow++;
      if (latN === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[latN++] = t1 - t0;
      if (DUMP && dumpN < dump.length / 2) {
        dump[dumpN * 2] = performance.timeOrigin + t0;
        dump[dumpN * 2 + 1] = t1 - t0;
        dumpN++;
      }
    }
  };
  /**
   * Open loop: updates are due at a fixed rate whatever the answers do; each one's latency
   * counts from when it was due (no coordinated omission). Bounded: at most OPEN_LOOP_MAX_IN_FLIGHT
   * unanswered; an update due beyond that is counted in `behind` and not sent.
   */
  /** Open loop: how late the load process itself sent each update (part of its latency). */
  const sendLag = new Float64Array(1 << 21);
  let sendLagN = 0;
  const openLoop = async (ratePerS: number): Promise<void> => {
    const start = performance.now();
    const running = new Set<Promise<void>>();
    let due = 0;
    while (phase !== 'stop') {
      const now = performance.now();
      // Update i is due at start + i / rate: all of those due by now go out.
      const target = Math.floor(((now - start) * ratePerS) / 1000) + 1;
      for (; due < target; due++) {
        if (running.size >= OPEN_LOOP_MAX_IN_FLIGHT) {
          behind++;
          continue;
        }
        const p: Promise<void> = one(start + (due * 1000) / ratePerS).finally(() => running.delete(p));
        running.add(p);
      }
      await new Promise<void>((r) => setTimeout(r, 1));
    }
    await Promise.all(running);
  };
  const loop = async (): Promise<void> => {
    while (phase !== 'stop') await one();
  };

  const cpu0 = process.cpuUsage();
  const started = performance.now();
  let loops: Promise<void>[] = [];
  const progress = setInterval(() => send({ type: 'progress', acked: ackedTotal }), 1000);
  process.on('message', (m: ToWorker) => {
    if (m.type === 'measure') {
      phase = 'measure';
      windowStart = performance.now();
    } else if (m.type === 'stop') {
      windowEnd = performance.now();
      phase = 'stop';
      clearInterval(progress);
      void Promise.all(loops).then(() => {
        const cpu = process.cpuUsage(cpu0);
        const ackedByKey: Record<string, number> = {};
        keys.forEach((k, i) => (ackedByKey[k] = acked[i]!));
        send({
          type: 'done',
          windowMs: windowEnd - windowStart,
          ackedInWindow,
          ackedTotal,
          retried,
          failed,
          behind,
          sendLagP99Ms: pct(sendLag.subarray(0, sendLagN).sort(), 99),
          latencies: Buffer.from(lat.buffer, 0, latN * 8).toString('base64'),
          acked: ackedByKey,
          cpuMs: (cpu.user + cpu.system) / 1000,
          elapsedMs: performance.now() - started,
        });
        if (DUMP) fs.writeFileSync(`${DUMP}.${init.index}`, Buffer.from(dump.buffer, 0, dumpN * 16));
        for (const s of streams.values()) s.close();
        for (const l of links.values()) l.close();
        routing.close();
        for (const c of clients.values()) c.close();
        setTimeout(() => process.exit(0), 50);
      });
    }
  });
  if (init.ratePerS > 0) loops = [openLoop(init.ratePerS)];
  else loops = Array.from({ length: init.concurrency }, () => loop());
  send({ type: 'ready' });
}

// ---- bench -------------------------------------------------------------------------------

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
const r2 = (x: number): number => Math.round(x * 100) / 100;

/** Controller + 3 counter copies as real processes; copy output to BENCH_LOG_DIR if set. */
async function startCluster(): Promise<{
  addresses: string[];
  copies: Proc[];
  routing: RoutingClient;
  status(): Promise<GetStatusResponse>;
  stop(): Promise<void>;
}> {
  const logDir = process.env.BENCH_LOG_DIR;
  if (logDir) fs.mkdirSync(logDir, { recursive: true });
  const logTo = (name: string): ((l: string) => void) | undefined => {
    if (!logDir) return undefined;
    const out = fs.createWriteStream(path.join(logDir, `${name}.log`));
    return (l) => out.write(`${l}\n`);
  };
  const env: Record<string, string> = { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', REDIS_URL: '' };
  // BENCH_COPY_NODE_OPTIONS goes to the copies only, e.g. '--require /tmp/profile.cjs' (a preload
  // that profiles through node:inspector; Node refuses --cpu-prof in NODE_OPTIONS) or V8 flags.
  const copyEnv: Record<string, string> = process.env.BENCH_COPY_NODE_OPTIONS ? { ...env, NODE_OPTIONS: process.env.BENCH_COPY_NODE_OPTIONS } : env;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-bench-ctl-'));
  const port = await freePort();
  const controller = await startProcess({
    name: 'controller',
    cwd: ROOT,
    script: entryScript('services/system-controller/src/main.ts'),
    args: ['--id', 'ctl-1', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir],
    env,
    readyMsg: 'controller listening',
    onLine: logTo('controller'),
  });
  const addresses = [`127.0.0.1:${port}`];
  const ctl = new ControllerClient({ addresses, callTimeoutMs: 10_000 });
  await ctl.withLeader((c) =>
    unaryCall(c.applyTopology.bind(c), {
      topology: {
        apps: [{ name: APP, mode: Mode.MODE_DISTRIBUTED_FAULT_TOLERANT, rsCount: RS, standbys: 2, minCopies: 3, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] }],
        edges: [],
      },
    }),
  );
  const copies = await Promise.all(
    ['c1', 'c2', 'c3'].map((id) =>
      startProcess({
        name: `copy ${id}`,
        cwd: ROOT,
        script: entryScript('examples/counter/src/copy.ts'),
        args: ['--copy-id', id, '--controllers', addresses[0]!, '--host', `host-${id}`],
        env: copyEnv,
        readyMsg: 'copy listening',
        onLine: logTo(id),
      }),
    ),
  );
  const status = (): Promise<GetStatusResponse> => ctl.withLeader((c) => unaryCall(c.getStatus.bind(c), { app: '', includeAssignments: true }, { deadlineMs: 3000 }), 10_000);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await status();
    const app = s.apps.find((a) => a.spec?.name === APP);
    if (app && !s.passive && app.activated && app.rsWithActive === RS) break;
    if (Date.now() > deadline) throw new Error('counter app not placed within 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  const routing = new RoutingClient({ controllerAddresses: addresses, deliverDeadlineMs: 20_000 });
  await routing.waitReady(APP, 15_000);
  return {
    addresses,
    copies,
    routing,
    status,
    stop: async () => {
      routing.close();
      ctl.close();
      // SIGTERM first (a graceful stop, so e.g. --cpu-prof output gets written), then SIGKILL.
      for (const p of [...copies, controller]) p.signal('SIGTERM');
      await Promise.race([Promise.all([...copies, controller].map((p) => p.exited)), new Promise((r) => setTimeout(r, 5000))]);
      await Promise.all([...copies, controller].map((p) => p.kill()));
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

interface ModeResult {
  updates_per_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  updates_measured: number;
  window_s: number;
  retried: number;
  failed: number;
  /** Open loop: updates not sent because OPEN_LOOP_MAX_IN_FLIGHT were unanswered (the cluster fell behind). */
  behind: number;
  /** Open loop: p99 of how late the load process sent an update (the largest of its processes). */
  load_send_lag_p99_ms: number | null;
  load_cpu_pct: number;
  copies_cpu_pct: number;
  machine_busy_pct: number;
  /** Largest copy RSS at the end of the measured window (MB). */
  copies_rss_mb: number;
  /** Largest RSS growth of one copy over the measured window (MB): a leak shows here. */
  copies_rss_growth_mb: number;
}

/** Run one load mode on the cluster: warm-up, measured window, collect. */
async function runMode(
  mode: SendMode,
  controllers: string[],
  copyPids: number[],
  ackedByKey: Map<string, number>,
  procs: ChildProcess[],
): Promise<{ result: ModeResult; ackedTotal: number }> {
  const shape = RATE_PER_S > 0 ? `open loop at ${RATE_PER_S} updates/s` : `${CONCURRENCY} in flight`;
  console.log(`mode ${mode}: ${WORKERS} load process(es), ${shape}, ${WARMUP_S} s warm-up + ${SECONDS} s measured`);
  const done: WorkerDone[] = [];
  const progress = new Array<number>(WORKERS).fill(0);
  const finished: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  const mine: ChildProcess[] = [];
  for (let i = 0; i < WORKERS; i++) {
    const child = fork(__filename, ['--worker'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    procs.push(child);
    mine.push(child);
    ready.push(new Promise((resolve) => child.on('message', (m: FromWorker) => m.type === 'ready' && resolve())));
    finished.push(
      new Promise((resolve, reject) => {
        child.on('message', (m: FromWorker) => {
          if (m.type === 'progress') progress[i] = m.acked;
          if (m.type === 'done') {
            done.push(m);
            resolve();
          }
        });
        child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`load worker ${i} exited with ${code}`))));
      }),
    );
    child.send({ type: 'init', index: i, mode, controllers, concurrency: CONCURRENCY, ratePerS: RATE_PER_S / WORKERS, keys: KEYS_PER_WORKER } satisfies ToWorker);
  }
  await Promise.all(ready);
  const sum = (): number => progress.reduce((a, b) => a + b, 0);
  const tick = async (seconds: number, label: string): Promise<void> => {
    for (let s = 0; s < seconds; s++) {
      const before = sum();
      await new Promise((r) => setTimeout(r, 1000));
      console.log(`  ${mode} ${label} ${s + 1}/${seconds}: ~${sum() - before} updates/s`);
    }
  };
  await tick(WARMUP_S, 'warm-up');
  const copyCpu0 = cpuSeconds(copyPids);
  const machine0 = machineTicks();
  const rss0 = copyPids.map(rssMb);
  for (const p of mine) p.send({ type: 'measure' } satisfies ToWorker);
  await tick(SECONDS, 'measure');
  for (const p of mine) p.send({ type: 'stop' } satisfies ToWorker);
  const copyCpu = cpuSeconds(copyPids) - copyCpu0;
  const machineBusy = machineBusyPct(machine0, machineTicks());
  const rss1 = copyPids.map(rssMb);
  await Promise.all(finished);

  const windowMs = Math.max(...done.map((d) => d.windowMs));
  const inWindow = done.reduce((a, d) => a + d.ackedInWindow, 0);
  const parts = done.map((d) => {
    const b = Buffer.from(d.latencies, 'base64');
    return new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
  });
  const lat = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    lat.set(p, off);
    off += p.length;
  }
  lat.sort();
  for (const d of done) for (const [k, n] of Object.entries(d.acked)) ackedByKey.set(k, (ackedByKey.get(k) ?? 0) + n);
  const result: ModeResult = {
    updates_per_s: Math.round(inWindow / (windowMs / 1000)),
    p50_ms: r2(pct(lat, 50)),
    p99_ms: r2(pct(lat, 99)),
    max_ms: r2(lat[lat.length - 1] ?? NaN),
    updates_measured: inWindow,
    window_s: r2(windowMs / 1000),
    retried: done.reduce((a, d) => a + d.retried, 0),
    failed: done.reduce((a, d) => a + d.failed, 0),
    behind: done.reduce((a, d) => a + d.behind, 0),
    load_send_lag_p99_ms: RATE_PER_S > 0 ? r2(Math.max(...done.map((d) => d.sendLagP99Ms))) : null,
    load_cpu_pct: Math.round((done.reduce((a, d) => a + d.cpuMs / d.elapsedMs, 0)) * 100),
    copies_cpu_pct: Math.round((copyCpu / (windowMs / 1000)) * 100),
    machine_busy_pct: machineBusy,
    copies_rss_mb: Math.round(Math.max(...rss1)),
    copies_rss_growth_mb: Math.round(Math.max(...rss1.map((r, i) => r - rss0[i]!))),
  };
  console.log(
    `  ${mode}: ${inWindow} updates in ${result.window_s} s = ${result.updates_per_s} updates/s; ack latency p50 ${result.p50_ms} ms, ` +
      `p99 ${result.p99_ms} ms, max ${result.max_ms} ms; retried ${result.retried}, failed ${result.failed}` +
      (RATE_PER_S > 0 ? `, behind ${result.behind}, load send lag p99 ${result.load_send_lag_p99_ms} ms` : '') +
      '; ' +
      `CPU: copies ${result.copies_cpu_pct}% of one core, load ${result.load_cpu_pct}%, machine ${result.machine_busy_pct}% busy; copy RSS up to ${result.copies_rss_mb} MB (+${result.copies_rss_growth_mb} MB in the window)`,
  );
  return { result, ackedTotal: done.reduce((a, d) => a + d.ackedTotal, 0) };
}

async function main(): Promise<void> {
  const loadavg = os.loadavg()[0]!;
  console.log(
    `replication bench: controller + 3 counter copies, ${RS} RS x (1 active + 2 sync standbys), modes ${MODES.join(', ')}, ` +
      `${os.cpus().length} cores, load average ${loadavg.toFixed(2)}, node ${process.version}`,
  );
  for (const m of MODES) if (m !== 'unary' && m !== 'stream' && m !== 'link') throw new Error(`BENCH_MODES: unknown mode ${m}`);
  const cluster = await startCluster();
  const procs: ChildProcess[] = [];
  try {
    const st = await cluster.status();
    const perCopy = new Map<string, number>();
    for (const a of st.assignments) {
      const act = a.members.find((m) => m.role === Role.ROLE_ACTIVE)?.copyId ?? '-';
      const sb = a.members.filter((m) => m.role === Role.ROLE_STANDBY).length;
      if (sb !== 2) throw new Error(`rs ${a.rs} has ${sb} standbys, expected 2`);
      perCopy.set(act, (perCopy.get(act) ?? 0) + 1);
    }
    console.log(`  cluster up: actives per copy ${JSON.stringify(Object.fromEntries(perCopy))}, every RS has 2 standbys`);

    const ackedByKey = new Map<string, number>();
    const results: Partial<Record<SendMode, ModeResult>> = {};
    let ackedTotal = 0;
    let failed = 0;
    for (const mode of MODES) {
      const r = await runMode(mode, cluster.addresses, cluster.copies.map((p) => p.pid), ackedByKey, procs);
      results[mode] = r.result;
      ackedTotal += r.ackedTotal;
      failed += r.result.failed;
    }

    // Verify: values equal acknowledged increments.
    let lost = 0;
    let doubled = 0;
    await Promise.all(
      [...ackedByKey].map(async ([key, n]) => {
        const v = await cluster.routing.query<number>(APP, cluster.routing.rsForKey(APP, key), { key });
        if (v < n) lost += n - v;
        if (v > n) doubled += v - n;
      }),
    );
    // Verify: both standbys of every RS are at the active's sequence number, and the active
    // sequence numbers add up to the acknowledged updates (each non-duplicate delivery = 1 seq).
    const info = await Promise.all(
      cluster.copies.map(async (p) => {
        const c = new AdsmServiceClient(p.address, insecureCredentials(), clientChannelOptions());
        try {
          return await unaryCall(c.getCopyInfo.bind(c), {}, { deadlineMs: 5000 });
        } finally {
          c.close();
        }
      }),
    );
    let standbyMismatch = 0;
    let activeSeqTotal = 0;
    for (let rs = 0; rs < RS; rs++) {
      const entries = info.flatMap((i) => i.rs.filter((e) => e.rs === rs));
      const active = entries.filter((e) => e.role === Role.ROLE_ACTIVE);
      const standbys = entries.filter((e) => e.role === Role.ROLE_STANDBY);
      if (active.length !== 1 || standbys.length !== 2) {
        standbyMismatch++;
        continue;
      }
      activeSeqTotal += active[0]!.appliedSeq;
      for (const s of standbys) if (s.appliedSeq !== active[0]!.appliedSeq) standbyMismatch++;
    }
    // With failed (outcome unknown) deliveries the total may legitimately differ.
    if (failed === 0 && activeSeqTotal !== ackedTotal) standbyMismatch++;
    console.log(
      `check: ${ackedByKey.size} keys, ${ackedTotal} acknowledged increments in all; lost ${lost}, doubled ${doubled}; ` +
        `standby seq mismatches ${standbyMismatch} (active seqs total ${activeSeqTotal})`,
    );
    const head = results[MODES[MODES.length - 1]!]!;
    console.log(
      JSON.stringify({
        bench: 'replication',
        processes: PROCESSES,
        updates_per_s: head.updates_per_s,
        p50_ms: head.p50_ms,
        p99_ms: head.p99_ms,
        max_ms: head.max_ms,
        mode: MODES[MODES.length - 1],
        lost,
        doubled,
        standby_mismatch: standbyMismatch,
        ...results,
        rs: RS,
        copies: 3,
        standbys: 2,
        load_processes: WORKERS,
        in_flight: RATE_PER_S > 0 ? null : WORKERS * CONCURRENCY,
        offered_per_s: RATE_PER_S > 0 ? RATE_PER_S : null,
        cores: os.cpus().length,
        loadavg_1m: r2(loadavg),
        node: process.version,
      }),
    );
    if (lost !== 0 || doubled !== 0 || standbyMismatch !== 0) process.exitCode = 1;
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await cluster.stop();
  }
}

if (process.argv.includes('--worker')) {
  void worker().catch((e: unknown) => {
    process.stderr.write(`load worker: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (e: unknown) => {
      process.stderr.write(`replication bench failed: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
