/**
 * `rates`: the test application of the shared-data end-to-end suite (R-ADSM, shared data from a
 * master RS). RS {@link MASTER_RS} is the master: it holds the rate table, here the list of every
 * rate set, in order. Every other RS reads that table through `ctx.shared`, read-only.
 *
 * - `{ op: 'set', rate }` (master RS only): appends `rate`; replies with the table's length.
 * - `{ op: 'read' }` (any RS): replies with what the handler sees in `ctx.shared` on the copy that
 *   runs it (the rate history and `ctx.sharedSeq`), and counts the read in its own RS state.
 */
import { defineApp } from '@understudy/adsm';

/** The master RS the topology declares (`sharedMasterRs`). */
export const MASTER_RS = 0;

/** State of every RS; on the master RS `history` is the rate table (every rate set, in order). */
export interface RatesState {
  history: number[];
  reads: number;
}

/** Messages of the app. */
export type RatesMessage = { readonly op: 'set'; readonly rate: number } | { readonly op: 'read' };

/** Updates: a rate appended (master RS), or one read counted. */
export type RatesUpdate = { readonly rate: number } | { readonly read: true };

/** Reply to a read: what `ctx.shared` showed the handler. */
export interface ReadReply {
  readonly rs: number;
  /** The shared rate history as the handler saw it (null: no shared data). */
  readonly shared: readonly number[] | null;
  readonly sharedSeq: number;
}

export const ratesApp = defineApp<RatesState, RatesMessage, RatesUpdate, unknown>({
  name: 'rates',
  handler: {
    init: () => ({ history: [], reads: 0 }),
    handle(state, msg, ctx) {
      if (msg?.op === 'set') {
        if (ctx.rs !== MASTER_RS) throw new Error(`rates are set on the master RS ${MASTER_RS}, not on RS ${ctx.rs}`);
        if (typeof msg.rate !== 'number' || !Number.isFinite(msg.rate)) throw new Error('rate must be a number');
        return { updates: [{ rate: msg.rate }], reply: { length: state.history.length + 1 } };
      }
      if (msg?.op === 'read') {
        // Copy what is read: the shared view is the copy's live state, never to be kept or changed.
        const reply: ReadReply = { rs: ctx.rs, shared: ctx.shared ? [...ctx.shared.history] : null, sharedSeq: ctx.sharedSeq };
        return { updates: [{ read: true }], reply };
      }
      throw new Error('op must be "set" or "read"');
    },
    apply(state, u) {
      if ('rate' in u) state.history.push(u.rate);
      else state.reads++;
      return state;
    },
  },
});
