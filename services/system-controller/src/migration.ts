/**
 * Live RS handoffs (issue 5, R-TR-4): before a decision moves the ACTIVE role of an RS away from
 * a live copy (a move, the completion of a pending move, a drain), the controller asks that copy
 * to pause the RS (`AdsmService.PauseRs`): it starts no new message of the RS, lets the running
 * batch finish and replicate, and writes a final checkpoint when it checkpoints. Then the
 * decision is persisted and executed (new epoch, SetRoles, routes). What the old active held
 * while paused is refused NOT_ACTIVE once its role changes, and routers/clients resend it to the
 * new active, in order.
 *
 * The pause is an optimisation of the handoff, never a condition of correctness: the epoch
 * fences the old active whatever it does. So a pause that fails or times out is logged and the
 * move goes on; and because a pause is a lease held by the copy, an RS paused by a controller
 * that dies mid-move resumes by itself.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { AdsmServiceClient, PausedRs } from '@understudy/proto';
import type { ClusterState, CopyInfo } from '@understudy/core';
import { ensureError, unaryCall } from '@understudy/runtime';

/** One RS whose ACTIVE role a decision moves away from a live copy. */
export interface Handoff {
  readonly app: string;
  readonly rs: number;
  /** The ACTIVE before the decision. */
  readonly fromCopyId: string;
  /** Its epoch before the decision (the epoch the copy is paused at). */
  readonly epoch: number;
}

/** What a pause request did for one RS. */
export interface PauseResult {
  readonly paused: boolean;
  /** Why not paused ('' when paused). */
  readonly detail: string;
  readonly lastSeq: number;
  readonly checkpointed: boolean;
  /** Messages that waited behind the pause when the copy answered. */
  readonly held: number;
}

/** A completed handoff, as the controller measured it. */
export interface HandoffRecord {
  readonly app: string;
  readonly rs: number;
  readonly fromCopyId: string;
  readonly toCopyId: string;
  /** The RS's epoch after the handoff. */
  readonly epoch: number;
  /** From the pause request until the decision's commands were executed and routes published. */
  readonly pauseMs: number;
  readonly pause: PauseResult;
}

/** Options of {@link LiveHandoffs}. */
export interface LiveHandoffOptions {
  /**
   * Deadline of one PauseRs call; past it the move goes on unpaused. It runs inside the decision
   * loop (a queued fault report cuts it short, see `pause`), so keep it short. @default 300
   */
  readonly pauseTimeoutMs?: number;
  /**
   * Lease of a pause: the copy resumes the RS by itself after this long (a controller that dies
   * mid-move cannot leave an RS stopped). Longer than a move takes (pause, persist, SetRoles).
   * @default 3000
   */
  readonly pauseLeaseMs?: number;
}

/**
 * The RS whose ACTIVE role goes from a live copy to another (or to a new epoch) between `before`
 * and `after`. Failovers and disables are not handoffs: their old active is dead or fenced at
 * once, there is nothing to pause. A copy that was drained or removed gracefully is live.
 */
export function plannedHandoffs(before: ClusterState, after: ClusterState): Handoff[] {
  const out: Handoff[] = [];
  for (const [name, b] of Object.entries(before.apps)) {
    const a = after.apps[name];
    if (a === undefined || a === b || a.rs === b.rs) continue;
    for (let r = 0; r < b.rs.length; r++) {
      const x = b.rs[r]!;
      const y = a.rs[r];
      if (y === undefined || x === y) continue;
      const head = x.members[0];
      if (head === undefined || head.role !== 'ACTIVE') continue;
      const now = y.members[0];
      if (now !== undefined && now.role === 'ACTIVE' && now.copyId === head.copyId && y.epoch === x.epoch) continue;
      if (!live(before.copies[head.copyId])) continue;
      const c = after.copies[head.copyId];
      // Gone from `after` = removed gracefully (still running); else it must still be the same
      // process, alive, and not disabled (a disable fences at once).
      if (c !== undefined) {
        const running = c.failed !== true && (c.status === 'UP' || c.status === 'DRAINED');
        if (!running || c.incarnation !== before.copies[head.copyId]!.incarnation) continue;
      }
      out.push({ app: name, rs: r, fromCopyId: head.copyId, epoch: x.epoch });
    }
  }
  return out;
}

/** True when `after` no longer has the handoff's old active as the RS's ACTIVE at its old epoch. */
export function handedOver(after: ClusterState, h: Handoff): boolean {
  const a = after.apps[h.app]?.rs[h.rs];
  if (a === undefined) return false;
  const head = a.members[0];
  return !(head?.role === 'ACTIVE' && head.copyId === h.fromCopyId && a.epoch === h.epoch);
}

function live(c: CopyInfo | undefined): boolean {
  return c !== undefined && c.status === 'UP' && c.failed !== true;
}

/**
 * Pauses and resumes RS on their old active copies (see the module doc). One PauseRs per copy
 * and app, covering every RS of that copy a decision hands off.
 */
export class LiveHandoffs {
  readonly pauseTimeoutMs: number;
  readonly pauseLeaseMs: number;

