/**
 * "Something changed": a counter that waiters watch, with waits that leave nothing behind.
 *
 * Why not a promise replaced on every change (the usual deferred): every
 * `Promise.race([signal.promise, …])` adds a reaction to that promise which stays until it
 * settles, whichever racer won. A busy RS's active raced its role-change promise once per
 * replication round, and under a steady load the role never changes: a copy grew by ~3 MB/s of
 * promises and closures (19k per 20 s in a heap snapshot) without bound, and a bigger process
 * takes longer to die, which delays crash detection. Here a wait or a subscription removes its
 * listener when it ends, so the listeners are only the waits in progress.
 */
export class ChangeSignal {
  private gen = 0;
  private readonly listeners = new Set<() => void>();

  /** Changes so far: pass it to {@link wait} to also catch a change that happens before the wait starts. */
  get generation(): number {
    return this.gen;
  }

  /** Listeners registered now (waits in progress and subscriptions): for tests. */
  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Record a change and wake every listener. */
  notify(): void {
    this.gen++;
    for (const l of [...this.listeners]) l();
  }

  /** Call `fn` on every change until the returned function is called (idempotent). */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  /**
   * Resolves at the first change after generation `since` (at once when there was one already)
   * or after `timeoutMs`, whichever comes first; never rejects.
   * @param timeoutMs a finite number of ms (≤ 0: the next timer tick)
   * @param since the generation the caller last saw (default: now)
   */
  wait(timeoutMs: number, since: number = this.gen): Promise<void> {
    if (!Number.isFinite(timeoutMs)) throw new RangeError(`ChangeSignal.wait: timeoutMs must be finite, got ${timeoutMs}`);
    if (this.gen !== since) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      this.listeners.add(done);
    });
  }
}
