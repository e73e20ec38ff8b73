/**
 * Load Manager process body: config, the service, signal handling.
 * Loaded by main.ts after telemetry has started.
 */
import { ConfigError, createLogger, defineConfig, loadConfig, type Telemetry } from '@understudy/runtime';
import { LOAD_PLAN_DEFAULTS, type LoadPlanOptions } from '@understudy/core';
import { startLoadManager } from './load-manager';

const D = LOAD_PLAN_DEFAULTS;

const schema = defineConfig({
  id: { env: 'UNDERSTUDY_LOAD_MANAGER_ID', flag: 'id', type: 'string', default: 'load-manager-1', description: 'unique id of this instance (logs, reason of its moves)' },
  listenAddress: { env: 'UNDERSTUDY_LISTEN', flag: 'listen', type: 'string', default: '127.0.0.1:7400', description: 'host:port to serve on (port 0 = any)' },
  advertiseHost: { env: 'UNDERSTUDY_ADVERTISE_HOST', flag: 'advertise-host', type: 'string', default: '127.0.0.1', description: 'host copies reach this instance at' },
  controllers: { env: 'UNDERSTUDY_CONTROLLERS', flag: 'controllers', type: 'string', default: '127.0.0.1:7100', description: 'comma-separated controller host:port list' },
  dryRun: { env: 'UNDERSTUDY_LOAD_DRY_RUN', flag: 'dry-run', type: 'bool', default: false, description: 'plan only: never ask the controller for a move (see `understudy plan`)' },
  planIntervalMs: { env: 'UNDERSTUDY_PLAN_INTERVAL_MS', flag: 'plan-interval-ms', type: 'ms', default: 2000, min: 50, max: 600_000, description: 'period of planning rounds' },
  placementRefreshMs: { env: 'UNDERSTUDY_PLACEMENT_REFRESH_MS', flag: 'placement-refresh-ms', type: 'ms', default: 1000, min: 50, max: 600_000, description: 'period of reading the placement from the controller' },
  reportIntervalMs: { env: 'UNDERSTUDY_LOAD_REPORT_INTERVAL_MS', flag: 'report-interval-ms', type: 'ms', default: 1000, min: 50, max: 600_000, description: 'load report period asked of the copies' },
  failoverQuietMs: { env: 'UNDERSTUDY_FAILOVER_QUIET_MS', flag: 'failover-quiet-ms', type: 'ms', default: 5000, min: 1, max: 3_600_000, description: 'no moves for this long after a copy failed or restarted' },
  moveTimeoutMs: { env: 'UNDERSTUDY_MOVE_TIMEOUT_MS', flag: 'move-timeout-ms', type: 'ms', default: 30_000, min: 100, max: 3_600_000, description: 'deadline of one MoveRs call' },
  capacityMsgsPerS: { env: 'UNDERSTUDY_CAPACITY_MSGS_PER_S', flag: 'capacity-msgs-per-s', type: 'string', default: String(D.capacityMsgsPerS), description: 'messages per second one copy can handle (utilization 1)' },
  cpuSaturationPercent: { env: 'UNDERSTUDY_CPU_SATURATION_PERCENT', flag: 'cpu-saturation-percent', type: 'string', default: String(D.cpuSaturationPercent), description: 'CPU percent (of one core) at which a copy is saturated; 0 = CPU not considered' },
  eventLoopLagSaturationMs: { env: 'UNDERSTUDY_LAG_SATURATION_MS', flag: 'lag-saturation-ms', type: 'string', default: String(D.eventLoopLagSaturationMs), description: 'event-loop lag at which a copy is saturated; 0 = not considered' },
  queueDepthSaturation: { env: 'UNDERSTUDY_QUEUE_SATURATION', flag: 'queue-saturation', type: 'string', default: String(D.queueDepthSaturation), description: 'queue depth at which a copy is saturated; 0 = not considered' },
  bandFraction: { env: 'UNDERSTUDY_BAND_FRACTION', flag: 'band-fraction', type: 'string', default: String(D.bandFraction), description: 'a copy above mean × (1 + this) is over-loaded' },
  minImbalance: { env: 'UNDERSTUDY_MIN_IMBALANCE', flag: 'min-imbalance', type: 'string', default: String(D.minImbalance), description: 'and only when this much utilization above the mean (hysteresis)' },
  minGain: { env: 'UNDERSTUDY_MIN_GAIN', flag: 'min-gain', type: 'string', default: String(D.minGain), description: "a move must lower the pair's peak utilization by at least this" },
  saturationLevel: { env: 'UNDERSTUDY_SATURATION_LEVEL', flag: 'saturation-level', type: 'string', default: String(D.saturationLevel), description: 'utilization at which a copy counts as saturated' },
  saturationMargin: { env: 'UNDERSTUDY_SATURATION_MARGIN', flag: 'saturation-margin', type: 'string', default: String(D.saturationMargin), description: 'a move never takes a target above saturation level − this' },
  horizonMs: { env: 'UNDERSTUDY_HORIZON_MS', flag: 'horizon-ms', type: 'ms', default: D.horizonMs, min: 0, max: 3_600_000, description: 'anticipation look-ahead' },
  trendWindowMs: { env: 'UNDERSTUDY_TREND_WINDOW_MS', flag: 'trend-window-ms', type: 'ms', default: D.trendWindowMs, min: 100, max: 3_600_000, description: 'window of samples fitted for levels and trends' },
  staleAfterMs: { env: 'UNDERSTUDY_STALE_AFTER_MS', flag: 'stale-after-ms', type: 'ms', default: D.staleAfterMs, min: 1, max: 3_600_000, description: 'a copy without a report this long has no load data' },
  maxConcurrentMoves: { env: 'UNDERSTUDY_MAX_CONCURRENT_MOVES', flag: 'max-concurrent-moves', type: 'int', default: D.maxConcurrentMoves, min: 1, max: 10_000, description: 'moves under way at once' },
  rsCooldownMs: { env: 'UNDERSTUDY_RS_COOLDOWN_MS', flag: 'rs-cooldown-ms', type: 'ms', default: D.rsCooldownMs, min: 0, max: 86_400_000, description: 'an RS moved less than this ago is not moved again' },
});

