/**
 * pino JSON logging.
 *
 * Field conventions (use these names so logs from every process can be joined):
 * - `service` — the process kind (`system-controller`, `router`, `aggregator`…); set by {@link createLogger}.
 * - `copy` — a copy id (string), e.g. `aggregator-1`.
 * - `app` — an application name (string).
 * - `rs` — a resource set number (integer).
 * - `epoch` — the epoch a decision or write was made at (integer).
 * - `err` — an Error (pino serialises message, type and stack).
 * - `trace_id` / `span_id` — added automatically when a span is active (see telemetry.ts),
 *   so a log line can be found from a Jaeger trace and back.
 *
 * Bind the stable ones once with `logger.child({ copy, app })` instead of repeating them.
 */
import { trace } from '@opentelemetry/api';
import pino from 'pino';

/** The logger type every Understudy module takes. */
export type Logger = pino.Logger;

/** Log levels accepted by {@link createLogger} (and `LOG_LEVEL`). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Process kind, logged as `service` on every line. */
  readonly service: string;
  /**
   * Minimum level.
   * @default process.env.LOG_LEVEL, else 'info'
   */
  readonly level?: string;
  /** Extra fields on every line (e.g. `{ copy: 'aggregator-1' }`). */
  readonly base?: Record<string, unknown>;
  /**
   * Where lines go (tests pass a stream to read them back).
   * @default stdout
   */
  readonly destination?: pino.DestinationStream;
}

function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** Adds the active span's ids so logs and traces can be correlated. */
function traceFields(): Record<string, string> {
  const ctx = trace.getActiveSpan()?.spanContext();
  return ctx && trace.isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
}

/** Create the JSON logger of a process. Throws on an unknown level (from options or `LOG_LEVEL`). */
export function createLogger(options: LoggerOptions): Logger {
  if (!options.service) throw new TypeError('createLogger: service must be a non-empty string');
  const fromEnv = process.env.LOG_LEVEL;
  const level = (options.level ?? (fromEnv === undefined || fromEnv === '' ? 'info' : fromEnv)).toLowerCase();
  if (!isLogLevel(level)) {
    const source = options.level === undefined ? 'LOG_LEVEL' : 'level';
    throw new TypeError(`${source}: expected one of ${LOG_LEVELS.join(', ')}, got '${level}'`);
  }
  const pinoOptions: pino.LoggerOptions = {
    level,
    base: { service: options.service, pid: process.pid, ...options.base },
    // ISO time is readable in `docker logs` and still sorts; epoch-ms saves little.
    timestamp: pino.stdTimeFunctions.isoTime,
    // Level names instead of numbers: logs are read by people and by Loki/jq alike.
    formatters: { level: (label) => ({ level: label }) },
    mixin: traceFields,
  };
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

/** A logger that drops everything (for tests and libraries called without a logger). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
