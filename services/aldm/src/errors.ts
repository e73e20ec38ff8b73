/**
 * ALDM's own error classes and the ONE mapping from errors to HTTP responses.
 *
 * gRPC statuses come from the shared mapping (`toServiceError` in @understudy/runtime); HTTP
 * reuses it — an error's gRPC code decides its HTTP status — and only refines it for the
 * HTTP-specific classes below (413, 415, 405). The JSON error body carries the gRPC status name
 * as `code`, so a client sees the same code on both transports.
 */
import { status } from '@grpc/grpc-js';
import { InvalidArgumentError, TerminalError, toServiceError, type UnderstudyErrorOptions } from '@understudy/runtime';

/** An event payload (or HTTP body) over the size limit: INVALID_ARGUMENT on gRPC, 413 on HTTP. */
export class PayloadTooLargeError extends InvalidArgumentError {}

/** An HTTP body with a content type other than JSON: INVALID_ARGUMENT on gRPC terms, 415 on HTTP. */
export class UnsupportedMediaTypeError extends InvalidArgumentError {}

/** An HTTP method the path does not serve (UNIMPLEMENTED; 405 on HTTP with an `Allow` header). */
export class MethodNotAllowedError extends TerminalError {
  override readonly code = status.UNIMPLEMENTED;
  /** Methods the path serves (the `Allow` header). */
  readonly allow: readonly string[];

  constructor(message: string, allow: readonly string[], options: UnderstudyErrorOptions = {}) {
    super(message, options);
    this.allow = allow;
  }
}

/** What an error becomes on HTTP. */
export interface HttpError {
  /** HTTP status code. */
  readonly status: number;
  /** The gRPC status name (`NOT_FOUND`, `RESOURCE_EXHAUSTED`, …): the JSON body's `error.code`. */
  readonly code: string;
  /** The error's message (a generic one for internal errors: details stay in the log). */
  readonly message: string;
  /** Extra response headers (`Allow`, `Retry-After`). */
  readonly headers: Readonly<Record<string, string>>;
}

/** HTTP status of each gRPC code ALDM can return; anything else is 500. */
const HTTP_OF_GRPC: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.FAILED_PRECONDITION]: 400,
  [status.OUT_OF_RANGE]: 400,
  [status.UNAUTHENTICATED]: 401,
  [status.PERMISSION_DENIED]: 403,
  [status.NOT_FOUND]: 404,
  [status.ALREADY_EXISTS]: 409,
  [status.ABORTED]: 409,
  [status.RESOURCE_EXHAUSTED]: 429,
  [status.CANCELLED]: 499,
  [status.UNIMPLEMENTED]: 501,
  [status.UNAVAILABLE]: 503,
  [status.DEADLINE_EXCEEDED]: 504,
};

/**
 * Map anything thrown to its HTTP response: the HTTP-specific classes first (413, 415, 405),
 * then the gRPC code of the shared mapping (`toServiceError`: typed errors keep their code and
 * message, anything else is INTERNAL with a generic message). Retryable conditions (429, 503)
 * carry `Retry-After: 1`.
 */
export function toHttpError(e: unknown): HttpError {
  const wire = toServiceError(e);
  const code = status[wire.code] ?? 'INTERNAL';
  let httpStatus = HTTP_OF_GRPC[wire.code] ?? 500;
  const headers: Record<string, string> = {};
  if (e instanceof PayloadTooLargeError) httpStatus = 413;
  else if (e instanceof UnsupportedMediaTypeError) httpStatus = 415;
  else if (e instanceof MethodNotAllowedError) {
    httpStatus = 405;
    headers['allow'] = e.allow.join(', ');
  }
  if (httpStatus === 429 || httpStatus === 503) headers['retry-after'] = '1';
  return { status: httpStatus, code, message: wire.details, headers };
}