/** Decimal option fields (the config module has no float type): name → flag, for messages. */
const DECIMALS = {
  capacityMsgsPerS: 'capacity-msgs-per-s',
  cpuSaturationPercent: 'cpu-saturation-percent',
  eventLoopLagSaturationMs: 'lag-saturation-ms',
  queueDepthSaturation: 'queue-saturation',
  bandFraction: 'band-fraction',
  minImbalance: 'min-imbalance',
  minGain: 'min-gain',
  saturationLevel: 'saturation-level',
  saturationMargin: 'saturation-margin',
} as const;

/** Run the process (telemetry already started by the entry file). */
export async function main(telemetry: Telemetry): Promise<void> {
  const config = loadConfig(schema, { env: process.env, argv: process.argv.slice(2) });
  const plan: Record<string, number> = {
    horizonMs: config.horizonMs,
    trendWindowMs: config.trendWindowMs,
    staleAfterMs: config.staleAfterMs,
    maxConcurrentMoves: config.maxConcurrentMoves,
    rsCooldownMs: config.rsCooldownMs,
  };
  const problems: string[] = [];
  for (const [key, flag] of Object.entries(DECIMALS)) {
    const raw = String(config[key as keyof typeof DECIMALS]).trim();
    const v = Number(raw);
    if (raw === '' || !Number.isFinite(v)) problems.push(`--${flag}: expected a decimal number, got ${JSON.stringify(raw)}`);
    else plan[key] = v;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const logger = createLogger({ service: 'load-manager', base: { loadManager: config.id } });
  const controllerAddresses = config.controllers.split(',').map((s) => s.trim()).filter(Boolean);
  const lm = await startLoadManager({
    id: config.id,
    controllerAddresses,
    logger,
    listenAddress: config.listenAddress,
    advertiseHost: config.advertiseHost,
    dryRun: config.dryRun,
    planIntervalMs: config.planIntervalMs,
    placementRefreshMs: config.placementRefreshMs,
    reportIntervalMs: config.reportIntervalMs,
    failoverQuietMs: config.failoverQuietMs,
    moveTimeoutMs: config.moveTimeoutMs,
    plan: plan as LoadPlanOptions,
  });
  // One line on stdout that harnesses and people can read: where this instance listens.
  process.stdout.write(`${JSON.stringify({ msg: 'load manager listening', address: lm.address, id: lm.id, dryRun: config.dryRun })}\n`);
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await lm.stop();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
