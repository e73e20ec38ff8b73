/**
 * **collector** — the entry of the pipeline. Takes usage records from ALDM (the record id is the
 * client's idempotency key, so a resent record is applied once), refuses malformed ones (the
 * client gets INVALID_ARGUMENT / HTTP 400), counts what it accepted per service, and forwards
 * each record to the aggregator along the edge `collector → aggregator` (key field `subscriber`).
 */
import { defineApp } from '@understudy/adsm';
import { SERVICES, validateUsage, type Service, type UsageRecord } from './records';

/** Accepted records and units per service (one RS). */
export type CollectorState = Record<Service, { records: number; units: number }>;
/** One accepted record. */
export interface Accepted {
  readonly service: Service;
  readonly units: number;
}

export const collectorApp = defineApp<CollectorState, UsageRecord, Accepted, { accepted: true }, unknown, CollectorState>({
  name: 'collector',
  handler: {
    init: () => ({ voice: { records: 0, units: 0 }, sms: { records: 0, units: 0 }, data: { records: 0, units: 0 } }),
    handle(_state, message) {
      const record = validateUsage(message); // throws: the sender gets INVALID_ARGUMENT
      return {
        updates: [{ service: record.service, units: record.units }],
        reply: { accepted: true },
        // Sent once this update is committed; the key comes from the edge's key field (subscriber).
        send: [{ app: 'aggregator', payload: record }],
      };
    },
    apply(state, u) {
      state[u.service].records += 1;
      state[u.service].units += u.units;
      return state;
    },
    query: (state) => state,
  },
});

/** Sum of the collector totals of several RS. */
export function sumCollector(parts: readonly CollectorState[]): CollectorState {
  const out = collectorApp.handler.init(0);
  for (const p of parts) for (const s of SERVICES) (out[s].records += p[s].records), (out[s].units += p[s].units);
  return out;
}
