/**
 * SNAPSHOT_SPLIT (adsm.proto): a new standby that announced it gets the state with the newest
 * dedupe ids first and the older ids in AddOlderDedupe; one that did not (an older version) gets
 * the whole table in the snapshot. With real copies, a standby caught up that way and then
 * promoted recognises a retry of the OLDEST message id as a duplicate. A copy activated without
 * state, fetching it from a member still waiting for its older part and from one a batch behind
 * with a complete table, takes the newest state and the older ids from the complete table; a
 * member whose answer does not decode is passed over (before, it took the fetching copy down).
 *
 * Setup in each case: RS 0 already has the standby (its replication stream, and so the standby's
 * headers, are open), RS 1 first runs alone with 1,500 messages (~100 KB of dedupe table, over the
 * 64 KiB that go with the state), then gets the standby.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AdsmServiceClient, Role, type Member } from '@understudy/proto';
import { clientChannelOptions, insecureCredentials, silentLogger, unaryCall } from '@understudy/runtime';
import { decodeJson, encodeJson, startCopy, type CopyHandle } from '../src/index';
import { DedupeTable } from '../src/dedupe';
import { InvalidArgumentError, NotFoundError } from '@understudy/runtime';
import { counterApp } from '../../../examples/counter/src/counter';
import { membersOf } from './members';
import { StandInStandby, type StandInOptions } from './stand-in-standby';
import { waitFor } from '../../../test/harness/wait';

const APP = 'counter';
const MESSAGES = 1500;

const count = (packed: Uint8Array): number => (packed.length < 4 ? 0 : Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength).readUInt32LE(0));

describe('SNAPSHOT_SPLIT', () => {
  const stops: (() => Promise<void>)[] = [];
  after(async () => {
    for (const s of stops.reverse()) await s();
  });

  const startStandIn = async (o: StandInOptions): Promise<StandInStandby> => {
    const s = new StandInStandby(o);
    await s.start();
    stops.push(() => s.server.shutdown(100));
    return s;
  };
  const clientOf = (c: { address: string }): AdsmServiceClient => {
    const cl = new AdsmServiceClient(c.address, insecureCredentials(), clientChannelOptions());
    stops.push(async () => cl.close());
    return cl;
  };
  const setRole = (cl: AdsmServiceClient, c: { copyId: string; incarnation: number }, rs: number, role: Role, epoch: number, version: number, members: Member[]) =>
    unaryCall(cl.setRoles.bind(cl), { copyId: c.copyId, incarnation: c.incarnation, leaderTerm: 1, entries: [{ app: APP, rs, role, epoch, version, members }], full: false });
  const inc = async (cl: AdsmServiceClient, rs: number, messageId: string): Promise<{ value: number; duplicate: boolean }> => {
    const res = await unaryCall(cl.deliver.bind(cl), { app: APP, rs, messageId, payload: encodeJson({ key: `k${rs}` }), key: `k${rs}`, routeEpoch: 0 });
    return { value: decodeJson<{ value: number }>(res.reply).value, duplicate: res.duplicate };
  };
  /** RS 1 alone on `active` with MESSAGES messages; RS 0 on `active` with `standby`, one message through it. */
  const prepare = async (id: string, standby: { copyId: string; incarnation: number; address: string }, standbyClient?: AdsmServiceClient) => {
    const incarnation = Date.now();
    const active = await startCopy({ app: counterApp, copyId: id, incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => active.stop());
    const cl = clientOf(active);
    const me = { copyId: id, address: active.address, incarnation };
    const withStandby = membersOf(me, [standby]);
    await setRole(cl, me, 0, Role.ROLE_ACTIVE, 1, 1, withStandby);
    if (standbyClient) await setRole(standbyClient, standby, 0, Role.ROLE_STANDBY, 1, 1, withStandby);
    await inc(cl, 0, `${id}-rs0`);
    await setRole(cl, me, 1, Role.ROLE_ACTIVE, 1, 1, membersOf(me, []));
    for (let i = 0; i < MESSAGES; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => inc(cl, 1, `${id}-message-${String(i + j).padStart(6, '0')}`)));
    return { active, cl, me, withStandby };
  };

  test('a standby that announced it gets the newest ids with the state, the older ones after', async () => {
    const standby = await startStandIn({ copyId: 'rec-split', incarnation: 5, splitSnapshots: true });
    const { cl, me, withStandby } = await prepare('split-a', standby);
    await setRole(cl, me, 1, Role.ROLE_ACTIVE, 1, 2, withStandby);
    assert.equal((await inc(cl, 1, 'split-a-after')).value, MESSAGES + 1, 'commits with the new standby');
    await waitFor(() => standby.olderParts.some((p) => p.rs === 1), { what: 'the older dedupe part of RS 1' });
    const snap = standby.snapshots.find((s) => s.rs === 1)!;
    const older = standby.olderParts.find((p) => p.rs === 1)!;
    assert.equal(snap.dedupeOlderFollows, true, 'the snapshot says the older ids follow');
    assert.ok(snap.dedupePacked.length <= 64 * 1024 + 4, `${snap.dedupePacked.length} bytes of dedupe went with the state`);
    assert.equal(older.snapshotSeq, snap.seq);
    assert.equal(older.epoch, snap.epoch);
    assert.equal(count(snap.dedupePacked) + count(older.dedupePacked), MESSAGES, 'the two parts hold the whole table');
  });

  test('a standby that did not announce it (an older version) gets the whole table in the snapshot', async () => {
    const standby = await startStandIn({ copyId: 'rec-whole', incarnation: 5, splitSnapshots: false });
    const { cl, me, withStandby } = await prepare('split-b', standby);
    await setRole(cl, me, 1, Role.ROLE_ACTIVE, 1, 2, withStandby);
    assert.equal((await inc(cl, 1, 'split-b-after')).value, MESSAGES + 1);
    const snap = standby.snapshots.find((s) => s.rs === 1)!;
    assert.equal(snap.dedupeOlderFollows, false);
    assert.equal(count(snap.dedupePacked), MESSAGES);
    assert.equal(standby.olderParts.length, 0);
  });

  test('real copies: the standby ends with the whole table; promoted, it knows the oldest message id', async () => {
    const incarnation = Date.now() + 1;
    const b: CopyHandle = await startCopy({ app: counterApp, copyId: 'split-real-b', incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => b.stop());
    const bc = clientOf(b);
    const bMember = { copyId: b.copyId, address: b.address, incarnation };
    const { cl, me, withStandby } = await prepare('split-real-a', bMember, bc);
    await setRole(bc, bMember, 1, Role.ROLE_STANDBY, 1, 2, withStandby);
    await setRole(cl, me, 1, Role.ROLE_ACTIVE, 1, 2, withStandby);
    assert.equal((await inc(cl, 1, 'split-real-after')).value, MESSAGES + 1);
    await waitFor(() => {
      const r = b.roles().get(1);
      return r !== undefined && !r.olderDedupePending && r.dedupeIds === MESSAGES + 1;
    }, { what: 'the standby holding all ids of RS 1' });
    // The active is gone; the standby takes over at a new epoch.
    await setRole(bc, bMember, 1, Role.ROLE_ACTIVE, 2, 3, membersOf(bMember, []));
    const again = await inc(bc, 1, 'split-real-a-message-000000');
    assert.equal(again.duplicate, true, 'a retry of the oldest message is recognised');
    assert.equal(again.value, 1, 'and answered with its first reply');
    assert.equal((await inc(bc, 1, 'split-real-new')).value, MESSAGES + 2, 'nothing was applied twice');
  });

  test('AddOlderDedupe: only the awaited part is taken; bad input gets a clear status and changes nothing', async () => {
    const incarnation = Date.now() + 2;
    const c = await startCopy({ app: counterApp, copyId: 'split-direct', incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => c.stop());
    const cc = clientOf(c);
    const me = { copyId: c.copyId, address: c.address, incarnation };
    const active = { copyId: 'split-x', address: '127.0.0.1:1', incarnation: 9 };
    await setRole(cc, me, 3, Role.ROLE_STANDBY, 4, 1, membersOf(active, [me]));
    const table = new DedupeTable(1000);
    for (let i = 0; i < 300; i++) table.set(`d-${i}`, Buffer.from(encodeJson({ key: 'k3', value: i + 1 })));
    const { newest, older } = table.packSplit(2000);
    const base = { app: APP, rs: 3, epoch: 4, fromCopyId: active.copyId };
    await unaryCall(cc.installSnapshot.bind(cc), { ...base, seq: 300, state: encodeJson({ k3: 300 }), dedupe: [], outbox: [], dedupePacked: newest, dedupeOlderFollows: true });
    assert.equal(c.roles().get(3)!.olderDedupePending, true);
    const part = { ...base, snapshotSeq: 300, dedupePacked: older! };
    await assert.rejects(unaryCall(cc.addOlderDedupe.bind(cc), { ...part, dedupePacked: Buffer.from([9, 0, 0, 0, 1]) }), (e: Error) => e instanceof InvalidArgumentError && /older dedupe part of counter\/3: dedupe blob truncated/.test(e.message));
    await assert.rejects(unaryCall(cc.addOlderDedupe.bind(cc), { ...part, app: 'nope' }), (e: Error) => e instanceof NotFoundError);
    assert.equal((await unaryCall(cc.addOlderDedupe.bind(cc), { ...part, snapshotSeq: 299 })).taken, false, 'the part of another snapshot');
    assert.equal(c.roles().get(3)!.olderDedupePending, true, 'still waiting after refused parts');
    assert.equal((await unaryCall(cc.addOlderDedupe.bind(cc), part)).taken, true);
    const r = c.roles().get(3)!;
    assert.equal(r.olderDedupePending, false);
    assert.equal(r.dedupeIds, 300);
    assert.equal((await unaryCall(cc.addOlderDedupe.bind(cc), part)).taken, true, 'nothing missing any more');
    assert.equal(c.roles().get(3)!.dedupeIds, 300, 'a repeated part adds nothing');
  });

  test('a copy activated without state takes the newest state and fills its older ids from a complete table of the same epoch', async () => {
    const start = async (copyId: string, incarnation: number) => {
      const h = await startCopy({ app: counterApp, copyId, incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
      stops.push(() => h.stop());
      return { h, cl: clientOf(h), m: { copyId, address: h.address, incarnation } };
    };
    const base = Date.now() + 10;
    const partial = await start('split-fetch-p', base);
    const complete = await start('split-fetch-f', base + 1);
    const fresh = await start('split-fetch-n', base + 2);
    // RS 5's history at epoch 4: 401 messages on an active that is gone now ('split-gone').
    const gone = { copyId: 'split-gone', address: '127.0.0.1:1', incarnation: 9 };
    const history = new DedupeTable(10_000);
    for (let i = 0; i <= 400; i++) history.set(`f-${i}`, Buffer.from(encodeJson({ key: 'k5', value: i + 1 })));
    const atEpoch4 = membersOf(gone, [partial.m, complete.m]);
    await setRole(partial.cl, partial.m, 5, Role.ROLE_STANDBY, 4, 1, atEpoch4);
    await setRole(complete.cl, complete.m, 5, Role.ROLE_STANDBY, 4, 1, atEpoch4);
    const snap = { app: APP, rs: 5, epoch: 4, fromCopyId: gone.copyId, dedupe: [], outbox: [] };
    // The partial member is at seq 401 with the newest ids only (its older part never came);
    // the complete one is one batch behind, at seq 396 with the whole table up to there.
    await unaryCall(partial.cl.installSnapshot.bind(partial.cl), { ...snap, seq: 401, state: encodeJson({ k5: 401 }), dedupePacked: history.packSplit(2000).newest, dedupeOlderFollows: true });
    const upTo396 = new DedupeTable(10_000);
    for (const [id, reply] of history.entries().slice(0, 396)) upTo396.set(id, reply);
    await unaryCall(complete.cl.installSnapshot.bind(complete.cl), { ...snap, seq: 396, state: encodeJson({ k5: 396 }), dedupePacked: upTo396.pack(), dedupeOlderFollows: false });
    assert.equal(partial.h.roles().get(5)!.olderDedupePending, true);
    assert.ok(partial.h.roles().get(5)!.dedupeIds < 100, 'the partial member knows only the newest ids');

    // A copy without state becomes the active at epoch 5 and fetches the state from both.
    const atEpoch5 = membersOf(fresh.m, [partial.m, complete.m]);
    await setRole(partial.cl, partial.m, 5, Role.ROLE_STANDBY, 5, 2, atEpoch5);
    await setRole(complete.cl, complete.m, 5, Role.ROLE_STANDBY, 5, 2, atEpoch5);
    assert.equal(partial.h.roles().get(5)!.olderDedupePending, true, 'still partial at the new epoch');
    await setRole(fresh.cl, fresh.m, 5, Role.ROLE_ACTIVE, 5, 2, atEpoch5);
    const oldest = await inc(fresh.cl, 5, 'f-0');
    assert.equal(oldest.duplicate, true, 'a retry of the oldest message is recognised (its id came from the complete table)');
    assert.equal(oldest.value, 1, 'and answered with its first reply');
    const newest = await inc(fresh.cl, 5, 'f-400');
    assert.deepEqual(newest, { value: 401, duplicate: true }, 'the newest message (known to the partial member only) too');
    assert.equal((await inc(fresh.cl, 5, 'f-new')).value, 402, 'the newest state was taken, nothing applied twice');
  });

  test('a member answering FetchState with a state that does not decode is passed over; the copy stays up', async () => {
    const incarnation = Date.now() + 20;
    const good = await startCopy({ app: counterApp, copyId: 'fetch-good', incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => good.stop());
    const goodCl = clientOf(good);
    const goodM = { copyId: good.copyId, address: good.address, incarnation };
    // Claims a newer state (seq 50) whose dedupe blob is truncated.
    const bad = await startStandIn({ copyId: 'fetch-bad', fetchState: { hasState: true, stateEpoch: 5, seq: 50, state: encodeJson({ k6: 50 }), dedupe: [], dedupePacked: Buffer.from([9, 0, 0, 0, 1]), outbox: [], dedupePartial: false } });
    const fresh = await startCopy({ app: counterApp, copyId: 'fetch-fresh', incarnation: incarnation + 1, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
    stops.push(() => fresh.stop());
    const freshCl = clientOf(fresh);
    const freshM = { copyId: fresh.copyId, address: fresh.address, incarnation: incarnation + 1 };
    const gone = { copyId: 'fetch-gone', address: '127.0.0.1:1', incarnation: 9 };
    await setRole(goodCl, goodM, 6, Role.ROLE_STANDBY, 4, 1, membersOf(gone, [goodM]));
    const table = new DedupeTable(10_000);
    for (let i = 0; i < 10; i++) table.set(`g-${i}`, Buffer.from(encodeJson({ key: 'k6', value: i + 1 })));
    await unaryCall(goodCl.installSnapshot.bind(goodCl), { app: APP, rs: 6, epoch: 4, fromCopyId: gone.copyId, seq: 10, state: encodeJson({ k6: 10 }), dedupe: [], outbox: [], dedupePacked: table.pack(), dedupeOlderFollows: false });
    const badM = { copyId: bad.copyId, address: bad.address, incarnation: bad.incarnation };
    const atEpoch5 = membersOf(freshM, [goodM, badM]);
    await setRole(goodCl, goodM, 6, Role.ROLE_STANDBY, 5, 2, atEpoch5);
    await setRole(freshCl, freshM, 6, Role.ROLE_ACTIVE, 5, 2, atEpoch5);
    assert.deepEqual(await inc(freshCl, 6, 'g-9'), { value: 10, duplicate: true }, 'the state and table of the member that decodes');
    assert.ok(bad.fetchStateCalls > 0, 'the undecodable member was asked');
    assert.equal((await inc(freshCl, 6, 'g-new')).value, 11);
  });

  test('FetchState ranks by the epoch the state comes from, not the epoch a member was last told: a longer stale tail loses', async () => {
    const base = Date.now() + 30;
    const start = async (copyId: string, incarnation: number) => {
      const h = await startCopy({ app: counterApp, copyId, incarnation, controllerAddresses: ['127.0.0.1:1'], logger: silentLogger(), heartbeatIntervalMs: 60_000 });
      stops.push(() => h.stop());
      return { h, cl: clientOf(h), m: { copyId, address: h.address, incarnation } };
    };
    const newer = await start('rank-newer', base);
    const stale = await start('rank-stale', base + 1);
    const fresh = await start('rank-fresh', base + 2);
    const snap = (epoch: number, seq: number, from: string) => ({ app: APP, rs: 7, epoch, fromCopyId: from, seq, state: encodeJson({ k7: seq }), dedupe: [], outbox: [], dedupePacked: Buffer.alloc(0), dedupeOlderFollows: false });
    // Epoch 3's active recorded up to seq 105 on `stale` and died before committing the tail;
    // epoch 4's active started from seq 100 and got to 103 on `newer`.
    const at3 = { copyId: 'rank-a3', address: '127.0.0.1:1', incarnation: 3 };
    const at4 = { copyId: 'rank-a4', address: '127.0.0.1:1', incarnation: 4 };
    await setRole(stale.cl, stale.m, 7, Role.ROLE_STANDBY, 3, 1, membersOf(at3, [stale.m]));
    await unaryCall(stale.cl.installSnapshot.bind(stale.cl), snap(3, 105, at3.copyId));
    await setRole(newer.cl, newer.m, 7, Role.ROLE_STANDBY, 4, 2, membersOf(at4, [newer.m]));
    await unaryCall(newer.cl.installSnapshot.bind(newer.cl), snap(4, 103, at4.copyId));
    // Both are told epoch 5, where a copy without state becomes the active.
    const at5 = membersOf(fresh.m, [newer.m, stale.m]);
    await setRole(newer.cl, newer.m, 7, Role.ROLE_STANDBY, 5, 3, at5);
    await setRole(stale.cl, stale.m, 7, Role.ROLE_STANDBY, 5, 3, at5);
    await setRole(fresh.cl, fresh.m, 7, Role.ROLE_ACTIVE, 5, 3, at5);
    assert.equal((await inc(fresh.cl, 7, 'rank-next')).value, 104, "epoch 4's history (seq 103), not epoch 3's longer uncommitted tail (seq 105)");
  });
});
