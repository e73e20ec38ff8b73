/**
 * The embedded adapter of the store port: in-memory maps backed by an append-only file and
 * a snapshot in a local data dir (R-CKP-1: an in-memory object and a disk-based file). The
 * default for a single-host run, so the quickstart needs no Redis.
 *
 * Semantics match the Redis adapter method for method (the same contract tests run on
 * both), including refusing mixed-kind access to a key (plain vs epoch-fenced).
 *
 * Durability: a write mutates memory at once (so later calls see it, in call order) and its
 * promise resolves only after its record is in the AOF — and on the disk when `fsync` is on
 * (the AOF is opened O_DSYNC). Concurrent writes share one write (group commit). Reads wait for writes already
 * issued to be on disk, so a read never returns data a crash could take back. If a disk
 * write fails, memory is ahead of disk: the store fails every later call with
 * StoreUnavailableError and the process should restart (unknown state = failure, R-HM-4).
 *
 * Leases live in memory only (a restart frees them all) and follow the injected clock;
 * the per-lease token counter is persisted, so tokens keep increasing across restarts and
 * a holder from before a restart can never pass a fencing check afterwards.
 *
 * Files in `dataDir`: `store.snapshot` (complete state, replaced atomically by rename),
 * `store.aof` (records since the snapshot) and `LOCK` (pid of the process that has it open:
 * two writers on one data dir would corrupt it, R-HM-5).
 */
import { closeSync, constants, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { FailedPreconditionError, FencedError, StaleEpochError, StoreUnavailableError, ensureError } from '../errors';
import { silentLogger, type Logger } from '../logging';
import { encodeRecord, Op, parseFrames, type AofRecord } from './aof';
import type { EpochValue, LeaseInfo, Store } from './port';
import {
  asBuffer,
  checkEpoch,
  checkHolderData,
  checkHolderId,
  checkName,
  checkToken,
  checkTtlMs,
  checkValue,
  storeMessages,
} from './validate';

/** Options of {@link EmbeddedStore.open}. */
export interface EmbeddedStoreOptions {
  /**
   * Directory of the files (created if missing). `null` keeps everything in memory only.
   * @default null
   */
  readonly dataDir?: string | null;
  /**
   * fsync each write batch before resolving, so acknowledged writes survive a host crash
   * (without it they survive a process crash only).
   * @default true
   */
  readonly fsync?: boolean;
  /**
   * Clock for lease expiry, in ms.
   * @default Date.now
   */
  readonly now?: () => number;
  /**
   * Compact (write a snapshot, truncate the AOF) once the AOF reaches this size.
   * @default 64 MiB
   */
  readonly compactAfterBytes?: number;
  /** Replay and compaction events. @default silent */
  readonly logger?: Logger;
}

/** An epoch-fenced entry has no value when it was fenced (fenceAndGet) but never written. */
type Entry = { readonly kind: 'plain'; readonly value: Buffer } | { readonly kind: 'epoch'; readonly epoch: number; readonly value: Buffer | null };

interface HeldLease {
  readonly holderId: string;
  holderData: string;
  readonly token: number;
  expiresAt: number;
}

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
}

const AOF_FILE = 'store.aof';
const SNAPSHOT_FILE = 'store.snapshot';
const LOCK_FILE = 'LOCK';
const DEFAULT_COMPACT_AFTER_BYTES = 64 * 1024 * 1024;

/** Data dirs open in this process (the LOCK file carries our own pid for all of them). */
const openDirs = new Set<string>();

/** The embedded store. Create it with {@link EmbeddedStore.open}. */
export class EmbeddedStore implements Store {
  readonly kind = 'embedded' as const;

  private readonly data = new Map<string, Entry>();
  private readonly tokens = new Map<string, number>();
  private readonly leases = new Map<string, HeldLease>();

