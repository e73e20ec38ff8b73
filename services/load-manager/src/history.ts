/**
 * Bounded load history of the Load Manager: the recent reports of every copy (one series per copy,
 * its latest incarnation) and of every RS (one series per app/RS, whichever copy was ACTIVE).
 * Samples older than `retainMs`, and beyond `maxSamples` per series, are dropped; at most
 * `maxCopies` copies are tracked.
 */
import type { CopyLoadSample, CopyLoadSeries, RsLoadSample, RsLoadSeries } from '@understudy/core';

/** One validated report (see `validateReport` in load-manager.ts). */
export interface LoadReport {
  readonly copyId: string;
  readonly incarnation: number;
  readonly app: string;
  readonly cpuPercent: number;
  readonly eventLoopLagMs: number;
  readonly msgsPerS: number;
  readonly queueDepth: number;
  readonly rs: readonly { readonly rs: number; readonly msgsPerS: number; readonly stateBytes: number }[];
}

/** Options of {@link LoadHistory}. */
export interface LoadHistoryOptions {
  /** Samples older than this are dropped. */
  readonly retainMs: number;
  /** Samples kept per series at most. @default 600 */
  readonly maxSamples?: number;
  /** Copies tracked at most. @default 100000 */
  readonly maxCopies?: number;
}

interface CopyEntry {
  readonly copyId: string;
  readonly incarnation: number;
  readonly app: string;
  readonly samples: CopyLoadSample[];
}

/** Why a report was not recorded. */
export type RecordRefusal = { readonly code: 'STALE_INCARNATION' | 'FULL'; readonly message: string };

/** See module doc. */
export class LoadHistory {
  private readonly copies = new Map<string, CopyEntry>();
  private readonly rs = new Map<string, { app: string; rs: number; samples: RsLoadSample[] }>();
  private readonly maxSamples: number;
  private readonly maxCopies: number;

  constructor(private readonly o: LoadHistoryOptions) {
    this.maxSamples = o.maxSamples ?? 600;
    this.maxCopies = o.maxCopies ?? 100_000;
  }

  /** Record one report at `atMs`; a newer incarnation replaces the copy's series. */
  record(r: LoadReport, atMs: number): RecordRefusal | undefined {
    let e = this.copies.get(r.copyId);
    if (e && r.incarnation < e.incarnation) {
      return { code: 'STALE_INCARNATION', message: `copy ${r.copyId} incarnation ${r.incarnation} is older than the reporting incarnation ${e.incarnation}` };
    }
    if (!e || r.incarnation > e.incarnation || r.app !== e.app) {
      if (!e && this.copies.size >= this.maxCopies) return { code: 'FULL', message: `load manager tracks ${this.maxCopies} copies already` };
      e = { copyId: r.copyId, incarnation: r.incarnation, app: r.app, samples: [] };
      this.copies.set(r.copyId, e);
    }
    push(e.samples, { atMs, cpuPercent: r.cpuPercent, eventLoopLagMs: r.eventLoopLagMs, msgsPerS: r.msgsPerS, queueDepth: r.queueDepth }, this.maxSamples);
    for (const x of r.rs) {
      const k = `${r.app}\u0000${x.rs}`;
      let s = this.rs.get(k);
      if (!s) {
        s = { app: r.app, rs: x.rs, samples: [] };
        this.rs.set(k, s);
      }
      push(s.samples, { atMs, msgsPerS: x.msgsPerS, stateBytes: x.stateBytes, copyId: r.copyId }, this.maxSamples);
    }
    return undefined;
  }

  /** Drop what is older than `retainMs` (and series left empty). */
  prune(nowMs: number): void {
    const cutoff = nowMs - this.o.retainMs;
    for (const [k, e] of this.copies) {
      dropBefore(e.samples, cutoff);
      if (e.samples.length === 0) this.copies.delete(k);
    }
    for (const [k, s] of this.rs) {
      dropBefore(s.samples, cutoff);
      if (s.samples.length === 0) this.rs.delete(k);
    }
  }

  /** Series of every copy (latest incarnation), for the planner. */
  copySeries(): CopyLoadSeries[] {
    return [...this.copies.values()].map((e) => ({ copyId: e.copyId, incarnation: e.incarnation, samples: e.samples }));
  }

  /** Series of every RS, for the planner. */
  rsSeries(): RsLoadSeries[] {
    return [...this.rs.values()].map((s) => ({ app: s.app, rs: s.rs, samples: s.samples }));
  }

  /** The application a tracked copy reports for. */
  appOf(copyId: string): string | undefined {
    return this.copies.get(copyId)?.app;
  }

  /** Copies tracked now. */
  get size(): number {
    return this.copies.size;
  }
}

function push<T>(a: T[], x: T, max: number): void {
  a.push(x);
  if (a.length > max) a.splice(0, a.length - max);
}

function dropBefore(a: { atMs: number }[], cutoff: number): void {
  let i = 0;
  while (i < a.length && a[i]!.atMs < cutoff) i++;
  if (i > 0) a.splice(0, i);
}
