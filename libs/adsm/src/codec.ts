/** JSON-over-bytes codec used for payloads, updates, replies and snapshots. */
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Encode a JSON-serialisable value (undefined → empty bytes). */
export function encodeJson(v: unknown): Uint8Array {
  return v === undefined ? new Uint8Array(0) : enc.encode(JSON.stringify(v));
}

/** Decode bytes made by `encodeJson` (empty → undefined). Throws SyntaxError on garbage. */
export function decodeJson<T = unknown>(b: Uint8Array): T {
  return (b.length === 0 ? undefined : JSON.parse(dec.decode(b))) as T;
}
