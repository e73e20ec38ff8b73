/**
 * The Redis adapter of the store port (ioredis). Shared by all controller replicas and
 * copies across hosts (R-NF-6). Every check-and-write is one Lua script, so it is atomic
 * on the server: fencing does not depend on timing (R-NF-2, R-HM-5).
 *
 * Key layout under the prefix (default `understudy:`):
 * - `lease:<name>`        string JSON `{"holderId","holderData","token"}` with a PX expiry
 * - `lease-token:<name>`  integer: the last token handed out for the lease (never expires)
 * - `kv:<key>`            plain values (`get`, `putFenced`, `incr`) as strings, and
 *                         epoch-fenced values (`putAtEpoch`) as hashes `{epoch, value}`
 *
 * Failure behaviour (deliberate): fail fast, never queue. Commands are rejected at once
 * with StoreUnavailableError while the connection is down (`enableOfflineQueue: false`),
 * commands in flight when it drops are rejected instead of being re-sent after a reconnect
 * (`maxRetriesPerRequest: 0`, `autoResendUnfulfilledCommands: false` — a silent re-send
 * of INCR would skip an epoch, and a late lease renewal is worse than a failed one), and
 * a command Redis does not answer within `commandTimeoutMs` (a hung or SIGSTOPped server)
 * is rejected too. Callers own retries: a controller that cannot reach the store must
 * learn it now, so it steps down before its lease runs out elsewhere. The client keeps
 * reconnecting in the background, so the store works again as soon as Redis is back.
 *
 * A rejected write has an unknown outcome (it may have been applied). putFenced and
 * putAtEpoch are idempotent and safe to retry; incr is not (a retry may skip a number —
 * harmless for epochs, which only need to increase).
 *
 * Not supported: Redis Cluster (the fenced-write script touches a lease key and a data key
 * that may live in different slots). Sentinel / a single primary are fine.
 */
import Redis from 'ioredis';
import { FailedPreconditionError, FencedError, StaleEpochError, StoreUnavailableError, UnderstudyError, ensureError } from '../errors';
import { silentLogger, type Logger } from '../logging';
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

/** Options of {@link RedisStore.connect}. */
export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  readonly url: string;
  /**
   * Prefix of every key, so several systems (or tests) can share one Redis.
   * @default 'understudy:'
   */
  readonly keyPrefix?: string;
  /** Connection events (lost / restored) go here. @default silent */
  readonly logger?: Logger;
  /**
   * A command not answered within this time fails with StoreUnavailableError.
   * @default 2000
   */
  readonly commandTimeoutMs?: number;
  /**
   * Timeout of one TCP connection attempt.
   * @default 2000
   */
  readonly connectTimeoutMs?: number;
  /**
   * How long {@link RedisStore.connect} waits for the first connection before failing.
   * @default 10000
   */
  readonly startupTimeoutMs?: number;
  /**
   * Cap of the background reconnect backoff (which starts at 20 ms and grows linearly).
   * @default 500
   */
  readonly maxReconnectBackoffMs?: number;
}

const DEFAULTS = {
  keyPrefix: 'understudy:',
  commandTimeoutMs: 2000,
  connectTimeoutMs: 2000,
  startupTimeoutMs: 10_000,
  maxReconnectBackoffMs: 500,
} as const;

// KEYS[1] lease, KEYS[2] token counter; ARGV holderId, holderData, ttlMs.
// Returns the token (string) when ARGV[1] holds the lease afterwards, else nil.
const ACQUIRE_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local l = cjson.decode(cur)
  if l.holderId ~= ARGV[1] then return false end
  l.holderData = ARGV[2]
  redis.call('SET', KEYS[1], cjson.encode(l), 'PX', ARGV[3])
  return l.token
end
local token = tostring(redis.call('INCR', KEYS[2]))
redis.call('SET', KEYS[1], cjson.encode({holderId = ARGV[1], holderData = ARGV[2], token = token}), 'PX', ARGV[3])
return token
`;

// KEYS[1] lease; ARGV holderId, token, ttlMs. Returns 1 when renewed.
const RENEW_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local l = cjson.decode(cur)
if l.holderId ~= ARGV[1] or l.token ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

// KEYS[1] lease; ARGV holderId, token. Returns 1 when released.
const RELEASE_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local l = cjson.decode(cur)
if l.holderId ~= ARGV[1] or l.token ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

// KEYS[1] lease. Returns {json, pttl} or nil; one script so value and TTL agree.
const READ_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
return {cur, redis.call('PTTL', KEYS[1])}
`;

