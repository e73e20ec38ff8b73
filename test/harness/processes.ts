/**
 * Starts real Understudy processes (controller replicas, example copies) on 127.0.0.1 for
 * end-to-end tests, and kills them for real (SIGKILL, SIGSTOP).
 */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { startProcess as startAny, type Proc, type StartOptions } from '@understudy/runtime';

export { freePort, type Proc } from '@understudy/runtime';

/** Repository root. */
export const ROOT = path.resolve(__dirname, '..', '..');

/**
 * The file to run for a TypeScript entry point: the entry itself (under tsx), or with
 * `UNDERSTUDY_RUN_BUILT=1` its bundle as `scripts/build.mjs` recorded it in dist/entries.json
 * (what a deployment runs; `npm run bench` builds and sets it).
 */
export function entryScript(script: string): string {
  if (process.env.UNDERSTUDY_RUN_BUILT !== '1') return script;
  const manifest = path.join(ROOT, 'dist', 'entries.json');
  const built = existsSync(manifest) ? (JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, string>)[path.normalize(script)] : undefined;
  if (!built || !existsSync(path.join(ROOT, built))) throw new Error(`UNDERSTUDY_RUN_BUILT=1: no bundle of ${script} in dist/; run \`node scripts/build.mjs --all\``);
  return built;
}

