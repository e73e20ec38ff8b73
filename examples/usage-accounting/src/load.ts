/**
 * A load generator for the pipeline: usage records over one ALDM `IngestStream` (batched), each
 * with its record id as the idempotency key. A record is resent — same id — until ALDM answers
 * that the collector acknowledged it (stream broken, back-pressure, failover, timeout), so every
 * record is acknowledged exactly once from the client's point of view, and {@link UsageLoad.acked}
 * is what the pipeline must end up billing. Bounded: at most `window` records in flight.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { AldmServiceClient, type IngestItem, type IngestStreamRequest, type IngestStreamResponse } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials } from '@understudy/runtime';
import { SERVICES, type Service, type UsageRecord } from './records';

/** Options of {@link UsageLoad}. */
export interface UsageLoadOptions {
  /** ALDM gRPC host:port. */
  readonly aldmAddress: string;
  /** Prefix of the record ids (`<runId>-<n>`); a new one per run. */
  readonly runId: string;
  /** Records to generate; then it stops generating (resends go on). @default unbounded */
  readonly total?: number;
  /** At most this many new records per second. @default as fast as acknowledgements allow */
  readonly ratePerSec?: number;
  /** Records in flight at most. @default 1000 */
  readonly window?: number;
  /** Records per stream message at most. @default 250 */
  readonly batchMax?: number;
  /** Distinct subscribers (at most 10000). @default 1000 */
  readonly subscribers?: number;
  /** A record unanswered this long is sent again (same id). @default 20000 */
  readonly attemptTimeoutMs?: number;
  /** Keep the ids of acknowledged records in {@link UsageLoad.ackedIds} (tests). @default false */
  readonly keepIds?: boolean;
}

/** Counters per service of acknowledged records. */
export type AckedTotals = Record<Service, { records: number; units: number }>;

interface Item {
  readonly record: UsageRecord;
  done: boolean;
  sentAt: number;
}

/** gRPC codes after which a resend cannot succeed. */
const FINAL_CODES = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.PERMISSION_DENIED, grpc.status.UNIMPLEMENTED]);

