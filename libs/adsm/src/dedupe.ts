/**
 * The message-id dedupe table of one RS: message id → the reply of its first commit, oldest
 * first, bounded by a window of entries.
 *
 * Why packed: every snapshot (InstallSnapshot to a new standby, FetchState) carries the whole
 * table, and after a failover the promoted active's first acknowledgement waits for its new
 * standby's snapshot. With the default window of 10,000 entries, packing a Map into the wire
 * format and unpacking it into a Map on the standby cost 1–38 ms and 3–20 ms per RS on a
 * loaded 2-core box, serialised on each event loop — most of the failover time. Here the
 * entries live in the wire format itself (the wire format below): a snapshot is one memory
 * copy, installing one is a length walk plus a copy, and the id index is built only when the
 * table is first read (a standby never reads it; a promoted active does, once).
 *
 * Wire format (`dedupe_packed` of InstallSnapshot and FetchState): u32le entry count, then per
 * entry, oldest first: u16le id length, UTF-8 id, u32le reply length, reply. In memory,
 * `buf[start, end)` holds the entries in the same form back to back. The index maps an id to the LOGICAL offset of its entry (`base` +
 * position in `buf`), so growing or compacting the buffer only moves `base`.
 */
/** Initial buffer size; grows by doubling the live part. */
const INITIAL_BYTES = 4096;
/** Largest id the wire format holds (u16 length). */
const MAX_ID_BYTES = 0xffff;

/** See the module comment. */
export class DedupeTable {
  private buf: Buffer = Buffer.allocUnsafe(INITIAL_BYTES);
  private start = 0;
  private end = 0;
  /** Logical offset of `buf[0]`. */
  private base = 0;
  private count = 0;
  /** id → logical offset of its entry; null until first read after a snapshot was loaded. */
  private index: Map<string, number> | null = new Map();

  /** @param window most entries kept (older ones are dropped first); a positive integer. */
  constructor(private readonly window: number) {
    if (!Number.isSafeInteger(window) || window <= 0) throw new RangeError(`dedupe window must be a positive integer, got ${window}`);
  }

  /** Entries held. */
  get size(): number {
    return this.count;
  }

  /** The reply recorded for `id` (a view: valid until the caller drops it), or undefined. */
  get(id: string): Buffer | undefined {
    const at = this.idx().get(id);
    if (at === undefined) return undefined;
    const o = at - this.base;
    const l = this.buf.readUInt16LE(o);
    const rl = this.buf.readUInt32LE(o + 2 + l);
    return this.buf.subarray(o + 6 + l, o + 6 + l + rl);
  }

  /**
   * Record the reply of a committed message. An id already held keeps its first reply (a
   * duplicate is answered with what the first delivery got). Drops the oldest entries beyond
   * the window. Throws RangeError for an id over 65,535 UTF-8 bytes (Deliver caps ids at 256
   * characters, so none reaches here).
   */
  set(id: string, reply: Uint8Array): void {
    if (this.index?.has(id)) return;
    const l = Buffer.byteLength(id, 'utf8');
    if (l > MAX_ID_BYTES) throw new RangeError(`dedupe id of ${l} bytes: at most ${MAX_ID_BYTES}`);
    this.reserve(6 + l + reply.length);
    const b = this.buf;
    const at = this.end;
    b.writeUInt16LE(l, at);
    b.write(id, at + 2, l, 'utf8');
    b.writeUInt32LE(reply.length, at + 2 + l);
    b.set(reply, at + 6 + l);
    this.end = at + 6 + l + reply.length;
    this.count++;
    this.index?.set(id, this.base + at);
    while (this.count > this.window) this.dropOldest();
  }

  /** Forget everything. */
  clear(): void {
    this.buf = Buffer.allocUnsafe(INITIAL_BYTES);
    this.start = this.end = this.base = this.count = 0;
    this.index = new Map();
  }

  /** The table in the wire format (`dedupe_packed`): a copy, safe to send. */
  pack(): Buffer {
    const out = Buffer.allocUnsafe(4 + this.end - this.start);
    out.writeUInt32LE(this.count, 0);
    this.buf.copy(out, 4, this.start, this.end);
    return out;
  }

