/**
 * Pick the store adapter from configuration: Redis when a URL is given (shared by every
 * process, across hosts), else the embedded store (single host, no Redis needed).
 */
import type { Logger } from '../logging';
import { EmbeddedStore } from './embedded';
import type { Store } from './port';
import { RedisStore } from './redis';

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Use Redis at this URL (`redis://host:port`). Empty or unset selects the embedded store. */
  readonly redisUrl?: string;
  /**
   * Embedded store directory; `null` or unset keeps it in memory only.
   * @default null
   */
  readonly dataDir?: string | null;
  /**
   * Redis key prefix (the embedded store needs none: one data dir per store).
   * @default 'understudy:'
   */
  readonly keyPrefix?: string;
  /**
   * Embedded store: fsync every write batch.
   * @default true
   */
  readonly fsync?: boolean;
  /** Connection / replay events. @default silent */
  readonly logger?: Logger;
}

/** Open the configured store. Rejects with StoreUnavailableError when Redis cannot be reached. */
export async function openStore(options: OpenStoreOptions = {}): Promise<Store> {
  if (options.redisUrl) {
    return RedisStore.connect({ url: options.redisUrl, keyPrefix: options.keyPrefix, logger: options.logger });
  }
  return EmbeddedStore.open({ dataDir: options.dataDir ?? null, fsync: options.fsync, logger: options.logger });
}
