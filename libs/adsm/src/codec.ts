/** JSON-over-bytes codec used for payloads, updates, replies and snapshots. */

/** Encode a JSON-serialisable value (undefined → empty bytes). */
export function encodeJson(v: unknown): Buffer {
  return v === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(v), 'utf8');
}

/** Decode bytes made by `encodeJson` (empty → undefined). Throws SyntaxError on garbage. */
export function decodeJson<T = unknown>(b: Uint8Array): T {
  return (b.length === 0 ? undefined : JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8'))) as T;
}
