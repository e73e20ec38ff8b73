/**
 * Router process body: config, the service, signal handling.
 * Loaded by main.ts after telemetry has started.
 */
import { createLogger, defineConfig, loadConfig, type Telemetry } from '@understudy/runtime';
import { startRouter } from './router';

const schema = defineConfig({
  id: { env: 'UNDERSTUDY_ROUTER_ID', flag: 'id', type: 'string', default: 'router-1', description: 'unique id of this router (reporter of unreachable copies, prefix of assigned message ids)' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:7300', description: 'host:port to serve on (port 0 = any)' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host clients reach this router at' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '127.0.0.1:7100', description: 'comma-separated controller host:port list (route watch)' },
  faultManagers: { env: 'UNDERSTUDY_FAULT_MANAGERS', flag: 'fault-managers', type: 'string', default: '', description: 'comma-separated fault manager host:port list unreachable copies are reported to (empty: only logged)' },
  maxHeldPerRs: { env: 'UNDERSTUDY_MAX_HELD_PER_RS', flag: 'max-held-per-rs', type: 'int', default: 10_000, min: 1, max: 10_000_000, description: 'messages held per RS (waiting for an active copy or in flight) before RESOURCE_EXHAUSTED' },
  maxHeldTotal: { env: 'UNDERSTUDY_MAX_HELD_TOTAL', flag: 'max-held-total', type: 'int', default: 100_000, min: 1, max: 100_000_000, description: 'messages held in all before RESOURCE_EXHAUSTED' },
  maxHeldBytes: { env: 'UNDERSTUDY_MAX_HELD_BYTES', flag: 'max-held-bytes', type: 'int', default: 256 * 1024 * 1024, min: 1, max: 64 * 1024 * 1024 * 1024, description: 'payload bytes held in all before RESOURCE_EXHAUSTED' },
  holdDeadlineMs: { env: 'UNDERSTUDY_HOLD_DEADLINE_MS', flag: 'hold-deadline-ms', type: 'ms', default: 10_000, min: 1, max: 3_600_000, description: 'deadline of a message that sets no deadline_ms; past it DEADLINE_EXCEEDED' },
  maxPayloadBytes: { env: 'UNDERSTUDY_MAX_PAYLOAD_BYTES', flag: 'max-payload-bytes', type: 'int', default: 1024 * 1024, min: 1, max: 64 * 1024 * 1024, description: 'largest payload accepted (larger: INVALID_ARGUMENT)' },
  maxInflightPerRs: { env: 'UNDERSTUDY_MAX_INFLIGHT_PER_RS', flag: 'max-inflight-per-rs', type: 'int', default: 256, min: 1, max: 5000, description: 'messages of one RS in flight to its active copy at once (keep below the copy queue bound)' },
  attemptTimeoutMs: { env: 'UNDERSTUDY_ATTEMPT_TIMEOUT_MS', flag: 'attempt-timeout-ms', type: 'ms', default: 6000, min: 10, max: 600_000, description: "a copy answering none of an RS's messages this long is unreachable: its connection is reset, the messages resent and the copy reported" },
  maxStreamPending: { env: 'UNDERSTUDY_MAX_STREAM_PENDING', flag: 'max-stream-pending', type: 'int', default: 20_000, min: 1, max: 10_000_000, description: 'unanswered messages of one SendStream before the router stops reading it' },
  routesWaitMs: { env: 'UNDERSTUDY_ROUTES_WAIT_MS', flag: 'routes-wait-ms', type: 'ms', default: 5000, min: 0, max: 600_000, description: 'how long start waits for the first route snapshot before serving anyway' },
});

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const config = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  const logger = createLogger({ service: 'router', base: { router: config.id } });
  const { controllers, faultManagers, ...rest } = config;
  const router = await startRouter({ ...rest, controllerAddresses: list(controllers), faultManagerAddresses: list(faultManagers), logger });
  // One line on stdout that harnesses and people can read: where this router listens.
  process.stdout.write(`${JSON.stringify({ msg: 'router listening', address: router.address, id: router.id })}\n`);
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await router.stop();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
