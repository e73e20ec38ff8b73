/**
 * Pause leases of RS on an ACTIVE copy, for live migration (R-TR-4: pause one process, apply
 * another, resume). The controller asks the current active to pause an RS right before it moves
 * the RS's ACTIVE role away (`AdsmService.PauseRs`); while paused the copy starts no new message
 * of the RS (arrivals wait in its queue, in order) but lets the running batch finish and
 * replicate. A pause is a lease, so an RS never stays stopped because a controller died
 * mid-move: it ends by itself after its lease, on `ResumeRs`, or when the RS's role or epoch
 * changes (the copy then refuses what waited with NOT_ACTIVE and senders resend it to the new
 * active).
 *
 * This class only keeps the leases and wakes waiters; the copy decides what a pause means for
 * its queue (see `copy.ts`).
 */
import { InvalidArgumentError } from '@understudy/runtime';

/** Longest pause lease a copy accepts, in ms. */
export const MAX_PAUSE_LEASE_MS = 60_000;

interface Lease {
  readonly epoch: number;
  readonly untilMs: number;
  readonly reason: string;
  readonly timer: NodeJS.Timeout;
}

/**
 * The pause leases of one copy, per RS. `onEnd(rs)` is called whenever a lease ends (expiry,
 * resume, role change) so the copy can start processing the RS's queue again.
 */
export class RsPauses {
  private readonly leases = new Map<number, Lease>();
  private readonly idleWaiters = new Map<number, Set<() => void>>();

  constructor(
    private readonly onEnd: (rs: number, epoch: number, why: 'expired' | 'resumed' | 'role changed') => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Number of RS paused now. */
  get size(): number {
    return this.leases.size;
  }

  /** True while RS `rs` is paused at `epoch` (a lease taken at another epoch does not count). */
  isPaused(rs: number, epoch: number): boolean {
    const l = this.leases.get(rs);
    return l !== undefined && l.epoch === epoch;
  }

  /** When the lease of `rs` ends (Unix ms), or undefined when it is not paused. */
  until(rs: number): number | undefined {
    return this.leases.get(rs)?.untilMs;
  }

  /**
   * Pause `rs` at `epoch` for `leaseMs` (a repeated request extends the lease: the controller may
   * retry). Throws INVALID_ARGUMENT for a lease outside 1..{@link MAX_PAUSE_LEASE_MS}.
   */
  pause(rs: number, epoch: number, leaseMs: number, reason: string): void {
    if (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > MAX_PAUSE_LEASE_MS) {
      throw new InvalidArgumentError(`lease_ms must be 1..${MAX_PAUSE_LEASE_MS}, got ${leaseMs}`);
    }
    const old = this.leases.get(rs);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => this.end(rs, 'expired'), leaseMs);
    timer.unref();
    this.leases.set(rs, { epoch, untilMs: this.now() + leaseMs, reason, timer });
  }

  /** End the pause of `rs` because the controller said so; true when it was paused. */
  resume(rs: number): boolean {
    return this.end(rs, 'resumed');
  }

  /** The RS changed role or epoch: its pause (if any) is over. */
  roleChanged(rs: number): void {
    this.end(rs, 'role changed');
  }

  /** Drop every lease without callbacks (the copy is stopping or fenced). */
  clear(): void {
    for (const l of this.leases.values()) clearTimeout(l.timer);
    this.leases.clear();
    for (const ws of this.idleWaiters.values()) for (const w of ws) w();
    this.idleWaiters.clear();
  }

  /**
   * Resolves once `busy()` is false, re-checked each time the copy reports the RS idle
   * ({@link idle}); rejects with `onTimeout()` after `timeoutMs`.
   */
  waitIdle(rs: number, busy: () => boolean, timeoutMs: number, onTimeout: () => Error): Promise<void> {
    if (!busy()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let ws = this.idleWaiters.get(rs);
      if (!ws) this.idleWaiters.set(rs, (ws = new Set()));
      const waiters = ws;
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(onTimeout());
      }, Math.max(1, timeoutMs));
      const check = (): void => {
        if (busy()) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      waiters.add(check);
    });
  }

  /** The copy stopped working on `rs` for now (its batch loop ended): wake pause requests. */
  idle(rs: number): void {
    const ws = this.idleWaiters.get(rs);
    if (!ws) return;
    for (const w of [...ws]) w();
    if (ws.size === 0) this.idleWaiters.delete(rs);
  }

  private end(rs: number, why: 'expired' | 'resumed' | 'role changed'): boolean {
    const l = this.leases.get(rs);
    if (!l) return false;
    clearTimeout(l.timer);
    this.leases.delete(rs);
    this.onEnd(rs, l.epoch, why);
    return true;
  }
}
