/**
 * Per-application fault detection policy (R-FM, R-DFM-3, R-HM-6): how often a copy heartbeats,
 * how many missed heartbeats make a hang, which health thresholds make a copy unhealthy, and the
 * progress probes through its handler path. Declared in the topology (`AppSpec.detection`),
 * carried by the controller, applied by the fault manager.
 */
import type { Rejection } from './events';

/** Declared policy; every field optional (see {@link compileDetectionPolicy} for defaults). */
export interface DetectionPolicy {
  /** Heartbeat period of a copy. @default 200 */
  readonly heartbeatIntervalMs?: number;
  /** Heartbeats missed in a row before the copy is declared hung. @default 3 */
  readonly missedHeartbeats?: number;
  /** Event-loop lag threshold; 0 = not checked. @default 0 */
  readonly maxEventLoopLagMs?: number;
  /** CPU threshold (percent of one core); 0 = not checked. @default 0 */
  readonly maxCpuPercent?: number;
  /** Resident-set threshold; 0 = not checked. @default 0 */
  readonly maxRssBytes?: number;
  /** Queue-depth threshold; 0 = not checked. @default 0 */
  readonly maxQueueDepth?: number;
  /** Consecutive breaching heartbeats before the copy is declared unhealthy. @default 3 */
  readonly breachSamples?: number;
  /** Period of progress probes; 0 = no probes. @default 0 */
  readonly probeIntervalMs?: number;
  /** A probe not answered within this time fails the copy. @default 1000 */
  readonly probeTimeoutMs?: number;
}

/** A policy with every default filled in. */
export type CompiledDetectionPolicy = { readonly [K in keyof DetectionPolicy]-?: number };

/** Defaults of {@link DetectionPolicy}. */
export const DETECTION_DEFAULTS: CompiledDetectionPolicy = Object.freeze({
  heartbeatIntervalMs: 200,
  missedHeartbeats: 3,
  maxEventLoopLagMs: 0,
  maxCpuPercent: 0,
  maxRssBytes: 0,
  maxQueueDepth: 0,
  breachSamples: 3,
  probeIntervalMs: 0,
  probeTimeoutMs: 1000,
});

/** Bounds per field: [min, max]; 0 always means "default" for the interval/count fields. */
const BOUNDS: { readonly [K in keyof DetectionPolicy]-?: readonly [number, number] } = {
  heartbeatIntervalMs: [10, 60_000],
  missedHeartbeats: [1, 100],
  maxEventLoopLagMs: [0, 3_600_000],
  maxCpuPercent: [0, 100_000],
  maxRssBytes: [0, Number.MAX_SAFE_INTEGER],
  maxQueueDepth: [0, 1_000_000_000],
  breachSamples: [1, 1000],
  probeIntervalMs: [0, 3_600_000],
  probeTimeoutMs: [10, 600_000],
};

const KEYS = Object.keys(BOUNDS) as (keyof DetectionPolicy)[];

/**
 * Checks a declared policy; `where` prefixes messages (e.g. `apps[0].detection`). Zero means
 * "use the default" for every field (the wire form cannot tell zero from unset).
 */
export function validateDetectionPolicy(p: unknown, where: string): Rejection | null {
  if (p === undefined) return null;
  if (p === null || typeof p !== 'object' || Array.isArray(p)) return { code: 'INVALID_ARGUMENT', message: `${where}: must be an object` };
  const rec = p as Record<string, unknown>;
  for (const k of Object.keys(rec)) {
    if (!(KEYS as string[]).includes(k)) return { code: 'INVALID_ARGUMENT', message: `${where}.${k}: unknown field; expected one of ${KEYS.join(', ')}` };
  }
  for (const k of KEYS) {
    const v = rec[k];
    if (v === undefined || v === 0) continue;
    const [min, max] = BOUNDS[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      return { code: 'INVALID_ARGUMENT', message: `${where}.${k}: ${String(v)} is out of range; must be a number in ${min}..${max} (0 = default)` };
    }
  }
  const c = compileDetectionPolicy(rec as DetectionPolicy);
  if (c.probeIntervalMs > 0 && c.probeTimeoutMs > c.probeIntervalMs * 10) {
    return { code: 'INVALID_ARGUMENT', message: `${where}.probeTimeoutMs: ${c.probeTimeoutMs} ms is more than 10 probe intervals (${c.probeIntervalMs} ms)` };
  }
  return null;
}

/** Fills defaults (0 or absent = default). Assumes a validated policy. */
export function compileDetectionPolicy(p: DetectionPolicy | undefined): CompiledDetectionPolicy {
  const out: Record<string, number> = { ...DETECTION_DEFAULTS };
  if (p !== undefined) for (const k of KEYS) if (typeof p[k] === 'number' && p[k] !== 0) out[k] = p[k];
  return out as CompiledDetectionPolicy;
}
