/**
 * STREAM_BATCH on the active → standby ReplicateStream, against a stand-in standby (a grpc-js
 * AdsmService that records what it receives): batches of several RS started in one turn travel
 * as one message to a standby that announced batching, answered in one message; a standby that
 * did not (an older version during a rolling upgrade) gets one request per message. Either way
 * every delivery commits.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AdsmServiceClient, Role, type DeliverStreamResponse } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, silentLogger, unaryCall } from '@understudy/runtime';
import { encodeJson, startCopy, type CopyHandle } from '../src/index';
import { streamBatchMetadata } from '../src/stream-batch';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';
import { StandInStandby } from './stand-in-standby';

const APP = 'counter';
const RS = [0, 1, 2, 3];

describe('ReplicateStream STREAM_BATCH', () => {
  const stops: (() => Promise<void>)[] = [];
  after(async () => {
    for (const s of stops) await s();
  });

  /** An active copy for RS 0..3 with `standby` as their only standby; returns a deliver-4-in-one-turn helper. */
  const setUp = async (standby: StandInStandby, id: string): Promise<{ active: CopyHandle; deliverAll: (round: number) => Promise<DeliverStreamResponse[]> }> => {
    await standby.start();
    stops.push(() => standby.server.shutdown(100));
    const incarnation = Date.now();
    const active = await startCopy({ app: counterApp, copyId: id, incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => active.stop());
    const cl = new AdsmServiceClient(active.address, insecureCredentials(), clientChannelOptions());
    stops.push(async () => cl.close());
    const members = membersOf({ copyId: id, address: active.address, incarnation }, [standby]);
    await unaryCall(cl.setRoles.bind(cl), {
      copyId: id,
      incarnation,
      leaderTerm: 1,
      entries: RS.map((rs) => ({ app: APP, rs, role: Role.ROLE_ACTIVE, epoch: 1, version: 1, members })),
      full: false,
    });
    const deliverAll = (round: number): Promise<DeliverStreamResponse[]> =>
      new Promise((resolve, reject) => {
        const stream = cl.deliverStream(streamBatchMetadata());
        const answers: DeliverStreamResponse[] = [];
        stream.on('data', (m: DeliverStreamResponse) => answers.push(m, ...m.more));
        stream.on('end', () => resolve(answers));
        stream.on('error', reject);
        // One carrier message: the four RS's batches start in the same turn on the active.
        const item = (rs: number) => ({ correlationId: rs + 1, request: { app: APP, rs, messageId: `${id}-${round}-${rs}`, payload: encodeJson({ key: `k${rs}` }), key: `k${rs}`, routeEpoch: 0 }, more: [] });
        stream.write({ correlationId: 0, request: undefined, more: RS.map(item) });
        stream.end();
      });
    return { active, deliverAll };
  };

  test('a standby that announced batching gets the batches of one turn in one message', async () => {
    const standby = new StandInStandby({ copyId: 'fake', batching: true });
    const { deliverAll } = await setUp(standby, 'batch-a');
    // First round: snapshots to the new standby, then the stream opens and its headers arrive.
    for (const round of [0, 1, 2]) {
      const answers = await deliverAll(round);
      assert.deepEqual(answers.map((a) => a.statusCode), [0, 0, 0, 0], `round ${round}: every delivery committed`);
    }
    assert.equal(standby.clientTakesBatches, true, 'the active said it takes batched answers');
    const last = standby.messages.at(-1)!;
    assert.equal(1 + last.more.length, RS.length, `the last round's ${RS.length} RS batches came in one message`);
    assert.deepEqual([last, ...last.more].map((m) => m.request!.rs).sort(), RS);
  });

  test('a standby that did not announce it (an older version) gets one request per message', async () => {
    const standby = new StandInStandby({ copyId: 'fake', batching: false });
    const { deliverAll } = await setUp(standby, 'batch-b');
    for (const round of [0, 1, 2]) {
      const answers = await deliverAll(round);
      assert.deepEqual(answers.map((a) => a.statusCode), [0, 0, 0, 0], `round ${round}: every delivery committed`);
    }
    assert.ok(standby.messages.length >= 2 * RS.length, `${standby.messages.length} messages`);
    assert.ok(standby.messages.every((m) => m.more.length === 0), 'no batched message');
  });
});
