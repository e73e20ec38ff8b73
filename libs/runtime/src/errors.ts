/**
 * Typed errors, grouped by what a caller should do about them (retry or not), and the ONE
 * place where they are mapped to and from gRPC statuses.
 *
 * Rules:
 * - Services throw these classes; `unaryHandler` (grpc.ts) turns them into statuses with
 *   {@link toServiceError}, and `unaryCall` turns statuses back into these classes with
 *   {@link fromServiceError}, so a `NotFoundError` thrown in one process is a
 *   `NotFoundError` in the caller.
 * - Anything that is not an {@link UnderstudyError} becomes INTERNAL with a generic message:
 *   internal details (messages, stacks) stay in the server's log, never on the wire.
 * - Error metadata keys must start with `understudy-` (only those are read back on the
 *   client side; transport headers are not errors' business).
 */
import { Metadata, status } from '@grpc/grpc-js';

/** Metadata key carrying a machine-readable reason for a FAILED_PRECONDITION subclass. */
export const REASON_METADATA_KEY = 'understudy-reason';
/** Metadata key a non-leader replica uses to point the caller at the leader (`host:port`). */
export const LEADER_ADDRESS_METADATA_KEY = 'understudy-leader-address';
/** Only metadata keys with this prefix travel with an error (both directions). */
export const ERROR_METADATA_PREFIX = 'understudy-';

/** Reasons carried in {@link REASON_METADATA_KEY}; they let subclasses survive the wire. */
export const ErrorReason = {
  NOT_ACTIVE: 'NOT_ACTIVE',
  FENCED: 'FENCED',
  STALE_EPOCH: 'STALE_EPOCH',
  STORE_UNAVAILABLE: 'STORE_UNAVAILABLE',
} as const;

/** Construction options shared by every {@link UnderstudyError}. */
export interface UnderstudyErrorOptions {
  /** Extra metadata sent with the status (keys must start with `understudy-`). */
  readonly metadata?: Record<string, string>;
  /** The underlying error, kept for logs (never sent on the wire). */
  readonly cause?: unknown;
}

function checkMetadata(metadata: Record<string, string>): Record<string, string> {
  for (const [key, value] of Object.entries(metadata)) {
    // Fail at the throw site: a bad key would otherwise make grpc-js throw while sending
    // the status, far from the code that built it.
    if (!key.startsWith(ERROR_METADATA_PREFIX) || key !== key.toLowerCase() || key.endsWith('-bin')) {
      throw new TypeError(`error metadata key '${key}' must be lower-case, start with '${ERROR_METADATA_PREFIX}' and not end with '-bin'`);
    }
    if (typeof value !== 'string') throw new TypeError(`error metadata value for '${key}' must be a string`);
  }
  return Object.freeze({ ...metadata });
}

/**
 * Base of every error Understudy code throws on purpose. `retryable` says whether the
 * same request may succeed later unchanged; `code` is the gRPC status it travels as.
 */
export abstract class UnderstudyError extends Error {
  /** True when retrying the same request later may succeed. */
  abstract readonly retryable: boolean;
  /** The gRPC status this error is sent as. */
  abstract readonly code: status;
  /** Metadata sent with the status (e.g. `understudy-reason`, `understudy-leader-address`). */
  readonly metadata: Record<string, string>;

  constructor(message: string, options: UnderstudyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.metadata = checkMetadata(options.metadata ?? {});
  }
}

/** Errors that will fail again if retried unchanged: the caller must change something. */
export abstract class TerminalError extends UnderstudyError {
  override readonly retryable = false;
}

/** Errors of a transient condition: the same request may succeed later. */
export abstract class RetryableError extends UnderstudyError {
  override readonly retryable = true;
}

// ---------------------------------------------------------------------------- terminal

/** The request is malformed or names something impossible (INVALID_ARGUMENT). */
export class InvalidArgumentError extends TerminalError {
  override readonly code = status.INVALID_ARGUMENT;
}

/** The named entity (copy, application, RS, key) does not exist (NOT_FOUND). */
export class NotFoundError extends TerminalError {
  override readonly code = status.NOT_FOUND;
}

