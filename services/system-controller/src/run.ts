/**
 * System Controller process body: config, store, controller replica, signal handling.
 * Loaded by main.ts after telemetry has started.
 */
import { createLogger, defineConfig, loadConfig, type Telemetry, openStore } from '@understudy/runtime';
import { startController } from './controller';

const schema = defineConfig({
  controllerId: { env: 'UNDERSTUDY_CONTROLLER_ID', flag: 'id', type: 'string', default: 'controller-1', description: 'unique id of this replica' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:7100', description: 'host:port to serve on (port 0 = any)' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host others reach this replica at' },
  redisUrl: { env: 'REDIS_URL', flag: 'redis-url', type: 'string', default: '', description: 'Redis store URL; empty = embedded store' },
  dataDir: { env: 'UNDERSTUDY_DATA_DIR', flag: 'data-dir', type: 'string', default: '.data/controller', description: 'embedded store directory' },
  leaseTtlMs: { env: 'UNDERSTUDY_LEASE_TTL_MS', flag: 'lease-ttl-ms', type: 'ms', default: 2000, min: 100, max: 60_000, description: 'leader lease TTL' },
  passiveTimeoutMs: { env: 'UNDERSTUDY_PASSIVE_TIMEOUT_MS', flag: 'passive-timeout-ms', type: 'ms', default: 2000, min: 0, max: 600_000, description: 'longest passive phase of a new leader' },
  tickIntervalMs: { env: 'UNDERSTUDY_TICK_INTERVAL_MS', flag: 'tick-interval-ms', type: 'ms', default: 200, min: 10, max: 60_000, description: 'reconcile period' },
  pauseTimeoutMs: { env: 'UNDERSTUDY_PAUSE_TIMEOUT_MS', flag: 'pause-timeout-ms', type: 'ms', default: 300, min: 1, max: 60_000, description: 'live move: deadline of the pause request to the old active (past it the move goes on unpaused)' },
  pauseLeaseMs: { env: 'UNDERSTUDY_PAUSE_LEASE_MS', flag: 'pause-lease-ms', type: 'ms', default: 3000, min: 1, max: 60_000, description: 'live move: the old active resumes a paused RS by itself after this long' },
});

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const config = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  const logger = createLogger({ service: 'system-controller' });
  const store = await openStore({ redisUrl: config.redisUrl || undefined, dataDir: config.dataDir, logger });
  const controller = await startController({ ...config, store, logger });
  // One line on stdout that harnesses and people can read: where this replica listens.
  process.stdout.write(`${JSON.stringify({ msg: 'controller listening', address: controller.address, controllerId: controller.controllerId })}\n`);
  const shutdown = async (signal: string): Promise<void> => {
    logger.info({ signal }, 'shutting down');
    await controller.stop();
    await store.close();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

