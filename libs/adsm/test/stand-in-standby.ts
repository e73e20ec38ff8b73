/**
 * Test helper: a stand-in for a standby copy, a real grpc-js AdsmService on 127.0.0.1 that
 * records what an active sends it (ReplicateStream messages, snapshots, older dedupe parts) and
 * applies nothing: every Replicate is acknowledged at its highest sequence number, every snapshot
 * at its seq; a FetchState gets the configured answer. What it announces in its ReplicateStream response headers is configurable, to play
 * a current or an older version of the copy.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdsmServiceService,
  type AddOlderDedupeRequest,
  type FetchStateRequest,
  type FetchStateResponse,
  type InstallSnapshotRequest,
  type ReplicateRequest,
  type ReplicateStreamRequest,
  type ReplicateStreamResponse,
} from '@understudy/proto';
import { silentLogger, startGrpcServer, type GrpcServer } from '@understudy/runtime';
import { streamBatchMetadata, takesBatches } from '../src/stream-batch';

/** What a stand-in announces and how it answers. */
export interface StandInOptions {
  readonly copyId: string;
  /** @default 7 */
  readonly incarnation?: number;
  /** Announce STREAM_BATCH (and answer a client that asked for it in batches). @default true */
  readonly batching?: boolean;
  /** Announce SNAPSHOT_SPLIT (`understudy-snapshot-split: 1`). @default false */
  readonly splitSnapshots?: boolean;
  /** Hold each InstallSnapshot answer this long (a slow peer, so snapshots sent together overlap). @default 0 */
  readonly snapshotDelayMs?: number;
  /** The answer to every FetchState (a member a copy activated without state asks). @default unimplemented */
  readonly fetchState?: FetchStateResponse;
}

/** See the module comment. */
export class StandInStandby {
  server!: GrpcServer;
  readonly copyId: string;
  readonly incarnation: number;
  /** ReplicateStream messages, as received. */
  readonly messages: ReplicateStreamRequest[] = [];
  readonly snapshots: InstallSnapshotRequest[] = [];
  readonly olderParts: AddOlderDedupeRequest[] = [];
  /** FetchState calls answered. */
  fetchStateCalls = 0;
  /** Whether the last ReplicateStream's client asked for batched answers. */
  clientTakesBatches = false;
  /** InstallSnapshot calls open now, and the most ever open at once. */
  openSnapshots = 0;
  maxOpenSnapshots = 0;

  constructor(private readonly o: StandInOptions) {
    this.copyId = o.copyId;
    this.incarnation = o.incarnation ?? 7;
  }

  get address(): string {
    return `127.0.0.1:${this.server.port}`;
  }

  async start(): Promise<void> {
    const applied = (r: ReplicateRequest): { appliedSeq: number } => ({ appliedSeq: Math.max(0, ...r.entries.map((e) => e.seq)) });
    const batching = this.o.batching ?? true;
    const impl = {
      installSnapshot: (call: grpc.ServerUnaryCall<InstallSnapshotRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.snapshots.push(call.request);
        this.maxOpenSnapshots = Math.max(this.maxOpenSnapshots, ++this.openSnapshots);
        const answer = (): void => {
          this.openSnapshots--;
          cb(null, { appliedSeq: call.request.seq });
        };
        const delay = this.o.snapshotDelayMs ?? 0;
        if (delay > 0) setTimeout(answer, delay);
        else answer();
      },
      addOlderDedupe: (call: grpc.ServerUnaryCall<AddOlderDedupeRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.olderParts.push(call.request);
        cb(null, { taken: true });
      },
      ...(this.o.fetchState
        ? {
            fetchState: (_call: grpc.ServerUnaryCall<FetchStateRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
              this.fetchStateCalls++;
              cb(null, this.o.fetchState);
            },
          }
        : {}),
      replicate: (call: grpc.ServerUnaryCall<ReplicateRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, applied(call.request)),
      replicateStream: (call: grpc.ServerDuplexStream<ReplicateStreamRequest, ReplicateStreamResponse>) => {
        this.clientTakesBatches = takesBatches(call.metadata);
        const headers = batching ? streamBatchMetadata() : new grpc.Metadata();
        if (this.o.splitSnapshots) headers.set('understudy-snapshot-split', '1');
        call.sendMetadata(headers);
        call.on('data', (m: ReplicateStreamRequest) => {
          this.messages.push(m);
          const answers = [m, ...m.more].map((x) => ({ correlationId: x.correlationId, response: applied(x.request!), statusCode: 0, statusMessage: '', statusMetadata: {}, more: [] }));
          if (batching && this.clientTakesBatches) call.write({ ...answers[0]!, more: answers.slice(1) });
          else for (const a of answers) call.write(a);
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined);
      },
    };
    this.server = await startGrpcServer({ address: '127.0.0.1:0', services: [{ definition: AdsmServiceService, implementation: impl as never }], logger: silentLogger() });
  }
}
