/**
 * On-disk record format of the embedded store (append-only file and snapshot).
 *
 * A file is a sequence of frames: `u32le payloadLength | u32le crc32(payload) | payload`.
 * A payload is `u8 op` followed by fields; strings and byte strings are `u32le length | bytes`,
 * numbers are `f64le` (exact for every safe integer).
 *
 * Every record states an absolute value (never "add one"), so replaying a record twice is
 * harmless. That is what makes compaction crash-safe: if the process dies after the new
 * snapshot is in place but before the AOF is truncated, the old AOF is replayed on top of
 * a snapshot that already contains it, and the result is the same state.
 */
import { crc32 } from 'node:zlib';

/** Record kinds. Values are part of the file format: never renumber. */
export const Op = {
  /** key → plain bytes. */
  SET: 1,
  /** key → (epoch, bytes). */
  SET_EPOCH: 2,
  /** delete key. */
  DEL: 3,
  /** lease name → last token handed out. */
  TOKEN: 4,
  /** key → epoch, keeping the key's epoch-fenced value (or none): see Store.fenceAndGet. */
  FENCE: 5,
} as const;

/** A decoded record. */
export type AofRecord =
  | { readonly op: typeof Op.SET; readonly key: string; readonly value: Buffer }
  | { readonly op: typeof Op.SET_EPOCH; readonly key: string; readonly epoch: number; readonly value: Buffer }
  | { readonly op: typeof Op.DEL; readonly key: string }
  | { readonly op: typeof Op.TOKEN; readonly name: string; readonly token: number }
  | { readonly op: typeof Op.FENCE; readonly key: string; readonly epoch: number };

const HEADER_BYTES = 8;
/** Refuse absurd lengths early (a garbage length field at a torn tail). */
const MAX_PAYLOAD_BYTES = 1 << 30;

/** Encode one record as a frame. */
export function encodeRecord(r: AofRecord): Buffer {
  const parts: Buffer[] = [Buffer.from([r.op])];
  const str = (s: string): void => bytes(Buffer.from(s, 'utf8'));
  const bytes = (b: Buffer): void => {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(len, b);
  };
  const num = (n: number): void => {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(n);
    parts.push(b);
  };
  switch (r.op) {
    case Op.SET:
      str(r.key);
      bytes(r.value);
      break;
    case Op.SET_EPOCH:
      str(r.key);
      num(r.epoch);
      bytes(r.value);
      break;
    case Op.DEL:
      str(r.key);
      break;
    case Op.TOKEN:
      str(r.name);
      num(r.token);
      break;
    case Op.FENCE:
      str(r.key);
      num(r.epoch);
      break;
  }
  const payload = Buffer.concat(parts);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.pos++);
  }
  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(): Buffer {
    this.need(4);
    const len = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    this.need(len);
    // Copy: the file buffer is large and would otherwise be kept alive by small values.
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + len));
    this.pos += len;
    return out;
  }
  str(): string {
    return this.bytes().toString('utf8');
  }
  end(): void {
    if (this.pos !== this.buf.length) throw new Error(`${this.buf.length - this.pos} trailing bytes in record`);
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new Error('record shorter than its fields');
  }
}

function decodePayload(payload: Buffer): AofRecord {
  const r = new Reader(payload);
  const op = r.u8();
  let rec: AofRecord;
  switch (op) {
    case Op.SET:
      rec = { op, key: r.str(), value: r.bytes() };
      break;
    case Op.SET_EPOCH:
      rec = { op, key: r.str(), epoch: r.f64(), value: r.bytes() };
      break;
    case Op.DEL:
      rec = { op, key: r.str() };
      break;
    case Op.TOKEN:
      rec = { op, name: r.str(), token: r.f64() };
      break;
    case Op.FENCE:
      rec = { op, key: r.str(), epoch: r.f64() };
      break;
    default:
      throw new Error(`unknown record op ${op}`);
  }
  r.end();
  return rec;
}

/** Result of {@link parseFrames}. */
export interface ParsedFrames {
  readonly records: AofRecord[];
  /** Bytes of valid frames from the start; the file should be cut here. */
  readonly validBytes: number;
  /** Bytes after `validBytes` that were a torn tail (0 when the file was clean). */
  readonly tornBytes: number;
}

/**
 * Decode every frame. A damaged frame at the very end (an append cut by a crash: short
 * header, short payload, bad CRC on the last frame, or zero fill) is a torn tail and is
 * reported, not fatal, when `tolerateTornTail`. Damage followed by more data is corruption
 * and throws: unknown state is treated as failure (R-HM-4) rather than silently skipped.
 */
export function parseFrames(buf: Buffer, file: string, tolerateTornTail: boolean): ParsedFrames {
  const records: AofRecord[] = [];
  let o = 0;
  while (o < buf.length) {
    const problem = frameProblem(buf, o);
    if (problem === null) {
      const len = buf.readUInt32LE(o);
      const payload = buf.subarray(o + HEADER_BYTES, o + HEADER_BYTES + len);
      try {
        records.push(decodePayload(payload));
      } catch (e) {
        // A frame with a good CRC that does not decode was written by a different format.
        throw new Error(`${file}: undecodable record at offset ${o}: ${(e as Error).message}`);
      }
      o += HEADER_BYTES + len;
      continue;
    }
    if (tolerateTornTail && isTail(buf, o)) return { records, validBytes: o, tornBytes: buf.length - o };
    throw new Error(`${file}: corrupt record at offset ${o} of ${buf.length}: ${problem}`);
  }
  return { records, validBytes: o, tornBytes: 0 };
}

function frameProblem(buf: Buffer, o: number): string | null {
  if (buf.length - o < HEADER_BYTES) return 'incomplete header';
  const len = buf.readUInt32LE(o);
  if (len === 0 || len > MAX_PAYLOAD_BYTES) return `bad length ${len}`;
  if (o + HEADER_BYTES + len > buf.length) return 'incomplete payload';
  if (crc32(buf.subarray(o + HEADER_BYTES, o + HEADER_BYTES + len)) !== buf.readUInt32LE(o + 4)) return 'checksum mismatch';
  return null;
}

/** True when the damaged frame at `o` is the last thing in the file (or only zeros follow). */
function isTail(buf: Buffer, o: number): boolean {
  if (buf.length - o < HEADER_BYTES) return true;
  // The frame claims to reach (or pass) the end of the file: the append that wrote it was cut.
  const len = buf.readUInt32LE(o);
  if (len > 0 && o + HEADER_BYTES + len >= buf.length) return true;
  // A crash can leave the file extended with zeros that were never written.
  return buf.subarray(o).every((b) => b === 0);
}
