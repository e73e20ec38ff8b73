/**
 * ALDM direct mode (`--controllers`) runs the ADSM Forwarder, the router's routing library: while
 * an RS has no active copy its events are held (bounded per RS, each until its deadline) and
 * delivered in arrival order once a copy is back. Real controller, fault manager, counter copy
 * and ALDM processes; events over real HTTP and gRPC.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { AldmServiceClient, Mode } from '@understudy/proto';
import { UnderstudyError, clientChannelOptions, insecureCredentials, unaryCall } from '@understudy/runtime';
import { keys, startCounterCluster, type CounterCluster } from '../../../test/harness/cluster';
import { startAldmProc, type AldmProc } from '../../../test/harness/processes';
import { waitFor } from '../../../test/harness/wait';

const APP = 'counter';

interface Answer {
  readonly status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
}

async function post(address: string, body: unknown): Promise<Answer> {
  const res = await fetch(`http://${address}/v1/apps/${APP}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as unknown };
}

async function held(address: string): Promise<number> {
  const res = await fetch(`http://${address}/v1/stats`);
  return ((await res.json()) as { held: number }).held;
}

describe('ALDM direct mode holds events through the ADSM forwarder (DISTRIBUTED, 1 copy, 2 RS)', () => {
  let cl: CounterCluster;
  let aldm: AldmProc;
  let client: AldmServiceClient;

  before(async () => {
    cl = await startCounterCluster({ copies: 1, rsCount: 2, standbys: 0, mode: Mode.MODE_DISTRIBUTED, faultManagers: 1 });
    aldm = await startAldmProc({ id: 'aldm-hold', controllers: cl.addresses, deadlineMs: 60_000, maxHeldPerRs: 4 });
    client = new AldmServiceClient(aldm.address, insecureCredentials(), clientChannelOptions());
  });

  after(async () => {
    client?.close();
    await aldm?.kill();
    await cl?.stop();
  });

  test('held while the RS has no active copy (per-RS bound, deadline), then delivered in arrival order', async () => {
    const ks = keys(64);
    const [warm, k0] = ks.filter((k) => cl.routing.rsForKey(APP, k) === 0) as [string, string];
    const ok = await post(aldm.httpAddress, { key: warm, payload: { key: warm, by: 1 } });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));

    await cl.copies.get('c1')!.kill();
    await waitFor(() => !cl.routing.route(APP, 0)?.activeAddress, { what: 'RS 0 without an active' });

    // Four increments of one key, each admitted (held) before the next is sent: arrival order.
    const pending: Promise<Answer>[] = [];
    for (let i = 1; i <= 4; i++) {
      pending.push(post(aldm.httpAddress, { key: k0, idempotencyKey: `hold-${i}`, payload: { key: k0, by: 1 } }));
      await waitFor(async () => (await held(aldm.httpAddress)) === i, { what: `${i} events held` });
    }
    // The per-RS bound: a fifth is refused at once (HTTP 429 / RESOURCE_EXHAUSTED), not queued.
    const refused = await post(aldm.httpAddress, { key: k0, idempotencyKey: 'hold-5', payload: { key: k0, by: 1 } });
    assert.equal(refused.status, 429, JSON.stringify(refused.json));
    assert.equal(refused.json.error.code, 'RESOURCE_EXHAUSTED');
    assert.match(refused.json.error.message, /maxHeldPerRs 4/);
    assert.match(refused.json.error.message, /no active copy/);
    // The deadline: an event to the other RS whose caller gives it 400 ms is answered
    // DEADLINE_EXCEEDED and no longer held.
    const [k1] = ks.filter((k) => cl.routing.rsForKey(APP, k) === 1) as [string];
    const t0 = Date.now();
    await assert.rejects(
      unaryCall(client.ingest.bind(client), { app: APP, key: k1, idempotencyKey: '', payload: Buffer.from(JSON.stringify({ key: k1, by: 1 })) }, { deadlineMs: 400 }),
      (e: unknown) => e instanceof UnderstudyError && e.code === grpc.status.DEADLINE_EXCEEDED,
    );
    assert.ok(Date.now() - t0 >= 350, 'not before its deadline');
    await waitFor(async () => (await held(aldm.httpAddress)) === 4, { what: 'the expired event no longer held' });

    // A copy comes back: the held events are delivered, in the order they arrived (the copy
    // restarted without state: DISTRIBUTED mode without checkpoints, so they count from 1).
    await cl.restartCopy('c1');
    const answers = await Promise.all(pending);
    for (const a of answers) assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.deepEqual(answers.map((a) => a.json.reply.value), [1, 2, 3, 4]);
    assert.equal(await held(aldm.httpAddress), 0);
  });
});
