/**
 * Checkpoints of resource sets (R-CKP-1): where an ACTIVE copy saves the state of an RS, and how
 * a newly activated copy takes it over, fenced by the RS's epoch (R-HM-5).
 *
 * Two targets behind one interface:
 * - {@link storeCheckpoints}: a store the copy opens itself (a Redis shared by every process);
 * - {@link controllerCheckpoints}: through the controller's SaveCheckpoint / FenceCheckpoint RPCs,
 *   kept in the controller's store (the embedded store's files: the "disk-based file").
 *
 * Safety does not depend on timing: an active writes at its epoch and acknowledges only after the
 * write succeeded; a new active first fences the checkpoint at its (higher) epoch and then reads
 * it. The store decides the order atomically, so every write the new active did not read is
 * refused (StaleEpochError) and the old active acknowledges nothing more.
 */
import { OutboxEntry } from '@understudy/proto';
import { InvalidArgumentError, checkpointKey, unaryCall, type Store } from '@understudy/runtime';
import type { ControllerClient } from './controller-client';

/** Where an ADSM copy keeps its RS checkpoints. */
export interface CheckpointStore {
  /** For logs: `redis`, `embedded`, `controller`. */
  readonly kind: string;
  /**
   * Store the checkpoint of `app`/`rs` written at `epoch`. Rejects with StaleEpochError when the
   * stored checkpoint is fenced at a newer epoch (this copy was deposed); other rejections are
   * transient (retry).
   */
  save(app: string, rs: number, epoch: number, checkpoint: Uint8Array): Promise<void>;
  /**
   * Fence the checkpoint of `app`/`rs` at `epoch` (every later save below it is refused) and
   * return it, or null when none was ever saved. StaleEpochError when `epoch` is itself stale.
   */
  fence(app: string, rs: number, epoch: number): Promise<Uint8Array | null>;
}

/** Checkpoints in a store the caller opened (and closes): one epoch-fenced key per RS. */
export function storeCheckpoints(store: Store): CheckpointStore {
  return {
    kind: store.kind,
    save: (app, rs, epoch, checkpoint) => store.putAtEpoch(checkpointKey(app, rs), epoch, checkpoint),
    fence: async (app, rs, epoch) => (await store.fenceAndGet(checkpointKey(app, rs), epoch))?.value ?? null,
  };
}

/**
 * Checkpoints through the controller leader's store. Each call follows leader changes for up to
 * `callTimeoutMs`; STALE_EPOCH comes back as StaleEpochError.
 */
export function controllerCheckpoints(controller: ControllerClient, callTimeoutMs = 2000): CheckpointStore {
  return {
    kind: 'controller',
    save: async (app, rs, epoch, checkpoint) => {
      await controller.withLeader(
        (c) => unaryCall(c.saveCheckpoint.bind(c), { app, rs, epoch, checkpoint: Buffer.from(checkpoint.buffer, checkpoint.byteOffset, checkpoint.byteLength) }, { deadlineMs: callTimeoutMs }),
        callTimeoutMs,
      );
    },
    fence: async (app, rs, epoch) => {
      const res = await controller.withLeader((c) => unaryCall(c.fenceCheckpoint.bind(c), { app, rs, epoch }, { deadlineMs: callTimeoutMs }), callTimeoutMs);
      return res.found ? res.checkpoint : null;
    },
  };
}

/** What a checkpoint holds: enough to continue exactly where the writer acknowledged. */
export interface RsCheckpoint {
  /** Epoch the checkpoint was written at. */
  readonly epoch: number;
  /** Sequence number of the last update the state includes. */
  readonly seq: number;
  /** The application's snapshot (`handler.snapshot`), as JSON bytes. */
  readonly state: Buffer;
  /**
   * The message-id dedupe table (id → first reply), oldest first: a message acknowledged before
   * the failover and redelivered after it is answered, not applied twice.
   */
  readonly dedupe: readonly (readonly [string, Buffer])[];
  /** The RS's outbox (messages to other applications not yet acknowledged), oldest first. @default none */
  readonly outbox?: readonly OutboxEntry[];
}

const MAGIC = Buffer.from('USCK', 'latin1');
/** Version 2 adds the outbox; a checkpoint without outbox entries is still written as version 1. */
const VERSION = 1;
const VERSION_OUTBOX = 2;

