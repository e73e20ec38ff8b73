/**
 * ALDM over HTTP/JSON (node:http, no framework).
 *
 * - `POST /v1/apps/{app}/events` with `{"key": "...", "idempotencyKey"?: "...", "payload"?: <JSON>}`
 *   (`Content-Type: application/json`, or none) → 200
 *   `{"messageId", "rs", "reply", "duplicate", "epoch"}` once the active copy acknowledged.
 * - `GET /healthz` → 200 `{"status":"SERVING"}`, or 503 `NOT_SERVING` before the routing table
 *   is loaded.
 * - `GET /v1/stats` → the instance's counters ({@link AldmStats}).
 *
 * Errors are `{"error": {"code": <gRPC status name>, "message": "..."}}` with the HTTP status of
 * `toHttpError` (errors.ts): 400 malformed JSON / bad field, 404 unknown app or path, 405 wrong
 * method, 413 payload over `--max-payload-bytes`, 415 non-JSON content type, 429 in-flight bound
 * reached, 503 unavailable, 504 deadline.
 *
 * The in-flight slot is taken BEFORE the body is read, so bodies being received count against
 * the bound too: memory stays within `maxInFlight × (maxPayloadBytes + envelope)`.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidArgumentError, NotFoundError, ensureError, type Logger } from '@understudy/runtime';
import type { Aldm, IngestEvent } from './aldm';
import { MethodNotAllowedError, PayloadTooLargeError, UnsupportedMediaTypeError, toHttpError } from './errors';
import { ENVELOPE_BYTES, JsonPayload } from './payload';

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  /** host:port to listen on (port 0: any free port). */
  readonly address: string;
  readonly core: Aldm;
  readonly logger: Logger;
}

/** A running HTTP server. */
export interface HttpServer {
  /** host:port with the bound port. */
  readonly address: string;
  /**
   * Stop accepting connections, let running requests finish for up to `graceMs`, then close
   * whatever is left. Idempotent.
   */
  close(graceMs: number): Promise<void>;
}

const EVENTS_PATH = /^\/v1\/apps\/([^/]+)\/events$/;
/** Fields of an event body. */
const BODY_FIELDS = ['key', 'idempotencyKey', 'payload'] as const;

