/**
 * Router benchmark, real processes on 127.0.0.1, measured, not a test.
 *
 * Cluster: one System Controller (embedded store), BENCH_COPIES counter copies
 * (examples/counter) and one Router process (services/router). The counter app runs in
 * BENCH_APP_MODE: DISTRIBUTED (default: each RS on one copy, no standby, so the copies do the
 * least work per message and the router's own cost shows most) or DISTRIBUTED_FAULT_TOLERANT
 * (1 standby per RS, synchronous replication).
 *
 * One "message" is one increment `{key, by: 1}` with its own message id, acknowledged by the
 * active copy of the key's RS. Two ways to send it, from this process, one after the other on
 * the same cluster:
 *   direct  the routing library in this process (libs/adsm Forwarder: the RoutingClient's route
 *           table, one DeliverStream per active copy, per-RS order, requests of one event-loop
 *           turn packed into one HTTP/2 write): how a copy routes by itself, no extra hop
 *   routed  RouterService.SendStream to the router: messages go in batches (SendStreamRequest
 *           with up to BENCH_BATCH items), results come back in batches; the router runs the
 *           same Forwarder towards the copies
 *   grpc-js (reference only) a plain grpc-js DeliverStream client, one call.write per message
 *
 * Throughput: closed loop with BENCH_INFLIGHT messages in flight; warm-up BENCH_WARMUP_S, then
 * BENCH_SECONDS measured; msgs/s = acknowledged in the window / window length.
 * Latency: the same two paths paced at BENCH_LATENCY_RATE msgs/s (open loop, far below
 * saturation) for BENCH_LATENCY_S seconds each; latency = send → ack of each message. The added
 * latency of the router hop is routed minus direct at p50 and p99 (`p50_ms`, `p99_ms`).
 * Check at the end: every key's value (queried from its active) equals the increments
 * acknowledged for it (`lost`, `doubled`: both must be 0).
 *
 * Everything shares the machine (copies, controller, router, this load process): on a small box
 * the figures are CPU-bound; `loadavg_1m` at the start shows outside load. Progress lines go to
 * stdout; the last line is one JSON object.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ControllerClient, Forwarder, RoutingClient, encodeJson } from '@understudy/adsm';
import {
  AdsmServiceClient,
  Mode,
  Partitioning,
  RouterServiceClient,
  type DeliverStreamRequest,
  type DeliverStreamResponse,
  type GetRouterStatsResponse,
  type SendItem,
  type SendStreamRequest,
  type SendStreamResponse,
} from '@understudy/proto';
import { cpuSeconds, PROCESSES } from './lib';
import { entryScript } from '../test/harness/processes';
import { clientChannelOptions, freePort, insecureCredentials, startProcess, unaryCall, type Proc } from '@understudy/runtime';

const ROOT = path.resolve(__dirname, '..');
const APP = 'counter';
const RS = Number(process.env.BENCH_RS ?? 8);
const COPIES = Number(process.env.BENCH_COPIES ?? 2);
const APP_MODE = (process.env.BENCH_APP_MODE ?? 'DISTRIBUTED').toUpperCase();
const SECONDS = Number(process.env.BENCH_SECONDS ?? 6);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 2);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 2000);
const BATCH = Number(process.env.BENCH_BATCH ?? 256);
const KEYS = Number(process.env.BENCH_KEYS ?? 512);
const LATENCY_RATE = Number(process.env.BENCH_LATENCY_RATE ?? 2000);
const LATENCY_S = Number(process.env.BENCH_LATENCY_S ?? 4);

const r2 = (x: number): number => Math.round(x * 100) / 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---- the two senders -------------------------------------------------------------------------

/** Sends one message; `done` is called once with its outcome. */
type Sender = (keyIndex: number, done: (ok: boolean) => void) => void;

interface Keyspace {
  readonly keys: string[];
  readonly rs: number[];
  readonly payloads: Buffer[];
}

