import * as grpc from '@grpc/grpc-js';
import { ControllerServiceClient } from '@understudy/proto';
import { UnavailableError, clientChannelOptions, ensureError, fromServiceError, insecureCredentials } from '@understudy/runtime';

/** Metadata key a follower controller sets to name the leader. */
export const LEADER_ADDRESS_KEY = 'understudy-leader-address';

/** Options of {@link ControllerClient}. */
export interface ControllerClientOptions {
  /** Every controller replica's host:port; the leader is found by trying them. */
  readonly addresses: readonly string[];
  /** Give up on one call after this long. @default 5000 */
  readonly callTimeoutMs?: number;
}

/**
 * Talks to whichever controller replica leads. Followers answer UNAVAILABLE naming the
 * leader (metadata `understudy-leader-address`); a dead replica is skipped. Used by copies
 * (registration, heartbeats), the routing client (watch) and the CLI.
 */
export class ControllerClient {
  private readonly addresses: string[];
  private readonly clients = new Map<string, ControllerServiceClient>();
  private current = 0;
  private readonly callTimeoutMs: number;

  constructor(opts: ControllerClientOptions) {
    if (opts.addresses.length === 0) throw new Error('ControllerClient: at least one controller address is required');
    this.addresses = [...opts.addresses];
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
  }

  /** The address tried first (the last known leader). */
  get preferredAddress(): string {
    return this.addresses[this.current]!;
  }

  /** The generated client for one address (cached). */
  clientFor(address: string): ControllerServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new ControllerServiceClient(address, insecureCredentials(), clientChannelOptions());
      this.clients.set(address, c);
    }
    return c;
  }

  /** Remember `address` as the leader (adds it to the list if unknown). */
  noteLeader(address: string): void {
    let i = this.addresses.indexOf(address);
    if (i < 0) {
      this.addresses.push(address);
      i = this.addresses.length - 1;
    }
    this.current = i;
  }

  /** Move on to the next replica after a failure. */
  rotate(): void {
    this.current = (this.current + 1) % this.addresses.length;
  }

  /**
   * Run `fn` against the leader: follow leader redirects and skip unreachable replicas until
   * `callTimeoutMs` passes. Terminal errors (bad input, not found …) are thrown at once.
   */
  async withLeader<T>(fn: (client: ControllerServiceClient, address: string) => Promise<T>, timeoutMs = this.callTimeoutMs): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: Error = new UnavailableError('no controller reachable');
    let backoffMs = 20;
    for (;;) {
      const address = this.preferredAddress;
      try {
        return await fn(this.clientFor(address), address);
      } catch (e) {
        const err = ensureError(fromServiceError(e));
        last = err;
        const retryable = (err as { retryable?: boolean }).retryable === true;
        if (!retryable) throw err;
        const leader = (err as { metadata?: Record<string, string> }).metadata?.[LEADER_ADDRESS_KEY];
        if (leader && leader !== address) this.noteLeader(leader);
        else this.rotate();
      }
      if (Date.now() + backoffMs > deadline) throw last;
      await new Promise((r) => setTimeout(r, backoffMs));
      backoffMs = Math.min(backoffMs * 2, 250);
    }
  }

  /** Close every channel. */
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** Metadata helper for tests and tools. */
export function leaderAddressOf(md: grpc.Metadata | undefined): string | undefined {
  const v = md?.get(LEADER_ADDRESS_KEY)[0];
  return typeof v === 'string' ? v : undefined;
}