/** Integer hash of `n` (deterministic records). */
function mix(n: number): number {
  let h = Math.imul(n ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The `n`-th record of a run (the same on every call). */
export function usageRecord(runId: string, n: number, subscribers = 1000): UsageRecord {
  return {
    recordId: `${runId}-${n}`,
    // 9973 is prime to 10^4: up to 10,000 distinct ids, spread over every leading digit.
    subscriber: `sub-${String(((mix(n) % subscribers) * 9973) % 10_000).padStart(4, '0')}`,
    service: SERVICES[mix(n * 3 + 1) % SERVICES.length]!,
    units: 1 + (mix(n * 7 + 3) % 500),
  };
}

/** See the module doc. */
export class UsageLoad {
  /** Distinct records generated. */
  generated = 0;
  /** Records acknowledged (each once). */
  acked = 0;
  /** Of those, answered as duplicates (a resend of something the collector already had). */
  duplicates = 0;
  /** Sends beyond the first of a record. */
  resends = 0;
  /** Records refused for good (e.g. INVALID_ARGUMENT), with the last message. */
  rejected = 0;
  lastError = '';
  /** Acknowledged records and units per service. */
  readonly ackedTotals: AckedTotals = { voice: { records: 0, units: 0 }, sms: { records: 0, units: 0 }, data: { records: 0, units: 0 } };
  /** Ids of acknowledged records (with `keepIds`). */
  readonly ackedIds = new Set<string>();

  private readonly client: AldmServiceClient;
  private call: grpc.ClientDuplexStream<IngestStreamRequest, IngestStreamResponse> | undefined;
  private readonly inflight = new Map<number, Item>();
  private readonly retry: Item[] = [];
  private batch: IngestItem[] = [];
  private nextCorrelation = 1;
  private generating = false;
  private closed = false;
  private pumpScheduled = false;
  private tokens = 0;
  private lastRefill = performance.now();
  private readonly timer: NodeJS.Timeout;
  private readonly o: Required<Omit<UsageLoadOptions, 'total' | 'ratePerSec'>> & Pick<UsageLoadOptions, 'total' | 'ratePerSec'>;

  constructor(o: UsageLoadOptions) {
    this.o = { window: 1000, batchMax: 250, subscribers: 1000, attemptTimeoutMs: 20_000, keepIds: false, ...o };
    this.client = new AldmServiceClient(o.aldmAddress, insecureCredentials(), clientChannelOptions());
    this.timer = setInterval(() => this.tick(), 50);
  }

  /** Start (or resume) generating records. */
  start(): void {
    this.generating = true;
    this.pump();
  }

  /** Stop generating new records (records in flight are still resent until acknowledged). */
  pause(): void {
    this.generating = false;
  }

  /** Records generated and not acknowledged yet. */
  get outstanding(): number {
    return this.generated - this.acked - this.rejected;
  }

  /** True once `total` records were generated and every one was answered for good. */
  get finished(): boolean {
    return this.o.total !== undefined && this.generated >= this.o.total && this.outstanding === 0;
  }

  /** Stop for good: the stream is cancelled, nothing is resent. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.call?.cancel();
    this.client.close();
  }

  private tick(): void {
    // Unanswered past the attempt timeout: send again (a late answer is ignored; `done` makes it count once).
    const now = performance.now();
    for (const [id, it] of this.inflight) {
      if (now - it.sentAt < this.o.attemptTimeoutMs) break; // insertion order: the rest is younger
      this.inflight.delete(id);
      if (!it.done) this.retry.push(it);
    }
    this.pump();
  }

  private pump(): void {
    if (this.pumpScheduled || this.closed) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.fill();
    });
  }

  private fill(): void {
    if (this.closed) return;
    const now = performance.now();
    if (this.o.ratePerSec !== undefined) {
      this.tokens = Math.min(this.o.ratePerSec, this.tokens + ((now - this.lastRefill) / 1000) * this.o.ratePerSec);
      this.lastRefill = now;
    }
    while (this.inflight.size + this.batch.length < this.o.window) {
      let it = this.retry.shift();
      if (it) this.resends++;
      else {
        if (!this.generating || (this.o.total !== undefined && this.generated >= this.o.total)) break;
        if (this.o.ratePerSec !== undefined) {
          if (this.tokens < 1) break;
          this.tokens -= 1;
        }
        it = { record: usageRecord(this.o.runId, this.generated++, this.o.subscribers), done: false, sentAt: 0 };
      }
      const correlationId = this.nextCorrelation++;
      it.sentAt = now;
      this.inflight.set(correlationId, it);
      const r = it.record;
      this.batch.push({ correlationId, request: { app: 'collector', key: r.subscriber, idempotencyKey: r.recordId, payload: Buffer.from(JSON.stringify(r)) } });
      if (this.batch.length >= this.o.batchMax) this.flush();
    }
    this.flush();
  }

  private flush(): void {
    if (this.batch.length === 0) return;
    const items = this.batch;
    this.batch = [];
    this.open().write({ items });
  }

  private open(): grpc.ClientDuplexStream<IngestStreamRequest, IngestStreamResponse> {
    if (this.call) return this.call;
    const call = this.client.ingestStream();
    this.call = call;
    call.on('data', (m: IngestStreamResponse) => {
      for (const res of m.results) {
        const it = this.inflight.get(res.correlationId);
        if (!it) continue;
        this.inflight.delete(res.correlationId);
        if (it.done) continue;
        if (res.statusCode === grpc.status.OK) {
          it.done = true;
          this.acked++;
          if (res.response?.duplicate) this.duplicates++;
          const t = this.ackedTotals[it.record.service];
          t.records++;
          t.units += it.record.units;
          if (this.o.keepIds) this.ackedIds.add(it.record.recordId);
        } else if (FINAL_CODES.has(res.statusCode)) {
          it.done = true;
          this.rejected++;
          this.lastError = res.statusMessage;
        } else {
          // Back-pressure, no active copy yet, deadline…: the same record again, a little later.
          this.lastError = res.statusMessage;
          setTimeout(() => {
            this.retry.push(it);
            this.pump();
          }, 50);
        }
      }
      this.pump();
    });
    const broken = (): void => {
      if (this.call !== call) return;
      this.call = undefined;
      // Everything in flight on this stream is sent again, first.
      const again = [...this.inflight.values()].filter((it) => !it.done);
      this.inflight.clear();
      this.retry.unshift(...again);
      if (!this.closed) setTimeout(() => this.pump(), 200);
    };
    call.on('error', (e: Error) => {
      this.lastError = e.message;
      broken();
    });
    call.on('end', broken);
    return call;
  }
}
