/**
 * **enhancer** — prices usage. The rate table is shared data: it lives in the master RS
 * ({@link MASTER_RS}, `sharedMasterRs` in the topology) and every RS, on every copy, reads its
 * committed state as `ctx.shared`. Rate changes are ordinary messages to the master RS
 * (`{ op: 'setRate', … }`, e.g. `routing.deliver('enhancer', '', msg, { rs: 0 })`). Each priced
 * record goes to the output (edge `enhancer → output`, key field `recordId`).
 *
 * The enhancer partitions by subscriber with ranges ({@link ENHANCER_RANGE_STARTS}): RS 0 takes
 * keys below `sub-`, which no subscriber has, so the master RS holds the rate table only and
 * followers are not streamed pricing traffic.
 */
import { defineApp } from '@understudy/adsm';
import { DEFAULT_RATES, MAX_RATE_MICROS, SERVICES, type BillingRecord, type Service, type UsageRecord } from './records';

/** The RS holding the rate table. */
export const MASTER_RS = 0;
/** Range split keys for 4 RS: RS 0 the rate table, RS 1–3 subscribers by first digit (0–2, 3–5, 6–9). */
export const ENHANCER_RANGE_STARTS = ['sub-', 'sub-3', 'sub-6'];

/** State of an RS. On the master RS `rates` is the table every copy prices with. */
export interface EnhancerState {
  rates: Record<Service, number>;
  /** Records priced by this RS. */
  priced: number;
}
/** A rate change (master RS only). */
export interface SetRate {
  readonly op: 'setRate';
  readonly service: Service;
  readonly rateMicros: number;
}
export type EnhancerMessage = SetRate | UsageRecord;
export type EnhancerUpdate = { readonly service: Service; readonly rateMicros: number } | { readonly priced: 1 };

export const enhancerApp = defineApp<EnhancerState, EnhancerMessage, EnhancerUpdate, unknown, unknown, EnhancerState>({
  name: 'enhancer',
  handler: {
    init: () => ({ rates: { ...DEFAULT_RATES }, priced: 0 }),
    handle(_state, m, ctx) {
      if ('op' in m) {
        if (m.op !== 'setRate') throw new Error('op must be "setRate"');
        if (ctx.rs !== MASTER_RS) throw new Error(`rates are set on the master RS ${MASTER_RS}, not on RS ${ctx.rs}`);
        if (!SERVICES.includes(m.service)) throw new Error(`service must be one of ${SERVICES.join(', ')}`);
        if (!Number.isSafeInteger(m.rateMicros) || m.rateMicros < 0 || m.rateMicros > MAX_RATE_MICROS) throw new Error(`rateMicros must be an integer from 0 to ${MAX_RATE_MICROS}`);
        return { updates: [{ service: m.service, rateMicros: m.rateMicros }], reply: { rateSeq: ctx.sharedSeq } };
      }
      // Price with the shared table (read-only; numbers are copied into the record).
      const rateMicros = ctx.shared!.rates[m.service];
      const billing: BillingRecord = { ...m, rateMicros, amountMicros: m.units * rateMicros, rateSeq: ctx.sharedSeq };
      return { updates: [{ priced: 1 }], reply: { rateMicros }, send: [{ app: 'output', payload: billing }] };
    },
    apply(state, u) {
      if ('priced' in u) state.priced += 1;
      else state.rates[u.service] = u.rateMicros;
      return state;
    },
    query: (state) => state,
  },
});