/** Direct: one DeliverStream per active copy address. */
function directSender(routing: RoutingClient, ks: Keyspace, clients: Map<string, AdsmServiceClient>): { send: Sender; close(): void } {
  const streams = new Map<string, grpc.ClientDuplexStream<DeliverStreamRequest, DeliverStreamResponse>>();
  const waiting = new Map<number, (ok: boolean) => void>();
  let next = 1;
  let seq = 0;
  const prefix = `d-${process.pid}-${Date.now().toString(36)}-`;
  const stream = (address: string): grpc.ClientDuplexStream<DeliverStreamRequest, DeliverStreamResponse> => {
    let s = streams.get(address);
    if (s) return s;
    let c = clients.get(address);
    if (!c) clients.set(address, (c = new AdsmServiceClient(address, insecureCredentials(), clientChannelOptions())));
    s = c.deliverStream();
    s.on('data', (m: DeliverStreamResponse) => {
      const w = waiting.get(m.correlationId);
      if (!w) return;
      waiting.delete(m.correlationId);
      w(m.statusCode === 0);
    });
    s.on('error', (e) => process.stderr.write(`direct stream to ${address}: ${e.message}\n`));
    streams.set(address, s);
    return s;
  };
  return {
    send: (k, done) => {
      const rs = ks.rs[k]!;
      const route = routing.route(APP, rs);
      if (!route?.activeAddress) return done(false);
      const correlationId = next++;
      waiting.set(correlationId, done);
      stream(route.activeAddress).write({
        correlationId,
        request: { app: APP, rs, messageId: prefix + seq++, payload: ks.payloads[k]!, key: ks.keys[k]!, routeEpoch: route.epoch },
        more: [],
      });
    },
    close: () => {
      for (const s of streams.values()) s.end();
    },
  };
}

/** Direct with the library: the router's own Forwarder, in this process (no extra hop). */
function librarySender(routing: RoutingClient, ks: Keyspace): { send: Sender; close(): void } {
  const f = new Forwarder({ routing });
  const prefix = `l-${process.pid}-${Date.now().toString(36)}-`;
  let seq = 0;
  return {
    send: (k, done) => {
      try {
        f.forward({ app: APP, key: ks.keys[k]!, messageId: prefix + seq++, payload: ks.payloads[k]! }, (err) => done(err === null));
      } catch {
        done(false);
      }
    },
    close: () => f.close(),
  };
}

