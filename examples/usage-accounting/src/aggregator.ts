/**
 * **aggregator** — per-subscriber totals (DISTRIBUTED_FAULT_TOLERANT: every RS has an active and a
 * standby copy, a failover loses nothing). Partitioned by subscriber, so all records of one
 * subscriber meet in one RS. Forwards each record on to the enhancer (edge
 * `aggregator → enhancer`, key field `subscriber`).
 */
import { defineApp } from '@understudy/adsm';
import type { UsageRecord } from './records';

/** Records and units per subscriber (one RS). */
export type AggregatorState = Record<string, { records: number; units: number }>;
/** Query: one subscriber's totals, or (no subscriber) the sum over the RS. */
export interface AggregatorQuery {
  readonly subscriber?: string;
}

export const aggregatorApp = defineApp<AggregatorState, UsageRecord, UsageRecord, { records: number; units: number }, AggregatorQuery, { subscribers: number; records: number; units: number }>({
  name: 'aggregator',
  handler: {
    init: () => ({}),
    handle(state, record) {
      const before = state[record.subscriber] ?? { records: 0, units: 0 };
      return {
        updates: [record],
        reply: { records: before.records + 1, units: before.units + record.units },
        send: [{ app: 'enhancer', payload: record }],
      };
    },
    apply(state, r) {
      const t = (state[r.subscriber] ??= { records: 0, units: 0 });
      t.records += 1;
      t.units += r.units;
      return state;
    },
    query(state, q) {
      const rows = q?.subscriber !== undefined ? [state[q.subscriber] ?? { records: 0, units: 0 }] : Object.values(state);
      return { subscribers: rows.length, records: rows.reduce((n, t) => n + t.records, 0), units: rows.reduce((n, t) => n + t.units, 0) };
    },
  },
});
