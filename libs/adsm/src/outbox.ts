/**
 * The outbox of one resource set (upstream backup, R-CKP-5): the messages its handler sent to
 * other applications that the destination has not acknowledged yet.
 *
 * The outbox is part of the replicated RS state. A handler's sends become entries of the same
 * `UpdateEntry` as its updates (`outbox_added`), so they reach the standbys in the same round and
 * the sender's own acknowledgement waits for both. The active sends an entry only once that round
 * is committed (never something a failover could take back), removes it when the destination's
 * active copy acknowledged it, and records the removal (`outbox_done`, a tombstone) in a later
 * update. A standby applies both; after a failover the new active sends every entry it holds
 * again, oldest first. Entries acknowledged but not yet tombstoned on the standbys are sent twice;
 * the destination drops the second by its message id (its dedupe table is replicated too).
 *
 * Message ids are `{app}:{rs}:{epoch}:{n}`: `n` counts the entries the active created at `epoch`,
 * and every activation of an RS has a new epoch, so an id is never reused, even when a state
 * restored from an older checkpoint recreates a message. `:` occurs in no app name, router id,
 * UUID or ALDM id (`{app}/{idempotencyKey}`), so these ids cannot collide with any of them.
 *
 * This module is pure bookkeeping (no I/O, no clock): the copy owns the replication, `dataflow.ts`
 * the sending.
 */
import type { OutboxEntry } from '@understudy/proto';

/** Bounds of one RS's outbox; past either one the RS takes no new input (back-pressure). */
export interface OutboxBounds {
  readonly maxEntries: number;
  readonly maxBytes: number;
}

/** One entry as the active tracks it. */
export interface OutboxItem {
  readonly entry: OutboxEntry;
  /** Sequence number of the update that recorded it (sendable once committed up to there). */
  readonly seq: number;
  /** Bytes it counts against `maxBytes`. */
  readonly bytes: number;
  /** Sent and not answered yet (in the current sending generation). */
  inflight: boolean;
  /** Failed attempts so far (backoff). */
  attempts: number;
  /** Not sent again before this time (performance.now() ms). */
  retryAt: number;
}

/** Bytes an entry counts for: payload, id and key (what the outbox keeps in memory). */
export function outboxEntryBytes(e: OutboxEntry): number {
  return e.payload.length + e.messageId.length + e.key.length + e.toApp.length;
}

/** Message id of the `n`-th outbox entry created by the active of `app`/`rs` at `epoch`. */
export function outboxMessageId(app: string, rs: number, epoch: number, n: number): string {
  return `${app}:${rs}:${epoch}:${n}`;
}

/** See the module doc. */
export class Outbox {
  private readonly items = new Map<string, OutboxItem>();
  private bytesHeld = 0;
  /** Acknowledged on this (active) copy; removal not recorded in an update yet. */
  private done: string[] = [];
  private idEpoch = -1;
  private idNext = 1;
  /** Epoch the sending state (`inflight`, `attempts`) belongs to; -1: none. */
  private sendEpochV = -1;
  /** Bumped whenever the sending state is discarded: answers of older sends are ignored. */
  private genV = 0;
  private inflightN = 0;
  /** A pump is scheduled (dataflow.ts) / a retry timer is set / a housekeeping round is due (copy.ts). */
  pumpScheduled = false;
  retryTimer: NodeJS.Timeout | undefined;
  roundTimer: NodeJS.Timeout | undefined;
  /** The copy answered the probes queued when the outbox filled up (copy.ts). */
  blockedScanned = false;

  /** Entries held. */
  get size(): number {
    return this.items.size;
  }

  /** Bytes held (see {@link outboxEntryBytes}). */
  get bytes(): number {
    return this.bytesHeld;
  }

  /** Entries sent and not answered. */
  get inflight(): number {
    return this.inflightN;
  }

  /** Sending generation (see {@link beginSending}). */
  get gen(): number {
    return this.genV;
  }

  /** True when either bound is reached: the RS must not take new input. */
  full(b: OutboxBounds): boolean {
    return this.items.size >= b.maxEntries || this.bytesHeld >= b.maxBytes;
  }