/** The system is not in a state where the request can run (FAILED_PRECONDITION). */
export class FailedPreconditionError extends TerminalError {
  override readonly code = status.FAILED_PRECONDITION;
}

/** A quota or bounded buffer is full (RESOURCE_EXHAUSTED). */
export class ResourceExhaustedError extends TerminalError {
  override readonly code = status.RESOURCE_EXHAUSTED;
}

/** The caller's role does not allow the request (PERMISSION_DENIED). */
export class PermissionDeniedError extends TerminalError {
  override readonly code = status.PERMISSION_DENIED;
}

/** A write fenced by a lease was refused: the caller's lease token is no longer current. */
export class FencedError extends FailedPreconditionError {
  constructor(message: string, options: UnderstudyErrorOptions = {}) {
    super(message, withReason(options, ErrorReason.FENCED));
  }
}

/** A write fenced by epoch was refused: the caller's epoch is below the stored one. */
export class StaleEpochError extends FailedPreconditionError {
  constructor(message: string, options: UnderstudyErrorOptions = {}) {
    super(message, withReason(options, ErrorReason.STALE_EPOCH));
  }
}

/**
 * An ADSM copy received work for an RS it is not ACTIVE for. The message always starts
 * with `NOT_ACTIVE:` so that even a client that only reads status details can tell.
 */
export class NotActiveError extends FailedPreconditionError {
  /** The message prefix every NotActiveError carries. */
  static readonly PREFIX = 'NOT_ACTIVE:';

  constructor(message: string, options: UnderstudyErrorOptions = {}) {
    super(
      message.startsWith(NotActiveError.PREFIX) ? message : `${NotActiveError.PREFIX} ${message}`,
      withReason(options, ErrorReason.NOT_ACTIVE),
    );
  }
}

// --------------------------------------------------------------------------- retryable

/**
 * The service cannot take the request now (UNAVAILABLE): not the leader, starting,
 * shutting down, unreachable. A non-leader passes `{ 'understudy-leader-address': 'host:port' }`.
 */
export class UnavailableError extends RetryableError {
  override readonly code = status.UNAVAILABLE;

  constructor(message: string, metadata?: Record<string, string>, options: Omit<UnderstudyErrorOptions, 'metadata'> = {}) {
    super(message, { ...options, metadata });
  }
}

/** The deadline passed before the work finished (DEADLINE_EXCEEDED). It may still have happened. */
export class DeadlineExceededError extends RetryableError {
  override readonly code = status.DEADLINE_EXCEEDED;
}

/** A concurrency conflict (ABORTED): re-read and retry. */
export class AbortedError extends RetryableError {
  override readonly code = status.ABORTED;
}

/**
 * The store (Redis or the embedded files) cannot be reached or did not answer in time.
 * For writes the outcome is unknown: the write may or may not have been applied.
 */
export class StoreUnavailableError extends UnavailableError {
  constructor(message: string, options: Omit<UnderstudyErrorOptions, 'metadata'> = {}) {
    super(message, { [REASON_METADATA_KEY]: ErrorReason.STORE_UNAVAILABLE }, options);
  }
}

function withReason(options: UnderstudyErrorOptions, reason: string): UnderstudyErrorOptions {
  return { ...options, metadata: { ...options.metadata, [REASON_METADATA_KEY]: reason } };
}

// ----------------------------------------------------------------------------- helpers

/** Turn anything thrown into an Error (non-Errors are wrapped, the original kept as `cause`). */
export function ensureError(e: unknown): Error {
  if (e instanceof Error) return e;
  let text: string;
  try {
    text = typeof e === 'string' ? e : JSON.stringify(e) ?? String(e);
  } catch {
    text = String(e);
  }
  return new Error(`non-error thrown: ${text}`, { cause: e });
}

/**
 * What a server sends for an error: the status code, its details and trailing metadata.
 * It is also an Error (message = details), so it can go straight to a unary callback or
 * `call.emit('error', …)` on a stream.
 */
export interface ServiceErrorParts extends Error {
  readonly code: status;
  readonly details: string;
  readonly metadata: Metadata;
}

/** Message sent for every error that is not an UnderstudyError (the real one is only logged). */
export const INTERNAL_ERROR_DETAILS = 'internal error';

