/**
 * Ordered, bounded forwarding of messages to the ACTIVE copy of their RS — the data path of the
 * Router (R-RT, DESIGN §6), in the library so that any process can route directly with the same
 * code (the route table is a {@link RoutingClient}'s).
 *
 * Per RS one lane, per copy address one long-lived `DeliverStream` ({@link DeliverLink}):
 *
 * - **Order.** A lane sends its messages in arrival order on the one stream to the RS's active
 *   copy; the copy queues the requests of one stream in stream order and its group commit runs
 *   them in queue order (libs/adsm/src/copy.ts), so the effects land in arrival order while up to
 *   `maxInflightPerRs` messages are in flight (a pipeline, not one round trip per message).
 * - **Failure.** When a message fails retryably (NOT_ACTIVE, UNAVAILABLE, the stream broke, no
 *   answer within `attemptTimeoutMs`) the lane stops sending, lets the rest of its window settle,
 *   puts every failed message back at the head of its queue in the original order and resends
 *   them with the same message id (the copy dedupes; a message committed before the failure is
 *   answered from the replicated dedupe table). Whatever the old active committed is a prefix of
 *   what it was sent, so a resend never lands before an earlier message.
 * - **Slow start.** After a route change or a failure the lane sends ONE message and opens its
 *   window only once that one was acknowledged at the new route: a copy that is not (yet) active
 *   answers the first message NOT_ACTIVE instead of accepting a later one ahead of it.
 * - **Route moves.** When the controller publishes a new active (or epoch) for an RS, messages in
 *   flight to the old one are abandoned at once (a hung active never answers; a deposed one
 *   cannot commit at a superseded epoch) and resent, in order, to the new one.
 * - **Holding.** While an RS has no reachable active copy its messages wait in the lane, bounded
 *   per RS (`maxHeldPerRs`), in total (`maxHeldTotal`, `maxHeldBytes`) and in time (each message's
 *   deadline). Admission past a bound is refused with RESOURCE_EXHAUSTED; a message whose deadline
 *   passes is answered DEADLINE_EXCEEDED (and forgotten, wherever it was). "Held" counts every
 *   accepted message not yet answered, waiting or in flight.
 * - **Unreachable copies.** A broken stream or an unanswered attempt is reported through
 *   `onUnreachable` (the router passes it on to a fault manager: R-DFM-5).
 *
 * A message answered with a terminal error (INVALID_ARGUMENT from the handler, RESOURCE_EXHAUSTED
 * from a full copy queue…) is not resent; later messages of its RS go on. That is the only way a
 * later message is acknowledged while an earlier one is not: the earlier one was refused.
 */
import { randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AdsmServiceService, type DeliverRequest, type DeliverResponse, type DeliverStreamResponse, type Route } from '@understudy/proto';
import {
  DeadlineExceededError,
  InvalidArgumentError,
  NotActiveError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  ensureError,
  fromServiceError,
  silentLogger,
} from '@understudy/runtime';
import type { RouteInfo, RoutingClient } from './client';
import { STREAM_BATCH_HEADER, takesBatches } from './stream-batch';

// ---------------------------------------------------------------------------------- DeliverLink

/**
 * Called once per request sent on a {@link DeliverLink}: with the response, or with the error
 * (typed, from `fromServiceError`); `broken` when the stream itself failed (the copy may be
 * unreachable) rather than the copy answering with an error.
 */
export type DeliverLinkHandler<T> = (tag: T, err: Error | null, res: DeliverResponse | undefined, broken: boolean) => void;

/** Options of {@link DeliverLink}. */
export interface DeliverLinkOptions {
  /** Keepalive ping period on an open connection, in ms. @default 5000 */
  readonly keepaliveTimeMs?: number;
  /** A ping unanswered this long breaks the connection, in ms. @default 2000 */
  readonly keepaliveTimeoutMs?: number;
  /** Largest response message accepted, in bytes. @default 16 MiB */
  readonly maxReceiveMessageBytes?: number;
}

const DELIVER_STREAM_PATH = '/understudy.v1.AdsmService/DeliverStream';
const decodeResponse = AdsmServiceService.deliverStream.responseDeserialize;
/** Encoded requests are packed into chunks of this size (one HTTP/2 write each). */
const WRITE_CHUNK_BYTES = 64 * 1024;

/**
 * One long-lived ADSM `DeliverStream` to one copy address: requests go out in call order, each
 * answered through the handler with its tag. Requests of one link reach the copy in the order
 * they were sent. The stream is reopened on the next send after it broke.
 *
 * Why not a grpc-js client call: grpc-js pays its whole per-message path (interceptors, retry
 * buffer, promises, one HTTP/2 DATA frame) for every message. This link speaks the same gRPC wire
 * protocol (length-prefixed protobuf messages on an HTTP/2 POST, status in trailers) straight on
 * `node:http2` and packs every request queued in one event-loop turn into one write. Once the
 * copy's response headers say it takes STREAM_BATCH (stream-batch.ts), those requests are the
 * items (`more`) of ONE carrier message, and the copy's answers of one turn come in one message;
 * before that (or with an older copy) each request is a message of its own. The copy's grpc-js
 * server sees an ordinary DeliverStream call. Plaintext only, like every Understudy channel today
 * (`insecureCredentials`); TLS would pass its options to `http2.connect`.
 */
