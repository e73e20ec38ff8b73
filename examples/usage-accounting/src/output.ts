/**
 * **output** — the end of the pipeline: bills each record exactly once, by record id.
 *
 * Its RS state (replicated like every RS, so it survives failovers) holds
 * - the totals per service (records, units, amount), queryable;
 * - the record ids billed recently ({@link OutputOptions.seenWindow} per RS): a record that comes
 *   again under another message id (e.g. a client resent it after the collector's message-id
 *   dedupe window) is acknowledged and not billed twice;
 * - the ledger: billed records not yet written out, each with a sequence number of the RS.
 *
 * Handlers do no I/O, so the write to a file or a Redis stream is done by the
 * {@link BillingExporter} (exporter.ts): it reads the committed ledger with a query, appends the
 * entries its sink does not hold yet (the sink keeps the last sequence number per RS atomically
 * with the records, so a replay writes nothing twice), then tells the RS `{ op: 'exported', upTo }`
 * and the RS drops those entries.
 */
import { defineApp } from '@understudy/adsm';
import { emptyTotals, type BillingRecord, type Service, type Totals } from './records';

/** A ledger entry: a billed record and its sequence number in the RS. */
export interface LedgerEntry extends BillingRecord {
  readonly seq: number;
}

/** State of an RS. */
export interface OutputState {
  totals: Record<Service, Totals>;
  /** Record ids billed, oldest first (a Map keeps insertion order). */
  seen: Map<string, true>;
  ledger: LedgerEntry[];
  /** Sequence number of the next ledger entry. */
  nextSeq: number;
}

/** Messages: a billing record from the enhancer, or the exporter's progress. */
export type OutputMessage = BillingRecord | { readonly op: 'exported'; readonly upTo: number };
export type OutputUpdate = { readonly bill: BillingRecord } | { readonly exportedUpTo: number };
export type OutputQuery = { readonly op: 'totals' } | { readonly op: 'ledger'; readonly after: number; readonly limit: number };
/** Answer to `{ op: 'totals' }`. */
export interface OutputTotals {
  readonly totals: Record<Service, Totals>;
  /** Ledger entries not exported yet. */
  readonly unexported: number;
}
/** Answer to `{ op: 'ledger' }`: entries after `after`, oldest first. */
export interface LedgerPage {
  readonly entries: LedgerEntry[];
  /** Sequence number the next billed record will get. */
  readonly nextSeq: number;
}

/** Options of {@link makeOutputApp}. */
export interface OutputOptions {
  /** Record ids remembered per RS for idempotence. @default 200000 */
  readonly seenWindow?: number;
}

/** The output app (see the module doc). */
export function makeOutputApp(o: OutputOptions = {}) {
  const seenWindow = o.seenWindow ?? 200_000;
  return defineApp<OutputState, OutputMessage, OutputUpdate, { billed: boolean }, OutputQuery, OutputTotals | LedgerPage>({
    name: 'output',
    handler: {
      init: () => ({ totals: emptyTotals(), seen: new Map(), ledger: [], nextSeq: 1 }),
      handle(state, m) {
        if ('op' in m) {
          if (m.op !== 'exported' || !Number.isSafeInteger(m.upTo)) throw new Error('expected { op: "exported", upTo: <integer> }');
          return { updates: [{ exportedUpTo: Math.min(m.upTo, state.nextSeq - 1) }], reply: { billed: false } };
        }
        if (state.seen.has(m.recordId)) return { reply: { billed: false } }; // billed before: nothing to do
        return { updates: [{ bill: m }], reply: { billed: true } };
      },
      apply(state, u) {
        if ('exportedUpTo' in u) {
          const keep = state.ledger.findIndex((e) => e.seq > u.exportedUpTo);
          state.ledger = keep < 0 ? [] : state.ledger.slice(keep);
          return state;
        }
        const r = u.bill;
        const t = state.totals[r.service];
        t.records += 1;
        t.units += r.units;
        t.amountMicros += r.amountMicros;
        state.seen.set(r.recordId, true);
        if (state.seen.size > seenWindow) state.seen.delete(state.seen.keys().next().value as string);
        state.ledger.push({ ...r, seq: state.nextSeq++ });
        return state;
      },
      query(state, q) {
        if (q?.op === 'ledger') {
          const limit = Math.max(1, Math.min(q.limit, 10_000));
          return { entries: state.ledger.filter((e) => e.seq > q.after).slice(0, limit), nextSeq: state.nextSeq };
        }
        return { totals: state.totals, unexported: state.ledger.length };
      },
      // A Map is not JSON: snapshots carry the ids as a list, oldest first.
      snapshot: (s) => ({ ...s, seen: [...s.seen.keys()] }),
      restore: (snap) => {
        const s = snap as Omit<OutputState, 'seen'> & { seen: string[] };
        return { ...s, seen: new Map(s.seen.map((id) => [id, true])) };
      },
    },
  });
}

/** The output app with default options. */
export const outputApp = makeOutputApp();
