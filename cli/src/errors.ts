/**
 * What the CLI tells the shell and the operator when something fails: one exit code per
 * kind of failure, one human-readable line, and the gRPC status name for `--json`.
 */
import { status } from '@grpc/grpc-js';

/** Process exit codes of `understudy` (a fixed interface: scripts depend on them). */
export const ExitCode = {
  /** Done. */
  OK: 0,
  /** Anything not covered below (INTERNAL, UNKNOWN, a bug). */
  FAILURE: 1,
  /** Bad command line or bad topology file (INVALID_ARGUMENT). */
  USAGE: 2,
  /** The named application, copy or RS does not exist (NOT_FOUND). */
  NOT_FOUND: 3,
  /** The system is not in a state where the command can run (FAILED_PRECONDITION). */
  FAILED_PRECONDITION: 4,
  /** No controller reachable, no leader, or no answer in time (UNAVAILABLE / DEADLINE_EXCEEDED). */
  UNAVAILABLE: 5,
} as const;

/** One of the {@link ExitCode} values. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * A mistake on the command line or in an input file, found before anything is sent.
 * Exit code 2, reported as INVALID_ARGUMENT.
 */
export class UsageError extends Error {
  /** The gRPC status this is reported as (for `--json`). */
  readonly grpcCode = status.INVALID_ARGUMENT;

  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * No controller answered as leader within the time budget. `cause` is the last error
 * seen (UNAVAILABLE or DEADLINE_EXCEEDED); `tried` the addresses that were attempted.
 */
export class ControllerUnreachableError extends Error {
  /** UNAVAILABLE or DEADLINE_EXCEEDED. */
  readonly grpcCode: status;
  /** Every address attempted, in order of first attempt. */
  readonly tried: readonly string[];

  constructor(message: string, grpcCode: status, tried: readonly string[], cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ControllerUnreachableError';
    this.grpcCode = grpcCode;
    this.tried = tried;
  }
}

/** Map a gRPC status to the CLI exit code. */
export function exitCodeForStatus(code: status | undefined): ExitCodeValue {
  switch (code) {
    case status.OK:
      return ExitCode.OK;
    case status.INVALID_ARGUMENT:
      return ExitCode.USAGE;
    case status.NOT_FOUND:
      return ExitCode.NOT_FOUND;
    case status.FAILED_PRECONDITION:
      return ExitCode.FAILED_PRECONDITION;
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return ExitCode.UNAVAILABLE;
    default:
      return ExitCode.FAILURE;
  }
}

/** The gRPC status an error stands for, or undefined for errors that are not about gRPC. */
export function grpcStatusOf(e: unknown): status | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const o = e as { grpcCode?: unknown; code?: unknown };
  if (typeof o.grpcCode === 'number' && o.grpcCode in status) return o.grpcCode as status;
  // Typed runtime errors (UnderstudyError) and raw grpc ServiceErrors carry `code`.
  if (typeof o.code === 'number' && o.code in status) return o.code as status;
  return undefined;
}

/** Status name as printed (`NOT_FOUND`), or `UNKNOWN` when there is none. */
export function statusName(code: status | undefined): string {
  return code === undefined ? 'UNKNOWN' : (status[code] ?? 'UNKNOWN');
}

/** A failure ready to print: the message (without the `understudy:` prefix), status name and exit code. */
export interface DescribedError {
  /** gRPC status name (`FAILED_PRECONDITION`, `UNAVAILABLE`, … or `UNKNOWN`). */
  readonly code: string;
  /** Human-readable, one line for most errors (a bad topology file lists its problems). */
  readonly message: string;
  /** Process exit code. */
  readonly exitCode: ExitCodeValue;
}

/**
 * Describe a failure of `operation` (e.g. `switchover`) for people and scripts:
 * - refusals by the controller: `switchover refused: <controller's message> (FAILED_PRECONDITION)`
 * - local usage / file errors and unreachable controllers: their own message
 * - anything else: `<operation> failed: <message> (<CODE>)`
 */
export function describeError(e: unknown, operation: string): DescribedError {
  const code = grpcStatusOf(e);
  const name = statusName(code);
  const exitCode = exitCodeForStatus(code);
  const raw = e instanceof Error ? e.message : String(e);
  if (e instanceof UsageError || e instanceof ControllerUnreachableError) return { code: name, message: raw, exitCode };
  const detail = cleanGrpcMessage(raw, code);
  switch (code) {
    case status.INVALID_ARGUMENT:
    case status.NOT_FOUND:
    case status.FAILED_PRECONDITION:
    case status.PERMISSION_DENIED:
    case status.RESOURCE_EXHAUSTED:
      return { code: name, message: `${operation} refused: ${detail} (${name})`, exitCode };
    case undefined:
      return { code: name, message: `${operation} failed: ${detail}`, exitCode };
    default:
      return { code: name, message: `${operation} failed: ${detail} (${name})`, exitCode };
  }
}

/**
 * grpc-js prefixes client-side messages with `<code> <NAME>: `; typed errors carry only the
 * server's details. Strip the prefix so the message reads as the controller wrote it.
 */
export function cleanGrpcMessage(message: string, code: status | undefined): string {
  let m = message;
  if (code !== undefined) {
    const prefix = `${code} ${status[code]}: `;
    if (m.startsWith(prefix)) m = m.slice(prefix.length);
  }
  return m.trim() === '' ? '(no details)' : m;
}