// KEYS[1] lease, KEYS[2] data key; ARGV token, value. Returns 1 when written.
const PUT_FENCED_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local l = cjson.decode(cur)
if l.token ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`;

// KEYS[1] data key; ARGV epoch, value. Returns {1} when written, {0, storedEpoch} when
// stale. HGET on a plain string raises WRONGTYPE, like every other mixed-kind access.
const PUT_AT_EPOCH_LUA = `
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur and tonumber(ARGV[1]) < tonumber(cur) then return {0, cur} end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'value', ARGV[2])
return {1}
`;

// KEYS[1] data key; ARGV epoch. Raises the stored epoch to ARGV[1] (a missing key becomes a
// hash holding only the epoch, which getAtEpoch reads as null). Returns {0, storedEpoch} when
// ARGV[1] is stale, else {1, value} or {1} when the key holds no value.
const FENCE_AND_GET_LUA = `
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur and tonumber(ARGV[1]) < tonumber(cur) then return {0, cur} end
if (not cur) or tonumber(ARGV[1]) > tonumber(cur) then redis.call('HSET', KEYS[1], 'epoch', ARGV[1]) end
local v = redis.call('HGET', KEYS[1], 'value')
if v then return {1, v} end
return {1}
`;

interface ScriptedRedis extends Redis {
  usAcquireLease(lease: string, counter: string, holderId: string, holderData: string, ttlMs: number): Promise<string | null>;
  usRenewLease(lease: string, holderId: string, token: string, ttlMs: number): Promise<number>;
  usReleaseLease(lease: string, holderId: string, token: string): Promise<number>;
  usReadLease(lease: string): Promise<[string, number] | null>;
  usPutFenced(lease: string, key: string, token: string, value: Buffer): Promise<number>;
  usPutAtEpoch(key: string, epoch: string, value: Buffer): Promise<[number, string?]>;
  usFenceAndGetBuffer(key: string, epoch: string): Promise<[number, Buffer?]>;
}

interface StoredLease {
  holderId: string;
  holderData: string;
  token: string;
}

/** Redis error replies that mean "try again later", not "your request is wrong". */
const TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

/** The Redis store. Create it with {@link RedisStore.connect}. */
export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly redis: ScriptedRedis,
    private readonly prefix: string,
  ) {}

  /**
   * Connect and wait for the first successful connection (up to `startupTimeoutMs`).
   * Rejects with StoreUnavailableError when Redis cannot be reached in that time.
   */
  static async connect(options: RedisStoreOptions): Promise<RedisStore> {
    if (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url)) {
      throw new TypeError(`redis url: expected redis://host:port or rediss://host:port, got '${String(options.url)}'`);
    }
    const o = { ...DEFAULTS, ...definedOnly(options) };
    for (const name of ['commandTimeoutMs', 'connectTimeoutMs', 'startupTimeoutMs', 'maxReconnectBackoffMs'] as const) {
      if (!Number.isSafeInteger(o[name]) || o[name] <= 0) throw new TypeError(`RedisStore ${name}: expected a positive integer, got ${o[name]}`);
    }
    const logger = options.logger ?? silentLogger();
    const redis = new Redis(options.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: o.commandTimeoutMs,
      connectTimeout: o.connectTimeoutMs,
      // Reconnect forever in the background; each command still fails fast meanwhile.
      retryStrategy: (attempt) => Math.min(attempt * 20, o.maxReconnectBackoffMs),
    }) as ScriptedRedis;
    redis.defineCommand('usAcquireLease', { numberOfKeys: 2, lua: ACQUIRE_LUA });
    redis.defineCommand('usRenewLease', { numberOfKeys: 1, lua: RENEW_LUA });
    redis.defineCommand('usReleaseLease', { numberOfKeys: 1, lua: RELEASE_LUA });
    redis.defineCommand('usReadLease', { numberOfKeys: 1, lua: READ_LUA });
    redis.defineCommand('usPutFenced', { numberOfKeys: 2, lua: PUT_FENCED_LUA });
    redis.defineCommand('usPutAtEpoch', { numberOfKeys: 1, lua: PUT_AT_EPOCH_LUA });
    redis.defineCommand('usFenceAndGet', { numberOfKeys: 1, lua: FENCE_AND_GET_LUA });

    // Log transitions, not every failed reconnect attempt (those come every few ms).
    let up = false;
    let lastError = '';
    redis.on('ready', () => {
      up = true;
      lastError = '';
      logger.info({ store: 'redis' }, 'redis connection ready');
    });
    redis.on('error', (err: Error) => {
      if (up || err.message !== lastError) logger.warn({ store: 'redis', err }, 'redis connection error');
      up = false;
      lastError = err.message;
    });
    redis.on('close', () => {
      if (up) logger.warn({ store: 'redis' }, 'redis connection lost; commands fail until it is back');
      up = false;
    });

    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        redis.off('ready', onReady);
        redis.disconnect();
        reject(new StoreUnavailableError(`redis not reachable within ${o.startupTimeoutMs} ms${lastError ? `: ${lastError}` : ''}`));
      }, o.startupTimeoutMs);
      const onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      redis.once('ready', onReady);
      // The first attempt may fail; retryStrategy keeps trying until the timer fires.
      redis.connect().catch(() => undefined);
    });
    return new RedisStore(redis, o.keyPrefix);
  }

  private leaseKey(name: string): string {
    return `${this.prefix}lease:${name}`;
  }
  private tokenKey(name: string): string {
    return `${this.prefix}lease-token:${name}`;
  }
  private dataKey(key: string): string {
    return `${this.prefix}kv:${key}`;
  }

  /** Run a command, mapping every failure to a typed error. */
  private async run<T>(key: string, op: () => Promise<T>): Promise<T> {
    if (this.closing) throw new FailedPreconditionError('store is closed');
    try {
      return await op();
    } catch (e) {
      throw mapRedisError(e, key);
    }
  }

  async acquireLease(name: string, holderId: string, holderData: string, ttlMs: number): Promise<LeaseInfo | null> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkHolderData(holderData);
    checkTtlMs(ttlMs);
    const token = await this.run(name, () => this.redis.usAcquireLease(this.leaseKey(name), this.tokenKey(name), holderId, holderData, ttlMs));
    return token === null ? null : { holderId, holderData, token: Number(token), ttlRemainingMs: ttlMs };
  }

  async renewLease(name: string, holderId: string, token: number, ttlMs: number): Promise<boolean> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkToken(token);
    checkTtlMs(ttlMs);
    return (await this.run(name, () => this.redis.usRenewLease(this.leaseKey(name), holderId, String(token), ttlMs))) === 1;
  }

  async releaseLease(name: string, holderId: string, token: number): Promise<void> {
    checkName('lease name', name);
    checkHolderId(holderId);
    checkToken(token);
    await this.run(name, () => this.redis.usReleaseLease(this.leaseKey(name), holderId, String(token)));
  }

  async readLease(name: string): Promise<LeaseInfo | null> {
    checkName('lease name', name);
    const res = await this.run(name, () => this.redis.usReadLease(this.leaseKey(name)));
    if (res === null) return null;
    const l = JSON.parse(res[0]) as StoredLease;
    return { holderId: l.holderId, holderData: l.holderData, token: Number(l.token), ttlRemainingMs: Math.max(0, res[1]) };
  }

  async get(key: string): Promise<Uint8Array | null> {
    checkName('key', key);
    return this.run(key, () => this.redis.getBuffer(this.dataKey(key)));
  }

  async putFenced(key: string, value: Uint8Array, lease: string, token: number): Promise<void> {
    checkName('key', key);
    checkValue(value);
    checkName('lease name', lease);
    checkToken(token);
    const ok = await this.run(key, () => this.redis.usPutFenced(this.leaseKey(lease), this.dataKey(key), String(token), asBuffer(value)));
    if (ok !== 1) throw new FencedError(storeMessages.fenced(key, lease, token));
  }

  async putAtEpoch(key: string, epoch: number, value: Uint8Array): Promise<void> {
    checkName('key', key);
    checkEpoch(epoch);
    checkValue(value);
    const res = await this.run(key, () => this.redis.usPutAtEpoch(this.dataKey(key), String(epoch), asBuffer(value)));
    if (res[0] !== 1) throw new StaleEpochError(storeMessages.staleEpoch(key, epoch, Number(res[1])));
  }

  async getAtEpoch(key: string): Promise<EpochValue | null> {
    checkName('key', key);
    // A fenced key without a value (see fenceAndGet) reads as null.
    const [epoch, value] = await this.run(key, () => this.redis.hmgetBuffer(this.dataKey(key), 'epoch', 'value'));
    if (epoch === null || value === null) return null;
    return { epoch: Number(epoch.toString('utf8')), value };
  }

  async fenceAndGet(key: string, epoch: number): Promise<EpochValue | null> {
    checkName('key', key);
    checkEpoch(epoch);
    const res = await this.run(key, () => this.redis.usFenceAndGetBuffer(this.dataKey(key), String(epoch)));
    if (res[0] !== 1) throw new StaleEpochError(storeMessages.staleEpoch(key, epoch, Number(res[1]?.toString('utf8'))));
    return res[1] === undefined || res[1] === null ? null : { epoch, value: res[1] };
  }

  async incr(key: string): Promise<number> {
    checkName('key', key);
    return this.run(key, () => this.redis.incr(this.dataKey(key)));
  }

  async del(key: string): Promise<void> {
    checkName('key', key);
    await this.run(key, () => this.redis.del(this.dataKey(key)));
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.redis.status === 'ready') {
        try {
          await this.redis.quit();
          return;
        } catch {
          // Fall through: the connection is going away anyway.
        }
      }
      this.redis.disconnect();
    })();
    return this.closing;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** ioredis failure → typed error: replies about the data are terminal, the rest transient. */
function mapRedisError(e: unknown, key: string): Error {
  if (e instanceof UnderstudyError) return e;
  const err = ensureError(e);
  if (err.name === 'ReplyError') {
    // Script errors wrap the original reply ("... script: ...") so match anywhere.
    if (/WRONGTYPE/.test(err.message)) return new FailedPreconditionError(storeMessages.wrongType(key), { cause: err });
    if (/not an integer|out of range/.test(err.message)) return new FailedPreconditionError(storeMessages.notInteger(key), { cause: err });
    if (TRANSIENT_REPLY.test(err.message)) return new StoreUnavailableError(`redis busy: ${err.message}`, { cause: err });
    return err; // a bug (e.g. a script error): surfaces as INTERNAL
  }
  // Connection closed, not writeable, command timed out, socket errors: all transient.
  return new StoreUnavailableError(`redis unavailable: ${err.message}`, { cause: err });
}
