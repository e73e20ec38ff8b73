/**
 * A first-come-first-served limit on the bytes of large transfers in flight to one destination.
 *
 * Why: after a failover each survivor sends several snapshots at once (one per RS it was promoted
 * for, one per RS that lost its standby), each carrying a whole dedupe table (~700 KB with the
 * default window), mostly to the same peer. Sent together they share the connection and both
 * event loops, so every one finishes as late as the last, and the promoted RS's first
 * acknowledgement (which waits for its new standby's snapshot) waits for all of them. One at a
 * time, the first finishes after its own transfer: earlier first acknowledgements, and a lower
 * mean, for the same last one. Small transfers still go together: a transfer is let through when
 * nothing is in flight or when it fits in the budget next to what is.
 */
export class ByteGate {
  private inFlight = 0;
  private readonly waiting: { bytes: number; go: () => void }[] = [];

  /** @param budgetBytes bytes allowed in flight together (one larger transfer alone is always allowed); a positive number. */
  constructor(private readonly budgetBytes: number) {
    if (!(budgetBytes > 0)) throw new RangeError(`byte gate budget must be positive, got ${budgetBytes}`);
  }

  /** Bytes of the transfers let through and not released yet. */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  /** Transfers waiting to be let through. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Wait for a turn for a transfer of `bytes`; resolves to its release (call exactly once, when
   * the transfer ended either way; later calls do nothing). Strictly in arrival order: a small
   * transfer does not overtake a large one waiting.
   */
  acquire(bytes: number): Promise<() => void> {
    const size = Math.max(0, bytes);
    if (this.waiting.length === 0 && this.fits(size)) return Promise.resolve(this.take(size));
    return new Promise((resolve) => this.waiting.push({ bytes: size, go: () => resolve(this.take(size)) }));
  }

  private fits(bytes: number): boolean {
    return this.inFlight === 0 || this.inFlight + bytes <= this.budgetBytes;
  }

  private take(bytes: number): () => void {
    this.inFlight += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight -= bytes;
      while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) this.waiting.shift()!.go();
    };
  }
}
