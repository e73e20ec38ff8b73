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
 * `buf[start, end)` holds the entries in the same form back to back.
 *
 * The id index is an open-addressing hash table (linear probing, backward-shift deletion) of
 * typed arrays: per slot the LOGICAL offset of an entry (`base` + position in `buf`, so growing
 * or compacting the buffer only moves `base`) and the hash of its id bytes; ids are compared
 * against the bytes in `buf`. Why not a `Map<string, number>`: every copy holds the tables of
 * all its RS (10,000 ids each by default), and every message id then lived seconds as a heap
 * string, so each one was promoted to the old generation and swept again: under steady load the
 * Map lookups, the id strings re-made to drop the oldest entry, and the major GCs they caused
 * were about a tenth of a copy's CPU. The typed arrays hold no per-id objects.
 */
/** Initial buffer size; grows by doubling the live part. */
const INITIAL_BYTES = 4096;
/** Initial index slots (a power of two); doubles when half full. */
const INITIAL_SLOTS = 16;
/** UTF-8 bytes of the id a `get` looks up; grows for longer ids. */
let scratch = Buffer.allocUnsafe(1024);
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
  /** Whether the index covers every entry (false after a snapshot was loaded, until first read). */
  private isIndexed = true;
  /** Per index slot: logical offset of the entry + 1 (0: an empty slot). */
  private slotOffset = new Float64Array(INITIAL_SLOTS);
  /** Per index slot: hash of the entry's id bytes. */
  private slotHash = new Uint32Array(INITIAL_SLOTS);
  /** Slots in use. */
  private slotsUsed = 0;

  /** @param window most entries kept (older ones are dropped first); a positive integer. */
  constructor(private readonly window: number) {
    if (!Number.isSafeInteger(window) || window <= 0) throw new RangeError(`dedupe window must be a positive integer, got ${window}`);
  }

  /** Entries held. */
  get size(): number {
    return this.count;
  }

  /** Size of `pack()`'s result, in bytes. */
  get packedBytes(): number {
    return 4 + this.end - this.start;
  }

  /** The reply recorded for `id` (a view: valid until the caller drops it), or undefined. */
  get(id: string): Buffer | undefined {
    this.warm();
    if (id.length * 3 > scratch.length) scratch = Buffer.allocUnsafe(id.length * 3);
    const l = scratch.write(id, 0, 'utf8');
    if (l > MAX_ID_BYTES) return undefined;
    const slot = this.find(scratch, 0, l, hashBytes(scratch, 0, l));
    if (slot < 0) return undefined;
    const o = this.slotOffset[slot]! - 1 - this.base;
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
    const l = Buffer.byteLength(id, 'utf8');
    if (l > MAX_ID_BYTES) throw new RangeError(`dedupe id of ${l} bytes: at most ${MAX_ID_BYTES}`);
    this.reserve(6 + l + reply.length);
    const b = this.buf;
    const at = this.end;
    // The id goes where the entry will be; it is only committed (end moved) when new.
    b.write(id, at + 2, l, 'utf8');
    let slot = -1;
    let h = 0;
    if (this.isIndexed) {
      h = hashBytes(b, at + 2, l);
      slot = this.find(b, at + 2, l, h);
      if (slot >= 0) return;
    }
    b.writeUInt16LE(l, at);
    b.writeUInt32LE(reply.length, at + 2 + l);
    b.set(reply, at + 6 + l);
    this.end = at + 6 + l + reply.length;
    this.count++;
    if (this.isIndexed) this.insertAt(-slot - 1, this.base + at, h);
    while (this.count > this.window) this.dropOldest();
  }

  /** Forget everything. */
  clear(): void {
    this.buf = Buffer.allocUnsafe(INITIAL_BYTES);
    this.start = this.end = this.base = this.count = 0;
    this.resetIndex(INITIAL_SLOTS);
    this.isIndexed = true;
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
    this.isIndexed = false;
    this.resetIndex(INITIAL_SLOTS);
    while (this.count > this.window) this.dropOldest();
  }

  /**
   * The table in two `pack()`-format parts: `newest`, the newest entries that fit in
   * `newestBytes` of entry data, and `older`, the rest (undefined when none). `older` then
   * `newest` hold exactly what `pack()` holds (SNAPSHOT_SPLIT in adsm.proto).
   */
  packSplit(newestBytes: number): { newest: Buffer; older: Buffer | undefined } {
    const b = this.buf;
    let cut = this.start;
    let olderCount = 0;
    while (cut < this.end && this.end - cut > newestBytes) {
      const l = b.readUInt16LE(cut);
      cut += 6 + l + b.readUInt32LE(cut + 2 + l);
      olderCount++;
    }
    if (olderCount === 0) return { newest: this.pack(), older: undefined };
    const older = Buffer.allocUnsafe(4 + cut - this.start);
    older.writeUInt32LE(olderCount, 0);
    b.copy(older, 4, this.start, cut);
    const newest = Buffer.allocUnsafe(4 + this.end - cut);
    newest.writeUInt32LE(this.count - olderCount, 0);
    b.copy(newest, 4, cut, this.end);
    return { newest, older };
  }

  /**
   * Put a packed blob's entries in front of the table, as older than every entry held (the older
   * part of a split snapshot). The blob is checked whole first: RangeError on a malformed one,
   * and the table is left as it was. Beyond the window the oldest are dropped; the index is
   * rebuilt on the next read.
   */
  prependPacked(packed: Uint8Array): void {
    const blob = Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
    const n = blob.length === 0 ? 0 : checkPacked(blob);
    if (n === 0) return;
    const body = blob.length - 4;
    const live = this.end - this.start;
    const next = Buffer.allocUnsafe(Math.max(INITIAL_BYTES, 2 * (body + live)));
    blob.copy(next, 0, 4);
    this.buf.copy(next, body, this.start, this.end);
    // Logical offsets only ever grow: nothing in the (reset) index may alias an older one.
    this.base += this.end + body;
    this.buf = next;
    this.start = 0;
    this.end = body + live;
    this.count += n;
    this.isIndexed = false;
    this.resetIndex(INITIAL_SLOTS);
    while (this.count > this.window) this.dropOldest();
  }

  /**
   * Put the entries of `other` that this table does not hold in front of it, in `other`'s
   * order, as older than every entry held. For a table that holds only the newest ids of a
   * history (a split snapshot's first part) and a complete table of an earlier point of the SAME
   * history (same epoch): what it lacks is what is older than its first entry. `joined`: the
   * newest id of `other` is held here, so no ids between the two can be missing (false: `other`
   * ends before this table's first id, and the ids in between are known to neither). Beyond the
   * window the oldest are dropped. Allocates: a recovery path, not a hot one.
   */
  prependMissingFrom(other: DedupeTable): { added: number; joined: boolean } {
    const all = other.entries();
    const missing = new DedupeTable(this.window);
    for (const [id, reply] of all) if (this.get(id) === undefined) missing.set(id, reply);
    const joined = all.length === 0 || this.get(all[all.length - 1]![0]) !== undefined;
    this.prependPacked(missing.pack());
    return { added: missing.size, joined };
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
    if (this.isIndexed) return;
    // Slots for every entry up front: no regrowth while building.
    this.resetIndex(slotsFor(this.count));
    const b = this.buf;
    for (let o = this.start; o < this.end; ) {
      const l = b.readUInt16LE(o);
      const h = hashBytes(b, o + 2, l);
      // First reply wins, as in `set`: a later entry with the same id stays unindexed.
      const slot = this.find(b, o + 2, l, h);
      if (slot < 0) this.insertAt(-slot - 1, this.base + o, h);
      o += 6 + l + b.readUInt32LE(o + 2 + l);
    }
    this.isIndexed = true;
  }

  /** Whether the index is built (for tests). */
  get indexed(): boolean {
    return this.isIndexed;
  }

  /**
   * The slot holding the id `src[from, from + l)` (hash `h`), or `-(empty slot + 1)`: where it
   * would be inserted.
   */
  private find(src: Uint8Array, from: number, l: number, h: number): number {
    const offsets = this.slotOffset;
    const hashes = this.slotHash;
    const mask = offsets.length - 1;
    const b = this.buf;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const off = offsets[i]!;
      if (off === 0) return -i - 1;
      if (hashes[i] !== h) continue;
      const o = off - 1 - this.base;
      if ((b[o]! | (b[o + 1]! << 8)) === l && bytesEqual(b, o + 2, src, from, l)) return i;
    }
  }

  /** Fill the empty slot `i` (from `find`), growing the table first when it is half full. */
  private insertAt(i: number, logicalOffset: number, h: number): void {
    if (2 * (this.slotsUsed + 1) > this.slotOffset.length) {
      this.grow();
      i = h & (this.slotOffset.length - 1);
      while (this.slotOffset[i] !== 0) i = (i + 1) & (this.slotOffset.length - 1);
    }
    this.slotOffset[i] = logicalOffset + 1;
    this.slotHash[i] = h;
    this.slotsUsed++;
  }

  private grow(): void {
    const offsets = this.slotOffset;
    const hashes = this.slotHash;
    this.slotOffset = new Float64Array(offsets.length * 2);
    this.slotHash = new Uint32Array(offsets.length * 2);
    const mask = this.slotOffset.length - 1;
    for (let j = 0; j < offsets.length; j++) {
      if (offsets[j] === 0) continue;
      let i = hashes[j]! & mask;
      while (this.slotOffset[i] !== 0) i = (i + 1) & mask;
      this.slotOffset[i] = offsets[j]!;
      this.slotHash[i] = hashes[j]!;
    }
  }

  private resetIndex(slots: number): void {
    this.slotOffset = new Float64Array(slots);
    this.slotHash = new Uint32Array(slots);
    this.slotsUsed = 0;
  }

  /** Empty slot `i`, moving later entries of its probe run back (no tombstones). */
  private removeSlot(i: number): void {
    const offsets = this.slotOffset;
    const hashes = this.slotHash;
    const mask = offsets.length - 1;
    this.slotsUsed--;
    for (;;) {
      offsets[i] = 0;
      let j = i;
      for (;;) {
        j = (j + 1) & mask;
        if (offsets[j] === 0) return;
        const home = hashes[j]! & mask;
        // The entry at j may move to i only when its home slot is not in (i, j] (cyclically).
        const stays = i <= j ? i < home && home <= j : i < home || home <= j;
        if (!stays) break;
      }
      offsets[i] = offsets[j]!;
      hashes[i] = hashes[j]!;
      i = j;
    }
  }

  private dropOldest(): void {
    const b = this.buf;
    const o = this.start;
    const l = b.readUInt16LE(o);
    if (this.isIndexed) {
      // Only when this entry is the indexed one (a later entry with the same id, loaded from a
      // snapshot, is not indexed; the indexed one is always the older).
      const want = this.base + o + 1;
      const offsets = this.slotOffset;
      const mask = offsets.length - 1;
      for (let i = hashBytes(b, o + 2, l) & mask; offsets[i] !== 0; i = (i + 1) & mask) {
        if (offsets[i] === want) {
          this.removeSlot(i);
          break;
        }
      }
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

/** Index slots (a power of two) that hold `n` entries at most half full. */
function slotsFor(n: number): number {
  let slots = INITIAL_SLOTS;
  while (slots < 2 * n) slots *= 2;
  return slots;
}

/** FNV-1a over `b[from, from + l)`, with a final avalanche (ids often differ only at the end). */
function hashBytes(b: Uint8Array, from: number, l: number): number {
  let h = 0x811c9dc5;
  for (let i = from, end = from + l; i < end; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function bytesEqual(a: Uint8Array, ao: number, b: Uint8Array, bo: number, l: number): boolean {
  for (let i = 0; i < l; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}