  constructor(
    private readonly client: (address: string) => AdsmServiceClient,
    private readonly log: Logger,
    opts: LiveHandoffOptions = {},
  ) {
    this.pauseTimeoutMs = opts.pauseTimeoutMs ?? 300;
    this.pauseLeaseMs = opts.pauseLeaseMs ?? 3000;
    if (!Number.isSafeInteger(this.pauseTimeoutMs) || this.pauseTimeoutMs < 1) throw new TypeError(`pauseTimeoutMs must be a positive integer, got ${this.pauseTimeoutMs}`);
    if (!Number.isSafeInteger(this.pauseLeaseMs) || this.pauseLeaseMs < 1 || this.pauseLeaseMs > 60_000) {
      throw new TypeError(`pauseLeaseMs must be 1..60000, got ${this.pauseLeaseMs}`);
    }
  }

  /**
   * Pause every handoff's RS on its old active; resolves (never rejects) within about
   * `pauseTimeoutMs` with one result per RS, keyed `app/rs`, or as soon as `interrupted` aborts
   * (the RS not answered yet count as not paused). Failures are logged, not thrown.
   */
  async pause(state: ClusterState, handoffs: readonly Handoff[], reason: string, interrupted?: AbortSignal): Promise<Map<string, PauseResult>> {
    const out = new Map<string, PauseResult>();
    const groups = byCopyAndApp(handoffs);
    await Promise.all(
      [...groups.values()].map(async (g) => {
        const first = g[0]!;
        const c = state.copies[first.fromCopyId];
        const failAll = (detail: string): void => {
          for (const h of g) out.set(key(h.app, h.rs), { paused: false, detail, lastSeq: 0, checkpointed: false, held: 0 });
        };
        if (!c) return failAll('copy unknown');
        if (interrupted?.aborted) return failAll(`not asked: ${abortReason(interrupted)}`);
        const started = performance.now();
        try {
          const client = this.client(c.address);
          const res = await unaryCall(
            client.pauseRs.bind(client),
            { copyId: c.copyId, incarnation: c.incarnation, app: first.app, rs: g.map((h) => ({ rs: h.rs, epoch: h.epoch })), leaseMs: this.pauseLeaseMs, reason },
            { deadlineMs: this.pauseTimeoutMs, ...(interrupted ? { signal: interrupted } : {}) },
          );
          for (const p of res.rs) out.set(key(first.app, p.rs), resultOf(p));
          for (const h of g) if (!out.has(key(h.app, h.rs))) out.set(key(h.app, h.rs), { paused: false, detail: 'not in the answer', lastSeq: 0, checkpointed: false, held: 0 });
          const notPaused = res.rs.filter((p) => !p.paused);
          const fields = { copy: c.copyId, app: first.app, rs: g.length === 1 ? first.rs : undefined, epoch: g.length === 1 ? first.epoch : undefined, count: g.length, ms: round(performance.now() - started) };
          if (notPaused.length > 0) this.log.warn({ ...fields, notPaused: notPaused.length, detail: notPaused[0]!.detail }, 'some RS could not be paused before their move; moving them anyway (the epoch fences the old active)');
          else this.log.debug(fields, 'RS paused for their move');
        } catch (e) {
          // A cancelled call may still have paused the RS on the copy: the role change ends it.
          const detail = interrupted?.aborted ? `interrupted: ${abortReason(interrupted)}` : ensureError(e).message;
          this.log.warn({ copy: c.copyId, app: first.app, rs: g.length === 1 ? first.rs : undefined, count: g.length, err: detail, ms: round(performance.now() - started) }, 'pause request failed; moving anyway (the epoch fences the old active)');
          failAll(detail);
        }
      }),
    );
    return out;
  }

  /** End the pauses of handoffs that did not happen after all (best effort, not awaited). */
  resume(state: ClusterState, handoffs: readonly Handoff[]): void {
    const groups = byCopyAndApp(handoffs);
    for (const g of groups.values()) {
      const first = g[0]!;
      const c = state.copies[first.fromCopyId];
      if (!c) continue;
      const client = this.client(c.address);
      unaryCall(client.resumeRs.bind(client), { copyId: c.copyId, incarnation: c.incarnation, app: first.app, rs: g.map((h) => h.rs) }, { deadlineMs: this.pauseTimeoutMs })
        .then((r) => this.log.info({ copy: c.copyId, app: first.app, resumed: r.resumed }, 'move did not happen: paused RS resumed'))
        .catch((e: unknown) => this.log.warn({ copy: c.copyId, app: first.app, err: ensureError(e).message }, 'resume request failed; the pause lease ends it'));
    }
  }
}

/** Map key of an RS. */
export function key(app: string, rs: number): string {
  return `${app}/${rs}`;
}

/** Handoffs grouped per old active and app: one PauseRs / ResumeRs covers a group. */
function byCopyAndApp(handoffs: readonly Handoff[]): Map<string, Handoff[]> {
  const groups = new Map<string, Handoff[]>();
  for (const h of handoffs) {
    const k = `${h.fromCopyId}\u0000${h.app}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(h);
  }
  return groups;
}

function resultOf(p: PausedRs): PauseResult {
  return { paused: p.paused, detail: p.detail, lastSeq: p.lastSeq, checkpointed: p.checkpointed, held: p.held };
}

function abortReason(s: AbortSignal): string {
  return s.reason instanceof Error ? s.reason.message : String(s.reason);
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