  /**
   * Replace the table with a snapshot's: `entries` (the repeated form older senders use) first,
   * then the packed blob. The blob is checked whole before anything changes: RangeError on a
   * malformed one, and the table is left as it was. Beyond the window the oldest are dropped.
   */
  load(entries: readonly { readonly messageId: string; readonly reply: Uint8Array }[], packed: Uint8Array): void {
    const blob = Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
    const blobCount = blob.length === 0 ? 0 : checkPacked(blob);
    this.clear();
    for (const e of entries) this.set(e.messageId, e.reply);
    if (blobCount === 0) return;
    // Adopt the blob's entries with one copy; the index is built on the first read.
    const bodyBytes = blob.length - 4;
    this.reserve(bodyBytes);
    blob.copy(this.buf, this.end, 4);
    this.end += bodyBytes;
    this.count += blobCount;
    this.index = null;
    while (this.count > this.window) this.dropOldest();
  }

  /** Entries oldest first, as pairs (allocates: for checkpoints and tests, not hot paths). */
  entries(): [string, Buffer][] {
    const out: [string, Buffer][] = [];
    const b = this.buf;
    for (let o = this.start; o < this.end; ) {
      const l = b.readUInt16LE(o);
      const rl = b.readUInt32LE(o + 2 + l);
      out.push([b.toString('utf8', o + 2, o + 2 + l), Buffer.from(b.subarray(o + 6 + l, o + 6 + l + rl))]);
      o += 6 + l + rl;
    }
    return out;
  }

  /**
   * Build the id index now if it is not built (after a snapshot was loaded), so a later first
   * read does not pay for it. Idempotent.
   */
  warm(): void {
    this.idx();
  }

  /** Whether the index is built (for tests). */
  get indexed(): boolean {
    return this.index !== null;
  }

  private idx(): Map<string, number> {
    if (this.index) return this.index;
    const index = new Map<string, number>();
    const b = this.buf;
    for (let o = this.start; o < this.end; ) {
      const l = b.readUInt16LE(o);
      const id = b.toString('utf8', o + 2, o + 2 + l);
      // First reply wins, as in `set`.
      if (!index.has(id)) index.set(id, this.base + o);
      o += 6 + l + b.readUInt32LE(o + 2 + l);
    }
    this.index = index;
    return index;
  }

  private dropOldest(): void {
    const b = this.buf;
    const o = this.start;
    const l = b.readUInt16LE(o);
    if (this.index) {
      const id = b.toString('utf8', o + 2, o + 2 + l);
      // Only when this entry is the indexed one (a later entry with the same id, loaded from a
      // snapshot, keeps its own).
      if (this.index.get(id) === this.base + o) this.index.delete(id);
    }
    this.start = o + 6 + l + b.readUInt32LE(o + 2 + l);
    this.count--;
  }

  /** Make room for `bytes` more at `end`: compact (live part to the front) or grow. */
  private reserve(bytes: number): void {
    if (this.end + bytes <= this.buf.length) return;
    const live = this.end - this.start;
    // Reuse the buffer when at least half of it would be free after compacting; else double.
    const size = live + bytes <= this.buf.length / 2 ? this.buf.length : Math.max(INITIAL_BYTES, 2 * (live + bytes));
    // Always a new buffer: views handed out by `get` must keep their bytes.
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, this.start, this.end);
    this.base += this.start;
    this.buf = next;
    this.start = 0;
    this.end = live;
  }
}

/**
 * Walk a packed blob's lengths without allocating: its entry count, or RangeError naming what
 * is wrong (short header, truncated entry, trailing bytes).
 */
function checkPacked(b: Buffer): number {
  if (b.length < 4) throw new RangeError('dedupe blob shorter than its header');
  const count = b.readUInt32LE(0);
  let o = 4;
  for (let i = 0; i < count; i++) {
    if (o + 2 > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    const l = b.readUInt16LE(o);
    if (o + 2 + l + 4 > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    const rl = b.readUInt32LE(o + 2 + l);
    o += 6 + l;
    if (o + rl > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    o += rl;
  }
  if (o !== b.length) throw new RangeError(`dedupe blob has ${b.length - o} bytes after its ${count} entries`);
  return count;
}