  private aof: FileHandle | null = null;
  private aofBytes = 0;
  private queue: Buffer[] = [];
  private waiters: Waiter[] = [];
  private writer: Promise<void> | null = null;
  /** Settles when the most recently issued write is on disk (or failed). */
  private lastPersist: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly dir: string | null,
    private readonly fsync: boolean,
    private readonly now: () => number,
    private readonly compactAfterBytes: number,
    private readonly logger: Logger,
  ) {}

  /** Open (and replay) a store. Rejects when the data dir is in use or its files are corrupt. */
  static async open(options: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    const compactAfterBytes = options.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES;
    if (!Number.isSafeInteger(compactAfterBytes) || compactAfterBytes <= 0) {
      throw new TypeError(`compactAfterBytes: expected a positive integer, got ${compactAfterBytes}`);
    }
    if (options.dataDir === '') throw new TypeError("dataDir: expected a directory path or null (memory only), got ''");
    const dir = options.dataDir == null ? null : resolvePath(options.dataDir);
    const store = new EmbeddedStore(dir, options.fsync ?? true, options.now ?? Date.now, compactAfterBytes, options.logger ?? silentLogger());
    if (dir !== null) {
      mkdirSync(dir, { recursive: true });
      lockDir(dir);
      try {
        await store.load(dir);
      } catch (e) {
        await store.aof?.close().catch(() => undefined);
        unlockDir(dir);
        throw e;
      }
    }
    return store;
  }

  /** Replay snapshot + AOF, cut a torn AOF tail, and open the AOF for appending. */
  private async load(dir: string): Promise<void> {
    await rm(join(dir, `${SNAPSHOT_FILE}.tmp`), { force: true });
    const snapshotPath = join(dir, SNAPSHOT_FILE);
    const snapshot = await readIfExists(snapshotPath);
    if (snapshot) for (const r of parseFrames(snapshot, snapshotPath, false).records) this.apply(r);

    const aofPath = join(dir, AOF_FILE);
    const aofBuf = await readIfExists(aofPath);
    // With fsync, O_DSYNC makes each append durable when its write returns: one thread-pool
    // round trip per batch instead of two (write, then datasync). Under CPU load each round trip
    // waits for the event loop, and a controller persists every decision before acting on it.
    this.aof = await open(aofPath, this.fsync ? constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC : 'a');
    if (aofBuf) {
      const parsed = parseFrames(aofBuf, aofPath, true);
      for (const r of parsed.records) this.apply(r);
      if (parsed.tornBytes > 0) {
        this.logger.warn({ file: aofPath, offset: parsed.validBytes, droppedBytes: parsed.tornBytes }, 'dropping a torn record at the end of the AOF');
        // Cut it now, or the next append would land after the garbage.
        await this.aof.truncate(parsed.validBytes);
        if (this.fsync) await this.aof.datasync();
      }
      this.aofBytes = parsed.validBytes;
    }
    this.logger.info({ dir, keys: this.data.size, aofBytes: this.aofBytes }, 'embedded store opened');
    if (this.aofBytes >= this.compactAfterBytes) await this.compact();
  }

  /** Apply a replayed record to memory. */
  private apply(r: AofRecord): void {
    switch (r.op) {
      case Op.SET:
        this.data.set(r.key, { kind: 'plain', value: r.value });
        break;
      case Op.SET_EPOCH:
        this.data.set(r.key, { kind: 'epoch', epoch: r.epoch, value: r.value });
        break;
      case Op.DEL:
        this.data.delete(r.key);
        break;
      case Op.TOKEN:
        // max(): a record replayed twice (see aof.ts) must never lower the counter.
        this.tokens.set(r.name, Math.max(r.token, this.tokens.get(r.name) ?? 0));
        break;
      case Op.FENCE: {
        const cur = this.data.get(r.key);
        this.data.set(r.key, { kind: 'epoch', epoch: r.epoch, value: cur?.kind === 'epoch' ? cur.value : null });
        break;
      }
    }
  }

  // -------------------------------------------------------------------------- writes

  /** Queue a record; resolves when it is on disk (immediately in memory-only mode). */
  private persist(record: AofRecord): Promise<void> {
    if (this.dir === null) return Promise.resolve();
    const frame = encodeRecord(record);
    const done = new Promise<void>((resolve, reject) => {
      this.queue.push(frame);
      this.waiters.push({ resolve, reject });
      this.writer ??= this.writeLoop();
    });
    this.lastPersist = done.catch(() => undefined);
    return done;
  }

  /**
   * Drain the queue: one write (+ fsync) per batch, then compaction when due. `writer` is
   * cleared in the same synchronous step as the final empty-queue check, so a write issued
   * by a caller resumed from the last batch always finds either a running loop that will
   * see it or no loop (and starts one).
   */
  private async writeLoop(): Promise<void> {
    // Yield once so `this.writer` is assigned before the `finally` below can clear it.
    await Promise.resolve();
    try {
      while (this.queue.length > 0 && this.failure === null) {
        const batch = Buffer.concat(this.queue);
        const waiters = this.waiters;
        this.queue = [];
        this.waiters = [];
        try {
          await writeFully(this.aof!, batch); // durable on return with fsync (O_DSYNC, see load)
          this.aofBytes += batch.length;
        } catch (e) {
          this.fail(e, waiters);
          return;
        }
        for (const w of waiters) w.resolve();
        if (this.aofBytes >= this.compactAfterBytes) {
          try {
            await this.compact();
          } catch (e) {
            this.fail(e, []);
            return;
          }
        }
      }
    } finally {
      this.writer = null;
    }
  }

  private fail(e: unknown, waiters: Waiter[]): void {
    this.failure = ensureError(e);
    this.logger.error({ err: this.failure, dir: this.dir }, 'embedded store write failed; the store is unusable until the process restarts');
    const err = this.unavailable();
    for (const w of [...waiters, ...this.waiters]) w.reject(err);
    this.queue = [];
    this.waiters = [];
  }

  /**
   * Write the whole state as a new snapshot (atomically, by rename) and empty the AOF.
   * Runs inside the write loop (or at open), so no append interleaves with it.
   */
  private async compact(): Promise<void> {
    const dir = this.dir!;
    const started = this.now();
    const frames: Buffer[] = [];
    for (const [name, token] of this.tokens) frames.push(encodeRecord({ op: Op.TOKEN, name, token }));
    for (const [key, e] of this.data) {
      if (e.kind === 'plain') frames.push(encodeRecord({ op: Op.SET, key, value: e.value }));
      else if (e.value === null) frames.push(encodeRecord({ op: Op.FENCE, key, epoch: e.epoch }));
      else frames.push(encodeRecord({ op: Op.SET_EPOCH, key, epoch: e.epoch, value: e.value }));
    }
    const tmp = join(dir, `${SNAPSHOT_FILE}.tmp`);
    const fh = await open(tmp, 'w');
    try {
      await writeFully(fh, Buffer.concat(frames));
      if (this.fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, SNAPSHOT_FILE));
    if (this.fsync) await syncDir(dir);
    // Only now is it safe to drop the AOF: the snapshot holds everything it held.
    const before = this.aofBytes;
    await this.aof!.truncate(0);
    if (this.fsync) await this.aof!.datasync();
    this.aofBytes = 0;
    this.logger.info({ dir, aofBytes: before, keys: this.data.size, tookMs: this.now() - started }, 'embedded store compacted');
  }

  /**
   * Wait until every write issued so far is on disk (reads never see undurable data).
   * Waits for the last one only: batches are written in order, so the earlier ones are
   * done by then — and writes issued later do not hold the read back.
   */
  private async settled(): Promise<void> {
    await this.lastPersist;
    this.usable();
  }

  private unavailable(): StoreUnavailableError {
    return new StoreUnavailableError(`embedded store failed: ${this.failure?.message ?? 'unknown'}; restart the process`, { cause: this.failure });
  }

  /** Throws when the store is closed or failed. */
  private usable(): void {
    if (this.closing) throw new FailedPreconditionError('store is closed');
    if (this.failure) throw this.unavailable();
  }

  // -------------------------------------------------------------------------- leases

  /** The lease if held and not expired (expired ones are dropped here, lazily). */
  private liveLease(name: string): HeldLease | null {
    const l = this.leases.get(name);
    if (!l) return null;
    if (l.expiresAt <= this.now()) {
      this.leases.delete(name);
      return null;
    }
    return l;
  }

  private info(l: HeldLease): LeaseInfo {
    return { holderId: l.holderId, holderData: l.holderData, token: l.token, ttlRemainingMs: Math.max(0, l.expiresAt - this.now()) };
  }

  async acquireLease(name: string, holderId: string, holderData: string, ttlMs: number): Promise<LeaseInfo | null> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkHolderData(holderData);
    checkTtlMs(ttlMs);
    this.usable();
    const held = this.liveLease(name);
    if (held) {
      if (held.holderId !== holderId) return null;
      held.holderData = holderData;
      held.expiresAt = this.now() + ttlMs;
      return this.info(held);
    }
    const token = (this.tokens.get(name) ?? 0) + 1;
    this.tokens.set(name, token);
    const lease: HeldLease = { holderId, holderData, token, expiresAt: this.now() + ttlMs };
    this.leases.set(name, lease);
    // The token must be on disk before anyone can fence with it, or a restart could hand it out again.
    await this.persist({ op: Op.TOKEN, name, token });
    return { holderId, holderData, token, ttlRemainingMs: ttlMs };
  }

  async renewLease(name: string, holderId: string, token: number, ttlMs: number): Promise<boolean> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkToken(token);
    checkTtlMs(ttlMs);
    this.usable();
    const held = this.liveLease(name);
    if (!held || held.holderId !== holderId || held.token !== token) return false;
    held.expiresAt = this.now() + ttlMs;
    return true;
  }

  async releaseLease(name: string, holderId: string, token: number): Promise<void> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkToken(token);
    this.usable();
    const held = this.liveLease(name);
    if (held && held.holderId === holderId && held.token === token) this.leases.delete(name);
  }

  async readLease(name: string): Promise<LeaseInfo | null> {
    checkName('lease name', name);
    this.usable();
    const held = this.liveLease(name);
    return held ? this.info(held) : null;
  }

  // ---------------------------------------------------------------------------- data

  async get(key: string): Promise<Uint8Array | null> {
    checkName('key', key);
    this.usable();
    await this.settled();
    const e = this.data.get(key);
    if (!e) return null;
    if (e.kind !== 'plain') throw new FailedPreconditionError(storeMessages.wrongType(key));
    return Buffer.from(e.value);
  }

  async putFenced(key: string, value: Uint8Array, lease: string, token: number): Promise<void> {
    checkName('key', key);
    checkValue(value);
    checkName('lease name', lease);
    checkToken(token);
    this.usable();
    const held = this.liveLease(lease);
    if (!held || held.token !== token) throw new FencedError(storeMessages.fenced(key, lease, token));
    // Like Redis SET: replaces whatever the key held, of any kind. Copied so the caller
    // may reuse its buffer.
    const copy = Buffer.from(asBuffer(value));
    this.data.set(key, { kind: 'plain', value: copy });
    await this.persist({ op: Op.SET, key, value: copy });
  }

  async putAtEpoch(key: string, epoch: number, value: Uint8Array): Promise<void> {
    checkName('key', key);
    checkEpoch(epoch);
    checkValue(value);
    this.usable();
    const cur = this.data.get(key);
    if (cur?.kind === 'plain') throw new FailedPreconditionError(storeMessages.wrongType(key));
    if (cur && epoch < cur.epoch) throw new StaleEpochError(storeMessages.staleEpoch(key, epoch, cur.epoch));
    const copy = Buffer.from(asBuffer(value));
    this.data.set(key, { kind: 'epoch', epoch, value: copy });
    await this.persist({ op: Op.SET_EPOCH, key, epoch, value: copy });
  }

  async getAtEpoch(key: string): Promise<EpochValue | null> {
    checkName('key', key);
    this.usable();
    await this.settled();
    const e = this.data.get(key);
    if (!e) return null;
    if (e.kind !== 'epoch') throw new FailedPreconditionError(storeMessages.wrongType(key));
    return e.value === null ? null : { epoch: e.epoch, value: Buffer.from(e.value) };
  }

  async fenceAndGet(key: string, epoch: number): Promise<EpochValue | null> {
    checkName('key', key);
    checkEpoch(epoch);
    this.usable();
    const cur = this.data.get(key);
    if (cur?.kind === 'plain') throw new FailedPreconditionError(storeMessages.wrongType(key));
    if (cur && epoch < cur.epoch) throw new StaleEpochError(storeMessages.staleEpoch(key, epoch, cur.epoch));
    const value = cur?.value ?? null;
    if (!cur || epoch > cur.epoch) {
      // Raised in memory now (later putAtEpoch calls below it fail at once), returned only once
      // on disk: a restart must not forget a fence someone already relies on.
      this.data.set(key, { kind: 'epoch', epoch, value });
      await this.persist({ op: Op.FENCE, key, epoch });
    }
    // Everything issued before (the value read included) is on disk once our own record is;
    // an idempotent re-fence wrote nothing and waits for earlier writes instead.
    await this.settled();
    return value === null ? null : { epoch, value: Buffer.from(value) };
  }

  async incr(key: string): Promise<number> {
    checkName('key', key);
    this.usable();
    const cur = this.data.get(key);
    let n = 0;
    if (cur) {
      if (cur.kind !== 'plain') throw new FailedPreconditionError(storeMessages.wrongType(key));
      // Same rule as Redis INCR: the value must be a canonical decimal integer.
      const text = cur.value.toString('latin1');
      if (!/^(0|-?[1-9]\d{0,18})$/.test(text) || !Number.isSafeInteger(Number(text))) throw new FailedPreconditionError(storeMessages.notInteger(key));
      n = Number(text);
    }
    const next = n + 1;
    const value = Buffer.from(String(next), 'latin1');
    this.data.set(key, { kind: 'plain', value });
    await this.persist({ op: Op.SET, key, value });
    return next;
  }

  async del(key: string): Promise<void> {
    checkName('key', key);
    this.usable();
    if (!this.data.delete(key)) return;
    await this.persist({ op: Op.DEL, key });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      // Let issued writes (and a running compaction) finish: their callers expect durability.
      while (this.writer) await this.writer;
      if (this.aof) await this.aof.close();
      this.aof = null;
      if (this.dir !== null) unlockDir(this.dir);
      this.leases.clear();
    })();
    return this.closing;
  }
}

