/** Condition waits with a deadline: tests never sleep to synchronise. */

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this long. @default 15000 */
  readonly timeoutMs?: number;
  /** Poll period. @default 25 */
  readonly intervalMs?: number;
  /** Said in the error when the deadline passes. */
  readonly what?: string;
}

/**
 * Poll `fn` until it returns a value other than undefined/false (returned), or throw at the
 * deadline with the last error / value seen.
 */
export async function waitFor<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, opts: WaitOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const why = lastErr instanceof Error ? `; last error: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}
