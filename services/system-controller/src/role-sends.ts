/**
 * The SetRoles sends to one copy, strictly in order: a role set computed earlier must not land
 * after a newer change. A copy that answers slowly (or not at all) backs its queue up; beyond
 * `maxQueued` a send is not queued itself: ONE full role set is queued behind the others
 * instead, computed by `fullSet()` when its turn comes (so it carries that change and every later
 * one), and later sends share it until it starts.
 *
 * Why not drop the send and let the periodic tick resync the copy: a burst of balancing sends
 * fills the queue of a healthy copy too, and a failover's promotion dropped there waited a whole
 * tick (about 160 ms in the failover bench) before the copy learned it was active.
 */
export class RoleSendQueue<C> {
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private full: Promise<void> | undefined;

  /**
   * @param send delivers one role set; must not reject (failures are the caller's to handle, e.g. a resync)
   * @param fullSet the copy's full role set from the state current when called; undefined: send nothing
   * @param maxQueued sends waiting or in flight before later ones fold into one full set; a positive integer
   */
  constructor(
    private readonly send: (c: C) => Promise<void>,
    private readonly fullSet: () => C | undefined,
    private readonly maxQueued: number,
  ) {
    if (!Number.isSafeInteger(maxQueued) || maxQueued < 1) throw new RangeError(`maxQueued must be a positive integer, got ${maxQueued}`);
  }

  /** Sends waiting or in flight (the full set counts once). */
  get depth(): number {
    return this.queued;
  }

  /** Whether a full set is queued in place of dropped sends (not started yet). */
  get folding(): boolean {
    return this.full !== undefined;
  }

  /**
   * Queue `c`; resolves once it (or the full set standing in for it) was sent. `folded` is called
   * when `c` is replaced by the full set (for a log line), once per full set.
   */
  push(c: C, folded?: (queued: number) => void): Promise<void> {
    if (this.full) return this.full;
    if (this.queued >= this.maxQueued) {
      folded?.(this.queued);
      const full = this.enqueue(() => {
        this.full = undefined;
        const set = this.fullSet();
        return set === undefined ? Promise.resolve() : this.send(set);
      });
      this.full = full;
      return full;
    }
    return this.enqueue(() => this.send(c));
  }

  private enqueue(run: () => Promise<void>): Promise<void> {
    this.queued++;
    const p = this.tail.then(run);
    this.tail = p.finally(() => {
      this.queued--;
    });
    return p;
  }
}
