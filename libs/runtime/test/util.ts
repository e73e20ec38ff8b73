/**
 * Test helpers: wait on a condition with a deadline (never a bare sleep), and temp dirs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** @default 5000 */
  readonly timeoutMs?: number;
  /** Pause between checks. @default 10 */
  readonly intervalMs?: number;
  /** Named in the timeout error. */
  readonly what?: string;
}

/**
 * Poll `check` until it returns a value other than `undefined`/`false` (or stops throwing),
 * and return that value. Rejects after `timeoutMs` with the last error, if any.
 */
export async function waitFor<T>(check: () => T | Promise<T>, opts: WaitForOptions = {}): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== false && v !== undefined) return v as Exclude<T, false | undefined>;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}

/** A fresh temp dir; remove it with the returned function. */
export async function tempDir(prefix = 'understudy-test-'): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Time an async call in ms and return its settled outcome. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - started, value };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}
