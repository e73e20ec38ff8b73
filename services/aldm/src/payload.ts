/**
 * An event payload or reply that travels as JSON bytes (gRPC, the router) or as a parsed value
 * (HTTP/JSON, the routing client). Each form is computed at most once, on demand, so a payload
 * that only passes through is never re-encoded.
 */
import { decodeJson, encodeJson } from '@understudy/adsm';
import { InvalidArgumentError } from '@understudy/runtime';

/** Room for a request's envelope (key, ids, framing) besides its payload, in gRPC messages and HTTP bodies. */
export const ENVELOPE_BYTES = 64 * 1024;

const NONE = Symbol('none');

/** JSON bytes and/or their value (empty bytes ⇔ `undefined`, as in the ADSM codec). */
export class JsonPayload {
  private constructor(
    private encoded: Buffer | typeof NONE,
    private decoded: unknown,
  ) {}

  /** From JSON bytes (validated lazily by {@link JsonPayload.value}). */
  static fromBytes(bytes: Uint8Array): JsonPayload {
    return new JsonPayload(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), NONE);
  }

  /** From a JSON value (`undefined`: no payload). */
  static fromValue(value: unknown): JsonPayload {
    return new JsonPayload(NONE, value);
  }

  /** The JSON bytes (empty for `undefined`). */
  bytes(): Buffer {
    if (this.encoded === NONE) this.encoded = encodeJson(this.decoded);
    return this.encoded;
  }

  /**
   * The value (`undefined` for empty bytes).
   * @throws InvalidArgumentError when the bytes are not JSON.
   */
  value(): unknown {
    if (this.decoded === NONE) {
      try {
        this.decoded = decodeJson(this.encoded as Buffer);
      } catch {
        throw new InvalidArgumentError('payload is not valid JSON (UTF-8 JSON bytes, or empty for none)');
      }
    }
    return this.decoded;
  }

  /** Size of the JSON bytes. */
  get byteLength(): number {
    return this.bytes().byteLength;
  }
}