async function readIfExists(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function writeFully(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

/** fsync a directory so a rename in it survives a host crash. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Take the data dir's LOCK file. A lock left by a dead process (crash, kill -9) is taken
 * over; one held by a live process, or by this process, is refused.
 */
function lockDir(dir: string): void {
  const path = join(dir, LOCK_FILE);
  if (openDirs.has(dir)) throw new FailedPreconditionError(`data dir ${dir} is already open in this process`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      openDirs.add(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid = NaN;
      try {
        pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      } catch {
        // Vanished or unreadable in between: treat as stale and retry.
      }
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new FailedPreconditionError(`data dir ${dir} is in use by process ${pid} (remove ${path} if that process is not an Understudy store)`);
      }
      try {
        unlinkSync(path);
      } catch {
        // Someone else removed it; the next attempt decides.
      }
    }
  }
  throw new FailedPreconditionError(`could not lock data dir ${dir}`);
}

function unlockDir(dir: string): void {
  openDirs.delete(dir);
  try {
    unlinkSync(join(dir, LOCK_FILE));
  } catch {
    // Already gone: nothing to release.
  }
}

/** File names inside a data dir (for tests and operators). */
export const embeddedStoreFiles = { aof: AOF_FILE, snapshot: SNAPSHOT_FILE, lock: LOCK_FILE } as const;
