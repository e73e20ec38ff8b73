/**
 * Snapshots to one peer go through a byte gate (`snapshotBytesInFlight`): a real active copy for
 * 4 RS gets a new standby (a stand-in that holds each InstallSnapshot answer 20 ms and counts how
 * many are open at once) and a delivery for every RS in one message, so all 4 RS need the
 * standby's snapshot at the same moment. Over the budget they go one at a time; under it, together.
 * Every delivery commits either way.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AdsmServiceClient, Role, type DeliverStreamResponse } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, silentLogger, unaryCall } from '@understudy/runtime';
import { encodeJson, startCopy } from '../src/index';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';
import { StandInStandby } from './stand-in-standby';

const APP = 'counter';
const RS = [0, 1, 2, 3];

describe('snapshot byte gate', () => {
  const stops: (() => Promise<void>)[] = [];
  after(async () => {
    for (const s of stops.reverse()) await s();
  });

  /** Starts an active for RS 0..3 with `standby` new to all of them, delivers one message per RS in one stream message. */
  const run = async (id: string, snapshotBytesInFlight: number | undefined): Promise<{ standby: StandInStandby; answers: DeliverStreamResponse[] }> => {
    const standby = new StandInStandby({ copyId: 'slow', incarnation: 3, batching: false, snapshotDelayMs: 20 });
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
    assert.equal(standby.snapshots.length, RS.length, 'one snapshot per RS');
    assert.equal(standby.maxOpenSnapshots, 1, 'never two snapshots open at the standby at once');
  });

  test('under the budget (small snapshots, the default), they go together', async () => {
    const { standby, answers } = await run('gate-all', undefined);
    assert.deepEqual(answers.map((a) => a.statusCode), [0, 0, 0, 0], 'every delivery committed');
    assert.equal(standby.snapshots.length, RS.length);
    assert.ok(standby.maxOpenSnapshots > 1, `${standby.maxOpenSnapshots} open at once`);
  });

  test('a budget that is not a positive integer is refused', async () => {
    await assert.rejects(
      startCopy({ app: counterApp, copyId: 'gate-bad', controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), snapshotBytesInFlight: 0 }),
      /snapshotBytesInFlight must be a positive integer/,
    );
  });
});
