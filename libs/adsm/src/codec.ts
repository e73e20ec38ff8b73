/** JSON-over-bytes codec used for payloads, updates, replies and snapshots. */

/** Encode a JSON-serialisable value (undefined → empty bytes). */
export function encodeJson(v: unknown): Buffer {
  return v === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(v), 'utf8');
}

/** Decode bytes made by `encodeJson` (empty → undefined). Throws SyntaxError on garbage. */
export function decodeJson<T = unknown>(b: Uint8Array): T {
  return (b.length === 0 ? undefined : JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8'))) as T;
}

/**
 * Packs a dedupe table (message id → reply, oldest first) into one blob: u32le count, then per
 * entry u16le id length, UTF-8 id, u32le reply length, reply. Snapshots carry up to the whole
 * dedupe window (10,000 entries by default); as protobuf entries that costs tens of ms to encode
 * and decode, packed a few ms (see `InstallSnapshotRequest.dedupe_packed`).
 */
export function packDedupe(table: ReadonlyMap<string, Uint8Array>): Buffer {
  let n = 4;
  for (const [id, reply] of table) n += 6 + Buffer.byteLength(id, 'utf8') + reply.length;
  const b = Buffer.allocUnsafe(n);
  let o = b.writeUInt32LE(table.size, 0);
  for (const [id, reply] of table) {
    const l = b.write(id, o + 2, 'utf8');
    if (l > 0xffff) throw new RangeError(`dedupe id of ${l} bytes: at most 65535`);
    b.writeUInt16LE(l, o);
    o = b.writeUInt32LE(reply.length, o + 2 + l);
    b.set(reply, o);
    o += reply.length;
  }
  return b;
}

/**
 * Adds the entries of a blob made by {@link packDedupe} to `into`, oldest first. The replies
 * are views into the blob (no copy). Throws RangeError on a malformed blob, after adding nothing.
 */
export function unpackDedupe(blob: Uint8Array, into: Map<string, Buffer>): void {
  if (blob.length === 0) return;
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < 4) throw new RangeError('dedupe blob shorter than its header');
  const count = b.readUInt32LE(0);
  const out: [string, Buffer][] = [];
  let o = 4;
  for (let i = 0; i < count; i++) {
    if (o + 2 > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    const l = b.readUInt16LE(o);
    if (o + 2 + l + 4 > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    const id = b.toString('utf8', o + 2, o + 2 + l);
    o += 2 + l;
    const rl = b.readUInt32LE(o);
    o += 4;
    if (o + rl > b.length) throw new RangeError(`dedupe blob truncated at entry ${i} of ${count}`);
    out.push([id, b.subarray(o, o + rl)]);
    o += rl;
  }
  if (o !== b.length) throw new RangeError(`dedupe blob has ${b.length - o} bytes after its ${count} entries`);
  for (const [id, reply] of out) into.set(id, reply);
}
