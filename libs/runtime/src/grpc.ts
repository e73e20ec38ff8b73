/**
 * gRPC server and client helpers shared by every service.
 *
 * - {@link startGrpcServer} binds a server with the standard `grpc.health.v1.Health` service.
 * - {@link unaryHandler} wraps a handler so that every error becomes a proper status
 *   (errors.ts is the one mapping) and nothing a client sends can crash the process (R-NF-4).
 * - {@link unaryCall} turns a ts-proto client method into a promise with a deadline and
 *   typed errors.
 */
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { ensureError, fromServiceError, InvalidArgumentError, toServiceError, UnderstudyError } from './errors';
import type { Logger } from './logging';
import { malformedReason } from './malformed';

/** One service to register: a ts-proto `FooServiceService` and its implementation. */
export interface GrpcServiceBinding {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

/** Options of {@link startGrpcServer}. */
export interface GrpcServerOptions {
  /** `host:port` to bind; port 0 picks a free port (read it back from {@link GrpcServer.port}). */
  readonly address: string;
  /** Services to serve. */
  readonly services: readonly GrpcServiceBinding[];
  /** Server logger (bind/shutdown events). */
  readonly logger: Logger;
  /**
   * Health service names to report besides the overall `''` (e.g. `understudy.v1.ControllerService`).
   * @default []
   */
  readonly healthServiceNames?: readonly string[];
  /**
   * Whether the health service starts as SERVING. Pass false for a process that must
   * catch up before taking traffic, then call `setServing(name, true)`.
   * @default true
   */
  readonly initiallyServing?: boolean;
  /**
   * Largest request accepted, in bytes (state-transfer snapshots can be large).
   * @default 16 MiB
   */
  readonly maxReceiveMessageBytes?: number;
  /**
   * Transport credentials.
   * @default insecure (plaintext); pass `grpc.ServerCredentials.createSsl(...)` for TLS/mTLS
   */
  readonly credentials?: grpc.ServerCredentials;
  /**
   * HTTP/2 receive window advertised to clients (per stream and per connection), in bytes.
   * With the HTTP/2 default of 64 KiB, a client sending a large request (a state snapshot)
   * stalls every 64 KiB until this process's event loop has read the data and sent a
   * WINDOW_UPDATE. Under load each such round trip costs milliseconds: a 450 KB unary call
   * between two processes whose event loops run 3 ms tasks took ~40 ms (p50) with 64 KiB and
   * ~7 ms with 4 MiB. Memory per stream stays bounded by `maxReceiveMessageBytes`.
   * @default 4 MiB
   */
  readonly flowControlWindowBytes?: number;
}

/** A running server. */
export interface GrpcServer {
  /** The bound port (the real one when `:0` was asked). */
  readonly port: number;
  /** `host:port` with the bound port, suitable for clients on the same network. */
  readonly address: string;
  /** Set the health status of `name` (`''` is the whole server). */
  setServing(name: string, serving: boolean): void;
  /**
   * Stop: report NOT_SERVING, let running calls finish for up to `graceMs`, then cancel
   * whatever is left. Idempotent.
   * @param graceMs @default 5000
   */
  shutdown(graceMs?: number): Promise<void>;
}

const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;
const DEFAULT_FLOW_CONTROL_WINDOW_BYTES = 4 * 1024 * 1024;
/** HTTP/2 caps a flow-control window at 2^31 - 1 bytes. */
const MAX_FLOW_CONTROL_WINDOW_BYTES = 2 ** 31 - 1;
const DEFAULT_SHUTDOWN_GRACE_MS = 5000;
const DEFAULT_DEADLINE_MS = 5000;

/** Split `host:port` (host may be `[v6]`). Throws a TypeError naming the bad part. */
function parseAddress(address: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(address);
  if (!m) throw new TypeError(`grpc address: expected host:port (e.g. 127.0.0.1:7000), got '${address}'`);
  const port = Number(m[2]);
  if (port > 65535) throw new TypeError(`grpc address: port must be 0..65535, got ${port} in '${address}'`);
  return { host: m[1]!, port };
}

/**
 * grpc-js reads `grpc-node.flow_control_window` on clients only (the server side is
 * grpc/grpc-node#3058, open): set the server's HTTP/2 settings and each session's connection
 * window through its internals. Call before `bindAsync` (the settings); the returned function
 * after it (the session hook on each bound HTTP/2 server). Without the internals (another
 * grpc-js version) it logs once and changes nothing: only speed depends on it.
 */
function widenServerWindow(server: grpc.Server, windowBytes: number, logger: Logger): (() => void) | undefined {
  if (windowBytes === 65_535) return undefined;
  const internals = server as unknown as {
    commonServerOptions?: { settings?: Record<string, unknown> };
    http2Servers?: Map<{ on(event: 'session', fn: (s: { setLocalWindowSize?(n: number): void }) => void): unknown }, unknown>;
  };
  if (typeof internals.commonServerOptions !== 'object' || !(internals.http2Servers instanceof Map)) {
    logger.warn({ windowBytes }, 'this grpc-js version hides its server settings; HTTP/2 receive window left at 64 KiB');
    return undefined;
  }
  internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: windowBytes };
  return () => {
    for (const h of internals.http2Servers!.keys()) {
      h.on('session', (session) => {
        try {
          session.setLocalWindowSize?.(windowBytes);
        } catch (e) {
          logger.debug({ err: ensureError(e).message }, 'could not widen an HTTP/2 connection window');
        }
      });
    }
  };
}