/** Routed: one SendStream to the router; items queued in one turn go out as one batch. */
function routedSender(client: RouterServiceClient, ks: Keyspace): { send: Sender; close(): void } {
  const s: grpc.ClientDuplexStream<SendStreamRequest, SendStreamResponse> = client.sendStream();
  const waiting = new Map<number, (ok: boolean) => void>();
  let next = 1;
  let seq = 0;
  let items: SendItem[] = [];
  let scheduled = false;
  const prefix = `r-${process.pid}-${Date.now().toString(36)}-`;
  const flush = (): void => {
    scheduled = false;
    while (items.length > 0) s.write({ items: items.splice(0, BATCH) });
  };
  s.on('data', (m: SendStreamResponse) => {
    for (const r of m.results) {
      const w = waiting.get(r.correlationId);
      if (!w) continue;
      waiting.delete(r.correlationId);
      if (r.statusCode !== 0 && failuresShown++ < 5) process.stderr.write(`routed: ${grpc.status[r.statusCode]} ${r.statusMessage}\n`);
      w(r.statusCode === 0);
    }
  });
  s.on('error', (e) => process.stderr.write(`router stream: ${e.message}\n`));
  let failuresShown = 0;
  return {
    send: (k, done) => {
      const correlationId = next++;
      waiting.set(correlationId, done);
      items.push({ correlationId, request: { app: APP, key: ks.keys[k]!, rs: 0, hasRs: false, messageId: prefix + seq++, payload: ks.payloads[k]!, deadlineMs: 0 } });
      if (items.length >= BATCH) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    close: () => s.end(),
  };
}

// ---- load shapes -------------------------------------------------------------------------------

/** Closed loop: `INFLIGHT` messages in flight; returns acks in the measured window. */
async function throughput(name: string, send: Sender, acked: Int32Array): Promise<{ msgsPerS: number; failed: number }> {
  let running = true;
  let measuring = false;
  let inWindow = 0;
  let total = 0;
  let failed = 0;
  let next = 0;
  let outstanding = 0;
  let drained: (() => void) | undefined;
  const one = (): void => {
    const k = next++ % acked.length;
    outstanding++;
    send(k, (ok) => {
      outstanding--;
      if (ok) {
        acked[k]!++;
        total++;
        if (measuring) inWindow++;
      } else failed++;
      if (running) one();
      else if (outstanding === 0) drained?.();
    });
  };
  for (let i = 0; i < INFLIGHT; i++) one();
  for (let s = 0; s < WARMUP_S; s++) {
    const before = total;
    await sleep(1000);
    console.log(`  ${name} warm-up ${s + 1}/${WARMUP_S}: ~${total - before} msgs/s`);
  }
  measuring = true;
  const t0 = performance.now();
  for (let s = 0; s < SECONDS; s++) {
    const before = total;
    await sleep(1000);
    console.log(`  ${name} measure ${s + 1}/${SECONDS}: ~${total - before} msgs/s`);
  }
  measuring = false;
  const windowS = (performance.now() - t0) / 1000;
  running = false;
  await new Promise<void>((resolve) => {
    drained = resolve;
    if (outstanding === 0) resolve();
  });
  return { msgsPerS: Math.round(inWindow / windowS), failed };
}

/** Open loop at `LATENCY_RATE` msgs/s for `LATENCY_S` s; returns sorted latencies (ms). */
async function latency(send: Sender, acked: Int32Array): Promise<{ lat: Float64Array; failed: number }> {
  const lat: number[] = [];
  let failed = 0;
  let next = 0;
  let outstanding = 0;
  const t0 = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * LATENCY_RATE);
      if (performance.now() - t0 >= LATENCY_S * 1000) {
        clearInterval(tick);
        const wait = setInterval(() => {
          if (outstanding === 0) {
            clearInterval(wait);
            resolve();
          }
        }, 5);
        return;
      }
      for (; sent < due; sent++) {
        const k = next++ % acked.length;
        const start = performance.now();
        outstanding++;
        send(k, (ok) => {
          outstanding--;
          if (ok) {
            acked[k]!++;
            lat.push(performance.now() - start);
          } else failed++;
        });
      }
    }, 1);
  });
  return { lat: Float64Array.from(lat).sort(), failed };
}