export class DeliverLink<T> {
  private session: http2.ClientHttp2Session | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private readonly waiting = new Map<number, T>();
  private nextId = 1;
  private closed = false;
  /** Encoded frames not written yet; the last chunk is being filled. */
  private chunks: Buffer[] = [];
  private chunk: Buffer | undefined;
  private used = 0;
  private flushScheduled = false;
  /** The copy of the current stream takes several requests per message (STREAM_BATCH). */
  private batching = false;
  /** Offset in `chunk` of the open carrier frame's header (batching), or -1. */
  private frameStart = -1;
  /** Response bytes not parsed yet (a frame split across DATA frames), and their length. */
  private rest: Buffer[] = [];
  private restBytes = 0;
  /** Bytes the frame at the head of `rest` needs before it can be parsed. */
  private restNeed = 5;
  private pingTimer: NodeJS.Timeout | undefined;
  private readonly keepaliveTimeMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly maxReceiveMessageBytes: number;
  private readonly flushNow = (): void => this.flush();

  constructor(
    /** host:port of the copy. */
    readonly address: string,
    private readonly handler: DeliverLinkHandler<T>,
    opts: DeliverLinkOptions = {},
  ) {
    this.keepaliveTimeMs = opts.keepaliveTimeMs ?? 5000;
    this.keepaliveTimeoutMs = opts.keepaliveTimeoutMs ?? 2000;
    this.maxReceiveMessageBytes = opts.maxReceiveMessageBytes ?? 16 * 1024 * 1024;
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.waiting.size;
  }

