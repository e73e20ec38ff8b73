/**
 * Snapshots to one peer go through a byte gate (`snapshotBytesInFlight`): a real active copy for
 * 4 RS gets a new standby (a stand-in that holds each InstallSnapshot answer 20 ms and counts how
 * many are open at once) and a delivery for every RS in one message, so all 4 RS need the
 * standby's snapshot at the same moment. Over the budget they go one at a time; under it, together.
 * Every delivery commits either way.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { AdsmServiceClient, AdsmServiceService, Role, type DeliverStreamResponse, type InstallSnapshotRequest, type ReplicateRequest, type ReplicateStreamRequest, type ReplicateStreamResponse } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, silentLogger, startGrpcServer, unaryCall, type GrpcServer } from '@understudy/runtime';
import { encodeJson, startCopy } from '../src/index';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';

const APP = 'counter';
const RS = [0, 1, 2, 3];

/** Applies nothing; answers every Replicate at once and every InstallSnapshot after 20 ms. */
class SlowSnapshotStandby {
  server!: GrpcServer;
  readonly copyId = 'slow';
  readonly incarnation = 3;
  open = 0;
  maxOpen = 0;
  snapshots = 0;

  get address(): string {
    return `127.0.0.1:${this.server.port}`;
  }

  async start(): Promise<void> {
    const applied = (r: ReplicateRequest): { appliedSeq: number } => ({ appliedSeq: Math.max(0, ...r.entries.map((e) => e.seq)) });
    const impl = {
      installSnapshot: (call: grpc.ServerUnaryCall<InstallSnapshotRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.snapshots++;
        this.maxOpen = Math.max(this.maxOpen, ++this.open);
        // A slow peer, so that snapshots sent together overlap here.
        setTimeout(() => {
          this.open--;
          cb(null, { appliedSeq: call.request.seq });
        }, 20);
      },
      replicate: (call: grpc.ServerUnaryCall<ReplicateRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, applied(call.request)),
      replicateStream: (call: grpc.ServerDuplexStream<ReplicateStreamRequest, ReplicateStreamResponse>) => {
        call.on('data', (m: ReplicateStreamRequest) => {
          for (const x of [m, ...m.more]) call.write({ correlationId: x.correlationId, response: applied(x.request!), statusCode: 0, statusMessage: '', statusMetadata: {}, more: [] });
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined);
      },
    };
    this.server = await startGrpcServer({ address: '127.0.0.1:0', services: [{ definition: AdsmServiceService, implementation: impl as never }], logger: silentLogger() });
  }
}

describe('snapshot byte gate', () => {
  const stops: (() => Promise<void>)[] = [];
  after(async () => {
    for (const s of stops.reverse()) await s();
  });

  /** Starts an active for RS 0..3 with `standby` new to all of them, delivers one message per RS in one stream message. */
  const run = async (id: string, snapshotBytesInFlight: number | undefined): Promise<{ standby: SlowSnapshotStandby; answers: DeliverStreamResponse[] }> => {
    const standby = new SlowSnapshotStandby();
    await standby.start();
    stops.push(() => standby.server.shutdown(100));
    const incarnation = Date.now();
    const active = await startCopy({
      app: counterApp,
      copyId: id,
      incarnation,
      controllerAddresses: ['127.0.0.1:1'],
      logger: silentLogger(),
      heartbeatIntervalMs: 60_000,
      ...(snapshotBytesInFlight === undefined ? {} : { snapshotBytesInFlight }),
    });
    stops.push(() => active.stop());
    const cl = new AdsmServiceClient(active.address, insecureCredentials(), clientChannelOptions());
    stops.push(async () => cl.close());
    const members = membersOf({ copyId: id, address: active.address, incarnation }, [standby]);
    await unaryCall(cl.setRoles.bind(cl), { copyId: id, incarnation, leaderTerm: 1, entries: RS.map((rs) => ({ app: APP, rs, role: Role.ROLE_ACTIVE, epoch: 1, version: 1, members })), full: false });
    const answers = await new Promise<DeliverStreamResponse[]>((resolve, reject) => {
      const stream = cl.deliverStream();
      const got: DeliverStreamResponse[] = [];
      stream.on('data', (m: DeliverStreamResponse) => got.push(m, ...m.more));
      stream.on('end', () => resolve(got));
      stream.on('error', reject);
      const item = (rs: number) => ({ correlationId: rs + 1, request: { app: APP, rs, messageId: `${id}-${rs}`, payload: encodeJson({ key: `k${rs}` }), key: `k${rs}`, routeEpoch: 0 }, more: [] });
      stream.write({ correlationId: 0, request: undefined, more: RS.map(item) });
      stream.end();
    });
    return { standby, answers };
  };

  test('over the budget, the snapshots to one peer go one at a time', async () => {
    const { standby, answers } = await run('gate-one', 1);
    assert.deepEqual(answers.map((a) => a.statusCode), [0, 0, 0, 0], 'every delivery committed');
    assert.equal(standby.snapshots, RS.length, 'one snapshot per RS');
    assert.equal(standby.maxOpen, 1, 'never two snapshots open at the standby at once');
  });

  test('under the budget (small snapshots, the default), they go together', async () => {
    const { standby, answers } = await run('gate-all', undefined);
    assert.deepEqual(answers.map((a) => a.statusCode), [0, 0, 0, 0], 'every delivery committed');
    assert.equal(standby.snapshots, RS.length);
    assert.ok(standby.maxOpen > 1, `${standby.maxOpen} open at once`);
  });

  test('a budget that is not a positive integer is refused', async () => {
    await assert.rejects(
      startCopy({ app: counterApp, copyId: 'gate-bad', controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), snapshotBytesInFlight: 0 }),
      /snapshotBytesInFlight must be a positive integer/,
    );
  });
});
