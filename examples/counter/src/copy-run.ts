/** A counter copy process (body; copy.ts is the entry that starts telemetry first). */
import { startCopy } from '@understudy/adsm';
import { createLogger, defineConfig, loadConfig, type Telemetry } from '@understudy/runtime';
import { counterApp } from './counter';

const schema = defineConfig({
  copyId: { env: 'UNDERSTUDY_COPY_ID', flag: 'copy-id', type: 'string', default: '', description: 'stable id of this copy (required)' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '127.0.0.1:7100', description: 'comma-separated controller host:port list' },
  host: { env: 'UNDERSTUDY_HOST', flag: 'host', type: 'string', default: 'localhost', description: 'host id for placement spread' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:0', description: 'ADSM service host:port' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host others reach this copy at' },
  heartbeatIntervalMs: { env: 'UNDERSTUDY_HEARTBEAT_INTERVAL_MS', flag: 'heartbeat-interval-ms', type: 'ms', default: 500, min: 10, max: 60_000, description: 'heartbeat period' },
});

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const c = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  if (!c.copyId) throw new Error('--copy-id (UNDERSTUDY_COPY_ID) is required');
  const logger = createLogger({ service: 'counter' });
  const copy = await startCopy({
    app: counterApp,
    copyId: c.copyId,
    controllerAddresses: c.controllers.split(',').map((s) => s.trim()).filter(Boolean),
    host: c.host,
    listenAddress: c.listenAddress,
    advertiseHost: c.advertiseHost,
    heartbeatIntervalMs: c.heartbeatIntervalMs,
    logger,
  });
  process.stdout.write(`${JSON.stringify({ msg: 'copy listening', address: copy.address, copyId: copy.copyId })}\n`);
  const shutdown = async (): Promise<void> => {
    await copy.stop();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
}

