/**
 * The copy's side of fault detection (DESIGN §7): one Attach stream to one fault manager, with
 * heartbeats carrying health and answers to progress probes. The fault manager is chosen by
 * rendezvous hash of the copy's host id over the configured instances, so every copy of a host
 * lands on the same instance (it can then tell a host fault from a copy fault); when that
 * instance dies the stream breaks and the copy re-attaches to the next one in its order.
 */
import type { Logger } from 'pino';
import type * as grpc from '@grpc/grpc-js';
import { FaultManagerServiceClient, type AttachHello, type AttachRequest, type AttachResponse, type Health } from '@understudy/proto';
import { keyToRs } from '@understudy/core';
import { clientChannelOptions, ensureError, insecureCredentials } from '@understudy/runtime';

/** Options of {@link FaultManagerLink}. */
export interface FaultManagerLinkOptions {
  /** host:port of every fault manager instance. */
  readonly addresses: readonly string[];
  /** Who this copy is (sent first on every stream). */
  readonly hello: AttachHello;
  /** A health sample for the next heartbeat. */
  readonly health: () => Health;
  /** Run a no-op through the handler path; resolves when it went through. */
  readonly probe: (deadlineMs: number) => Promise<void>;
  readonly logger: Logger;
  /** Heartbeat period until the fault manager sends the application's settings. @default 200 */
  readonly heartbeatIntervalMs?: number;
  /** How long a fault manager whose stream failed is skipped. @default 2000 */
  readonly retryBackoffMs?: number;
}

/**
 * Rendezvous (highest random weight) order of fault managers for `key`: the first one is this
 * key's home; removing an instance only moves the keys it was home for.
 */
export function faultManagerOrder(key: string, addresses: readonly string[]): string[] {
  // The weight is the shared key hash (libs/core keyToRs: FNV-1a) over a large modulus.
  const w = (a: string): number => keyToRs(`${key}|${a}`, 0x7fffffff);
  return [...addresses].sort((a, b) => w(b) - w(a) || (a < b ? -1 : 1));
}

/** Keeps one Attach stream open to a live fault manager (see module doc). */
export class FaultManagerLink {
  private readonly clients = new Map<string, FaultManagerServiceClient>();
  private readonly downUntil = new Map<string, number>();
  private readonly order: string[];
  private stream: grpc.ClientDuplexStream<AttachRequest, AttachResponse> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private reattachTimer: NodeJS.Timeout | undefined;
  private intervalMs: number;
  private seq = 0;
  private stopped = false;
  /** The fault manager currently attached to ('' while none). */
  attachedTo = '';

  constructor(private readonly o: FaultManagerLinkOptions) {
    if (o.addresses.length === 0) throw new RangeError('FaultManagerLink needs at least one fault manager address');
    this.order = faultManagerOrder(o.hello.host, o.addresses);
    this.intervalMs = o.heartbeatIntervalMs ?? 200;
  }

  /** Attach now (and keep re-attaching until {@link stop}). */
  start(): void {
    this.attach();
  }

  /** Close the stream for good. */
  stop(): void {
    this.stopped = true;
    this.detach();
    if (this.reattachTimer) clearTimeout(this.reattachTimer);
    for (const c of this.clients.values()) c.close();
  }

  private pick(): string {
    const now = Date.now();
    const live = this.order.find((a) => (this.downUntil.get(a) ?? 0) <= now);
    if (live !== undefined) return live;
    // Every instance failed recently: try the one that failed longest ago.
    return [...this.order].sort((a, b) => (this.downUntil.get(a) ?? 0) - (this.downUntil.get(b) ?? 0))[0]!;
  }

  private client(address: string): FaultManagerServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new FaultManagerServiceClient(address, insecureCredentials(), clientChannelOptions());
      this.clients.set(address, c);
    }
    return c;
  }

  private attach(): void {
    if (this.stopped) return;
    const address = this.pick();
    const log = this.o.logger.child({ faultManager: address });
    const stream = this.client(address).attach();
    this.stream = stream;
    this.attachedTo = address;
    let ended = false;
    const lost = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.stream !== stream) return;
      this.detach();
      if (this.stopped) return;
      this.downUntil.set(address, Date.now() + (this.o.retryBackoffMs ?? 2000));
      log.warn({ why }, 'fault manager stream lost; re-attaching');
      // Straight to the next instance; a short pause only when every one is down.
      const allDown = this.order.every((a) => (this.downUntil.get(a) ?? 0) > Date.now());
      this.reattachTimer = setTimeout(() => this.attach(), allDown ? 200 : 0);
    };
    stream.on('data', (m: AttachResponse) => {
      if (m.settings) {
        const ms = m.settings.heartbeatIntervalMs;
        if (ms > 0 && ms !== this.intervalMs) {
          this.intervalMs = ms;
          this.startHeartbeats();
        }
        log.info({ fm: m.settings.faultManagerId, heartbeatIntervalMs: this.intervalMs }, 'attached to fault manager');
      } else if (m.probe) {
        const { probeId, deadlineMs } = m.probe;
        this.o.probe(deadlineMs).then(
          () => this.write(stream, { probeResult: { probeId, ok: true, error: '' } }),
          (e: unknown) => this.write(stream, { probeResult: { probeId, ok: false, error: ensureError(e).message } }),
        );
      }
    });
    stream.on('error', (e: Error) => lost(e.message));
    stream.on('end', () => lost('stream ended by the fault manager'));
    stream.on('close', () => lost('stream closed'));
    this.write(stream, { hello: this.o.hello });
    this.startHeartbeats();
  }

  private startHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    const beat = (): void => {
      const s = this.stream;
      if (s) this.write(s, { heartbeat: { seq: ++this.seq, health: this.o.health() } });
    };
    beat();
    this.heartbeatTimer = setInterval(beat, this.intervalMs);
  }

  private write(stream: grpc.ClientDuplexStream<AttachRequest, AttachResponse>, m: AttachRequest): void {
    if (this.stream !== stream || stream.writableEnded) return;
    try {
      stream.write(m);
    } catch (e) {
      this.o.logger.debug({ err: ensureError(e).message }, 'fault manager write failed');
    }
  }

  private detach(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    this.attachedTo = '';
    if (s) {
      try {
        s.cancel();
      } catch {
        // already closed
      }
    }
  }
}
