/**
 * ALDM process body: config, the service, signal handling.
 * Loaded by main.ts after telemetry has started.
 */
import { ConfigError, createLogger, defineConfig, loadConfig, type Telemetry } from '@understudy/runtime';
import { startAldm } from './aldm';

const schema = defineConfig({
  id: { env: 'UNDERSTUDY_ALDM_ID', flag: 'id', type: 'string', default: 'aldm-1', description: 'unique id of this instance (logs)' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:7400', description: 'gRPC host:port (AldmService; port 0 = any)' },
  httpListenAddress: { env: 'UNDERSTUDY_HTTP_LISTEN', flag: 'http-listen', type: 'string', default: '127.0.0.1:8080', description: 'HTTP/JSON host:port (POST /v1/apps/{app}/events; port 0 = any)' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '', description: 'comma-separated controller host:port list: deliver directly to the active copies (used when --routers is empty)' },
  routers: { env: 'UNDERSTUDY_ROUTERS', flag: 'routers', type: 'string', default: '', description: 'comma-separated router host:port list: forward through RouterService (takes precedence over --controllers)' },
  maxInFlight: { env: 'UNDERSTUDY_MAX_IN_FLIGHT', flag: 'max-in-flight', type: 'int', default: 10_000, min: 1, max: 10_000_000, description: 'events in flight at most; beyond: RESOURCE_EXHAUSTED / HTTP 429' },
  maxPayloadBytes: { env: 'UNDERSTUDY_MAX_PAYLOAD_BYTES', flag: 'max-payload-bytes', type: 'int', default: 1 << 20, min: 1, max: 64 << 20, description: 'largest event payload in JSON bytes; beyond: INVALID_ARGUMENT / HTTP 413' },
  maxHeldPerRs: { env: 'UNDERSTUDY_MAX_HELD_PER_RS', flag: 'max-held-per-rs', type: 'int', default: 10_000, min: 1, max: 10_000_000, description: 'direct mode: events held per RS while it has no reachable active copy (capped at --max-in-flight); beyond: RESOURCE_EXHAUSTED / HTTP 429' },
  attemptTimeoutMs: { env: 'UNDERSTUDY_ATTEMPT_TIMEOUT_MS', flag: 'attempt-timeout-ms', type: 'ms', default: 6000, min: 10, max: 600_000, description: 'direct mode: a copy answering none of an RS\'s events this long counts as unreachable (events resent)' },
  deadlineMs: { env: 'UNDERSTUDY_DEADLINE_MS', flag: 'deadline-ms', type: 'ms', default: 10_000, min: 10, max: 600_000, description: 'deadline of one event (forwarding and retries included)' },
});

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const config = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  const routerAddresses = list(config.routers);
  const controllerAddresses = list(config.controllers);
  if (routerAddresses.length === 0 && controllerAddresses.length === 0) {
    throw new ConfigError(['--routers / UNDERSTUDY_ROUTERS or --controllers / UNDERSTUDY_CONTROLLERS: one is required (where events are forwarded)']);
  }
  const logger = createLogger({ service: 'aldm', base: { aldm: config.id } });
  const aldm = await startAldm({ ...config, routerAddresses, controllerAddresses, logger });
  // Serve only once the routing table is loaded; say why while waiting.
  const waiting = setInterval(() => logger.warn({ mode: aldm.mode, controllers: controllerAddresses }, 'waiting for the routing table'), 5000);
  await aldm.ready;
  clearInterval(waiting);
  // One line on stdout that harnesses and people can read: where this instance listens.
  process.stdout.write(`${JSON.stringify({ msg: 'aldm listening', address: aldm.address, httpAddress: aldm.httpAddress, id: aldm.id, mode: aldm.mode })}\n`);
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await aldm.stop();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
