/**
 * Fault Manager process body: config, the service, signal handling.
 * Loaded by main.ts after telemetry has started.
 */
import { createLogger, defineConfig, loadConfig, type Telemetry } from '@understudy/runtime';
import { startFaultManager } from './fault-manager';

const schema = defineConfig({
  id: { env: 'UNDERSTUDY_FAULT_MANAGER_ID', flag: 'id', type: 'string', default: 'fault-manager-1', description: 'unique id of this instance (the reporter in fault reports)' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:7200', description: 'host:port to serve on (port 0 = any)' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host copies reach this instance at' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '127.0.0.1:7100', description: 'comma-separated controller host:port list' },
  policyRefreshMs: { env: 'UNDERSTUDY_POLICY_REFRESH_MS', flag: 'policy-refresh-ms', type: 'ms', default: 2000, min: 50, max: 600_000, description: 'how often application detection policies are re-read from the controller' },
  hostFaultWindowMs: { env: 'UNDERSTUDY_HOST_FAULT_WINDOW_MS', flag: 'host-fault-window-ms', type: 'ms', default: 1000, min: 0, max: 600_000, description: 'copies of one host lost within this window make a HOST fault' },
  sweepIntervalMs: { env: 'UNDERSTUDY_SWEEP_INTERVAL_MS', flag: 'sweep-interval-ms', type: 'ms', default: 10, min: 1, max: 10_000, description: 'period of the backstop sweep (hangs, probe timeouts and probes due are also swept at their deadline)' },
});

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const config = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  const logger = createLogger({ service: 'fault-manager', base: { faultManager: config.id } });
  const controllerAddresses = config.controllers.split(',').map((s) => s.trim()).filter(Boolean);
  const fm = await startFaultManager({ ...config, controllerAddresses, logger });
  // One line on stdout that harnesses and people can read: where this instance listens.
  process.stdout.write(`${JSON.stringify({ msg: 'fault manager listening', address: fm.address, id: fm.id })}\n`);
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await fm.stop();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
