/**
 * Two small applications for the data-flow end-to-end tests: `fwd` forwards every message it
 * takes to `sink` along the edge fwd -> sink (key field `account`), `sink` counts per account
 * what reaches it. `fwd` is what an app that forwards to another looks like: one `send` entry.
 */
import { defineApp } from '@understudy/adsm';

/** A message to `fwd`. `to` / `noKey` make it break the map on purpose (bad-input tests). */
export interface FwdMessage {
  readonly account: string;
  /** Send to this app instead of `sink`. */
  readonly to?: string;
  /** Leave the edge's key field out of the outgoing payload. */
  readonly noKey?: boolean;
}

/** Forwards each message to `sink`; its own state counts what it forwarded. */
export const fwdApp = defineApp<{ forwarded: number }, FwdMessage, number, number, unknown, number>({
  name: 'fwd',
  handler: {
    init: () => ({ forwarded: 0 }),
    handle(s, m) {
      if (typeof m?.account !== 'string' || m.account === '') throw new Error('account must be a non-empty string');
      return {
        updates: [1],
        reply: s.forwarded + 1,
        // The key comes from the payload's `account` field: the edge's keyField.
        send: [{ app: m.to ?? 'sink', payload: m.noKey ? { by: 1 } : { account: m.account, by: 1 } }],
      };
    },
    apply: (s, n) => ((s.forwarded += n), s),
    query: (s) => s.forwarded,
  },
});

/** Counts `by` per account. */
export const sinkApp = defineApp<Record<string, number>, { account: string; by: number }, { account: string; value: number }, number, { account: string }, number>({
  name: 'sink',
  handler: {
    init: () => ({}),
    handle(s, m) {
      if (typeof m?.account !== 'string' || !Number.isSafeInteger(m.by)) throw new Error('account (string) and by (integer) are required');
      const value = (s[m.account] ?? 0) + m.by;
      return { updates: [{ account: m.account, value }], reply: value };
    },
    apply: (s, u) => ((s[u.account] = u.value), s),
    query: (s, q) => s[q.account] ?? 0,
  },
});
