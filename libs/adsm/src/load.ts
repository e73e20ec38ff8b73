/**
 * The copy's side of load management (R-LM): counts the messages handled per RS and streams a
 * load report per interval to one Load Manager instance (CPU, event-loop lag, msg/s, queue depth,
 * and per ACTIVE RS its msg/s and state size).
 *
 * Which instance: every copy of one application reports to the same one (rendezvous hash of the
 * application name over the configured instances), because a load manager plans per application
 * and needs all of its copies. When that instance's stream fails the copy reports to the next one
 * in its order; while it reports to another than its first choice it tries to go back every
 * `rehomeIntervalMs`, so the copies of an application end up together again. Without any load
 * manager configured nothing is created: counting costs one map update per batch.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { LoadManagerServiceClient, type ReportLoadRequest, type ReportLoadResponse, type RsLoad } from '@understudy/proto';
import { clientChannelOptions, ensureError, insecureCredentials } from '@understudy/runtime';
import { faultManagerOrder } from './watch';

/** Options of {@link LoadReporter}. */
export interface LoadReporterOptions {
  /** host:port of every load manager instance (at least one). */
  readonly addresses: readonly string[];
  readonly copyId: string;
  readonly incarnation: number;
  readonly app: string;
  /** RS this copy is ACTIVE for now. */
  readonly activeRs: () => Iterable<number>;
  /** Messages waiting in the copy's RS queues now. */
  readonly queueDepth: () => number;
  /** Size of one RS's state (encoded snapshot), bytes; called at most once per `stateSizeIntervalMs` per RS. */
  readonly stateBytes: (rs: number) => number;
  readonly logger: Logger;
  /** Report period until the load manager asks for another. @default 1000 */
  readonly reportIntervalMs?: number;
  /** How often an RS's state size is measured again (encoding a snapshot costs). @default 10000 */
  readonly stateSizeIntervalMs?: number;
  /** How long an instance whose stream failed is skipped. @default 2000 */
  readonly retryBackoffMs?: number;
  /** While reporting to another than the first choice, try to go back this often. @default 10000 */
  readonly rehomeIntervalMs?: number;
}

/** Messages handled per RS since the last report (see {@link LoadReporter.handled}). */
class Counters {
  private perRs = new Map<number, number>();
  private total = 0;
  add(rs: number, n: number): void {
    this.perRs.set(rs, (this.perRs.get(rs) ?? 0) + n);
    this.total += n;
  }
  /** The counts so far, and start over. */
  take(): { perRs: Map<number, number>; total: number } {
    const out = { perRs: this.perRs, total: this.total };
    this.perRs = new Map();
    this.total = 0;
    return out;
  }
}

/** Keeps one ReportLoad stream open to a live load manager (see module doc). */
export class LoadReporter {
  private readonly counters = new Counters();
  private readonly clients = new Map<string, LoadManagerServiceClient>();
  private readonly downUntil = new Map<string, number>();
  private readonly order: string[];
  private readonly loop: IntervalHistogram;
  private readonly stateSizes = new Map<number, { bytes: number; atMs: number }>();
  private stream: grpc.ClientDuplexStream<ReportLoadRequest, ReportLoadResponse> | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  private reattachTimer: NodeJS.Timeout | undefined;
  private rehomeTimer: NodeJS.Timeout | undefined;
  private intervalMs: number;
  private lastAt = Date.now();
  private lastCpu = process.cpuUsage();
  private seq = 0;
  private stopped = false;
  /** The load manager reported to now ('' while none). */
  attachedTo = '';

  constructor(private readonly o: LoadReporterOptions) {
    if (o.addresses.length === 0) throw new RangeError('LoadReporter needs at least one load manager address');
    this.order = faultManagerOrder(o.app, o.addresses);
    this.intervalMs = o.reportIntervalMs ?? 1000;
    this.loop = monitorEventLoopDelay({ resolution: 10 });
  }

  /** `n` messages of `rs` were handled (acknowledged) now. */
  handled(rs: number, n: number): void {
    if (n > 0) this.counters.add(rs, n);
  }

  /** Start reporting (and keep re-attaching until {@link stop}). */
  start(): void {
    this.loop.enable();
    this.lastAt = Date.now();
    this.lastCpu = process.cpuUsage();
    this.counters.take();
    this.attach();
    this.reportTimer = setInterval(() => this.report(), this.intervalMs);
    this.reportTimer.unref();
  }