  /** Send one request; returns its correlation id (for {@link forget}). */
  send(request: DeliverRequest, tag: T): number {
    const correlationId = this.nextId++;
    if (this.closed) {
      queueMicrotask(() => this.handler(tag, new UnavailableError(`DeliverStream to ${this.address} is closed`), undefined, false));
      return correlationId;
    }
    try {
      this.open();
    } catch (e) {
      // e.g. an address http2 cannot parse: as unreachable as a refused connection.
      const err = new UnavailableError(`cannot open a DeliverStream to ${this.address}: ${ensureError(e).message}`);
      queueMicrotask(() => this.handler(tag, err, undefined, true));
      return correlationId;
    }
    this.waiting.set(correlationId, tag);
    this.append(correlationId, request);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushNow);
    }
    return correlationId;
  }

  /** Drop the answer of a request (abandoned or expired); a late answer is ignored. */
  forget(correlationId: number): void {
    this.waiting.delete(correlationId);
  }

  /**
   * Drop the connection (e.g. the copy answers nothing): requests waiting are answered as
   * broken; the next send connects again.
   */
  reset(why: string): void {
    this.teardown(new UnavailableError(`DeliverStream to ${this.address} reset: ${why}`), true);
  }

  /** Close for good; requests still waiting are answered UNAVAILABLE. */
  close(): void {
    this.closed = true;
    this.teardown(new UnavailableError(`DeliverStream to ${this.address} closed`), false);
  }

  /**
   * Encode one DeliverStreamRequest as a gRPC frame (1 byte "not compressed", 4 bytes
   * big-endian length, the protobuf message) straight into the write chunk: no intermediate
   * writer or buffers per message (ts-proto's encoder was the router's largest cost).
   */
  private append(correlationId: number, r: DeliverRequest): void {
    const appLen = Buffer.byteLength(r.app);
    const idLen = Buffer.byteLength(r.messageId);
    const keyLen = Buffer.byteLength(r.key);
    const payloadLen = r.payload.length;
    const inner =
      (appLen > 0 ? 1 + varintSize(appLen) + appLen : 0) +
      (r.rs !== 0 ? 1 + varintSize(r.rs) : 0) +
      (idLen > 0 ? 1 + varintSize(idLen) + idLen : 0) +
      (payloadLen > 0 ? 1 + varintSize(payloadLen) + payloadLen : 0) +
      (keyLen > 0 ? 1 + varintSize(keyLen) + keyLen : 0) +
      (r.routeEpoch !== 0 ? 1 + varintSize(r.routeEpoch) : 0);
    const msgLen = (correlationId !== 0 ? 1 + varintSize(correlationId) : 0) + 1 + varintSize(inner) + inner;
    // Batching: the request is one item (field 3, `more`) of the open carrier frame.
    const item = this.batching ? 1 + varintSize(msgLen) + msgLen : 0;
    const need = this.batching ? (this.frameStart >= 0 ? item : 5 + item) : 5 + msgLen;
    if (!this.chunk || this.used + need > this.chunk.length) {
      this.closeFrame();
      if (this.chunk && this.used > 0) this.chunks.push(this.chunk.subarray(0, this.used));
      this.chunk = Buffer.allocUnsafe(Math.max(WRITE_CHUNK_BYTES, 5 + item, 5 + msgLen));
      this.used = 0;
    }
    const c = this.chunk;
    let o = this.used;
    if (!this.batching) {
      c[o] = 0;
      c.writeUInt32BE(msgLen, o + 1);
      o += 5;
    } else {
      if (this.frameStart < 0) {
        this.frameStart = o;
        c[o] = 0;
        o += 5; // length written by closeFrame
      }
      c[o++] = 0x1a;
      o = writeVarint(c, o, msgLen);
    }
    // DeliverStreamRequest: 1 correlation_id (varint), 2 request (message).
    if (correlationId !== 0) {
      c[o++] = 0x08;
      o = writeVarint(c, o, correlationId);
    }
    c[o++] = 0x12;
    o = writeVarint(c, o, inner);
    // DeliverRequest: 1 app, 2 rs, 3 message_id, 4 payload, 5 key, 6 route_epoch.
    if (appLen > 0) {
      c[o++] = 0x0a;
      o = writeVarint(c, o, appLen);
      o += c.write(r.app, o, 'utf8');
    }
    if (r.rs !== 0) {
      c[o++] = 0x10;
      o = writeVarint(c, o, r.rs);
    }
    if (idLen > 0) {
      c[o++] = 0x1a;
      o = writeVarint(c, o, idLen);
      o += c.write(r.messageId, o, 'utf8');
    }
    if (payloadLen > 0) {
      c[o++] = 0x22;
      o = writeVarint(c, o, payloadLen);
      c.set(r.payload, o);
      o += payloadLen;
    }
    if (keyLen > 0) {
      c[o++] = 0x2a;
      o = writeVarint(c, o, keyLen);
      o += c.write(r.key, o, 'utf8');
    }
    if (r.routeEpoch !== 0) {
      c[o++] = 0x30;
      o = writeVarint(c, o, r.routeEpoch);
    }
    this.used = o;
  }

  /** Write the length of the open carrier frame (everything from its header to `used`). */
  private closeFrame(): void {
    if (this.frameStart < 0 || !this.chunk) return;
    this.chunk.writeUInt32BE(this.used - this.frameStart - 5, this.frameStart + 1);
    this.frameStart = -1;
  }

  private flush(): void {
    this.flushScheduled = false;
    this.closeFrame();
    if (this.chunk && this.used > 0) {
      this.chunks.push(this.chunk.subarray(0, this.used));
      // The written bytes belong to the stream now; the next frames go to a fresh chunk.
      this.chunk = this.used + 1024 < this.chunk.length ? this.chunk.subarray(this.used) : undefined;
      this.used = 0;
    }
    const out = this.chunks;
    this.chunks = [];
    const s = this.stream;
    if (!s || s.destroyed) return;
    for (const b of out) s.write(b);
  }

  private open(): void {
    if (this.stream && !this.stream.destroyed) return;
    let session = this.session;
    if (!session || session.destroyed || session.closed) {
      session = http2.connect(`http://${this.address}`, { settings: { initialWindowSize: 1 << 20 } });
      this.session = session;
      const s0 = session;
      s0.on('error', (e: Error) => this.sessionLost(s0, `connection failed: ${e.message}`));
      s0.on('goaway', () => this.sessionLost(s0, 'the copy closed the connection (GOAWAY)'));
      s0.on('close', () => this.sessionLost(s0, 'connection closed'));
      this.startKeepalive(s0);
    }
    const stream = session.request(
      {
        ':method': 'POST',
        ':path': DELIVER_STREAM_PATH,
        ':authority': this.address,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-accept-encoding': 'identity',
        [STREAM_BATCH_HEADER]: '1',
      },
      { endStream: false },
    );
    this.stream = stream;
    this.batching = false;
    this.resetRest();
    let status: number | undefined;
    let statusMessage = '';
    const noteStatus = (h: http2.IncomingHttpHeaders): void => {
      const code = h['grpc-status'];
      if (code === undefined) return;
      status = Number(code);
      const m = h['grpc-message'];
      statusMessage = typeof m === 'string' ? safeDecodeURI(m) : '';
    };
    stream.on('response', (h: http2.IncomingHttpHeaders) => {
      const http = Number(h[':status']);
      if (http !== 200) status ??= grpc.status.UNAVAILABLE;
      // Requests still in the chunk were encoded one per frame: close nothing, just switch.
      if (this.stream === stream && takesBatches(h)) this.batching = true;
      noteStatus(h);
    });
    stream.on('trailers', (h: http2.IncomingHttpHeaders) => noteStatus(h));
    stream.on('data', (chunk: Buffer) => this.onData(stream, chunk));
    stream.on('error', (e: Error) => this.streamLost(stream, new UnavailableError(`DeliverStream to ${this.address} broke: ${e.message}`), true));
    stream.on('close', () => {
      // A stream the copy ended with a status (e.g. it is stopping) was answered, not lost.
      const err =
        status !== undefined && status !== grpc.status.OK
          ? new UnavailableError(`DeliverStream to ${this.address} ended: ${grpc.status[status] ?? status} ${statusMessage}`)
          : new UnavailableError(`DeliverStream to ${this.address} ended`);
      this.streamLost(stream, err, status === undefined);
    });
  }

  private onData(stream: http2.ClientHttp2Stream, chunk: Buffer): void {
    if (this.stream !== stream) return;
    let buf = chunk;
    if (this.restBytes > 0) {
      // Gather the pieces of a split frame and join them once, when it is complete.
      this.rest.push(chunk);
      this.restBytes += chunk.length;
      if (this.restBytes < this.restNeed) return;
      buf = Buffer.concat(this.rest, this.restBytes);
      this.resetRest();
    }
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readUInt32BE(off + 1);
      if (buf[off] !== 0 || len > this.maxReceiveMessageBytes) {
        this.streamLost(stream, new UnavailableError(`DeliverStream from ${this.address}: ${buf[off] !== 0 ? 'compressed' : `${len}-byte`} message not accepted`), true);
        return;
      }
      if (buf.length - off < 5 + len) {
        this.restNeed = 5 + len;
        break;
      }
      let m: DeliverStreamResponse;
      try {
        m = decodeResponse(buf.subarray(off + 5, off + 5 + len));
      } catch (e) {
        this.streamLost(stream, new UnavailableError(`DeliverStream from ${this.address}: undecodable response (${ensureError(e).message})`), true);
        return;
      }
      off += 5 + len;
      if (!this.answer(m)) return; // a handler reset the link
      for (const a of m.more) if (!this.answer(a)) return;
    }
    if (off < buf.length) {
      // Copied: the chunk's memory is not ours to keep.
      this.rest = [Buffer.from(buf.subarray(off))];
      this.restBytes = buf.length - off;
      if (this.restBytes < 5) this.restNeed = 5;
    }
  }

  /** Hand one answer to its request's handler; false when the handler reset the link. */
  private answer(m: DeliverStreamResponse): boolean {
    const stream = this.stream;
    const tag = this.waiting.get(m.correlationId);
    if (tag === undefined) return true; // forgotten (abandoned or expired)
    this.waiting.delete(m.correlationId);
    if (m.statusCode === grpc.status.OK && m.response) this.handler(tag, null, m.response, false);
    else this.handler(tag, streamStatusError(m), undefined, false);
    return this.stream === stream;
  }

  private resetRest(): void {
    this.rest = [];
    this.restBytes = 0;
    this.restNeed = 5;
  }

  private startKeepalive(session: http2.ClientHttp2Session): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.session !== session || session.destroyed) return;
      const timer = setTimeout(() => this.sessionLost(session, `keepalive ping unanswered for ${this.keepaliveTimeoutMs} ms`), this.keepaliveTimeoutMs);
      try {
        session.ping((err) => {
          clearTimeout(timer);
          if (err) this.sessionLost(session, `keepalive ping failed: ${err.message}`);
        });
      } catch (e) {
        clearTimeout(timer);
        this.sessionLost(session, `keepalive ping failed: ${ensureError(e).message}`);
      }
    }, this.keepaliveTimeMs);
    this.pingTimer.unref();
  }

  private sessionLost(session: http2.ClientHttp2Session, why: string): void {
    if (this.session !== session) return;
    this.teardown(new UnavailableError(`DeliverStream to ${this.address} broke: ${why}`), true);
  }

  private streamLost(stream: http2.ClientHttp2Stream, err: Error, broken: boolean): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.resetRest();
    this.chunks = [];
    this.used = 0;
    this.frameStart = -1;
    if (!stream.destroyed) stream.destroy();
    this.failAll(err, broken);
  }

  private teardown(err: Error, broken: boolean): void {
    const session = this.session;
    const stream = this.stream;
    this.session = undefined;
    this.stream = undefined;
    this.resetRest();
    this.chunks = [];
    this.used = 0;
    this.frameStart = -1;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    if (stream && !stream.destroyed) stream.destroy();
    if (session && !session.destroyed) session.destroy();
    this.failAll(err, broken);
  }

  private failAll(err: Error, broken: boolean): void {
    if (this.waiting.size === 0) return;
    const tags = [...this.waiting.values()];
    this.waiting.clear();
    for (const tag of tags) this.handler(tag, err, undefined, broken);
  }
}