/** Start a gRPC server with the health service; resolves once it is bound. */
export async function startGrpcServer(opts: GrpcServerOptions): Promise<GrpcServer> {
  const { host } = parseAddress(opts.address);
  const maxReceiveMessageBytes = opts.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES;
  if (!Number.isSafeInteger(maxReceiveMessageBytes) || maxReceiveMessageBytes <= 0) {
    throw new TypeError(`maxReceiveMessageBytes: expected a positive integer, got ${maxReceiveMessageBytes}`);
  }
  const windowBytes = opts.flowControlWindowBytes ?? DEFAULT_FLOW_CONTROL_WINDOW_BYTES;
  if (!Number.isSafeInteger(windowBytes) || windowBytes < 65_535 || windowBytes > MAX_FLOW_CONTROL_WINDOW_BYTES) {
    throw new TypeError(`flowControlWindowBytes: expected an integer in 65535..${MAX_FLOW_CONTROL_WINDOW_BYTES}, got ${windowBytes}`);
  }
  const healthNames = ['', ...(opts.healthServiceNames ?? [])];
  const initial: ServingStatus = opts.initiallyServing === false ? 'NOT_SERVING' : 'SERVING';
  const health = new HealthImplementation(Object.fromEntries(healthNames.map((n) => [n, initial])));

  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxReceiveMessageBytes,
    // Clients send keepalive pings (clientChannelOptions) to notice a dead or stopped
    // peer; allow them even when no call is in flight (long-lived channels idle a lot).
    'grpc.keepalive_permit_without_calls': 1,
  });
  for (const s of opts.services) server.addService(s.definition, s.implementation);
  health.addToServer(server);
  const widen = widenServerWindow(server, windowBytes, opts.logger);

  const credentials = opts.credentials ?? grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.address, credentials, (err, boundPort) =>
      err ? reject(new Error(`could not bind gRPC server to ${opts.address}: ${err.message}`, { cause: err })) : resolve(boundPort),
    );
  });
  widen?.();
  const address = `${host}:${port}`;
  opts.logger.info({ address }, 'grpc server listening');

  let stopping: Promise<void> | null = null;
  return {
    port,
    address,
    setServing(name: string, serving: boolean): void {
      health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
    },
    shutdown(graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> {
      stopping ??= new Promise<void>((resolve) => {
        // Tell health checkers first, so load balancers and watchers move away.
        for (const n of healthNames) health.setStatus(n, 'NOT_SERVING');
        let done = false;
        const finish = (forced: boolean): void => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          opts.logger.info({ address, forced }, 'grpc server stopped');
          resolve();
        };
        const timer = setTimeout(() => {
          // Grace is over: cancel the calls still running (long streams never end on
          // their own), which also makes tryShutdown's callback fire.
          server.forceShutdown();
          finish(true);
        }, graceMs);
        server.tryShutdown(() => finish(false));
      });
      return stopping;
    },
  };
}

