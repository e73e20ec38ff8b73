/**
 * The records that flow through the usage-accounting pipeline, and the one validation rule set
 * the collector applies. Amounts are integers in micro-units (1 = 0.000001 of a currency unit)
 * so that every total is exact.
 */

/** Services a record may bill (the enhancer's rate table has a rate for each). */
export const SERVICES = ['voice', 'sms', 'data'] as const;
/** One of {@link SERVICES}. */
export type Service = (typeof SERVICES)[number];

/** Rate of each service when nobody has set one, in micro-units per unit. */
export const DEFAULT_RATES: Readonly<Record<Service, number>> = { voice: 20_000, sms: 50_000, data: 1_000 };

/** Largest `units` of one record (keeps every amount and total an exact integer). */
export const MAX_UNITS = 1_000_000;
/** Largest rate, micro-units per unit. */
export const MAX_RATE_MICROS = 100_000_000;
/** Longest record id (it is also the ALDM idempotency key: at most 128). */
export const MAX_RECORD_ID_LENGTH = 100;

/**
 * Subscriber ids look like `sub-<digits>`. The enhancer partitions by subscriber with ranges that
 * keep its master RS (the rate table) free of usage: every subscriber sorts at or after `sub-`.
 */
export const SUBSCRIBER_PATTERN = /^sub-[0-9]{1,12}$/;

/** What a client sends (through ALDM, with `recordId` as the idempotency key). */
export interface UsageRecord {
  readonly recordId: string;
  readonly subscriber: string;
  readonly service: Service;
  readonly units: number;
}

/** A priced record: what the enhancer sends to the output. */
export interface BillingRecord extends UsageRecord {
  /** Micro-units per unit that priced it. */
  readonly rateMicros: number;
  /** `units × rateMicros`. */
  readonly amountMicros: number;
  /** Sequence number of the rate table that priced it (`ctx.sharedSeq`). */
  readonly rateSeq: number;
}

/** Returns a clean copy of `m` as a usage record, or throws an Error naming the first problem. */
export function validateUsage(m: unknown): UsageRecord {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new Error('a usage record must be a JSON object');
  const r = m as Record<string, unknown>;
  const { recordId, subscriber, service, units } = r;
  if (typeof recordId !== 'string' || recordId === '' || recordId.length > MAX_RECORD_ID_LENGTH) {
    throw new Error(`recordId must be a non-empty string of at most ${MAX_RECORD_ID_LENGTH} characters`);
  }
  if (typeof subscriber !== 'string' || !SUBSCRIBER_PATTERN.test(subscriber)) throw new Error('subscriber must look like sub-<digits> (at most 12 digits)');
  if (typeof service !== 'string' || !(SERVICES as readonly string[]).includes(service)) throw new Error(`service must be one of ${SERVICES.join(', ')}`);
  if (typeof units !== 'number' || !Number.isSafeInteger(units) || units < 1 || units > MAX_UNITS) throw new Error(`units must be an integer from 1 to ${MAX_UNITS}`);
  const extra = Object.keys(r).find((k) => !['recordId', 'subscriber', 'service', 'units'].includes(k));
  if (extra !== undefined) throw new Error(`unknown field ${JSON.stringify(extra.slice(0, 50))}`);
  return { recordId, subscriber, service: service as Service, units };
}

/** Per-service totals: records, units and billed amount. */
export interface Totals {
  records: number;
  units: number;
  amountMicros: number;
}

/** Totals of every service, all zero. */
export function emptyTotals(): Record<Service, Totals> {
  return { voice: { records: 0, units: 0, amountMicros: 0 }, sms: { records: 0, units: 0, amountMicros: 0 }, data: { records: 0, units: 0, amountMicros: 0 } };
}

/** Add `b` into `a` (per service). */
export function addTotals(a: Record<Service, Totals>, b: Readonly<Record<Service, Totals>>): Record<Service, Totals> {
  for (const s of SERVICES) {
    a[s].records += b[s].records;
    a[s].units += b[s].units;
    a[s].amountMicros += b[s].amountMicros;
  }
  return a;
}
