/**
 * The output's writer: moves committed ledger entries of every output RS into a
 * {@link BillingSink}, then lets the RS drop them. Runs next to the pipeline (in `npm start`'s job,
 * or in a test); any number of restarts is safe, because the sink skips what it already holds.
 *
 * One round per RS: query the active copy for ledger entries after the sink's last sequence
 * number (a query only answers with committed state, so nothing a failover could take back is
 * written), append them, then deliver `{ op: 'exported', upTo }` to the RS.
 */
import { RoutingClient } from '@understudy/adsm';
import { ensureError } from '@understudy/runtime';
import type { LedgerPage } from './output';
import type { BillingSink } from './sink';

/** Options of {@link BillingExporter}. */
export interface ExporterOptions {
  readonly routing: RoutingClient;
  readonly sink: BillingSink;
  /** Pause between rounds of an RS that had nothing to export. @default 200 */
  readonly idleMs?: number;
  /** Entries per query. @default 2000 */
  readonly pageSize?: number;
  /** Called with a problem (logged by the caller); the round is tried again. */
  readonly onError?: (rs: number, err: Error) => void;
}

/** See the module doc. */
export class BillingExporter {
  /** Entries written, per output RS, by this exporter. */
  readonly written = new Map<number, number>();
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly idleMs: number;
  private readonly pageSize: number;

  constructor(private readonly o: ExporterOptions) {
    this.idleMs = o.idleMs ?? 200;
    this.pageSize = o.pageSize ?? 2000;
  }

  /** Start one loop per output RS (the routing table must know the output app). */
  start(): void {
    if (this.running) return;
    const rsCount = this.o.routing.rsCount('output');
    if (rsCount === undefined) throw new Error('the routing table does not know the output application yet');
    this.running = true;
    this.loops = Array.from({ length: rsCount }, (_, rs) => this.loop(rs));
  }

  /** Total entries written by this exporter. */
  get total(): number {
    let n = 0;
    for (const v of this.written.values()) n += v;
    return n;
  }

  /** Finish the current rounds and stop. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** One round of `rs`; returns how many entries were written. */
  async exportOnce(rs: number): Promise<number> {
    const { routing, sink } = this.o;
    const after = await sink.lastSeq(rs);
    const page = await routing.query<LedgerPage>('output', rs, { op: 'ledger', after, limit: this.pageSize }, { deadlineMs: 10_000 });
    if (page.nextSeq - 1 < after) {
      // The sink holds more than this RS ever billed: it belongs to another run of the pipeline.
      throw new Error(`the sink holds output RS ${rs} up to ${after} but the RS has billed only ${page.nextSeq - 1}: use a fresh sink for a new pipeline`);
    }
    const first = page.entries[0];
    if (first && first.seq !== after + 1) throw new Error(`output RS ${rs}: ledger starts at ${first.seq}, the sink holds up to ${after}; entries missing`);
    let last = after;
    if (page.entries.length > 0) {
      last = await sink.write(rs, page.entries);
      this.written.set(rs, (this.written.get(rs) ?? 0) + page.entries.filter((e) => e.seq > after).length);
    }
    // Let the RS drop what the sink holds (also after a crash between write and this message).
    if (last > 0 && (page.entries.length > 0 || this.needsTrim.has(rs))) {
      await routing.deliver('output', '', { op: 'exported', upTo: last }, { rs, deadlineMs: 10_000 });
      this.needsTrim.delete(rs);
    }
    return page.entries.length;
  }

  private readonly needsTrim = new Set<number>();

  private async loop(rs: number): Promise<void> {
    // After a (re)start the RS may still hold entries the sink already has: trim once.
    this.needsTrim.add(rs);
    let backoffMs = 100;
    while (this.running) {
      try {
        const n = await this.exportOnce(rs);
        backoffMs = 100;
        if (n < this.pageSize) await sleep(this.idleMs);
      } catch (e) {
        this.o.onError?.(rs, ensureError(e));
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 2000);
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