  /** The next entry id for the active of `app`/`rs` at `epoch` (counts from 1 per epoch). */
  nextId(app: string, rs: number, epoch: number): string {
    if (epoch !== this.idEpoch) {
      this.idEpoch = epoch;
      this.idNext = 1;
    }
    return outboxMessageId(app, rs, epoch, this.idNext++);
  }

  /** Apply what one replicated update records: entries added, then tombstones. Active and standbys alike. */
  applyEntry(seq: number, added: readonly OutboxEntry[], done: readonly string[]): void {
    for (const e of added) this.add(e, seq);
    for (const id of done) this.remove(id);
  }

  /** The destination acknowledged `id` (active): remove it now, record the tombstone later. False when not held. */
  acked(id: string): boolean {
    if (!this.remove(id)) return false;
    this.done.push(id);
    return true;
  }

  /** True when tombstones wait to be recorded. */
  hasDone(): boolean {
    return this.done.length > 0;
  }

  /** Take the tombstones to record in the next update. */
  takeDone(): string[] {
    const d = this.done;
    this.done = [];
    return d;
  }

  /** Entries oldest first (snapshots, state transfer, checkpoints). */
  list(): OutboxEntry[] {
    return [...this.items.values()].map((i) => i.entry);
  }

  /** The entries held, oldest first (sending). */
  values(): IterableIterator<OutboxItem> {
    return this.items.values();
  }

  /** Current item of `id`, if held. */
  get(id: string): OutboxItem | undefined {
    return this.items.get(id);
  }

  /**
   * Replace everything by a transferred state (snapshot, fetched state, checkpoint) that holds
   * the RS up to `seq`. Pending tombstones and the sending state are dropped.
   */
  restore(entries: readonly OutboxEntry[], seq: number): void {
    this.clear();
    for (const e of entries) this.add(e, seq);
  }

  /** Drop every entry, tombstone and sending state. */
  clear(): void {
    this.items.clear();
    this.bytesHeld = 0;
    this.done = [];
    this.discardSending(-1);
  }

  /**
   * Start sending as the active at `epoch`: every entry counts as unsent (a new active sends all
   * it holds again; the destination dedupes). No-op when already sending at `epoch`.
   */
  beginSending(epoch: number): void {
    if (this.sendEpochV === epoch) return;
    this.discardSending(epoch);
  }

  /** Epoch the sending state belongs to (-1: not sending). */
  get sendEpoch(): number {
    return this.sendEpochV;
  }

  /** Mark `item` sent. */
  markSent(item: OutboxItem): void {
    if (item.inflight) return;
    item.inflight = true;
    this.inflightN++;
  }

  /** `item`'s send was answered (either way). False when it belongs to an older generation or was not in flight. */
  settle(item: OutboxItem, gen: number): boolean {
    if (gen !== this.genV || !item.inflight || this.items.get(item.entry.messageId) !== item) return false;
    item.inflight = false;
    this.inflightN--;
    return true;
  }

  /** Earliest retry time of an entry waiting for one, if any. */
  nextRetryAt(): number | undefined {
    let t: number | undefined;
    for (const i of this.items.values()) if (!i.inflight && i.attempts > 0 && (t === undefined || i.retryAt < t)) t = i.retryAt;
    return t;
  }

  private discardSending(epoch: number): void {
    this.sendEpochV = epoch;
    this.genV++;
    this.inflightN = 0;
    for (const i of this.items.values()) {
      i.inflight = false;
      i.attempts = 0;
      i.retryAt = 0;
    }
  }

  private add(e: OutboxEntry, seq: number): void {
    if (this.items.has(e.messageId)) return;
    const bytes = outboxEntryBytes(e);
    this.items.set(e.messageId, { entry: e, seq, bytes, inflight: false, attempts: 0, retryAt: 0 });
    this.bytesHeld += bytes;
  }

  private remove(id: string): boolean {
    const i = this.items.get(id);
    if (!i) return false;
    this.items.delete(id);
    this.bytesHeld -= i.bytes;
    if (i.inflight) {
      i.inflight = false;
      this.inflightN--;
    }
    return true;
  }
}