/** Split `host:port` (host may be `[v6]`). */
function parseAddress(address: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(address);
  if (!m || Number(m[2]) > 65535) throw new TypeError(`http address: expected host:port (e.g. 127.0.0.1:8080), got '${address}'`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** Start the HTTP/JSON server (see the module doc); resolves once it listens. */
export async function startHttpServer(opts: HttpServerOptions): Promise<HttpServer> {
  const { core, logger: log } = opts;
  const { host, port } = parseAddress(opts.address);
  const bodyLimit = core.maxPayloadBytes + ENVELOPE_BYTES;
  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => sendError(req, res, e));
  });
  // Bound what the server holds besides the in-flight events: idle sockets and slow headers.
  server.maxConnections = Math.max(1024, 2 * core.maxInFlight);
  server.headersTimeout = 10_000;
  server.requestTimeout = core.deadlineMs + 30_000;
  server.keepAliveTimeout = 5_000;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/healthz' || path === '/v1/stats') {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError(`${req.method} is not allowed on ${path}`, ['GET', 'HEAD']);
      const stats = core.stats();
      if (path === '/v1/stats') return sendJson(res, 200, stats);
      return sendJson(res, stats.serving ? 200 : 503, { status: stats.serving ? 'SERVING' : 'NOT_SERVING' });
    }
    const m = EVENTS_PATH.exec(path);
    if (!m) throw new NotFoundError(`no such path: ${req.method} ${path.slice(0, 200)} (events go to POST /v1/apps/{app}/events)`);
    if (req.method !== 'POST') throw new MethodNotAllowedError(`${req.method} is not allowed on ${path.slice(0, 200)}; use POST`, ['POST']);
    let app: string;
    try {
      app = decodeURIComponent(m[1]!);
    } catch {
      throw new InvalidArgumentError('the app in the path is not valid percent-encoding');
    }
    const type = req.headers['content-type'];
    if (type !== undefined && !/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i.test(type)) {
      throw new UnsupportedMediaTypeError(`content type ${JSON.stringify(type.slice(0, 100))} is not JSON; send application/json`);
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > bodyLimit) {
      throw new PayloadTooLargeError(`body of ${declared} bytes exceeds the limit of ${bodyLimit} bytes (payload limit ${core.maxPayloadBytes} + envelope)`);
    }
    const release = core.admit();
    try {
      const body = await readBody(req, bodyLimit);
      const event = eventFromBody(app, body);
      const o = await core.ingestAdmitted(event, Date.now() + core.deadlineMs);
      const reply = o.reply.value();
      sendJson(res, 200, { messageId: o.messageId, rs: o.rs, reply: reply === undefined ? null : reply, duplicate: o.duplicate, epoch: o.epoch });
    } finally {
      release();
    }
  }

  function sendError(req: http.IncomingMessage, res: http.ServerResponse, e: unknown): void {
    const h = toHttpError(e);
    if (h.status >= 500 && h.status !== 503 && h.status !== 504) log.error({ err: ensureError(e), path: req.url }, 'http request failed with an internal error');
    else log.debug({ status: h.status, code: h.code, message: h.message }, 'http request refused');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const [k, v] of Object.entries(h.headers)) res.setHeader(k, v);
    // A body we did not read is not drained: close the connection after the answer instead.
    if (!req.complete) res.setHeader('connection', 'close');
    sendJson(res, h.status, { error: { code: h.code, message: h.message } });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host.replace(/^\[(.*)\]$/, '$1'), () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log.error({ err: e }, 'http server error'));
  const bound = (server.address() as AddressInfo).port;
  const address = `${host}:${bound}`;
  log.info({ address }, 'http server listening');

  let closing: Promise<void> | undefined;
  return {
    address,
    close: (graceMs) =>
      (closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      })),
  };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Read the whole body, refusing (413) past `limit` bytes without buffering the rest. */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > limit) {
        cleanup();
        reject(new PayloadTooLargeError(`body exceeds the limit of ${limit} bytes (payload limit ${limit - ENVELOPE_BYTES} + envelope)`));
        return;
      }
      chunks.push(c);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(new InvalidArgumentError(`the request body could not be read: ${e.message}`));
    };
    const onAborted = (): void => {
      cleanup();
      reject(new InvalidArgumentError('the client aborted the request body'));
    };
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onClose = (): void => {
      if (!req.complete) onAborted();
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** Parse and check an event body (400 with the field for every problem). */
function eventFromBody(app: string, body: Buffer): IngestEvent {
  let data: unknown;
  try {
    data = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new InvalidArgumentError(`malformed JSON body: ${ensureError(e).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new InvalidArgumentError('the body must be a JSON object: {"key": "...", "idempotencyKey"?: "...", "payload"?: <any JSON>}');
  }
  const o = data as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(BODY_FIELDS as readonly string[]).includes(k)) throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 100))}; allowed: ${BODY_FIELDS.join(', ')}`);
  }
  if (o.key === undefined || o.key === null || o.key === '') throw new InvalidArgumentError('key is required (the routing key that selects the RS)');
  if (typeof o.key !== 'string') throw new InvalidArgumentError('key must be a string');
  let idempotencyKey = '';
  if (o.idempotencyKey !== undefined && o.idempotencyKey !== null) {
    if (typeof o.idempotencyKey !== 'string') throw new InvalidArgumentError('idempotencyKey must be a string');
    idempotencyKey = o.idempotencyKey;
  }
  return { app, key: o.key, idempotencyKey, payload: JsonPayload.fromValue(o.payload) };
}
