import { RedisStore, createLogger, defineConfig, loadConfig, type Store, type Telemetry } from '@understudy/runtime';
import { storeCheckpoints } from './checkpoint';
import { startCopy, type CopyHandle } from './copy';
import type { AppDefinition } from './handler';

/** Flags / env every copy process understands (`--help` style names in the TSDoc of each). */
export const copyProcessConfig = defineConfig({
  copyId: { env: 'UNDERSTUDY_COPY_ID', flag: 'copy-id', type: 'string', default: '', description: 'stable id of this copy (required)' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '127.0.0.1:7100', description: 'comma-separated controller host:port list' },
  host: { env: 'UNDERSTUDY_HOST', flag: 'host', type: 'string', default: 'localhost', description: 'host id for placement spread' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:0', description: 'ADSM service host:port' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host others reach this copy at' },
  heartbeatIntervalMs: { env: 'UNDERSTUDY_HEARTBEAT_INTERVAL_MS', flag: 'heartbeat-interval-ms', type: 'ms', default: 500, min: 10, max: 60_000, description: 'heartbeat period' },
  faultManagers: { env: 'UNDERSTUDY_FAULT_MANAGERS', flag: 'fault-managers', type: 'string', default: '', description: 'comma-separated fault manager host:port list (empty: not watched)' },
  loadManagers: { env: 'UNDERSTUDY_LOAD_MANAGERS', flag: 'load-managers', type: 'string', default: '', description: 'comma-separated load manager host:port list (empty: no load reports)' },
  loadReportIntervalMs: { env: 'UNDERSTUDY_LOAD_REPORT_INTERVAL_MS', flag: 'load-report-interval-ms', type: 'ms', default: 1000, min: 50, max: 600_000, description: 'period of load reports to the load manager' },
  checkpointIntervalMs: {
    env: 'UNDERSTUDY_CHECKPOINT_INTERVAL_MS',
    flag: 'checkpoint-interval-ms',
    type: 'ms',
    default: 0,
    min: 0,
    max: 3_600_000,
    description: 'checkpoint every active RS whose state moved this often (0 = no periodic checkpoints)',
  },
  checkpointBeforeAck: {
    env: 'UNDERSTUDY_CHECKPOINT_BEFORE_ACK',
    flag: 'checkpoint-before-ack',
    type: 'bool',
    default: false,
    description: 'acknowledge a message only once a checkpoint covering it is stored (lossless without standbys)',
  },
  checkpointRedisUrl: {
    env: 'UNDERSTUDY_CHECKPOINT_REDIS_URL',
    flag: 'checkpoint-redis-url',
    type: 'string',
    default: '',
    allowEmpty: true,
    description: 'Redis the copy writes checkpoints to directly (default: REDIS_URL; both empty: through the controller)',
  },
  routers: {
    env: 'UNDERSTUDY_ROUTERS',
    flag: 'routers',
    type: 'string',
    default: '',
    allowEmpty: true,
    description: "comma-separated router host:port list the handlers' outgoing messages go through (empty: straight to the destination's active copy)",
  },
  maxOutboxPerRs: {
    env: 'UNDERSTUDY_MAX_OUTBOX_PER_RS',
    flag: 'max-outbox-per-rs',
    type: 'int',
    default: 1000,
    min: 1,
    max: 1_000_000,
    description: 'outgoing messages held per RS until acknowledged downstream; a full outbox stops the RS taking input (back-pressure)',
  },
  maxOutboxBytesPerRs: {
    env: 'UNDERSTUDY_MAX_OUTBOX_BYTES_PER_RS',
    flag: 'max-outbox-bytes-per-rs',
    type: 'int',
    default: 16 * 1024 * 1024,
    min: 1024,
    max: 1024 * 1024 * 1024,
    description: 'bytes of outgoing messages held per RS (same back-pressure)',
  },
  dedupeWindow: {
    env: 'UNDERSTUDY_DEDUPE_WINDOW',
    flag: 'dedupe-window',
    type: 'int',
    default: 10_000,
    min: 1,
    max: 10_000_000,
    description: 'message ids remembered per RS for dedupe; replicated, and sent in every snapshot (so it sets the cost of catching a new standby up, e.g. after a failover)',
  },
  snapshotBytesInFlight: {
    env: 'UNDERSTUDY_SNAPSHOT_BYTES_IN_FLIGHT',
    flag: 'snapshot-bytes-in-flight',
    type: 'int',
    default: 262_144,
    min: 1,
    max: 1024 * 1024 * 1024,
    description: 'snapshot bytes sent to one peer together; more go one after another, so after a failover the first new standby is caught up first',
  },
  snapshotSplitDedupeBytes: {
    env: 'UNDERSTUDY_SNAPSHOT_SPLIT_DEDUPE_BYTES',
    flag: 'snapshot-split-dedupe-bytes',
    type: 'int',
    default: 65_536,
    min: 0,
    max: 1024 * 1024 * 1024,
    description: 'dedupe bytes a snapshot carries with the state (the older ids follow, commits do not wait for them); 0: the whole table with the state',
  },
  checkpointRedisPrefix: {
    env: 'UNDERSTUDY_CHECKPOINT_REDIS_PREFIX',
    flag: 'checkpoint-redis-prefix',
    type: 'string',
    default: 'understudy:',
    description: "key prefix in that Redis (the controller's, so both see the same checkpoints)",
  },
});

