/**
 * ADSM replication and fencing with real copies (in-process gRPC servers on 127.0.0.1), roles
 * set directly through the AdsmService the way the controller does.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { AdsmServiceClient, Role, type DeliverStreamRequest, type DeliverStreamResponse, type Member } from '@understudy/proto';
import { InvalidArgumentError, NotActiveError, NotFoundError, StaleEpochError, clientChannelOptions, insecureCredentials, silentLogger, unaryCall } from '@understudy/runtime';
import { decodeJson, encodeJson, startCopy, type CopyHandle } from '../src/index';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';
import { STREAM_BATCH_HEADER, streamBatchMetadata } from '../src/stream-batch';

const APP = 'counter';
// Nothing listens here: copies keep serving while they cannot reach a controller.
const NO_CONTROLLER = ['127.0.0.1:1'];

describe('ADSM replication and fencing', () => {
  const copies: CopyHandle[] = [];
  const clients = new Map<string, AdsmServiceClient>();
  const incarnations = new Map<string, number>();
  let term = 1;

  const client = (c: CopyHandle): AdsmServiceClient => {
    let cl = clients.get(c.copyId);
    if (!cl) {
      cl = new AdsmServiceClient(c.address, insecureCredentials(), clientChannelOptions());
      clients.set(c.copyId, cl);
    }
    return cl;
  };
  const members = membersOf;
  const setRole = async (c: CopyHandle, rs: number, role: Role, epoch: number, version: number, m: Member[]): Promise<void> => {
    const cl = client(c);
    await unaryCall(cl.setRoles.bind(cl), {
      copyId: c.copyId,
      incarnation: incarnations.get(c.copyId)!,
      leaderTerm: term,
      entries: [{ app: APP, rs, role, epoch, version, members: m }],
      full: false,
    });
  };
  const place = async (rs: number, epoch: number, version: number, active: CopyHandle, standbys: CopyHandle[]): Promise<void> => {
    const m = members(active, standbys);
    await Promise.all([setRole(active, rs, Role.ROLE_ACTIVE, epoch, version, m), ...standbys.map((s) => setRole(s, rs, Role.ROLE_STANDBY, epoch, version, m))]);
  };
  const inc = async (c: CopyHandle, rs: number, key: string, messageId: string): Promise<{ value: number; duplicate: boolean }> => {
    const cl = client(c);
    const res = await unaryCall(cl.deliver.bind(cl), { app: APP, rs, messageId, payload: encodeJson({ key }), key, routeEpoch: 0 });
    return { value: decodeJson<{ value: number }>(res.reply).value, duplicate: res.duplicate };
  };
  const query = async (c: CopyHandle, rs: number, key: string): Promise<number> => {
    const cl = client(c);
    return decodeJson<number>((await unaryCall(cl.query.bind(cl), { app: APP, rs, query: encodeJson({ key }) })).result);
  };

  before(async () => {
    for (const id of ['a', 'b', 'c']) {
      const inc = Date.now() + copies.length;
      incarnations.set(id, inc);
      copies.push(await startCopy({ app: counterApp, copyId: id, incarnation: inc, controllerAddresses: NO_CONTROLLER, logger: silentLogger(), deliverTimeoutMs: 1500, heartbeatIntervalMs: 60_000 }));
    }
  });
  after(async () => {
    for (const cl of clients.values()) cl.close();
    await Promise.all(copies.map((c) => c.stop()));
  });

  test('delivery only on the ACTIVE; standbys answer NOT_ACTIVE', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle];
    await place(0, 1, 1, a, [b]);
    assert.equal((await inc(a, 0, 'x', 'm1')).value, 1);
    await assert.rejects(inc(b, 0, 'x', 'm2'), NotActiveError);
    await assert.rejects(inc(a, 7, 'x', 'm3'), (e: Error) => e instanceof NotActiveError && /OUT_OF_SERVICE/.test(e.message));
  });

  test('acknowledged updates are on the standby; dedupe survives promotion', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle];
    for (let i = 0; i < 20; i++) await inc(a, 0, 'y', `y${i}`);
    assert.deepEqual(await inc(a, 0, 'y', 'y5'), { value: 6, duplicate: true });
    // Switch over: b becomes active at epoch 2 with the state it replicated.
    await place(0, 2, 2, b, [a]);
    assert.equal(await query(b, 0, 'y'), 20);
    assert.equal(await query(b, 0, 'x'), 1);
    // A redelivery of a message acknowledged by the old active is answered from the dedupe table.
    assert.deepEqual(await inc(b, 0, 'y', 'y19'), { value: 20, duplicate: true });
    assert.equal((await inc(b, 0, 'y', 'y20')).value, 21);
    await assert.rejects(inc(a, 0, 'y', 'y21'), NotActiveError);
  });

  test('steady load leaves no waits behind: each replication round ends its wait on the RS', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle];
    await place(5, 1, 1, a, [b]);
    // Sequential deliveries: one replication round each, while the roles never change (a round
    // used to race the RS's role-change promise, adding a reaction that stayed until the next
    // role change: thousands per second under load, without bound).
    for (let i = 0; i < 300; i++) await inc(a, 5, 'w', `w${i}`);
    await Promise.all(Array.from({ length: 200 }, (_, i) => inc(a, 5, 'w', `w${300 + i}`)));
    assert.equal(await query(a, 5, 'w'), 500);
    assert.equal(a.roles().get(5)?.waits, 0, 'waits left on the active');
    assert.equal(b.roles().get(5)?.waits, 0, 'waits left on the standby');
  });

  test('a standby refuses replication from an older epoch (a deposed active cannot commit)', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle];
    // b is ACTIVE at epoch 2 for rs 0; a is its standby at epoch 2. Old active a at epoch 1:
    const cla = client(a);
    await assert.rejects(
      unaryCall(cla.replicate.bind(cla), { app: APP, rs: 0, epoch: 1, fromCopyId: 'a', entries: [{ seq: 999, messageId: 'evil', update: encodeJson([{ key: 'y', value: 1000 }]), reply: Buffer.alloc(0), outboxAdded: [], outboxDone: [] }], base: undefined }),
      StaleEpochError,
    );
    assert.equal(await query(b, 0, 'y'), 21);
  });

  test('a deposed active that still believes it is active cannot acknowledge', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    // rs 1: a active, b standby at epoch 1.
    await place(1, 1, 1, a, [b]);
    assert.equal((await inc(a, 1, 'z', 'z1')).value, 1);
    // The controller promotes b at epoch 2 with c as standby, but a never hears of it.
    const m = members(b, [c]);
    await Promise.all([setRole(b, 1, Role.ROLE_ACTIVE, 2, 2, m), setRole(c, 1, Role.ROLE_STANDBY, 2, 2, m)]);
    // a still thinks it is ACTIVE at epoch 1; its replication to b is refused → no ack, and a
    // learns it was fenced and stops acting as ACTIVE.
    await assert.rejects(inc(a, 1, 'z', 'z2'), NotActiveError);
    assert.equal(a.roles().get(1)?.role, 'STANDBY');
    assert.equal((await inc(b, 1, 'z', 'z3')).value, 2);
    assert.equal(await query(b, 1, 'z'), 2, 'the unacknowledged increment on the deposed active was never committed');
  });

  test('a new standby gets a snapshot before it counts', async () => {
    const [, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    // rs 2: b active alone, builds state, then c is added as standby at the same epoch.
    await place(2, 1, 1, b, []);
    for (let i = 0; i < 10; i++) await inc(b, 2, 'w', `w${i}`);
    await place(2, 1, 2, b, [c]);
    assert.equal((await inc(b, 2, 'w', 'w10')).value, 11);
    // Promote c: it has the snapshot plus the replicated update.
    await place(2, 2, 3, c, [b]);
    assert.equal(await query(c, 2, 'w'), 11);
  });

  test('stale role changes are ignored; bad SetRoles input is refused', async () => {
    const [a] = copies as [CopyHandle];
    const before = a.roles().get(0);
    await setRole(a, 0, Role.ROLE_ACTIVE, 1, 1, members(a, []));
    assert.deepEqual(a.roles().get(0), before, 'an older (epoch, version) changes nothing');
    const cl = client(a);
    await assert.rejects(
      unaryCall(cl.setRoles.bind(cl), { copyId: 'zz', incarnation: incarnations.get('a')!, leaderTerm: term, entries: [], full: false }),
      /reached copy a/,
    );
    await assert.rejects(
      unaryCall(cl.setRoles.bind(cl), { copyId: 'a', incarnation: 1, leaderTerm: term, entries: [], full: false }),
      /incarnation/,
    );
    term = 5;
    await setRole(a, 9, Role.ROLE_STANDBY, 1, 1, members(copies[1]!, [a]));
    await assert.rejects(
      unaryCall(cl.setRoles.bind(cl), { copyId: 'a', incarnation: incarnations.get('a')!, leaderTerm: 4, entries: [], full: false }),
      /stale controller term/,
    );
    await assert.rejects(
      unaryCall(cl.deliver.bind(cl), { app: APP, rs: 0, messageId: '', payload: encodeJson({ key: 'x' }), key: 'x', routeEpoch: 0 }),
      /message_id is required/,
    );
    await assert.rejects(
      unaryCall(cl.deliver.bind(cl), { app: 'nope', rs: 0, messageId: 'q', payload: encodeJson({}), key: '', routeEpoch: 0 }),
      /not served by this copy/,
    );
  });

  test('group commit: many concurrent delivers to one RS are each applied exactly once, in order, on the active and both standbys', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(4, 1, 1, a, [b, c]);
    const n = 400;
    // All in flight at once: the active queues them and replicates them in batches.
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => inc(a, 4, 'g', `g${i}`)));
    assert.deepEqual(replies.map((r) => r.value).sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i + 1), 'every increment ran exactly once, one after the other');
    assert.ok(replies.every((r) => !r.duplicate));
    // Redeliveries (also concurrent with new messages) answer with the first reply, apply nothing.
    const again = await Promise.all([inc(a, 4, 'g', 'g7'), inc(a, 4, 'g', `g${n}`), inc(a, 4, 'g', 'g7')]);
    assert.deepEqual(again.map((r) => r.duplicate), [true, false, true]);
    assert.equal(again[0]!.value, replies[7]!.value);
    // Both standbys applied the same sequence as the active (acknowledged ⇒ on every standby).
    const seqs = await Promise.all([a, b, c].map(async (x) => {
      const cl = client(x);
      const info = await unaryCall(cl.getCopyInfo.bind(cl), {});
      return info.rs.find((r) => r.rs === 4)!.appliedSeq;
    }));
    assert.deepEqual(seqs, [n + 1, n + 1, n + 1]);
    // Each standby holds the full state: promote b, then c.
    await place(4, 2, 2, b, [a, c]);
    assert.equal(await query(b, 4, 'g'), n + 1);
    assert.deepEqual(await inc(b, 4, 'g', 'g3'), { value: replies[3]!.value, duplicate: true });
    await place(4, 3, 3, c, [a, b]);
    assert.equal(await query(c, 4, 'g'), n + 1);
  });

  test('a copy activated without the RS state fetches it from the member that has it (FetchState); bad FetchState input is refused', async () => {
    const [a, b, c] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(11, 1, 1, a, [b]);
    for (let i = 0; i < 3; i++) await inc(a, 11, 'fs', `fs-${i}`);
    // c never held RS 11: it is made ACTIVE at epoch 2 with the old active as its standby.
    await place(11, 2, 2, c, [a]);
    assert.equal(await query(c, 11, 'fs'), 3, 'the new active serves the state it fetched, not the initial state');
    const r = await inc(c, 11, 'fs', 'fs-0');
    assert.equal(r.duplicate, true, 'the dedupe table came with the state');
    assert.equal((await inc(c, 11, 'fs', 'fs-3')).value, 4);
    const cl = client(b);
    await assert.rejects(unaryCall(cl.fetchState.bind(cl), { app: APP, rs: 11, epoch: 0, copyId: 'x' }), (e: Error) => e instanceof InvalidArgumentError && /epoch must be > 0/.test(e.message));
    await assert.rejects(unaryCall(cl.fetchState.bind(cl), { app: APP, rs: 11, epoch: 5, copyId: '' }), (e: Error) => e instanceof InvalidArgumentError && /copy_id is required/.test(e.message));
    await assert.rejects(unaryCall(cl.fetchState.bind(cl), { app: 'nope', rs: 11, epoch: 5, copyId: 'x' }), (e: Error) => e instanceof NotFoundError);
    // A snapshot whose packed dedupe table is malformed is refused whole: the standby keeps what
    // it had, and replication from the real active goes on.
    const ca = client(a);
    const bad = { app: APP, rs: 11, epoch: 2, fromCopyId: c.copyId, seq: 1_000_000, state: encodeJson({}), dedupe: [], outbox: [], dedupePacked: Buffer.from([5, 0, 0, 0, 1]), dedupeOlderFollows: false };
    await assert.rejects(unaryCall(ca.installSnapshot.bind(ca), bad), (e: Error) => e instanceof InvalidArgumentError && /dedupe table: dedupe blob truncated/.test(e.message));
    assert.equal((await inc(c, 11, 'fs', 'fs-4')).value, 5);
    await place(11, 3, 3, a, [c]);
    assert.equal(await query(a, 11, 'fs'), 5, 'the standby kept its state and took over with it');
    assert.equal((await inc(a, 11, 'fs', 'fs-4')).duplicate, true, 'and its dedupe table');
  });

  test('DeliverStream: each request is a Deliver answered with its correlation id and its own status', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(5, 1, 1, a, [b]);
    const stream = client(a).deliverStream();
    const answers = new Map<number, DeliverStreamResponse>();
    let headers: grpc.Metadata | undefined;
    stream.on('metadata', (md: grpc.Metadata) => (headers = md));
    let batchedAnswers = 0;
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (m: DeliverStreamResponse) => {
        answers.set(m.correlationId, m);
        batchedAnswers += m.more.length;
      });
      stream.on('end', () => resolve());
      stream.on('error', reject);
    });
    const n = 200;
    for (let i = 0; i < n; i++) stream.write({ correlationId: i + 1, request: { app: APP, rs: 5, messageId: `s${i}`, payload: encodeJson({ key: 's' }), key: 's', routeEpoch: 0 }, more: [] });
    stream.write({ correlationId: 1000, request: { app: APP, rs: 5, messageId: 's3', payload: encodeJson({ key: 's' }), key: 's', routeEpoch: 0 }, more: [] });
    stream.write({ correlationId: 1001, request: { app: APP, rs: 6, messageId: 'x1', payload: encodeJson({ key: 's' }), key: 's', routeEpoch: 0 }, more: [] });
    stream.write({ correlationId: 1002, request: { app: APP, rs: 5, messageId: 'x2', payload: Buffer.from('{not json'), key: 's', routeEpoch: 0 }, more: [] });
    stream.end();
    await done;
    assert.equal(answers.size, n + 3);
    const values = Array.from({ length: n }, (_, i) => answers.get(i + 1)!).map((m) => {
      assert.equal(m.statusCode, 0);
      return decodeJson<{ value: number }>(m.response!.reply).value;
    });
    assert.deepEqual(values.sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i + 1));
    assert.equal(answers.get(1000)!.response!.duplicate, true);
    assert.equal(answers.get(1001)!.statusCode, 9, 'FAILED_PRECONDITION (NOT_ACTIVE) for an RS this copy does not hold');
    assert.match(answers.get(1001)!.statusMessage, /NOT_ACTIVE/);
    assert.equal(answers.get(1002)!.statusCode, 3, 'INVALID_ARGUMENT for a payload that is not JSON');
    assert.equal(batchedAnswers, 0, 'a client that did not ask for batched answers gets one per message');
    assert.equal(headers?.get(STREAM_BATCH_HEADER)[0], '1', 'the copy says it takes batched requests');
    await place(5, 2, 2, b, [a]);
    assert.equal(await query(b, 5, 's'), n);
  });

  test('DeliverStream STREAM_BATCH: requests in `more` (after the own request, or in a carrier) are each handled and answered; answers come batched', async () => {
    const [a, b] = copies as [CopyHandle, CopyHandle, CopyHandle];
    await place(7, 1, 1, a, [b]);
    const stream = client(a).deliverStream(streamBatchMetadata());
    const answers = new Map<number, DeliverStreamResponse[]>();
    let messages = 0;
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (m: DeliverStreamResponse) => {
        messages++;
        for (const x of [m, ...m.more]) answers.set(x.correlationId, [...(answers.get(x.correlationId) ?? []), x]);
      });
      stream.on('end', () => resolve());
      stream.on('error', reject);
    });
    const req = (i: number, key = 'b'): DeliverStreamRequest => ({
      correlationId: i,
      request: { app: APP, rs: 7, messageId: `b${i}`, payload: encodeJson({ key }), key, routeEpoch: 0 },
      more: [],
    });
    const n = 300;
    // Own request + 99 more; then carriers (no own request) of 100 each.
    stream.write({ ...req(1), more: Array.from({ length: 99 }, (_, i) => req(i + 2)) });
    stream.write({ correlationId: 0, request: undefined, more: Array.from({ length: 100 }, (_, i) => req(i + 101)) });
    stream.write({ correlationId: 0, request: undefined, more: Array.from({ length: 100 }, (_, i) => req(i + 201)) });
    // Bad items get their own status; the others in the same message are unaffected.
    stream.write({
      correlationId: 0,
      request: undefined,
      more: [
        { ...req(1000), more: [req(1001)] },
        { ...req(1002), request: { ...req(1002).request!, payload: Buffer.from('{not json') } },
        { correlationId: 1003, request: undefined, more: [] },
        req(1004),
      ],
    });
    stream.end();
    await done;
    for (let i = 1; i <= n; i++) assert.equal(answers.get(i)?.length, 1, `request ${i} answered once`);
    const values = Array.from({ length: n }, (_, i) => decodeJson<{ value: number }>(answers.get(i + 1)![0]!.response!.reply).value);
    assert.deepEqual(values.sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i + 1), 'each applied once');
    assert.equal(answers.get(1000)![0]!.statusCode, 3, 'an item with `more` of its own is refused');
    assert.match(answers.get(1000)![0]!.statusMessage, /has `more` itself/);
    assert.equal(answers.has(1001), false, 'and what it nested is not run');
    assert.equal(answers.get(1002)![0]!.statusCode, 3);
    assert.equal(answers.get(1003)![0]!.statusCode, 3, 'an item without a request');
    assert.equal(answers.get(1004)![0]!.statusCode, 0);
    assert.ok(messages < answers.size / 2, `answers came batched: ${answers.size} in ${messages} messages`);
    assert.equal(await query(a, 7, 'b'), n + 1);
  });
});
