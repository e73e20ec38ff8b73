import { defineApp } from '@understudy/adsm';

/** Per-key counters of one resource set. */
export type CounterState = Record<string, number>;
/** Increment `key` by `by` (default 1). */
export interface Increment {
  readonly key: string;
  readonly by?: number;
}
/** Absolute new value: applying it twice gives the same state. */
export interface CounterUpdate {
  readonly key: string;
  readonly value: number;
}

/** The counter application: the quickstart example of an ADSM app. */
export const counterApp = defineApp<CounterState, Increment, CounterUpdate, CounterUpdate, { key: string }, number>({
  name: 'counter',
  handler: {
    init: () => ({}),
    handle(state, msg) {
      if (typeof msg?.key !== 'string' || msg.key.length === 0) throw new Error('key must be a non-empty string');
      const by = msg.by ?? 1;
      if (!Number.isSafeInteger(by)) throw new Error('by must be an integer');
      const value = (state[msg.key] ?? 0) + by;
      return { updates: [{ key: msg.key, value }], reply: { key: msg.key, value } };
    },
    apply(state, u) {
      state[u.key] = u.value;
      return state;
    },
    query: (state, q) => state[q.key] ?? 0,
  },
});
