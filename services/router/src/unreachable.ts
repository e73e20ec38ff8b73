/**
 * R-DFM-5: a sender that cannot transfer to its destination reports it. The router passes each
 * unreachable copy the forwarder signals to a fault manager (`ReportUnreachable`), which checks
 * the copy itself and, when it does not answer either, reports it failed so the controller
 * re-routes to a healthy backup. Any live fault manager will do: the reporter sticks to the last
 * one that answered and moves on to the next when that one is unreachable.
 */
import { ControllerClient, type UnreachableCopy } from '@understudy/adsm';
import { FaultKind, FaultManagerServiceClient } from '@understudy/proto';
import {
  DeadlineExceededError,
  UnavailableError,
  UnderstudyError,
  clientChannelOptions,
  ensureError,
  insecureCredentials,
  unaryCall,
  type Logger,
} from '@understudy/runtime';

/** Options of {@link UnreachableReporter}. */
export interface UnreachableReporterOptions {
  /** Who reports (the router id). */
  readonly reporter: string;
  /** host:port of every fault manager; none = reports are only logged. */
  readonly faultManagerAddresses: readonly string[];
  /** Where the copy's incarnation is looked up (routes do not carry it). */
  readonly controller: ControllerClient;
  readonly logger: Logger;
  /** Deadline of one call (controller lookup, report). @default 2000 */
  readonly callTimeoutMs?: number;
  /** Reports waiting or running at most; more are dropped (and counted). @default 64 */
  readonly maxPending?: number;
}

/** Sends unreachable-copy reports to a live fault manager, one at a time per copy. */
export class UnreachableReporter {
  private readonly clients: FaultManagerServiceClient[];
  private readonly addresses: readonly string[];
  private preferred = 0;
  private readonly pending = new Set<string>();
  private readonly callTimeoutMs: number;
  private readonly maxPending: number;
  private closed = false;
  /** Reports a fault manager accepted. */
  reported = 0;
  /** Reports that could not be made (no fault manager answered, incarnation unknown, too many pending). */
  failed = 0;

  constructor(private readonly o: UnreachableReporterOptions) {
    this.addresses = o.faultManagerAddresses;
    this.clients = o.faultManagerAddresses.map((a) => new FaultManagerServiceClient(a, insecureCredentials(), clientChannelOptions()));
    this.callTimeoutMs = o.callTimeoutMs ?? 2000;
    this.maxPending = o.maxPending ?? 64;
  }

  /** Report `u` in the background (never throws; the outcome is logged). */
  report(u: UnreachableCopy): void {
    const log = this.o.logger.child({ app: u.app, rs: u.rs, copy: u.copyId, address: u.address, epoch: u.epoch });
    if (this.clients.length === 0) {
      log.warn({ detail: u.detail }, 'active copy unreachable; no fault manager configured to report it to');
      return;
    }
    const k = `${u.copyId}@${u.address}`;
    if (this.closed || this.pending.has(k)) return;
    if (this.pending.size >= this.maxPending) {
      this.failed++;
      log.warn({ pending: this.pending.size }, 'too many unreachable reports in progress; dropping this one');
      return;
    }
    this.pending.add(k);
    this.send(u, log)
      .catch((e: unknown) => {
        this.failed++;
        log.warn({ err: ensureError(e).message, detail: u.detail }, 'could not report the unreachable copy to a fault manager');
      })
      .finally(() => this.pending.delete(k));
  }

  private async send(u: UnreachableCopy, log: Logger): Promise<void> {
    const status = await this.o.controller.withLeader(
      (c) => unaryCall(c.getStatus.bind(c), { app: u.app, includeAssignments: false }, { deadlineMs: this.callTimeoutMs }),
      this.callTimeoutMs,
    );
    const incarnation = status.copies.find((c) => c.copyId === u.copyId)?.incarnation ?? 0;
    if (!(incarnation > 0)) throw new UnavailableError(`the controller does not know copy ${u.copyId}'s incarnation`);
    let last: Error = new UnavailableError('no fault manager answered');
    for (let i = 0; i < this.clients.length; i++) {
      if (this.closed) return;
      const at = (this.preferred + i) % this.clients.length;
      const fm = this.clients[at]!;
      try {
        const res = await unaryCall(
          fm.reportUnreachable.bind(fm),
          { reporter: this.o.reporter, copyId: u.copyId, incarnation, address: u.address, detail: `${u.app}/${u.rs} epoch ${u.epoch}: ${u.detail}` },
          { deadlineMs: this.callTimeoutMs },
        );
        this.preferred = at;
        this.reported++;
        log.warn({ faultManager: this.addresses[at], incarnation, verdict: FaultKind[res.verdict] ?? res.verdict, why: res.detail }, 'reported unreachable active copy to the fault manager');
        return;
      } catch (e) {
        last = ensureError(e);
        // A fault manager that answered (stale incarnation, bad request) is live: asking
        // another one would get the same answer.
        if (last instanceof UnderstudyError && !(last instanceof UnavailableError) && !(last instanceof DeadlineExceededError)) throw last;
      }
    }
    throw last;
  }

  /** Stop reporting and close the channels. */
  close(): void {
    this.closed = true;
    for (const c of this.clients) c.close();
  }
}