function isClientError(code: grpc.status): boolean {
  return code !== grpc.status.INTERNAL && code !== grpc.status.UNKNOWN && code !== grpc.status.DATA_LOSS;
}

/**
 * Wrap a unary handler: sync throws and rejections become gRPC statuses via
 * `toServiceError`; client errors are logged at warn with their code, internal ones at
 * error with the full error (which never goes on the wire). A handler can never crash the
 * process or leave a call without an answer. A request that failed to decode (service
 * registered through `withSafeDeserialize`) is answered INVALID_ARGUMENT without calling `fn`.
 */
export function unaryHandler<Req, Res>(
  method: string,
  logger: Logger,
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let result: Promise<Res>;
    try {
      const bad = malformedReason(call.request);
      if (bad !== undefined) throw new InvalidArgumentError(`malformed request: ${bad}`);
      result = Promise.resolve(fn(call.request, call));
    } catch (e) {
      result = Promise.reject(e);
    }
    result
      .then((res) => {
        // A handler that forgot to return would make the serializer throw inside grpc-js.
        if (res === undefined || res === null) throw new Error(`handler ${method} returned no response`);
        callback(null, res);
      })
      .catch((e: unknown) => {
        const wire = toServiceError(e);
        const { code, details } = wire;
        const err = ensureError(e);
        if (isClientError(code)) {
          logger.warn({ method, code: grpc.status[code], details, ...(err instanceof UnderstudyError ? {} : { err }) }, 'rpc failed');
        } else {
          logger.error({ method, code: grpc.status[code], err }, 'rpc failed with an internal error');
        }
        try {
          callback(wire);
        } catch (sendErr) {
          // Only reachable if the call is already torn down; nothing left to tell the client.
          logger.debug({ method, err: sendErr }, 'could not send rpc error');
        }
      });
  };
}

/** A ts-proto client method in its 4-argument form (use `client.method.bind(client)`). */
export type UnaryMethod<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

/** Options of {@link unaryCall}. */
export interface UnaryCallOptions {
  /**
   * Deadline from now, in milliseconds.
   * @default 5000
   */
  readonly deadlineMs?: number;
  /** Request metadata (ASCII keys and values). */
  readonly metadata?: Record<string, string>;
  /** Cancels the call (rejects with the CANCELLED ServiceError). */
  readonly signal?: AbortSignal;
}

/**
 * Call a unary method and get a promise. Failures reject with the typed error from
 * `fromServiceError` (e.g. UnavailableError with the leader address, NotActiveError).
 *
 * @example
 * const status = await unaryCall(client.getStatus.bind(client), {}, { deadlineMs: 2000 });
 */
export function unaryCall<Req, Res>(fn: UnaryMethod<Req, Res>, req: Req, opts: UnaryCallOptions = {}): Promise<Res> {
  const deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) {
    return Promise.reject(new RangeError(`unaryCall: deadlineMs must be a positive number, got ${deadlineMs}`));
  }
  return new Promise<Res>((resolve, reject) => {
    try {
      const metadata = new grpc.Metadata();
      for (const [key, value] of Object.entries(opts.metadata ?? {})) metadata.set(key, value);
      const call = fn(req, metadata, { deadline: new Date(Date.now() + deadlineMs) }, (err, res) => {
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromServiceError(err));
        else resolve(res);
      });
      const onAbort = (): void => call.cancel();
      if (opts.signal?.aborted) call.cancel();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
    } catch (e) {
      // e.g. a closed client or an invalid metadata key: grpc-js throws synchronously.
      reject(fromServiceError(e));
    }
  });
}