/**
 * Map any thrown value to the status a server sends. Typed errors keep their code,
 * message and metadata; everything else becomes INTERNAL with a generic message, so no
 * stack, path or internal message leaks to the caller.
 */
export function toServiceError(e: unknown): ServiceErrorParts {
  // A raw grpc ServiceError re-thrown by a handler (from a client call that did not go
  // through unaryCall) is normalised first, so a typed code (UNAVAILABLE, NOT_FOUND…)
  // survives; untyped ones (INTERNAL, UNIMPLEMENTED…) become INTERNAL like any bug.
  const err = isServiceErrorLike(e) ? fromServiceError(e) : e;
  const metadata = new Metadata();
  if (err instanceof UnderstudyError) {
    for (const [key, value] of Object.entries(err.metadata)) metadata.set(key, value);
    return serviceError(err.code, err.message, metadata);
  }
  return serviceError(status.INTERNAL, INTERNAL_ERROR_DETAILS, metadata);
}

function serviceError(code: status, details: string, metadata: Metadata): ServiceErrorParts {
  // A fresh Error: its stack points here, never at the original throw site.
  return Object.assign(new Error(details), { code, details, metadata });
}

/** Shape of a grpc-js client-side ServiceError (kept structural so tests can build one). */
interface ServiceErrorLike {
  code: number;
  details?: string;
  message?: string;
  metadata?: Metadata;
}

function isServiceErrorLike(e: unknown): e is ServiceErrorLike {
  if (typeof e !== 'object' || e === null || e instanceof UnderstudyError) return false;
  const o = e as Partial<ServiceErrorLike>;
  return typeof o.code === 'number' && o.code in status && (o.metadata === undefined || o.metadata instanceof Metadata);
}

function errorMetadata(md: Metadata | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!md) return out;
  for (const [key, value] of Object.entries(md.getMap())) {
    if (key.startsWith(ERROR_METADATA_PREFIX) && !key.endsWith('-bin') && typeof value === 'string') out[key] = value;
  }
  return out;
}

/**
 * Client side: map a grpc ServiceError back to the typed class for its code (and reason),
 * keeping its details as the message and its `understudy-*` metadata. Statuses Understudy
 * does not type (INTERNAL, UNIMPLEMENTED, CANCELLED, …) come back as the original error;
 * non-grpc values come back through {@link ensureError}.
 */
export function fromServiceError(e: unknown): UnderstudyError | Error {
  if (e instanceof UnderstudyError) return e;
  if (!isServiceErrorLike(e)) return ensureError(e);
  const metadata = errorMetadata(e.metadata);
  const message = e.details ?? e.message ?? '';
  const options = { metadata, cause: e };
  switch (e.code) {
    case status.INVALID_ARGUMENT:
      return new InvalidArgumentError(message, options);
    case status.NOT_FOUND:
      return new NotFoundError(message, options);
    case status.FAILED_PRECONDITION:
      switch (metadata[REASON_METADATA_KEY]) {
        case ErrorReason.NOT_ACTIVE:
          return new NotActiveError(message, options);
        case ErrorReason.FENCED:
          return new FencedError(message, options);
        case ErrorReason.STALE_EPOCH:
          return new StaleEpochError(message, options);
        default:
          // Also recognise a NOT_ACTIVE from a peer that sent only the message prefix.
          return message.startsWith(NotActiveError.PREFIX) ? new NotActiveError(message, options) : new FailedPreconditionError(message, options);
      }
    case status.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(message, options);
    case status.PERMISSION_DENIED:
      return new PermissionDeniedError(message, options);
    case status.UNAVAILABLE:
      return metadata[REASON_METADATA_KEY] === ErrorReason.STORE_UNAVAILABLE
        ? new StoreUnavailableError(message, { cause: e })
        : new UnavailableError(message, metadata, { cause: e });
    case status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(message, options);
    case status.ABORTED:
      return new AbortedError(message, options);
    default:
      return e instanceof Error ? e : ensureError(e);
  }
}

/** True when retrying the same request later may succeed (typed errors only; others: false). */
export function isRetryable(e: unknown): boolean {
  const err = fromServiceError(e);
  return err instanceof UnderstudyError && err.retryable;
}