/**
 * Binary layout (little endian): `"USCK" | u8 version | f64 epoch | f64 seq | u32 len | state |
 * u32 count | count × (u32 len | message id utf8 | u32 len | reply)`, and in version 2 then
 * `u32 count | count × (u32 len | OutboxEntry protobuf)`.
 */
export function encodeCheckpoint(c: RsCheckpoint): Buffer {
  let size = MAGIC.length + 1 + 8 + 8 + 4 + c.state.length + 4;
  const ids = c.dedupe.map(([id]) => Buffer.from(id, 'utf8'));
  for (let i = 0; i < ids.length; i++) size += 8 + ids[i]!.length + c.dedupe[i]![1].length;
  const outbox = (c.outbox ?? []).map((e) => OutboxEntry.encode(e).finish());
  if (outbox.length > 0) size += 4 + outbox.reduce((n, b) => n + 4 + b.length, 0);
  const out = Buffer.allocUnsafe(size);
  let o = MAGIC.copy(out, 0);
  o = out.writeUInt8(outbox.length > 0 ? VERSION_OUTBOX : VERSION, o);
  o = out.writeDoubleLE(c.epoch, o);
  o = out.writeDoubleLE(c.seq, o);
  o = out.writeUInt32LE(c.state.length, o);
  o += c.state.copy(out, o);
  o = out.writeUInt32LE(ids.length, o);
  for (let i = 0; i < ids.length; i++) {
    const reply = c.dedupe[i]![1];
    o = out.writeUInt32LE(ids[i]!.length, o);
    o += ids[i]!.copy(out, o);
    o = out.writeUInt32LE(reply.length, o);
    o += reply.copy(out, o);
  }
  if (outbox.length > 0) {
    o = out.writeUInt32LE(outbox.length, o);
    for (const b of outbox) {
      o = out.writeUInt32LE(b.length, o);
      out.set(b, o);
      o += b.length;
    }
  }
  return out;
}

/** Inverse of {@link encodeCheckpoint}; InvalidArgumentError for bytes that are not a checkpoint. */
export function decodeCheckpoint(bytes: Uint8Array): RsCheckpoint {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = 0;
  const need = (n: number): void => {
    if (o + n > b.length) throw new InvalidArgumentError(`checkpoint truncated at byte ${o} of ${b.length}`);
  };
  need(MAGIC.length + 1);
  if (!b.subarray(0, MAGIC.length).equals(MAGIC)) throw new InvalidArgumentError('not an ADSM checkpoint (bad magic)');
  o = MAGIC.length;
  const version = b.readUInt8(o++);
  if (version !== VERSION && version !== VERSION_OUTBOX) throw new InvalidArgumentError(`checkpoint format version ${version} is not supported (expected ${VERSION} or ${VERSION_OUTBOX})`);
  need(20);
  const epoch = b.readDoubleLE(o);
  const seq = b.readDoubleLE(o + 8);
  const stateLen = b.readUInt32LE(o + 16);
  o += 20;
  need(stateLen);
  const state = Buffer.from(b.subarray(o, o + stateLen));
  o += stateLen;
  need(4);
  const count = b.readUInt32LE(o);
  o += 4;
  const dedupe: [string, Buffer][] = [];
  for (let i = 0; i < count; i++) {
    need(4);
    const idLen = b.readUInt32LE(o);
    o += 4;
    need(idLen + 4);
    const id = b.toString('utf8', o, o + idLen);
    o += idLen;
    const replyLen = b.readUInt32LE(o);
    o += 4;
    need(replyLen);
    dedupe.push([id, Buffer.from(b.subarray(o, o + replyLen))]);
    o += replyLen;
  }
  const outbox: OutboxEntry[] = [];
  if (version === VERSION_OUTBOX) {
    need(4);
    const n = b.readUInt32LE(o);
    o += 4;
    for (let i = 0; i < n; i++) {
      need(4);
      const len = b.readUInt32LE(o);
      o += 4;
      need(len);
      try {
        outbox.push(OutboxEntry.decode(b.subarray(o, o + len)));
      } catch {
        throw new InvalidArgumentError(`checkpoint outbox entry ${i} is not a valid OutboxEntry`);
      }
      o += len;
    }
  }
  if (o !== b.length) throw new InvalidArgumentError(`checkpoint has ${b.length - o} trailing bytes`);
  if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(seq) || seq < 0) throw new InvalidArgumentError(`checkpoint has a bad epoch ${epoch} or seq ${seq}`);
  return version === VERSION_OUTBOX ? { epoch, seq, state, dedupe, outbox } : { epoch, seq, state, dedupe };
}