/** Start an entry point (relative to the repo root, see {@link entryScript}); logs at warn unless TEST_LOG_LEVEL. */
export function startProcess(o: Omit<StartOptions, 'cwd'>): Promise<Proc> {
  return startAny({ ...o, script: entryScript(o.script), cwd: ROOT, env: { LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn', ...o.env } });
}

/** Options for a controller replica process. */
export interface ControllerProcOptions {
  readonly id: string;
  readonly port: number;
  readonly redisUrl?: string;
  readonly dataDir?: string;
  readonly leaseTtlMs?: number;
  readonly passiveTimeoutMs?: number;
  /** Extra environment (e.g. `UNDERSTUDY_PAUSE_TIMEOUT_MS`). */
  readonly env?: Record<string, string>;
  /** Every output line (e.g. to keep its JSON log). */
  readonly onLine?: (line: string) => void;
}

/** Start `services/system-controller/src/main.ts`. */
export function startControllerProc(o: ControllerProcOptions): Promise<Proc> {
  return startProcess({
    name: `controller ${o.id}`,
    script: 'services/system-controller/src/main.ts',
    args: [
      '--id', o.id,
      '--listen', `127.0.0.1:${o.port}`,
      ...(o.redisUrl ? ['--redis-url', o.redisUrl] : []),
      ...(o.dataDir ? ['--data-dir', o.dataDir] : []),
      '--lease-ttl-ms', String(o.leaseTtlMs ?? 1500),
      '--passive-timeout-ms', String(o.passiveTimeoutMs ?? 1500),
    ],
    env: { ...(o.redisUrl ? {} : { REDIS_URL: '' }), ...o.env },
    readyMsg: 'controller listening',
    ...(o.onLine ? { onLine: o.onLine } : {}),
  });
}

/** Start one counter copy process. */
export function startCounterCopy(o: {
  copyId: string;
  controllers: readonly string[];
  host?: string;
  heartbeatIntervalMs?: number;
  faultManagers?: readonly string[];
  env?: Record<string, string>;
  /** `--checkpoint-interval-ms` (0 / unset: the copy's default, off). */
  checkpointIntervalMs?: number;
  /** `--checkpoint-before-ack`. */
  checkpointBeforeAck?: boolean;
  /** `--checkpoint-redis-url`: the copy writes checkpoints to this Redis directly. */
  checkpointRedisUrl?: string;
  /** `--load-managers`: stream load reports to these load managers. */
  loadManagers?: readonly string[];
  /** `--load-report-interval-ms`. */
  loadReportIntervalMs?: number;
}): Promise<Proc> {
  return startProcess({
    name: `copy ${o.copyId}`,
    script: 'examples/counter/src/copy.ts',
    args: [
      '--copy-id', o.copyId,
      '--controllers', o.controllers.join(','),
      '--host', o.host ?? `host-${o.copyId}`,
      '--heartbeat-interval-ms', String(o.heartbeatIntervalMs ?? 200),
      ...(o.faultManagers && o.faultManagers.length > 0 ? ['--fault-managers', o.faultManagers.join(',')] : []),
      ...(o.checkpointIntervalMs ? ['--checkpoint-interval-ms', String(o.checkpointIntervalMs)] : []),
      ...(o.checkpointBeforeAck ? ['--checkpoint-before-ack'] : []),
      ...(o.checkpointRedisUrl ? ['--checkpoint-redis-url', o.checkpointRedisUrl] : []),
      ...(o.loadManagers && o.loadManagers.length > 0 ? ['--load-managers', o.loadManagers.join(',')] : []),
      ...(o.loadReportIntervalMs ? ['--load-report-interval-ms', String(o.loadReportIntervalMs)] : []),
    ],
    ...(o.env ? { env: o.env } : {}),
    readyMsg: 'copy listening',
  });
}

/** Options for a fault manager process. */
export interface FaultManagerProcOptions {
  readonly id: string;
  /** 0 = any free port (read it back from the Proc's address). */
  readonly port?: number;
  readonly controllers: readonly string[];
  readonly policyRefreshMs?: number;
  readonly hostFaultWindowMs?: number;
  readonly sweepIntervalMs?: number;
  /** LOG_LEVEL of the process (default: TEST_LOG_LEVEL or warn). */
  readonly logLevel?: string;
  /** Every output line (e.g. to read its JSON log). */
  readonly onLine?: (line: string) => void;
}

/** Start `services/fault-manager/src/main.ts`. */
export function startFaultManagerProc(o: FaultManagerProcOptions): Promise<Proc> {
  return startProcess({
    name: `fault manager ${o.id}`,
    script: 'services/fault-manager/src/main.ts',
    args: [
      '--id', o.id,
      '--listen', `127.0.0.1:${o.port ?? 0}`,
      '--controllers', o.controllers.join(','),
      '--policy-refresh-ms', String(o.policyRefreshMs ?? 500),
      '--host-fault-window-ms', String(o.hostFaultWindowMs ?? 1000),
      '--sweep-interval-ms', String(o.sweepIntervalMs ?? 10),
    ],
    env: o.logLevel ? { LOG_LEVEL: o.logLevel } : {},
    onLine: o.onLine,
    readyMsg: 'fault manager listening',
  });
}

/** Options for a load manager process. */
export interface LoadManagerProcOptions {
  readonly id: string;
  /** 0 = any free port (read it back from the Proc's address). */
  readonly port?: number;
  readonly controllers: readonly string[];
  /** `--dry-run`: plan only. */
  readonly dryRun?: boolean;
  /** Extra flags (e.g. `['--band-fraction', '0.5']`). */
  readonly args?: readonly string[];
  /** LOG_LEVEL of the process (default: TEST_LOG_LEVEL or warn). */
  readonly logLevel?: string;
  /** Every output line (e.g. to read its JSON log). */
  readonly onLine?: (line: string) => void;
}

/** Start `services/load-manager/src/main.ts`. */
export function startLoadManagerProc(o: LoadManagerProcOptions): Promise<Proc> {
  return startProcess({
    name: `load manager ${o.id}`,
    script: 'services/load-manager/src/main.ts',
    args: [
      '--id', o.id,
      '--listen', `127.0.0.1:${o.port ?? 0}`,
      '--controllers', o.controllers.join(','),
      ...(o.dryRun ? ['--dry-run'] : []),
      ...(o.args ?? []),
    ],
    env: o.logLevel ? { LOG_LEVEL: o.logLevel } : {},
    onLine: o.onLine,
    readyMsg: 'load manager listening',
  });
}

/** Options for a router process. */
export interface RouterProcOptions {
  readonly id: string;
  /** 0 = any free port (read it back from the Proc's address). */
  readonly port?: number;
  readonly controllers: readonly string[];
  readonly faultManagers?: readonly string[];
  readonly maxHeldPerRs?: number;
  readonly maxHeldTotal?: number;
  readonly holdDeadlineMs?: number;
  readonly maxPayloadBytes?: number;
  readonly maxInflightPerRs?: number;
  readonly attemptTimeoutMs?: number;
  /** LOG_LEVEL of the process (default: TEST_LOG_LEVEL or warn). */
  readonly logLevel?: string;
  /** Every output line (e.g. to read its JSON log). */
  readonly onLine?: (line: string) => void;
  readonly env?: Record<string, string>;
}

/** Start `services/router/src/main.ts`. */
export function startRouterProc(o: RouterProcOptions): Promise<Proc> {
  const opt = (flag: string, v: number | undefined): string[] => (v === undefined ? [] : [`--${flag}`, String(v)]);
  return startProcess({
    name: `router ${o.id}`,
    script: 'services/router/src/main.ts',
    args: [
      '--id', o.id,
      '--listen', `127.0.0.1:${o.port ?? 0}`,
      '--controllers', o.controllers.join(','),
      ...(o.faultManagers && o.faultManagers.length > 0 ? ['--fault-managers', o.faultManagers.join(',')] : []),
      ...opt('max-held-per-rs', o.maxHeldPerRs),
      ...opt('max-held-total', o.maxHeldTotal),
      ...opt('hold-deadline-ms', o.holdDeadlineMs),
      ...opt('max-payload-bytes', o.maxPayloadBytes),
      ...opt('max-inflight-per-rs', o.maxInflightPerRs),
      ...opt('attempt-timeout-ms', o.attemptTimeoutMs),
    ],
    env: { ...(o.logLevel ? { LOG_LEVEL: o.logLevel } : {}), ...o.env },
    onLine: o.onLine,
    readyMsg: 'router listening',
  });
}

/** Options for an ALDM process. */
export interface AldmProcOptions {
  readonly id: string;
  /** Controllers (direct delivery); used when `routers` is empty. */
  readonly controllers?: readonly string[];
  /** Routers to forward through. */
  readonly routers?: readonly string[];
  /** `--max-in-flight`. */
  readonly maxInFlight?: number;
  /** `--max-payload-bytes`. */
  readonly maxPayloadBytes?: number;
  /** `--deadline-ms`. */
  readonly deadlineMs?: number;
  /** `--max-held-per-rs` (direct mode). */
  readonly maxHeldPerRs?: number;
  /** LOG_LEVEL of the process (default: TEST_LOG_LEVEL or warn). */
  readonly logLevel?: string;
}

/** A running ALDM process: `address` is its gRPC host:port, `httpAddress` its HTTP one. */
export interface AldmProc extends Proc {
  readonly httpAddress: string;
}

/** Start `services/aldm/src/main.ts` on free ports (gRPC and HTTP). */
export async function startAldmProc(o: AldmProcOptions): Promise<AldmProc> {
  let httpAddress = '';
  const proc = await startProcess({
    name: `aldm ${o.id}`,
    script: 'services/aldm/src/main.ts',
    args: [
      '--id', o.id,
      '--listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0',
      ...(o.controllers && o.controllers.length > 0 ? ['--controllers', o.controllers.join(',')] : []),
      ...(o.routers && o.routers.length > 0 ? ['--routers', o.routers.join(',')] : []),
      ...(o.maxInFlight !== undefined ? ['--max-in-flight', String(o.maxInFlight)] : []),
      ...(o.maxPayloadBytes !== undefined ? ['--max-payload-bytes', String(o.maxPayloadBytes)] : []),
      ...(o.deadlineMs !== undefined ? ['--deadline-ms', String(o.deadlineMs)] : []),
      ...(o.maxHeldPerRs !== undefined ? ['--max-held-per-rs', String(o.maxHeldPerRs)] : []),
    ],
    env: o.logLevel ? { LOG_LEVEL: o.logLevel } : {},
    onLine: (line) => {
      if (!line.startsWith('{') || !line.includes('"aldm listening"')) return;
      try {
        httpAddress = (JSON.parse(line) as { httpAddress?: string }).httpAddress ?? '';
      } catch {
        // not the ready line
      }
    },
    readyMsg: 'aldm listening',
  });
  if (!httpAddress) throw new Error(`aldm ${o.id}: ready line without httpAddress:\n${proc.output()}`);
  return Object.assign(proc, { httpAddress });
}