// ---- cluster -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const loadavg = os.loadavg()[0]!;
  const mode = APP_MODE === 'DISTRIBUTED' ? Mode.MODE_DISTRIBUTED : APP_MODE === 'DISTRIBUTED_FAULT_TOLERANT' || APP_MODE === 'DFT' ? Mode.MODE_DISTRIBUTED_FAULT_TOLERANT : undefined;
  if (mode === undefined) throw new Error(`BENCH_APP_MODE must be DISTRIBUTED or DISTRIBUTED_FAULT_TOLERANT, got ${APP_MODE}`);
  const standbys = mode === Mode.MODE_DISTRIBUTED ? 0 : 1;
  console.log(
    `router bench: controller + ${COPIES} counter copies (${Mode[mode]!.replace('MODE_', '')}, ${standbys} standby per RS, ${RS} RS) + 1 router; ` +
      `${INFLIGHT} in flight, batches of ${BATCH}; ${os.cpus().length} cores, load average ${loadavg.toFixed(2)}, node ${process.version}`,
  );
  const logDir = process.env.BENCH_LOG_DIR;
  if (logDir) fs.mkdirSync(logDir, { recursive: true });
  const logTo = (name: string): ((l: string) => void) | undefined => {
    if (!logDir) return undefined;
    const out = fs.createWriteStream(path.join(logDir, `${name}.log`));
    return (l) => out.write(`${l}\n`);
  };
  const env: Record<string, string> = { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', REDIS_URL: '' };
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'understudy-bench-router-'));
  const procs: Proc[] = [];
  const stopAll = async (): Promise<void> => {
    for (const p of procs) p.signal('SIGTERM');
    await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(5000)]);
    await Promise.all(procs.map((p) => p.kill()));
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  const clients = new Map<string, AdsmServiceClient>();
  let routing: RoutingClient | undefined;
  let ctl: ControllerClient | undefined;
  let routerClient: RouterServiceClient | undefined;
  try {
    const port = await freePort();
    procs.push(
      await startProcess({
        name: 'controller',
        cwd: ROOT,
        script: entryScript('services/system-controller/src/main.ts'),
        args: ['--id', 'ctl-1', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir],
        env,
        readyMsg: 'controller listening',
        onLine: logTo('controller'),
      }),
    );
    const controllers = [`127.0.0.1:${port}`];
    ctl = new ControllerClient({ addresses: controllers, callTimeoutMs: 10_000 });
    const c = ctl;
    await c.withLeader((cc) =>
      unaryCall(cc.applyTopology.bind(cc), {
        topology: {
          apps: [{ name: APP, mode, rsCount: RS, standbys, minCopies: COPIES, partitioning: Partitioning.PARTITIONING_HASH, detection: undefined, rangeStarts: [] }],
          edges: [],
        },
      }),
    );
    const copies = await Promise.all(
      Array.from({ length: COPIES }, (_, i) =>
        startProcess({
          name: `copy c${i + 1}`,
          cwd: ROOT,
          script: entryScript('examples/counter/src/copy.ts'),
          args: ['--copy-id', `c${i + 1}`, '--controllers', controllers[0]!, '--host', `host-c${i + 1}`],
          env,
          readyMsg: 'copy listening',
          onLine: logTo(`c${i + 1}`),
        }),
      ),
    );
    procs.push(...copies);
    const router = await startProcess({
      name: 'router',
      cwd: ROOT,
      script: entryScript('services/router/src/main.ts'),
      args: ['--id', 'router-1', '--listen', '127.0.0.1:0', '--controllers', controllers.join(',')],
      env,
      readyMsg: 'router listening',
      onLine: logTo('router'),
    });
    procs.push(router);
    routing = new RoutingClient({ controllerAddresses: controllers, deliverDeadlineMs: 20_000 });
    await routing.waitReady(APP, 30_000);
    routerClient = new RouterServiceClient(router.address, insecureCredentials(), clientChannelOptions());

    const keys = Array.from({ length: KEYS }, (_, i) => `bench-k${i}`);
    const ks: Keyspace = { keys, rs: keys.map((k) => routing!.rsForKey(APP, k)), payloads: keys.map((k) => encodeJson({ key: k, by: 1 })) };
    const acked = new Int32Array(KEYS);
    const copyPids = copies.map((p) => p.pid);

    const direct = librarySender(routing, ks);
    const grpcjs = directSender(routing, ks, clients);
    const routed = routedSender(routerClient, ks);
    // Every path once before measuring: channels, streams and JIT warm.
    await latency(direct.send, acked);
    await latency(grpcjs.send, acked);
    await latency(routed.send, acked);

    console.log('direct (the Forwarder library in this process: DeliverStream to the active copies, no extra hop):');
    let cpu0 = cpuSeconds(copyPids);
    let t0 = performance.now();
    const d = await throughput('direct', direct.send, acked);
    const directCopiesCpu = (cpuSeconds(copyPids) - cpu0) / ((performance.now() - t0) / 1000);
    console.log('direct with a plain grpc-js DeliverStream client (one HTTP/2 frame per message; for reference):');
    const g = await throughput('grpc-js', grpcjs.send, acked);
    console.log('routed (SendStream through the router):');
    cpu0 = cpuSeconds(copyPids);
    const rcpu0 = cpuSeconds([router.pid]);
    t0 = performance.now();
    const r = await throughput('routed', routed.send, acked);
    const el = (performance.now() - t0) / 1000;
    const routedCopiesCpu = (cpuSeconds(copyPids) - cpu0) / el;
    const routerCpu = (cpuSeconds([router.pid]) - rcpu0) / el;

    console.log(`latency at ${LATENCY_RATE} msgs/s, ${LATENCY_S} s each:`);
    const dl = await latency(direct.send, acked);
    const rl = await latency(routed.send, acked);
    const lat = {
      direct_p50_ms: r2(pct(dl.lat, 50)),
      direct_p99_ms: r2(pct(dl.lat, 99)),
      routed_p50_ms: r2(pct(rl.lat, 50)),
      routed_p99_ms: r2(pct(rl.lat, 99)),
    };
    console.log(`  direct p50 ${lat.direct_p50_ms} ms p99 ${lat.direct_p99_ms} ms; routed p50 ${lat.routed_p50_ms} ms p99 ${lat.routed_p99_ms} ms`);
    direct.close();
    grpcjs.close();
    routed.close();

    let lost = 0;
    let doubled = 0;
    await Promise.all(
      keys.map(async (key, i) => {
        const v = await routing!.query<number>(APP, ks.rs[i]!, { key });
        if (v < acked[i]!) lost += acked[i]! - v;
        if (v > acked[i]!) doubled += v - acked[i]!;
      }),
    );
    const stats: GetRouterStatsResponse = await unaryCall(routerClient.getRouterStats.bind(routerClient), {});
    const ackedTotal = acked.reduce((a, b) => a + b, 0);
    console.log(
      `check: ${KEYS} keys, ${ackedTotal} acknowledged increments; lost ${lost}, doubled ${doubled}; router forwarded ${stats.forwarded}, ` +
        `held now ${stats.heldTotal}, expired ${stats.expired}, overflow ${stats.rejectedOverflow}`,
    );
    const failed = d.failed + g.failed + r.failed + dl.failed + rl.failed;
    console.log(
      `direct ${d.msgsPerS} msgs/s (copies ${Math.round(directCopiesCpu * 100)}% of a core), plain grpc-js ${g.msgsPerS} msgs/s; routed ${r.msgsPerS} msgs/s ` +
        `(copies ${Math.round(routedCopiesCpu * 100)}%, router ${Math.round(routerCpu * 100)}%); failed ${failed}`,
    );
    console.log(
      JSON.stringify({
        bench: 'router',
        processes: PROCESSES,
        routed_msgs_per_s: r.msgsPerS,
        direct_msgs_per_s: d.msgsPerS,
        ratio: r2(r.msgsPerS / d.msgsPerS),
        p50_ms: r2(lat.routed_p50_ms - lat.direct_p50_ms),
        p99_ms: r2(lat.routed_p99_ms - lat.direct_p99_ms),
        ...lat,
        direct_grpcjs_msgs_per_s: g.msgsPerS,
        latency_rate_msgs_per_s: LATENCY_RATE,
        app_mode: Mode[mode]!.replace('MODE_', ''),
        copies: COPIES,
        standbys,
        rs: RS,
        in_flight: INFLIGHT,
        batch: BATCH,
        router_cpu_pct: Math.round(routerCpu * 100),
        copies_cpu_pct_direct: Math.round(directCopiesCpu * 100),
        copies_cpu_pct_routed: Math.round(routedCopiesCpu * 100),
        failed,
        lost,
        doubled,
        cores: os.cpus().length,
        loadavg_1m: r2(loadavg),
        node: process.version,
      }),
    );
    if (lost !== 0 || doubled !== 0) process.exitCode = 1;
  } finally {
    routerClient?.close();
    routing?.close();
    ctl?.close();
    for (const c of clients.values()) c.close();
    await stopAll();
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e: unknown) => {
    process.stderr.write(`router bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
