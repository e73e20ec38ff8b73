/**
 * gRPC clients keyed by peer address, closed once the address is no longer referenced.
 *
 * Why: a restarted process comes back on a new port, so a long-running controller, copy or
 * router that cached a client per address forever would collect one channel per restart (each
 * with its reconnect timers and keepalive state): in bench/failover, 50 restarts slowed every
 * later failover. Callers say which addresses are live (`sweep`); the others are closed after a
 * grace period, so a call that just started on a client finishes first.
 */
export class ClientCache<T extends { close(): void }> {
  private readonly entries = new Map<string, { client: T; unreferencedSinceMs: number | null }>();

  /**
   * @param make builds the client of one address.
   * @param graceMs how long an address stays open after it was first seen unreferenced. @default 10000
   */
  constructor(
    private readonly make: (address: string) => T,
    private readonly graceMs = 10_000,
  ) {
    if (!Number.isFinite(graceMs) || graceMs < 0) throw new TypeError(`ClientCache: graceMs must be a non-negative number, got ${graceMs}`);
  }

  /** The client of `address` (created on first use; a use makes it referenced again). */
  get(address: string): T {
    let e = this.entries.get(address);
    if (e === undefined) {
      e = { client: this.make(address), unreferencedSinceMs: null };
      this.entries.set(address, e);
    } else e.unreferencedSinceMs = null;
    return e.client;
  }

  /**
   * Closes the clients of addresses outside `live` that have been unreferenced for `graceMs`
   * (measured from the first sweep that did not list them). Returns how many were closed.
   */
  sweep(live: ReadonlySet<string>, nowMs: number): number {
    let closed = 0;
    for (const [address, e] of this.entries) {
      if (live.has(address)) {
        e.unreferencedSinceMs = null;
        continue;
      }
      e.unreferencedSinceMs ??= nowMs;
      if (nowMs - e.unreferencedSinceMs < this.graceMs) continue;
      this.entries.delete(address);
      e.client.close();
      closed++;
    }
    return closed;
  }

  /** Number of cached clients. */
  get size(): number {
    return this.entries.size;
  }

  /** Every cached client. */
  values(): IterableIterator<T> {
    return [...this.entries.values()].map((e) => e.client)[Symbol.iterator]();
  }

  /** Closes and forgets every client. */
  closeAll(): void {
    for (const e of this.entries.values()) e.client.close();
    this.entries.clear();
  }
}