/**
 * Exit code of a copy process that learned it was fenced (its incarnation was declared failed).
 * EX_TEMPFAIL: a supervisor should start it again; the restart registers a new incarnation and
 * rejoins as standby.
 */
export const FENCED_EXIT_CODE = 75;

/**
 * Run a copy of `app` as a process: read the standard flags/env, start the copy, print the
 * ready line `{"msg":"copy listening","address":…}` on stdout, stop gracefully on
 * SIGTERM/SIGINT. Call it from an entry file after `startTelemetry`.
 */
export async function runCopyProcess<S, M, U, R, Q, QR>(
  app: AppDefinition<S, M, U, R, Q, QR>,
  opts: { telemetry?: Telemetry; argv?: readonly string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<CopyHandle> {
  const c = loadConfig(copyProcessConfig, { env: opts.env ?? process.env, argv: [...(opts.argv ?? process.argv.slice(2))] });
  if (!c.copyId) throw new Error('--copy-id (UNDERSTUDY_COPY_ID) is required');
  const logger = createLogger({ service: app.name });
  const env = opts.env ?? process.env;
  const checkpointing = c.checkpointIntervalMs > 0 || c.checkpointBeforeAck;
  const checkpointRedisUrl = c.checkpointRedisUrl || env.REDIS_URL || '';
  // Checkpoints go straight to a shared Redis when there is one, else through the controller.
  let checkpointStore: Store | undefined;
  if (checkpointing && checkpointRedisUrl) {
    checkpointStore = await RedisStore.connect({ url: checkpointRedisUrl, keyPrefix: c.checkpointRedisPrefix, logger });
  }
  const closeCheckpointStore = async (): Promise<void> => {
    await checkpointStore?.close().catch(() => undefined);
  };
  const copy = await startCopy({
    app,
    copyId: c.copyId,
    controllerAddresses: c.controllers.split(',').map((s) => s.trim()).filter(Boolean),
    host: c.host,
    listenAddress: c.listenAddress,
    advertiseHost: c.advertiseHost,
    heartbeatIntervalMs: c.heartbeatIntervalMs,
    faultManagerAddresses: c.faultManagers.split(',').map((s) => s.trim()).filter(Boolean),
    loadManagerAddresses: c.loadManagers.split(',').map((s) => s.trim()).filter(Boolean),
    loadReportIntervalMs: c.loadReportIntervalMs,
    checkpointIntervalMs: c.checkpointIntervalMs,
    checkpointBeforeAck: c.checkpointBeforeAck,
    dataFlow: {
      routerAddresses: c.routers.split(',').map((s) => s.trim()).filter(Boolean),
      maxOutboxPerRs: c.maxOutboxPerRs,
      maxOutboxBytesPerRs: c.maxOutboxBytesPerRs,
    },
    dedupeWindow: c.dedupeWindow,
    snapshotBytesInFlight: c.snapshotBytesInFlight,
    snapshotSplitDedupeBytes: c.snapshotSplitDedupeBytes,
    ...(checkpointStore ? { checkpoints: storeCheckpoints(checkpointStore) } : {}),
    onFenced: async () => {
      await copy.stop();
      await closeCheckpointStore();
      await opts.telemetry?.shutdown();
      process.exit(FENCED_EXIT_CODE);
    },
    logger,
  });
  process.stdout.write(`${JSON.stringify({ msg: 'copy listening', address: copy.address, copyId: copy.copyId })}\n`);
  const shutdown = async (): Promise<void> => {
    await copy.stop();
    await closeCheckpointStore();
    await opts.telemetry?.shutdown();
    process.exit(0);
  };
  if (env.UNDERSTUDY_FAULT_INJECTION === '1') enableFaultInjection(logger);
  process.once('SIGTERM', () => void shutdown());
  process.once('SIGINT', () => void shutdown());
  return copy;
}

/**
 * Test-only fault injection, enabled by `UNDERSTUDY_FAULT_INJECTION=1`: SIGUSR2 toggles an
 * event-loop stall (the loop busy-waits 80 ms every 100 ms), the "unhealthy but alive" copy a
 * fault manager must catch by its health thresholds (R-DFM-3). Never enabled by default.
 */
function enableFaultInjection(logger: ReturnType<typeof createLogger>): void {
  let stall: NodeJS.Timeout | undefined;
  process.on('SIGUSR2', () => {
    if (stall) {
      clearInterval(stall);
      stall = undefined;
      logger.warn('fault injection: event-loop stall off');
      return;
    }
    logger.warn('fault injection: stalling the event loop 80 ms every 100 ms');
    stall = setInterval(() => {
      const end = Date.now() + 80;
      while (Date.now() < end) {
        // busy: the stall is the point
      }
    }, 100);
  });
}