/** Options of {@link clientChannelOptions}. */
export interface ClientChannelTuning {
  /**
   * First reconnect delay after a connection failure, in ms. Small: on loopback a
   * restarted or promoted peer is usually back within milliseconds.
   * @default 50
   */
  readonly initialReconnectBackoffMs?: number;
  /**
   * Cap of the reconnect backoff, in ms. Keeps a channel to a failed-over address
   * retrying often enough to notice the new process within about a second.
   * @default 1000
   */
  readonly maxReconnectBackoffMs?: number;
  /**
   * Interval of keepalive pings, in ms: how soon a silent (hung, SIGSTOPped, partitioned)
   * peer is noticed on an idle or streaming channel, together with the timeout.
   * @default 5000
   */
  readonly keepaliveTimeMs?: number;
  /**
   * How long a ping may go unanswered before the connection is dropped, in ms.
   * @default 2000
   */
  readonly keepaliveTimeoutMs?: number;
  /**
   * Largest response accepted, in bytes.
   * @default 16 MiB
   */
  readonly maxReceiveMessageBytes?: number;
  /**
   * HTTP/2 receive window of the channel (per stream and per connection), in bytes: large
   * responses (a fetched state) do not stall every 64 KiB on a busy event loop. See
   * {@link GrpcServerOptions.flowControlWindowBytes}.
   * @default 4 MiB
   */
  readonly flowControlWindowBytes?: number;
}

/**
 * Channel options for Understudy clients, tuned for fast failover: quick reconnects with a
 * low cap, and keepalive pings so a dead peer breaks streams instead of leaving them silent.
 */
export function clientChannelOptions(tuning: ClientChannelTuning = {}): grpc.ChannelOptions {
  const t = {
    initialReconnectBackoffMs: tuning.initialReconnectBackoffMs ?? 50,
    maxReconnectBackoffMs: tuning.maxReconnectBackoffMs ?? 1000,
    keepaliveTimeMs: tuning.keepaliveTimeMs ?? 5000,
    keepaliveTimeoutMs: tuning.keepaliveTimeoutMs ?? 2000,
    maxReceiveMessageBytes: tuning.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    flowControlWindowBytes: tuning.flowControlWindowBytes ?? DEFAULT_FLOW_CONTROL_WINDOW_BYTES,
  };
  for (const [name, value] of Object.entries(t)) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`clientChannelOptions: ${name} must be a positive integer, got ${value}`);
  }
  if (t.flowControlWindowBytes < 65_535 || t.flowControlWindowBytes > MAX_FLOW_CONTROL_WINDOW_BYTES) {
    throw new TypeError(`clientChannelOptions: flowControlWindowBytes must be in 65535..${MAX_FLOW_CONTROL_WINDOW_BYTES}, got ${t.flowControlWindowBytes}`);
  }
  if (t.initialReconnectBackoffMs > t.maxReconnectBackoffMs) {
    throw new TypeError(`clientChannelOptions: initialReconnectBackoffMs (${t.initialReconnectBackoffMs}) must not exceed maxReconnectBackoffMs (${t.maxReconnectBackoffMs})`);
  }
  return {
    'grpc.initial_reconnect_backoff_ms': t.initialReconnectBackoffMs,
    'grpc.max_reconnect_backoff_ms': t.maxReconnectBackoffMs,
    'grpc.keepalive_time_ms': t.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': t.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_receive_message_length': t.maxReceiveMessageBytes,
    'grpc-node.flow_control_window': Math.min(t.flowControlWindowBytes, MAX_FLOW_CONTROL_WINDOW_BYTES),
  };
}

/** Plaintext channel credentials (the default until TLS is configured, R-NF-5). */
export function insecureCredentials(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}