/** Bytes of `v` (a non-negative safe integer) as a protobuf varint. */
function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Write `v` (a non-negative safe integer) as a protobuf varint at `o`; returns the next offset. */
function writeVarint(b: Buffer, o: number, v: number): number {
  while (v >= 128) {
    // `& 0x7f` is exact beyond 2^32 too: ToInt32 keeps the value modulo 2^32, a multiple of 128.
    b[o++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  b[o++] = v;
  return o;
}

/** The typed error a DeliverStream answer carries (same mapping as a unary Deliver's status). */
function streamStatusError(m: DeliverStreamResponse): Error {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(m.statusMetadata)) metadata.set(k, v);
  return fromServiceError({ code: m.statusCode || grpc.status.UNKNOWN, details: m.statusMessage, metadata });
}

function safeDecodeURI(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

// ------------------------------------------------------------------------------------ Forwarder

/** Options of {@link Forwarder}. */
export interface ForwarderOptions {
  /** Route table (the forwarder follows its changes; the caller owns and closes it). */
  readonly routing: RoutingClient;
  /** Messages held per RS (waiting or in flight) before admission is refused. @default 10000 */
  readonly maxHeldPerRs?: number;
  /** Messages held in all before admission is refused. @default 100000 */
  readonly maxHeldTotal?: number;
  /** Payload bytes held in all before admission is refused. @default 268435456 (256 MiB) */
  readonly maxHeldBytes?: number;
  /**
   * Messages of one RS sent and not yet answered. Keep it well below the copy's queue bound
   * (`maxQueuePerRs`, 10000): a copy refusing one message of a window for a full queue while it
   * accepts a later one would reorder them. @default 256
   */
  readonly maxInflightPerRs?: number;
  /**
   * A copy that answers none of an RS's messages for this long is treated as unreachable (its
   * connection is reset, the messages resent, `onUnreachable` called). Longer than the copy's
   * own deliver timeout (5000), so a live copy answers first. @default 6000
   */
  readonly attemptTimeoutMs?: number;
  /** Deadline of a message that brings none. @default 10000 */
  readonly defaultDeadlineMs?: number;
  /** A copy found unreachable (R-DFM-5); called at most once per copy address per second. */
  readonly onUnreachable?: (u: UnreachableCopy) => void;
  readonly logger?: Logger;
}

/** A copy the forwarder could not reach. */
export interface UnreachableCopy {
  readonly app: string;
  readonly rs: number;
  readonly copyId: string;
  readonly address: string;
  readonly epoch: number;
  readonly detail: string;
}

/** One message to forward. */
export interface ForwardRequest {
  readonly app: string;
  /** Key the application partitions by ('' when `rs` is given). */
  readonly key: string;
  /** The RS, when the sender addresses one directly; else the key's RS. */
  readonly rs?: number;
  /** Id the destination dedupes by; required (see {@link Forwarder.newMessageId}). */
  readonly messageId: string;
  readonly payload: Buffer;
  /** Overall deadline from now (0 / unset: `defaultDeadlineMs`). */
  readonly deadlineMs?: number;
}

/** Outcome of a forwarded message, once the active copy acknowledged it. */
export interface Forwarded {
  readonly reply: Buffer;
  readonly epoch: number;
  readonly duplicate: boolean;
  readonly copyId: string;
  readonly rs: number;
  readonly messageId: string;
}

/** Completion callback of {@link Forwarder.forward}: exactly one call per admitted message. */
export type ForwardCallback = (err: Error | null, res: DeliverResponse | undefined) => void;

/** Counters and holdings of a {@link Forwarder}. */
export interface ForwarderStats {
  /** Messages acknowledged by a copy. */
  readonly forwarded: number;
  /** Messages admitted and not answered yet (waiting or in flight). */
  readonly heldTotal: number;
  readonly heldBytes: number;
  /** Per RS holding messages. */
  readonly held: readonly { readonly app: string; readonly rs: number; readonly held: number; readonly inFlight: number }[];
  /** Admissions refused for a full hold. */
  readonly rejectedOverflow: number;
  /** Messages answered DEADLINE_EXCEEDED. */
  readonly expired: number;
  /** Messages sent again after a retryable failure. */
  readonly resent: number;
  /** Unreachable copies signalled through `onUnreachable`. */
  readonly unreachable: number;
}

/** Granularity of the deadline wheel. */
const WHEEL_MS = 10;
/** Backoff cap between resends to a route that keeps failing. */
const MAX_BACKOFF_MS = 500;
/** Same copy address signalled unreachable at most this often. */
const UNREACHABLE_EVERY_MS = 1000;
/** Links idle and out of the route table are closed after this many sweeps (~5 s). */
const PRUNE_EVERY_SWEEPS = 500;

type MsgState = 'queued' | 'inflight' | 'retry' | 'done';

interface Msg {
  readonly lane: Lane;
  readonly key: string;
  readonly messageId: string;
  readonly payload: Buffer;
  readonly deadlineAt: number;
  readonly deadlineMs: number;
  /** Arrival order within the lane. */
  readonly seq: number;
  readonly cb: ForwardCallback;
  state: MsgState;
  link: DeliverLink<Msg> | undefined;
  corr: number;
  sentAt: number;
  bucket: number;
}

/**
 * - `ready`: sends while its window allows;
 * - `draining`: a message failed retryably; waits for the rest of the window to settle;
 * - `backoff`: failed messages are back in the queue; waits for a route change or a short timer.
 */
type LanePhase = 'ready' | 'draining' | 'backoff';

class Lane {
  readonly queue = new Fifo<Msg>();
  /** Sent, not answered; insertion order = send order. */
  readonly inflight = new Set<Msg>();
  /** Failed retryably while draining. */
  retry: Msg[] = [];
  held = 0;
  /** Queue entries already answered (expired) but not yet shifted out. */
  dead = 0;
  nextSeq = 0;
  phase: LanePhase = 'ready';
  /** The route the in-flight messages were sent on. */
  route: RouteInfo | undefined;
  /** A message was acknowledged at `route` (the window is open). */
  confirmed = false;
  failures = 0;
  lastError: Error | undefined;
  timer: NodeJS.Timeout | undefined;

  constructor(
    readonly app: string,
    readonly rs: number,
  ) {}
}

/**
 * Forwards messages to the ACTIVE copy of their RS, in per-RS arrival order, holding them while
 * the RS has no reachable active copy (see the module doc for the rules).
 */
export class Forwarder {
  private readonly routing: RoutingClient;
  private readonly log: Logger;
  private readonly lanes = new Map<string, Map<number, Lane>>();
  /** Lanes holding at least one message. */
  private readonly busy = new Set<Lane>();
  private readonly links = new Map<string, DeliverLink<Msg>>();
  private readonly wheel = new Map<number, Set<Msg>>();
  private wheelCursor: number;
  private readonly sweepTimer: NodeJS.Timeout;
  private sweeps = 0;
  private readonly unsubscribe: () => void;
  private readonly lastUnreachable = new Map<string, number>();
  private readonly o: Required<Omit<ForwarderOptions, 'routing' | 'logger' | 'onUnreachable'>>;
  private readonly onUnreachable: ((u: UnreachableCopy) => void) | undefined;
  private readonly idPrefix = `${randomBytes(6).toString('hex')}-`;
  private idCounter = 0;
  private heldTotal = 0;
  private heldBytes = 0;
  private forwarded = 0;
  private rejectedOverflow = 0;
  private expired = 0;
  private resent = 0;
  private unreachable = 0;
  private closed = false;
  private readonly handler: DeliverLinkHandler<Msg> = (m, err, res, broken) => this.settled(m, err, res, broken);

  constructor(opts: ForwarderOptions) {
    this.routing = opts.routing;
    this.log = opts.logger ?? silentLogger();
    this.onUnreachable = opts.onUnreachable;
    this.o = {
      maxHeldPerRs: positive('maxHeldPerRs', opts.maxHeldPerRs ?? 10_000),
      maxHeldTotal: positive('maxHeldTotal', opts.maxHeldTotal ?? 100_000),
      maxHeldBytes: positive('maxHeldBytes', opts.maxHeldBytes ?? 256 * 1024 * 1024),
      maxInflightPerRs: positive('maxInflightPerRs', opts.maxInflightPerRs ?? 256),
      attemptTimeoutMs: positive('attemptTimeoutMs', opts.attemptTimeoutMs ?? 6000),
      defaultDeadlineMs: positive('defaultDeadlineMs', opts.defaultDeadlineMs ?? 10_000),
    };
    this.wheelCursor = Math.floor(performance.now() / WHEEL_MS);
    this.unsubscribe = this.routing.onChange((routes, full) => this.onRoutes(routes, full));
    this.sweepTimer = setInterval(() => this.sweep(), WHEEL_MS);
    this.sweepTimer.unref();
  }

  /** A message id unique to this forwarder's process (cheaper than a UUID per message). */
  newMessageId(prefix = ''): string {
    return `${prefix}${this.idPrefix}${(this.idCounter++).toString(36)}`;
  }

  /**
   * The RS a message addressed by `key` or `rs` goes to. Throws UNAVAILABLE before the first
   * route snapshot arrived, NOT_FOUND for an application the table does not know,
   * INVALID_ARGUMENT for a missing address, an RS out of range, or a key and an RS that disagree.
   */
  resolveRs(app: string, key: string, rs: number | undefined): number {
    const rsCount = this.routing.rsCount(app);
    if (rsCount === undefined) {
      if (!this.routing.tableInfo().synced) throw new UnavailableError('the route table has not been loaded from the controller yet; retry');
      throw new NotFoundError(`application ${JSON.stringify(app)} is not in the route table`);
    }
    if (rs === undefined) {
      if (key === '') throw new InvalidArgumentError(`a message to ${app} needs a key or an rs`);
      return this.routing.rsForKey(app, key);
    }
    if (!Number.isSafeInteger(rs) || rs < 0 || rs >= rsCount) throw new InvalidArgumentError(`rs ${rs} out of range for ${app} (rs_count ${rsCount}: 0..${rsCount - 1})`);
    if (key !== '') {
      const ofKey = this.routing.rsForKey(app, key);
      if (ofKey !== rs) throw new InvalidArgumentError(`key ${JSON.stringify(key)} of ${app} belongs to rs ${ofKey}, not the rs ${rs} given`);
    }
    return rs;
  }

  /**
   * Admit one message: returns its RS, and `cb` is called exactly once, when the active copy
   * acknowledged it or it failed for good (terminal error, deadline). Throws (and never calls
   * `cb`) when it is not admitted: a bad address (see {@link resolveRs}), a full hold
   * (RESOURCE_EXHAUSTED), or a closed forwarder (UNAVAILABLE).
   */
  forward(req: ForwardRequest, cb: ForwardCallback): number {
    if (this.closed) throw new UnavailableError('the forwarder is closed');
    if (req.messageId === '') throw new InvalidArgumentError('a message id is required (the copy dedupes resends by it)');
    const rs = this.resolveRs(req.app, req.key, req.rs);
    const lane = this.lane(req.app, rs);
    const bytes = req.payload.length;
    if (lane.held >= this.o.maxHeldPerRs) throw this.overflow(lane, `${lane.held} messages for ${req.app}/${rs} are held (maxHeldPerRs ${this.o.maxHeldPerRs})`);
    if (this.heldTotal >= this.o.maxHeldTotal) throw this.overflow(lane, `${this.heldTotal} messages are held in all (maxHeldTotal ${this.o.maxHeldTotal})`);
    if (this.heldBytes + bytes > this.o.maxHeldBytes) {
      throw this.overflow(lane, `${this.heldBytes} payload bytes are held in all and this message has ${bytes} (maxHeldBytes ${this.o.maxHeldBytes})`);
    }
    const deadlineMs = req.deadlineMs && req.deadlineMs > 0 ? req.deadlineMs : this.o.defaultDeadlineMs;
    const deadlineAt = performance.now() + deadlineMs;
    const m: Msg = {
      lane,
      key: req.key,
      messageId: req.messageId,
      payload: req.payload,
      deadlineAt,
      deadlineMs,
      seq: lane.nextSeq++,
      cb,
      state: 'queued',
      link: undefined,
      corr: 0,
      sentAt: 0,
      bucket: Math.max(Math.ceil(deadlineAt / WHEEL_MS), this.wheelCursor + 1),
    };
    let b = this.wheel.get(m.bucket);
    if (!b) this.wheel.set(m.bucket, (b = new Set()));
    b.add(m);
    lane.queue.push(m);
    lane.held++;
    this.heldTotal++;
    this.heldBytes += bytes;
    this.busy.add(lane);
    this.pump(lane);
    return rs;
  }

  /** Promise form of {@link forward} (admission errors reject too). */
  forwardAsync(req: ForwardRequest): Promise<Forwarded> {
    return new Promise<Forwarded>((resolve, reject) => {
      let rs = -1;
      try {
        rs = this.forward(req, (err, res) => {
          if (err || !res) reject(err ?? new UnavailableError('no response'));
          else resolve({ reply: res.reply, epoch: res.epoch, duplicate: res.duplicate, copyId: res.copyId, rs, messageId: req.messageId });
        });
      } catch (e) {
        reject(ensureError(e));
      }
    });
  }

  /** Counters and what is held now. */
  stats(): ForwarderStats {
    const held: { app: string; rs: number; held: number; inFlight: number }[] = [];
    for (const l of this.busy) held.push({ app: l.app, rs: l.rs, held: l.held, inFlight: l.inflight.size });
    held.sort((a, b) => (a.app < b.app ? -1 : a.app > b.app ? 1 : a.rs - b.rs));
    return {
      forwarded: this.forwarded,
      heldTotal: this.heldTotal,
      heldBytes: this.heldBytes,
      held,
      rejectedOverflow: this.rejectedOverflow,
      expired: this.expired,
      resent: this.resent,
      unreachable: this.unreachable,
    };
  }

  /** Stop: every held message is answered UNAVAILABLE, streams and channels are closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    this.unsubscribe();
    const err = new UnavailableError('the forwarder is stopping; resend with the same message id');
    for (const lane of [...this.busy]) {
      if (lane.timer) clearTimeout(lane.timer);
      for (const m of [...lane.inflight, ...lane.retry, ...lane.queue]) if (m.state !== 'done') this.finish(m, err, undefined);
    }
    for (const l of this.links.values()) l.close();
    this.links.clear();
  }

  // ---- lanes -------------------------------------------------------------------------------

  private lane(app: string, rs: number): Lane {
    let byRs = this.lanes.get(app);
    if (!byRs) this.lanes.set(app, (byRs = new Map()));
    let l = byRs.get(rs);
    if (!l) byRs.set(rs, (l = new Lane(app, rs)));
    return l;
  }

  private overflow(lane: Lane, what: string): ResourceExhaustedError {
    this.rejectedOverflow++;
    const route = this.routing.route(lane.app, lane.rs);
    const why = !route?.activeAddress
      ? `; ${lane.app}/${lane.rs} has no active copy`
      : lane.phase !== 'ready'
        ? `; ${lane.app}/${lane.rs} is not reachable (${lane.lastError?.message ?? 'retrying'})`
        : '';
    return new ResourceExhaustedError(`hold is full: ${what}${why}; retry later`);
  }

  /** Send what the lane's window allows, to the RS's current active. */
  private pump(lane: Lane): void {
    if (lane.phase !== 'ready' || lane.queue.length === 0 || this.closed) return;
    const route = this.routing.route(lane.app, lane.rs);
    if (!route || !route.activeAddress) return; // held until a route update
    if (!sameRoute(lane.route, route)) {
      if (lane.inflight.size > 0) {
        this.abandon(lane, `${lane.app}/${lane.rs} moved to ${route.activeCopyId} at epoch ${route.epoch}`);
        return; // abandon() pumps again
      }
      lane.route = route;
      lane.confirmed = false;
    }
    const window = lane.confirmed ? this.o.maxInflightPerRs : 1;
    if (lane.inflight.size >= window) return;
    const link = this.link(route.activeAddress);
    const now = performance.now();
    while (lane.inflight.size < window) {
      const m = lane.queue.shift();
      if (!m) break;
      if (m.state === 'done') {
        lane.dead--;
        continue;
      }
      m.state = 'inflight';
      m.link = link;
      m.sentAt = now;
      lane.inflight.add(m);
      m.corr = link.send({ app: lane.app, rs: lane.rs, messageId: m.messageId, payload: m.payload, key: m.key, routeEpoch: route.epoch }, m);
    }
  }

  /** An answer (or a stream failure) for an in-flight message. */
  private settled(m: Msg, err: Error | null, res: DeliverResponse | undefined, broken: boolean): void {
    if (m.state !== 'inflight') return; // abandoned, expired or closed meanwhile
    const lane = m.lane;
    lane.inflight.delete(m);
    m.link = undefined;
    m.corr = 0;
    if (!err && res) {
      if (sameRoute(lane.route, this.routing.route(lane.app, lane.rs))) lane.confirmed = true;
      lane.failures = 0;
      this.forwarded++;
      this.finish(m, null, res);
    } else {
      const e = err ?? new UnavailableError('empty answer from the copy');
      if (!isRetry(e)) this.finish(m, e, undefined);
      else {
        m.state = 'retry';
        lane.retry.push(m);
        lane.lastError = e;
        if (broken) this.reportUnreachable(lane, e.message);
        if (lane.phase === 'ready') {
          lane.phase = 'draining';
          lane.failures++;
          this.log.debug({ app: lane.app, rs: lane.rs, copy: lane.route?.activeCopyId, err: e.message }, 'delivery failed; draining the window before resending');
        }
      }
    }
    this.afterChange(lane);
  }

  /** Drain finished → resend; else keep the pipeline full. */
  private afterChange(lane: Lane): void {
    if (lane.phase === 'draining' && lane.inflight.size === 0) {
      this.requeueRetries(lane);
      lane.phase = 'backoff';
      const delay = Math.min(10 * 2 ** Math.min(lane.failures - 1, 10), MAX_BACKOFF_MS);
      lane.timer = setTimeout(() => {
        lane.timer = undefined;
        if (lane.phase !== 'backoff') return;
        lane.phase = 'ready';
        this.pump(lane);
      }, delay);
      return;
    }
    this.pump(lane);
  }

  /** Failed messages go back to the head of the queue, in arrival order. */
  private requeueRetries(lane: Lane): void {
    const again = lane.retry.filter((m) => m.state === 'retry').sort((a, b) => a.seq - b.seq);
    lane.retry = [];
    for (const m of again) m.state = 'queued';
    if (again.length > 0) {
      this.resent += again.length;
      lane.queue.unshiftAll(again);
    }
    lane.confirmed = false;
  }

  /** Give up on every in-flight message of the lane (route moved, no answer) and resend them. */
  private abandon(lane: Lane, why: string): void {
    for (const m of lane.inflight) {
      m.link?.forget(m.corr);
      m.link = undefined;
      m.corr = 0;
      m.state = 'retry';
      lane.retry.push(m);
    }
    lane.inflight.clear();
    this.log.debug({ app: lane.app, rs: lane.rs, n: lane.retry.length, why }, 'abandoned in-flight messages; resending in order');
    this.requeueRetries(lane);
    if (lane.timer) clearTimeout(lane.timer);
    lane.timer = undefined;
    lane.phase = 'ready';
    lane.route = undefined;
    this.pump(lane);
  }

  private onRoutes(routes: readonly Route[], full: boolean): void {
    if (this.closed) return;
    if (full) {
      for (const lane of [...this.busy]) this.routeChanged(lane);
      return;
    }
    for (const r of routes) {
      const lane = this.lanes.get(r.app)?.get(r.rs);
      if (lane && lane.held > 0) this.routeChanged(lane);
    }
  }

  private routeChanged(lane: Lane): void {
    const now = this.routing.route(lane.app, lane.rs);
    if (lane.route && !sameRoute(lane.route, now) && (lane.inflight.size > 0 || lane.retry.length > 0)) {
      this.abandon(lane, now?.activeAddress ? `${lane.app}/${lane.rs} moved to ${now.activeCopyId} at epoch ${now.epoch}` : `${lane.app}/${lane.rs} lost its active copy`);
      return;
    }
    if (lane.phase === 'backoff') {
      // A new route is the news a backoff waits for: try at once.
      if (lane.timer) clearTimeout(lane.timer);
      lane.timer = undefined;
      lane.phase = 'ready';
    }
    this.pump(lane);
  }

  // ---- answers, deadlines, unreachable copies ----------------------------------------------

  private finish(m: Msg, err: Error | null, res: DeliverResponse | undefined): void {
    const lane = m.lane;
    m.state = 'done';
    lane.held--;
    this.heldTotal--;
    this.heldBytes -= m.payload.length;
    this.wheel.get(m.bucket)?.delete(m);
    if (lane.held === 0) this.busy.delete(lane);
    try {
      m.cb(err, res);
    } catch (e) {
      this.log.error({ err: ensureError(e), app: lane.app, rs: lane.rs }, 'forward callback threw');
    }
  }

  private sweep(): void {
    const now = performance.now();
    const upTo = Math.floor(now / WHEEL_MS);
    const touched = new Set<Lane>();
    for (; this.wheelCursor < upTo; ) {
      const k = ++this.wheelCursor;
      const b = this.wheel.get(k);
      if (!b) continue;
      this.wheel.delete(k);
      for (const m of b) if (m.state !== 'done') this.expire(m, touched);
    }
    for (const lane of touched) {
      if (lane.dead > 64 && lane.dead * 2 > lane.queue.length) {
        lane.queue.compact((m) => m.state !== 'done');
        lane.dead = 0;
      }
      this.afterChange(lane);
    }
    // A copy that answers nothing (hung, partitioned): give up on the window and resend.
    for (const lane of this.busy) {
      if (lane.inflight.size === 0) continue;
      const first = lane.inflight.values().next().value as Msg;
      if (now - first.sentAt < this.o.attemptTimeoutMs) continue;
      const detail = `no answer from ${lane.route?.activeCopyId ?? '?'} (${lane.route?.activeAddress ?? '?'}) within ${this.o.attemptTimeoutMs} ms`;
      this.reportUnreachable(lane, detail);
      // Every request waiting on that connection fails as broken and is resent after a
      // backoff (on a new connection: a silent one may be half-open).
      if (first.link) first.link.reset(detail);
      else this.abandon(lane, detail);
    }
    if (++this.sweeps % PRUNE_EVERY_SWEEPS === 0) this.pruneLinks();
  }

  private expire(m: Msg, touched: Set<Lane>): void {
    const lane = m.lane;
    if (m.state === 'queued') lane.dead++;
    else if (m.state === 'inflight') {
      m.link?.forget(m.corr);
      lane.inflight.delete(m);
    } else if (m.state === 'retry') lane.retry = lane.retry.filter((x) => x !== m);
    this.expired++;
    const route = this.routing.route(lane.app, lane.rs);
    const why = m.state === 'inflight'
      ? `${route?.activeCopyId ?? 'the active copy'} did not acknowledge it in time (it may still apply it; resend with the same message id)`
      : !route?.activeAddress
        ? `${lane.app}/${lane.rs} has no active copy`
        : lane.lastError
          ? `${lane.app}/${lane.rs} is not reachable: ${lane.lastError.message}`
          : 'it waited behind earlier messages of its RS';
    this.finish(m, new DeadlineExceededError(`message ${m.messageId} to ${lane.app}/${lane.rs} not acknowledged within ${m.deadlineMs} ms: ${why}`), undefined);
    touched.add(lane);
  }

  private reportUnreachable(lane: Lane, detail: string): void {
    const r = lane.route;
    if (!r || !this.onUnreachable) return;
    const now = performance.now();
    const k = `${r.activeCopyId}@${r.activeAddress}`;
    if (now - (this.lastUnreachable.get(k) ?? -Infinity) < UNREACHABLE_EVERY_MS) return;
    this.lastUnreachable.set(k, now);
    if (this.lastUnreachable.size > 10_000) for (const [key, t] of this.lastUnreachable) if (now - t > UNREACHABLE_EVERY_MS) this.lastUnreachable.delete(key);
    this.unreachable++;
    try {
      this.onUnreachable({ app: lane.app, rs: lane.rs, copyId: r.activeCopyId, address: r.activeAddress, epoch: r.epoch, detail });
    } catch (e) {
      this.log.error({ err: ensureError(e) }, 'onUnreachable threw');
    }
  }

  // ---- links -------------------------------------------------------------------------------

  private link(address: string): DeliverLink<Msg> {
    let l = this.links.get(address);
    if (!l) this.links.set(address, (l = new DeliverLink<Msg>(address, this.handler)));
    return l;
  }

  /** Close the streams and channels of addresses no lane uses any more (copies come and go). */
  private pruneLinks(): void {
    const used = new Set<string>();
    for (const byRs of this.lanes.values()) {
      for (const lane of byRs.values()) {
        if (lane.route) used.add(lane.route.activeAddress);
        const r = this.routing.route(lane.app, lane.rs);
        if (r?.activeAddress) used.add(r.activeAddress);
      }
    }
    for (const [address, l] of this.links) {
      if (used.has(address) || l.inFlight > 0) continue;
      l.close();
      this.links.delete(address);
    }
  }
}

function sameRoute(a: RouteInfo | undefined, b: RouteInfo | undefined): boolean {
  return a !== undefined && b !== undefined && a.activeAddress === b.activeAddress && a.epoch === b.epoch && a.activeCopyId === b.activeCopyId;
}

/** Worth resending with the same id: the copy was not active, unreachable or busy with a failover. */
function isRetry(e: Error): boolean {
  return e instanceof NotActiveError || (e as { retryable?: boolean }).retryable === true;
}

function positive(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidArgumentError(`${name} must be a positive integer, got ${v}`);
  return v;
}

/** Array-backed FIFO with O(1) shift (a large plain array's shift moves every element). */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    this.items.push(x);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  /** Put `xs` (in order) before everything queued. */
  unshiftAll(xs: readonly T[]): void {
    this.items = [...xs, ...(this.items.slice(this.head) as T[])];
    this.head = 0;
  }

  /** Keep only the entries `keep` accepts. */
  compact(keep: (x: T) => boolean): void {
    this.items = (this.items.slice(this.head) as T[]).filter(keep);
    this.head = 0;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }
}