  /** Stop for good. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.reportTimer);
    clearTimeout(this.reattachTimer);
    clearInterval(this.rehomeTimer);
    this.detach();
    this.loop.disable();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  /** The report for the interval that ends now (resets the interval's counters). */
  sample(): ReportLoadRequest {
    const now = Date.now();
    const elapsedMs = Math.max(1, now - this.lastAt);
    const cpu = process.cpuUsage(this.lastCpu);
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
    const { perRs, total } = this.counters.take();
    const lag = this.loop.max / 1e6;
    this.loop.reset();
    const rs: RsLoad[] = [];
    for (const id of this.o.activeRs()) {
      rs.push({ rs: id, msgsPerS: ((perRs.get(id) ?? 0) * 1000) / elapsedMs, stateBytes: this.stateSize(id, now) });
    }
    rs.sort((a, b) => a.rs - b.rs);
    for (const id of this.stateSizes.keys()) if (!rs.some((r) => r.rs === id)) this.stateSizes.delete(id);
    return {
      copyId: this.o.copyId,
      incarnation: this.o.incarnation,
      app: this.o.app,
      seq: ++this.seq,
      intervalMs: Math.min(0xffff_ffff, Math.round(elapsedMs)),
      cpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
      eventLoopLagMs: Number.isFinite(lag) ? lag : 0,
      msgsPerS: (total * 1000) / elapsedMs,
      queueDepth: Math.min(0xffff_ffff, Math.max(0, Math.floor(this.o.queueDepth()))),
      rs,
    };
  }

  private stateSize(rs: number, now: number): number {
    const known = this.stateSizes.get(rs);
    if (known && now - known.atMs < (this.o.stateSizeIntervalMs ?? 10_000)) return known.bytes;
    let bytes = known?.bytes ?? 0;
    try {
      bytes = Math.max(0, Math.floor(this.o.stateBytes(rs)));
    } catch (e) {
      this.o.logger.debug({ rs, err: ensureError(e).message }, 'could not measure the RS state size');
    }
    this.stateSizes.set(rs, { bytes, atMs: now });
    return bytes;
  }

  private report(): void {
    // Sampled even while detached: the counters describe one interval each.
    const m = this.sample();
    const s = this.stream;
    if (!s || s.writableEnded) return;
    try {
      s.write(m);
    } catch (e) {
      this.o.logger.debug({ err: ensureError(e).message }, 'load report write failed');
    }
  }

  private pick(): string {
    const now = Date.now();
    const live = this.order.find((a) => (this.downUntil.get(a) ?? 0) <= now);
    if (live !== undefined) return live;
    return [...this.order].sort((a, b) => (this.downUntil.get(a) ?? 0) - (this.downUntil.get(b) ?? 0))[0]!;
  }

  private client(address: string): LoadManagerServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new LoadManagerServiceClient(address, insecureCredentials(), clientChannelOptions());
      this.clients.set(address, c);
    }
    return c;
  }

  private attach(): void {
    if (this.stopped) return;
    const address = this.pick();
    const log = this.o.logger.child({ loadManager: address });
    const stream = this.client(address).reportLoad();
    this.stream = stream;
    this.attachedTo = address;
    let ended = false;
    let acked = false;
    const lost = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.stream !== stream) return;
      this.detach();
      if (this.stopped) return;
      this.downUntil.set(address, Date.now() + (this.o.retryBackoffMs ?? 2000));
      // Loud once per lost instance; retries against instances that never answered stay quiet.
      if (acked) log.warn({ why }, 'load manager stream lost; reporting to another instance');
      else log.debug({ why }, 'load manager not reachable; trying the next instance');
      const allDown = this.order.every((a) => (this.downUntil.get(a) ?? 0) > Date.now());
      this.reattachTimer = setTimeout(() => this.attach(), allDown ? 500 : 0);
      this.reattachTimer.unref();
    };
    stream.on('data', (m: ReportLoadResponse) => {
      if (!acked) {
        acked = true;
        log.info({ lm: m.loadManagerId }, 'reporting load');
      }
      const ms = m.reportIntervalMs;
      if (ms > 0 && ms !== this.intervalMs) {
        this.intervalMs = ms;
        clearInterval(this.reportTimer);
        this.reportTimer = setInterval(() => this.report(), this.intervalMs);
        this.reportTimer.unref();
      }
    });
    stream.on('error', (e: Error) => lost(e.message));
    stream.on('end', () => lost('stream ended by the load manager'));
    stream.on('close', () => lost('stream closed'));
    // Not on the first choice: go back to it once it is up again (its backoff has passed).
    clearInterval(this.rehomeTimer);
    if (address !== this.order[0]) {
      this.rehomeTimer = setInterval(() => {
        if (this.stream !== stream || this.pick() === address) return;
        log.info({ home: this.order[0] }, 'going back to the first-choice load manager');
        ended = true;
        this.detach();
        this.attach();
      }, this.o.rehomeIntervalMs ?? 10_000);
      this.rehomeTimer.unref();
    }
  }

  private detach(): void {
    clearInterval(this.rehomeTimer);
    this.rehomeTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    this.attachedTo = '';
    if (s) {
      try {
        s.cancel();
      } catch {
        // already closed
      }
    }
  }
}
