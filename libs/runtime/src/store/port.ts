/**
 * The store port: everything Understudy persists goes through this interface. Two adapters
 * implement it (Redis and embedded); one contract test suite runs against both.
 *
 * Fencing: a write "fenced by a lease" succeeds only while the named lease's current token
 * equals the caller's token, checked atomically with the write (Lua on Redis). A write
 * "fenced by epoch" succeeds only when the caller's epoch is >= the epoch stored with the
 * key (R-HM-5: persistent storage accepts writes only from the current holder).
 */

/** A lease as the store holds it. */
export interface LeaseInfo {
  /** Who holds it (e.g. a controller replica id). */
  readonly holderId: string;
  /** Free-form data the holder published with it (e.g. its gRPC address). */
  readonly holderData: string;
  /** Fencing token: strictly increases every time the lease changes hands. */
  readonly token: number;
  /** Milliseconds until it expires unless renewed. */
  readonly ttlRemainingMs: number;
}

/** A value with the epoch it was written at. */
export interface EpochValue {
  readonly epoch: number;
  readonly value: Uint8Array;
}

/** The store port. All methods reject with StoreError subclasses (see errors). */
export interface Store {
  /** Adapter name for logs: `redis` or `embedded`. */
  readonly kind: 'redis' | 'embedded';

  /**
   * Take the lease if it is free (or expired), or renew it if `holderId` already holds it.
   * Returns the lease after the call when `holderId` holds it, else null (someone else does).
   * The token changes only when the lease changes hands.
   */
  acquireLease(name: string, holderId: string, holderData: string, ttlMs: number): Promise<LeaseInfo | null>;
  /** Extend a held lease. False when `holderId`/`token` no longer hold it. */
  renewLease(name: string, holderId: string, token: number, ttlMs: number): Promise<boolean>;
  /** Give a held lease up (no-op when not held with this token). */
  releaseLease(name: string, holderId: string, token: number): Promise<void>;
  /** The current lease, or null when nobody holds it. */
  readLease(name: string): Promise<LeaseInfo | null>;

  /** Plain read. */
  get(key: string): Promise<Uint8Array | null>;
  /** Write `value` at `key` only while lease `lease` has token `token`; else FencedError. */
  putFenced(key: string, value: Uint8Array, lease: string, token: number): Promise<void>;

  /** Write `value` at `key` only if `epoch` >= the stored epoch; else StaleEpochError. */
  putAtEpoch(key: string, epoch: number, value: Uint8Array): Promise<void>;
  /**
   * Read a value written with putAtEpoch. `epoch` is the key's stored epoch, which
   * {@link Store.fenceAndGet} may have raised above the epoch the value was written at. A key
   * that was fenced but never written reads as null.
   */
  getAtEpoch(key: string): Promise<EpochValue | null>;
  /**
   * Fence `key` at `epoch` and read it, atomically (the safe handover of an epoch-fenced value,
   * e.g. a checkpoint, to a new holder): raise the key's stored epoch to `epoch` if it is lower
   * (recording the epoch even when the key holds no value yet), then return the stored value
   * with the key's epoch, or null when no value was ever written. Afterwards every putAtEpoch
   * below `epoch` fails with StaleEpochError, so an older holder can never write a value the
   * caller has not seen (write-then-acknowledge on the old side, fence-then-read on the new).
   * StaleEpochError when `epoch` is below the stored epoch (the caller itself is superseded).
   * Idempotent: calling it again at the same epoch returns the same value.
   */
  fenceAndGet(key: string, epoch: number): Promise<EpochValue | null>;

  /** Atomic increment; returns the new value (starts at 1). */
  incr(key: string): Promise<number>;
  /** Delete a key (any kind). */
  del(key: string): Promise<void>;

  /** Release connections / flush files. Idempotent. */
  close(): Promise<void>;
}
